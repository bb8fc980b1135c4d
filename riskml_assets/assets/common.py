"""Small helpers shared by the asset modules (metadata, loading windowed inputs)."""

from typing import Any

import dagster as dg
import pandas as pd

OWNERS = ["team:riskml"]


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


def md_table(df: pd.DataFrame, max_rows: int = 20, floatfmt: str = ".4g") -> str:
    if df is None or len(df) == 0:
        return "_(empty)_"
    return df.head(max_rows).to_markdown(index=False, floatfmt=floatfmt)


def frame_metadata(df: pd.DataFrame, descriptions: dict[str, str] | None = None) -> dict:
    return {"dagster/row_count": dg.MetadataValue.int(int(len(df))),
            "dagster/column_schema": column_schema(df, descriptions)}
