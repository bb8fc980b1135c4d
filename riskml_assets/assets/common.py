"""Small helpers shared by the asset modules (metadata, loading windowed inputs)."""
from __future__ import annotations

from typing import Any

import dagster as dg
from ..core.lazy import lazy_module

pd = lazy_module("pandas")


OWNERS = ["team:riskml"]


class _FrameType(type):
    def __instancecheck__(cls, obj: Any) -> bool:
        t = type(obj)
        return t.__name__ == "DataFrame" and t.__module__.split(".")[0] in ("pandas", "polars")


class Frame(metaclass=_FrameType):
    """The annotation of a data-frame input or output of an asset: a pandas DataFrame (a polars one for inputs
    declared ``frame_type: polars``). Dagster type-checks values with ``isinstance``, which this answers from the
    value's class alone, so loading the code location does not import pandas (issue 11: validate <= 3 s)."""


def frames(value: Any) -> list[pd.DataFrame]:
    """A windowed input arrives as one bare frame (one partition mapped) or {partition: frame}; missing ones are None."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [v for _, v in sorted(value.items()) if v is not None]
    return [value]


def concat(value: Any) -> pd.DataFrame:
    fs = [f for f in frames(value) if len(f)]
    if not fs:
        return pd.DataFrame()
    return pd.concat(fs, ignore_index=True)


def column_schema(df: pd.DataFrame, descriptions: dict[str, str] | None = None) -> dg.TableSchema:
    descriptions = descriptions or {}
    return dg.TableSchema(columns=[dg.TableColumn(str(c), str(t), description=descriptions.get(str(c)))
                                   for c, t in df.dtypes.items()])


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")  # spreadsheet formula starts (OWASP "CSV injection")


def md_cell(value: Any) -> Any:
    """Text of one markdown table cell, safe to display: a ``|`` cannot end the cell, a newline cannot end the row,
    ``<``/``>`` cannot open HTML, and a formula-looking string (``=HYPERLINK(...)``, ``+``, ``-``, ``@``) is shown
    with a leading ``'`` so that copying the table into a spreadsheet does not run it. Numbers stay numbers."""
    if not isinstance(value, str):
        return value
    text = value
    if text.startswith(FORMULA_PREFIXES) and not _is_number(text):
        text = "'" + text
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    return " ".join(text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ").split("\n"))


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def md_table(df: pd.DataFrame, max_rows: int = 20, floatfmt: str = ".4g") -> str:
    """A markdown table of the first ``max_rows`` rows; every text cell and header escaped by ``md_cell``."""
    if df is None or len(df) == 0:
        return "_(empty)_"
    head = df.head(max_rows).copy()
    for col in head.columns:
        dtype = head[col].dtype
        if not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_datetime64_any_dtype(dtype)):
            head[col] = head[col].astype(object).map(md_cell)  # object, string and category columns
    head.columns = [md_cell(str(c)) for c in head.columns]
    return head.to_markdown(index=False, floatfmt=floatfmt)


def frame_metadata(df: pd.DataFrame, descriptions: dict[str, str] | None = None) -> dict:
    return {"dagster/row_count": dg.MetadataValue.int(int(len(df))),
            "dagster/column_schema": column_schema(df, descriptions)}
