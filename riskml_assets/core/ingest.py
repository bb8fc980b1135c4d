"""Read incoming files and validate them against the data contract, row by row.

Bad input gets a clear error and loses nothing:

* a file that cannot be read at all (corrupt, empty, unknown type, broken CSV) raises
  :class:`~riskml_assets.core.contract.ContractError` naming the file and the problem;
* a readable file is validated row by row with the rules of :mod:`riskml_assets.core.schemas`;
  every rejected row goes to ``quarantine`` once, with a reason code, a human-readable reason
  (column, value, rule), its 0-based row number in the file and the original row as JSON;
  every other row is kept, normalised and typed, in ``valid``.

Rules are applied in a fixed order and a row carries the *first* rule it fails:
file-level problems (duplicate/reserved/missing required column) > parse problems (bad_type,
missing_value; in column order) > column checks (in column order, then check order) > row-level
checks (activity_after_snapshot, future_date) > outside_week > duplicate keys (exact copies
keep the first; conflicting copies are all quarantined), the last two across all files of a call.
``len(valid) + len(quarantine) == rows_read`` always.

Normalisation of ``valid``: contract text columns are stripped (stage, outcome and activity_type
lower-cased, currency upper-cased) and stored as Python ``str`` (object dtype), numbers as
float64, ``relevance`` as int64, dates and date-times as naive datetime64[ns] (tz-aware values
converted to UTC first; date columns snapshot_date, close_date and closed_at truncated to the
day). All contract columns are present (optional ones absent from a file are all-missing);
unknown extra columns follow as read, then ``source_file`` (the file name, never a path).

Pure module: never imports dagster.
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Callable, NamedTuple

from riskml_assets.core import contract
from riskml_assets.core.contract import ContractError
from riskml_assets.core.lazy import lazy_module

# imported on first use, not when the code location loads
np = lazy_module("numpy")
pd = lazy_module("pandas")
pa = lazy_module("pyarrow")
pq = lazy_module("pyarrow.parquet")

# the pandera schemas: imported by the first validation, not when the code location loads
_schemas = lazy_module("riskml_assets.core.schemas")

QUARANTINE_COLUMNS = ["tenant", "kind", "source_file", "row_number", "reason_code", "reason", "raw"]
SOURCE_COLUMN = "source_file"
_INTERNAL_PREFIX = "__riskml_"
_FILE = "__riskml_file"
_ROW = "__riskml_row"
_SHOW_LIMIT = 80

_TEXT_PARSES = ("id", "text", "lower", "upper")
_WHAT = {
    "float": "a number",
    "int": "an integer",
    "date": "an ISO 8601 date (YYYY-MM-DD) within 1677-2262",
    "datetime": "an ISO 8601 date-time within 1677-2262",
}


class IngestResult(NamedTuple):
    valid: pd.DataFrame
    quarantine: pd.DataFrame
    stats: dict


# =========================================================================== reading


def read_incoming_file(path: Path) -> pd.DataFrame:
    """Read one incoming parquet or CSV file without interpreting its values.

    CSV is read entirely as strings with only ``""`` treated as missing (so "NA" stays the
    string "NA" and "abc" in a number column is found per row by validation, not by the reader).
    Raises ContractError naming the file for an unknown suffix, a missing, zero-byte, corrupt or
    undecodable file, a CSV without header or with a row of too many fields, or a parquet file with
    duplicate column names. CSV header names are stripped of surrounding whitespace and kept as
    written otherwise (a repeated name stays repeated: validation quarantines every row of such a file as
    ``duplicate_column``); a CSV with NUL bytes is read by the python parser so that no value is cut.
    A well-formed file with a header and no rows reads as an empty frame.
    """
    path = Path(path)
    name = path.name
    if path.suffix not in contract.FILE_SUFFIXES:
        raise ContractError(
            f"{name}: unsupported file type {path.suffix or '(no suffix)'!r}; "
            f"expected one of {', '.join(contract.FILE_SUFFIXES)}"
        )
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ContractError(f"{name}: cannot be read ({exc.strerror or exc})") from None
    if not path.is_file():
        raise ContractError(f"{name}: is not a regular file")
    if size == 0:
        raise ContractError(f"{name}: the file is empty (0 bytes)")
    if path.suffix == ".parquet":
        return _read_parquet(path)
    return _read_csv(path)


def _read_parquet(path: Path) -> pd.DataFrame:
    name = path.name
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ContractError(f"{name}: not a readable parquet file ({_one_line(exc)})") from None
    _refuse_duplicate_names(name, [str(c) for c in table.column_names])
    try:
        df = table.to_pandas()
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise ContractError(f"{name}: parquet content cannot be converted to a table ({_one_line(exc)})") from None
    df.columns = [str(c) for c in df.columns]
    return df


def _read_csv(path: Path) -> pd.DataFrame:
    name = path.name
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), None)
    except UnicodeDecodeError as exc:
        raise ContractError(f"{name}: not UTF-8 text ({_one_line(exc)})") from None
    except (OSError, csv.Error) as exc:
        raise ContractError(f"{name}: cannot be read as CSV ({_one_line(exc)})") from None
    if not header or all(not h.strip() for h in header):
        raise ContractError(f"{name}: no header row (the file has no column names)")
    # pandas' C parser cuts a text value at a NUL byte ("opp\x00x" -> "opp"): read such files with the
    # python parser, which keeps the value as written (the bad_string rule then quarantines the row)
    engine = "python" if _has_nul(path) else "c"
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[], encoding="utf-8-sig", engine=engine)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise ContractError(f"{name}: malformed CSV ({_one_line(exc)})") from None
    if len(df.columns) == len(header):
        # names as written, around-whitespace stripped ("deal_value " is deal_value); a blank name keeps
        # pandas' "Unnamed: i"; repeated names stay repeated (pandas would rename them "x.1"), so that
        # every row of the file is quarantined as duplicate_column instead of one copy being used silently
        df.columns = [h.strip() or str(c) for h, c in zip(header, df.columns)]
    df.columns = [str(c) for c in df.columns]
    return df.where(df.ne(""), None)


def _has_nul(path: Path, chunk: int = 1 << 20) -> bool:
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            if b"\x00" in block:
                return True
    return False


def _refuse_duplicate_names(name: str, columns: list[str]) -> None:
    dups = _duplicated_names(columns)
    if dups:
        raise ContractError(f"{name}: column name(s) {', '.join(map(repr, dups))} appear more than once")


def _duplicated_names(columns: list[str]) -> list[str]:
    seen: Counter = Counter(columns)
    return sorted(c for c, k in seen.items() if k > 1)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


# =========================================================================== parsing


def _parse(s: pd.Series, parse: str) -> tuple[pd.Series, np.ndarray]:
    """(normalised values, bad_type mask). Missing stays missing; only unparseable values are bad."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(object)
    if parse in _TEXT_PARSES:
        return _parse_text(s, parse), np.zeros(len(s), dtype=bool)
    if parse in ("float", "int"):
        return _parse_number(s)
    return _parse_datetime(s, day=(parse == "date"))


def _parse_text(s: pd.Series, parse: str) -> pd.Series:
    if pd.api.types.is_float_dtype(s.dtype):  # ids stored as 1.0, 2.0 -> "1", "2"
        f = s.dropna()
        if len(f) and np.isfinite(f).all() and (f % 1 == 0).all():
            s = s.astype("Int64")
    present = s.notna().to_numpy()
    out = np.full(len(s), None, dtype=object)
    if present.any():
        txt = s[present].astype(str).str.strip()
        if parse == "lower":
            txt = txt.str.lower()
        elif parse == "upper":
            txt = txt.str.upper()
        vals = txt.to_numpy(dtype=object)
        vals[vals == ""] = None
        out[present] = vals
    return pd.Series(out, index=s.index, dtype=object)


def _strip_objects(obj: pd.Series) -> pd.Series:
    kind = pd.api.types.infer_dtype(obj, skipna=True)
    if kind == "string":
        return obj.str.strip()
    if kind == "empty":
        return obj
    return obj.map(lambda x: x.strip() if isinstance(x, str) else x)


def _parse_number(s: pd.Series) -> tuple[pd.Series, np.ndarray]:
    n = len(s)
    if pd.api.types.is_bool_dtype(s.dtype):
        return pd.Series(np.full(n, np.nan), index=s.index), s.notna().to_numpy()
    if pd.api.types.is_numeric_dtype(s.dtype):
        return (pd.Series(s.to_numpy(dtype="float64", na_value=np.nan), index=s.index),
                np.zeros(n, dtype=bool))
    obj = _strip_objects(s.astype(object))
    if pd.api.types.infer_dtype(obj, skipna=True) in ("string", "empty"):
        is_bool = np.zeros(n, dtype=bool)
    else:  # parquet object columns may mix numbers with booleans: True is not a number
        is_bool = obj.map(lambda x: isinstance(x, (bool, np.bool_))).to_numpy()
    out = pd.to_numeric(obj.where(~is_bool, None), errors="coerce").astype("float64")
    text = obj.astype(str).str.lower()
    missing_text = obj.isna() | text.isin(["", "nan"])
    bad = (~missing_text & out.isna()).to_numpy() | is_bool
    return out, bad


def _parse_datetime(s: pd.Series, *, day: bool) -> tuple[pd.Series, np.ndarray]:
    n = len(s)
    bad = np.zeros(n, dtype=bool)
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_datetime64_dtype(s.dtype):
        vals = s.to_numpy()
        if vals.dtype != np.dtype("datetime64[ns]"):
            lo = np.datetime64(pd.Timestamp.min.ceil("s"))
            hi = np.datetime64(pd.Timestamp.max.floor("s"))
            oob = (vals < lo) | (vals > hi)
            if oob.any():
                vals = vals.copy()
                vals[oob] = np.datetime64("NaT")
                bad |= oob
            vals = vals.astype("datetime64[ns]")
        out = pd.Series(vals, index=s.index)
    elif pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
        # numbers are not dates (an int would be read as nanoseconds since 1970)
        out = pd.Series(np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]"), index=s.index)
        bad |= s.notna().to_numpy()
    else:
        obj = _strip_objects(s.astype(object))
        if pd.api.types.infer_dtype(obj, skipna=True) not in ("string", "empty", "date", "datetime"):
            numeric = obj.map(lambda x: isinstance(x, (int, float, np.number, bool, np.bool_, Decimal))
                              and not (isinstance(x, float) and math.isnan(x))).to_numpy()
            bad |= numeric
            obj = obj.where(~numeric, None)
        obj = obj.where(obj.ne("") & obj.notna(), None)
        parsed = pd.to_datetime(obj, format="ISO8601", utc=True, errors="coerce")
        out = parsed.dt.tz_localize(None).astype("datetime64[ns]")
        bad |= (obj.notna() & out.isna()).to_numpy()
    if day:
        out = out.dt.normalize()
    return out, bad


def _empty_column(parse: str, n: int, index) -> pd.Series:
    if parse in _TEXT_PARSES:
        return pd.Series(np.full(n, None, dtype=object), index=index, dtype=object)
    if parse in ("float", "int"):
        return pd.Series(np.full(n, np.nan), index=index, dtype="float64")
    return pd.Series(np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]"), index=index)


# =========================================================================== display helpers


def _is_missing_scalar(v) -> bool:
    if v is None or v is pd.NaT or v is pd.NA:
        return True
    if isinstance(v, (float, np.floating)):
        return math.isnan(v)
    if isinstance(v, np.datetime64):
        return np.isnat(v)
    return False


def _show(v) -> str:
    """A value as it can be printed in a one-line reason: quoted, escaped, truncated."""
    if type(v) is str and len(v) < _SHOW_LIMIT // 2:
        return repr(v)
    if _is_missing_scalar(v):
        return "<empty>"
    if isinstance(v, pd.Timestamp):
        r = v.date().isoformat() if v == v.normalize() and v.tzinfo is None else v.isoformat()
    elif isinstance(v, str):
        r = repr(v)
        if len(r) > _SHOW_LIMIT:
            r = f"{r[:_SHOW_LIMIT - 3]}...' ({len(v)} characters)"
    else:
        r = repr(v.item()) if isinstance(v, np.generic) else repr(v)
    if len(r) > _SHOW_LIMIT + 30:
        r = r[:_SHOW_LIMIT] + "..."
    return r


def _name(column: str) -> str:
    """A column name as it can be printed in a one-line reason."""
    return column if column.isprintable() and len(column) <= _SHOW_LIMIT else _show(column)


def _json_value(v):
    if _is_missing_scalar(v):
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool) or isinstance(v, (int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, (pd.Timestamp, dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.decode("utf-8", "backslashreplace")
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, np.ndarray)):
        return [_json_value(x) for x in v]
    return str(v)


def _json_column(col: pd.Series) -> list:
    """JSON-ready Python values of one column (fast paths for the common dtypes)."""
    dtype = col.dtype
    if pd.api.types.is_bool_dtype(dtype) and not isinstance(dtype, pd.api.extensions.ExtensionDtype):
        return col.tolist()
    if pd.api.types.is_integer_dtype(dtype) and not isinstance(dtype, pd.api.extensions.ExtensionDtype):
        return col.tolist()
    if pd.api.types.is_float_dtype(dtype) and not isinstance(dtype, pd.api.extensions.ExtensionDtype):
        arr = col.to_numpy(dtype="float64")
        out = np.asarray(arr.tolist(), dtype=object)
        out[np.isnan(arr)] = None
        out[np.isposinf(arr)] = "inf"
        out[np.isneginf(arr)] = "-inf"
        return out.tolist()
    if pd.api.types.is_datetime64_any_dtype(dtype):
        if isinstance(dtype, pd.DatetimeTZDtype):  # rare: keep the offset as written
            text = col.astype(str).str.replace(" ", "T", n=1, regex=False)
            return text.where(col.notna(), None).tolist()
        return _iso_dates(col, missing=None)
    values = col.tolist()
    return [v if type(v) is str else _json_value(v) for v in values]


def _raw_json(raw: pd.DataFrame, rows: np.ndarray) -> list[str]:
    """The original rows as JSON objects (NaN -> null, infinities -> "inf"/"-inf", dates ISO)."""
    if len(rows) == 0:
        return []
    cols = [str(c) for c in raw.columns]
    block = raw.iloc[rows]
    columns = [_json_column(block.iloc[:, j]) for j in range(block.shape[1])]
    dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode
    return [dumps(dict(zip(cols, row))) for row in zip(*columns)] if columns else ["{}"] * len(rows)


def _show_values(col: pd.Series) -> list[str]:
    """_show of every value of a column, vectorised for dates."""
    if pd.api.types.is_datetime64_dtype(col.dtype):
        return _iso_dates(col, missing="<empty>")
    return [_show(v) for v in col.tolist()]


def _iso_dates(col: pd.Series, *, missing) -> list:
    """Naive datetimes as ISO 8601 text, as short as exact ('2024-01-08', '2024-01-05T10:30')."""
    arr = col.to_numpy(dtype="datetime64[ns]")
    out = np.datetime_as_string(arr, unit="auto").astype(object)
    out[np.isnat(arr)] = missing
    return out.tolist()


# =========================================================================== per-file checks


class _Flags:
    """First failing rule of each row: code and reason, set once."""

    def __init__(self, n: int):
        self.code = np.full(n, None, dtype=object)
        self.reason = np.full(n, None, dtype=object)
        self.flagged = np.zeros(n, dtype=bool)

    def flag(self, mask, code: str, describe: Callable[[np.ndarray], list[str]]) -> None:
        if code not in _schemas.REASON_CODES:
            raise RuntimeError(f"rule {code!r} has no entry in schemas.REASON_CODES")
        new = np.asarray(mask, dtype=bool) & ~self.flagged
        if not new.any():
            return
        pos = np.flatnonzero(new)
        self.code[pos] = code
        reasons = np.empty(len(pos), dtype=object)
        reasons[:] = describe(pos)
        self.reason[pos] = reasons
        self.flagged[pos] = True

    def flag_all(self, code: str, reason: str) -> None:
        self.flag(np.ones(len(self.flagged), dtype=bool), code, lambda pos: [reason] * len(pos))


@dataclass
class _Part:
    file_idx: int
    source_file: str
    raw: pd.DataFrame
    flags: _Flags
    cand: pd.DataFrame | None
    info: dict = field(default_factory=dict)
    #: week key each row belongs to (routed kinds only; None: every row belongs to the call's week)
    owner: np.ndarray | None = None


def _week_starts(ts: pd.Series) -> pd.Series:
    """Monday (00:00) of the week of each timestamp (NaT stays NaT)."""
    day = ts.dt.normalize()
    return day - pd.to_timedelta(day.dt.weekday, unit="D")


def _route(kind: str, frame: pd.DataFrame, flags: "_Flags", owner: np.ndarray, *, file_date: dt.date,
           first_week: str) -> None:
    """Routed kinds: refuse event dates after the file's date or before the first week, and set ``owner``
    (the week each row belongs to): the week of its event date when the file is dated at most LATE_WEEKS
    weeks later, else (and for rows without a usable event date) the week of the file's date."""
    col = _schemas.EVENT_DATE[kind]
    ev = frame[col]
    fd = pd.Timestamp(file_date)
    first = pd.Timestamp(first_week)
    after = (ev.notna() & (ev.dt.normalize() > fd)).to_numpy()
    before = (ev.notna() & (ev < first)).to_numpy()

    def describe(rule: str, text: str):
        def _d(pos: np.ndarray) -> list[str]:
            return [f"{col}={v} {text} (rule {rule})" for v in _show_values(ev.iloc[pos])]
        return _d

    flags.flag(after, "after_file_date", describe("after_file_date", f"is after the file's date {file_date}"))
    flags.flag(before, "before_first_week", describe(
        "before_first_week", f"is before the first week {first_week} (set RISKML_FIRST_WEEK to an earlier Monday)"))
    home = pd.Timestamp(contract.week_start(file_date))
    wk = _week_starts(ev)
    own = (ev.notna() & ~pd.Series(after | before, index=ev.index) & (home - wk <= pd.Timedelta(weeks=_schemas.LATE_WEEKS))).to_numpy()
    if own.any():
        owner[own] = np.datetime_as_string(wk.to_numpy()[own], unit="D").astype(object)


def _check_rows(kind: str, df: pd.DataFrame, *, source_file: str, now: pd.Timestamp, file_idx: int,
                file_date: dt.date | None = None, first_week: str | None = None) -> _Part:
    raw = df.reset_index(drop=True)
    raw.columns = [str(c) for c in raw.columns]
    n = len(raw)
    schema = _schemas.build_schema(kind, now=now)
    cols = list(raw.columns)
    flags = _Flags(n)
    info = {
        "source_file": source_file,
        "rows_read": n,
        "missing_columns": [c for c in _schemas.required_columns(kind) if c not in cols],
        "missing_optional": [c for c, col in schema.columns.items() if not col.required and c not in cols],
        "extra_columns": [c for c in cols if c not in schema.columns],
    }
    part = _Part(file_idx, source_file, raw, flags, None, info)
    if file_date is not None:  # routed: every row belongs to the file's week until its event date says otherwise
        part.owner = np.full(n, contract.week_key(file_date), dtype=object)

    # ---- file-level problems: every row of the file is quarantined, other files unaffected
    dups = _duplicated_names(cols)
    reserved = [c for c in cols if c == SOURCE_COLUMN or c.startswith(_INTERNAL_PREFIX)]
    if dups:
        flags.flag_all("duplicate_column",
                       f"{source_file}: column(s) {', '.join(map(_name, dups))} appear more than once; "
                       "cannot tell which one to use")
    elif reserved:
        flags.flag_all("reserved_column",
                       f"{source_file}: column(s) {', '.join(map(_name, reserved))} are reserved by ingest "
                       f"({SOURCE_COLUMN!r} is added to every row); rename them")
    elif info["missing_columns"]:
        missing = info["missing_columns"]
        hint = ""
        if len(cols) == 1 and any(sep in cols[0] for sep in ";\t|"):
            hint = " (the header is a single column: is the file delimited by ';' or tab instead of ','?)"
        shown_cols = ", ".join(_name(c) for c in cols[:25]) + (", ..." if len(cols) > 25 else "")
        flags.flag_all("missing_column",
                       f"{source_file}: required column(s) {', '.join(missing)} missing from {kind} file "
                       f"(columns found: {shown_cols or 'none'}){hint}")
    if flags.flagged.all():
        return part

    # ---- parse every contract column; unparseable -> bad_type, required but empty -> missing_value
    norm: dict[str, pd.Series] = {}
    for name, col in schema.columns.items():
        parse = col.metadata["parse"]
        if name not in raw.columns:
            norm[name] = _empty_column(parse, n, raw.index)
            continue
        values, bad = _parse(raw[name], parse)
        norm[name] = values
        src = raw[name]
        flags.flag(bad, "bad_type", lambda pos, name=name, src=src, parse=parse: [
            f"column '{name}' value {v} is not {_WHAT[parse]} (rule bad_type)"
            for v in _show_values(src.iloc[pos])])
        if not col.nullable:
            flags.flag(values.isna().to_numpy() & ~bad, "missing_value", lambda pos, name=name: [
                f"column '{name}' is empty but required (rule missing_value)"] * len(pos))
    frame = pd.DataFrame(norm, index=raw.index)

    # ---- column checks, in column order then check order
    for name, col in schema.columns.items():
        s = frame[name]
        present = s.notna().to_numpy()
        if not present.any():
            continue
        sub = s[present]
        where = np.flatnonzero(present)
        src = raw[name] if name in raw.columns else s
        for chk in col.checks:
            ok = np.asarray(chk(sub).check_output, dtype=bool)
            if ok.shape != (len(sub),):
                raise RuntimeError(f"check {chk.name} on {kind}.{name} did not return one result per row")
            fail = np.zeros(n, dtype=bool)
            fail[where[~ok]] = True
            flags.flag(fail, chk.name, lambda pos, name=name, src=src, chk=chk: [
                f"column '{name}' value {v} {chk.error} (rule {chk.name})"
                for v in _show_values(src.iloc[pos])])

    # ---- row-level checks (point-in-time sanity, future dates)
    for chk in schema.checks:
        ok = np.asarray(chk(frame).check_output, dtype=bool)
        flags.flag(~ok, chk.name, _row_check_describe(kind, chk, frame))
    if part.owner is not None:
        _route(kind, frame, flags, part.owner, file_date=file_date, first_week=first_week or contract.first_week())

    keep = ~flags.flagged
    extras = [c for c in cols if c not in schema.columns]
    cand = frame.loc[keep].copy()
    for c in extras:
        cand[c] = raw.loc[keep, c]
    cand[SOURCE_COLUMN] = source_file
    cand[_FILE] = file_idx
    cand[_ROW] = np.flatnonzero(keep)
    part.cand = cand
    return part


def _row_check_describe(kind: str, chk, frame: pd.DataFrame) -> Callable[[np.ndarray], list[str]]:
    columns = _schemas.ROW_CHECK_COLUMNS[chk.name](kind) if chk.name in _schemas.ROW_CHECK_COLUMNS else ()

    def describe(pos: np.ndarray) -> list[str]:
        values = [_show_values(frame[c].iloc[pos]) for c in columns]
        return [
            f"{chk.error}: " + ", ".join(f"{c}={vals[i]}" for c, vals in zip(columns, values))
            + f" (rule {chk.name})"
            for i in range(len(pos))
        ]

    return describe


# =========================================================================== across files


def _hashable(df: pd.DataFrame) -> pd.DataFrame:
    """The frame with unhashable cells (lists, dicts, arrays from parquet) turned into text."""
    out = df
    for c in df.columns:
        if df[c].dtype == object and pd.api.types.infer_dtype(df[c], skipna=True) not in ("string", "empty") \
                and df[c].map(lambda x: isinstance(x, (list, dict, set, np.ndarray))).any():
            if out is df:
                out = df.copy()
            out[c] = df[c].map(lambda x: json.dumps(_json_value(x), sort_keys=True))
    return out


def _key_texts(frame: pd.DataFrame, key: list[str]) -> list[str]:
    shown = [_show_values(frame[k]) for k in key]
    return ["(" + ", ".join(f"{k}={v}" for k, v in zip(key, vals)) + ")" for vals in zip(*shown)]


def _select_week(parts: list[_Part], target: str) -> dict[str, int]:
    """Keep only the rows of routed parts that belong to ``target``; {other week: rows} of the others."""
    other: Counter = Counter()
    for p in parts:
        if p.owner is None:
            continue
        mine = p.owner == target
        other.update(p.owner[~mine].tolist())
        p.info["rows_in_file"] = int(len(mine))
        p.info["rows_read"] = int(mine.sum())
        p.flags.flagged = p.flags.flagged & mine  # rows of other weeks are judged by their own week's ingestion
        if p.cand is not None and len(p.cand):
            p.cand = p.cand.loc[mine[p.cand[_ROW].to_numpy()]]
    return dict(sorted(other.items()))


def _finish(kind: str, tenant: str, parts: list[_Part], week, target: str | None = None,
            unreadable: list[tuple[str, str]] = ()) -> IngestResult:
    key = list(_schemas.KEYS[kind])
    names = {p.file_idx: p.source_file for p in parts}
    extra_q: list[pd.DataFrame] = []  # quarantine records decided across files: _FILE, _ROW, code, reason
    other_weeks = _select_week(parts, target) if target is not None else {}

    cands = [p.cand for p in parts if p.cand is not None]
    with warnings.catch_warnings():
        # an extra column that is all-empty in one file and typed in another: object is right
        warnings.filterwarnings("ignore", message=".*empty or all-NA entries.*", category=FutureWarning)
        cand = pd.concat(cands, ignore_index=True) if cands else _empty_candidates(kind)

    # ---- outside the week being ingested
    if week is not None:
        start, end = _schemas.as_naive_utc(week[0]), _schemas.as_naive_utc(week[1])
        if not start < end:
            raise ContractError(f"week start {start} is not before week end {end}")
        chk = _schemas.inside_week_check(kind, start, end)
        ok = np.asarray(chk(cand).check_output, dtype=bool) if len(cand) else np.ones(0, dtype=bool)
        if (~ok).any():
            out = cand.loc[~ok]
            describe = _row_check_describe(kind, chk, out)
            extra_q.append(pd.DataFrame({_FILE: out[_FILE].to_numpy(), _ROW: out[_ROW].to_numpy(),
                                         "reason_code": "outside_week",
                                         "reason": describe(np.arange(len(out)))}))
            cand = cand.loc[ok].reset_index(drop=True)

    # ---- duplicate keys, across all files of the call
    duplicate_keys = 0
    kd = cand.duplicated(key, keep=False).to_numpy() if len(cand) else np.zeros(0, dtype=bool)
    if kd.any():
        sub = cand.loc[kd]
        cmp_cols = [c for c in cand.columns if c not in (SOURCE_COLUMN, _FILE, _ROW)]
        comparable = _hashable(sub[cmp_cols])
        repeat = comparable.duplicated(keep="first")  # a full copy of an earlier row
        groups = [sub[k] for k in key]
        n_distinct = (~repeat).groupby(groups, sort=False).transform("sum")
        conflict = (n_distinct > 1).to_numpy()
        exact = ~conflict & repeat.to_numpy()
        duplicate_keys = len(sub[key].drop_duplicates())
        key_tuples = list(sub[key].itertuples(index=False, name=None))
        key_text = _key_texts(sub, key)
        reasons = np.empty(len(sub), dtype=object)
        if exact.any():
            first_file = sub[_FILE].groupby(groups, sort=False).transform("first").to_numpy()
            first_row = sub[_ROW].groupby(groups, sort=False).transform("first").to_numpy()
            for i in np.flatnonzero(exact):
                reasons[i] = (f"exact duplicate of row {first_row[i]} in {names[first_file[i]]} with key "
                              f"{key_text[i]}; the first copy is kept (rule duplicate_exact)")
        if conflict.any():
            csub = comparable.loc[conflict]
            cgroups = [csub[k] for k in key]
            counts = csub.groupby(cgroups, sort=False).size()
            try:
                nunique = csub.drop(columns=key).groupby(cgroups, sort=False).nunique(dropna=False)
                differing = {k if isinstance(k, tuple) else (k,): [c for c in nunique.columns if row[c] > 1]
                             for k, row in zip(nunique.index, nunique.to_dict("records"))}
            except TypeError:  # pragma: no cover - exotic cell types
                differing = {}
            for i in np.flatnonzero(conflict):
                kt = key_tuples[i]
                cnt = counts.loc[kt] if len(key) > 1 else counts.loc[kt[0]]
                cols_txt = ", ".join(differing.get(kt, [])) or "some columns"
                reasons[i] = (f"key {key_text[i]} appears {int(cnt)} times with different values in "
                              f"{cols_txt}; all copies quarantined because the right one is unknown "
                              "(rule duplicate_conflict)")
        drop = exact | conflict
        codes = np.where(conflict, "duplicate_conflict", "duplicate_exact")
        extra_q.append(pd.DataFrame({_FILE: sub[_FILE].to_numpy()[drop], _ROW: sub[_ROW].to_numpy()[drop],
                                     "reason_code": codes[drop], "reason": reasons[drop]}))
        keep = np.ones(len(cand), dtype=bool)
        keep[np.flatnonzero(kd)[drop]] = False
        cand = cand.loc[keep]

    # ---- quarantine frame (raw rows as JSON, in file then row order)
    records = []
    for p in parts:
        pos = np.flatnonzero(p.flags.flagged)
        if len(pos):
            records.append(pd.DataFrame({_FILE: p.file_idx, _ROW: pos, "reason_code": p.flags.code[pos],
                                         "reason": p.flags.reason[pos]}))
    records.extend(extra_q)
    quarantine = _quarantine_frame(kind, tenant, parts, records)

    # ---- valid frame
    valid = _valid_frame(kind, cand)

    # ---- stats
    valid_per_file = Counter(cand[_FILE].tolist())
    q_per_file = Counter(quarantine["__file"].tolist()) if len(quarantine) else Counter()
    reasons_per_file: dict[int, Counter] = {}
    for fi, code in zip(quarantine["__file"].tolist(), quarantine["reason_code"].tolist()):
        reasons_per_file.setdefault(fi, Counter())[code] += 1
    files = []
    for p in parts:
        files.append({**p.info, "rows_valid": int(valid_per_file.get(p.file_idx, 0)),
                      "rows_quarantined": int(q_per_file.get(p.file_idx, 0)),
                      "reasons": dict(reasons_per_file.get(p.file_idx, {}))})
    quarantine = quarantine.drop(columns="__file")
    rows_read = sum(p.info["rows_read"] for p in parts)
    rows_quarantined = len(quarantine)
    if unreadable:
        quarantine = pd.concat([quarantine, unreadable_records(kind, tenant, unreadable)], ignore_index=True)
    stats = {
        "kind": kind,
        "tenant": tenant,
        "rows_read": int(rows_read),
        "rows_valid": int(len(valid)),
        "rows_quarantined": int(rows_quarantined),
        "reasons": dict(Counter(quarantine["reason_code"].iloc[:rows_quarantined].tolist())),
        "duplicate_keys": int(duplicate_keys),
        "files": files,
        "unreadable_files": [{"source_file": f, "reason": r} for f, r in unreadable],
    }
    if target is not None:
        stats["week"] = target
        stats["rows_other_weeks"] = other_weeks
    if stats["rows_valid"] + stats["rows_quarantined"] != rows_read:  # pragma: no cover - invariant
        raise RuntimeError(f"ingest lost rows: {stats}")
    return IngestResult(valid, quarantine, stats)


def _empty_candidates(kind: str) -> pd.DataFrame:
    df = empty_frame(kind)
    df[_FILE] = pd.Series(dtype="int64")
    df[_ROW] = pd.Series(dtype="int64")
    return df


def _quarantine_frame(kind: str, tenant: str, parts: list[_Part], records: list[pd.DataFrame]) -> pd.DataFrame:
    if not records:
        q = pd.DataFrame({c: pd.Series(dtype="int64" if c == "row_number" else object) for c in QUARANTINE_COLUMNS})
        q["__file"] = pd.Series(dtype="int64")
        return q
    rec = pd.concat(records, ignore_index=True).sort_values([_FILE, _ROW], kind="stable").reset_index(drop=True)
    raw_json = np.empty(len(rec), dtype=object)
    by_idx = {p.file_idx: p for p in parts}
    for fi, idx in rec.groupby(_FILE, sort=False).indices.items():
        raw_json[idx] = _raw_json(by_idx[fi].raw, rec[_ROW].to_numpy()[idx])
    return pd.DataFrame({
        "tenant": tenant,
        "kind": kind,
        "source_file": rec[_FILE].map(lambda fi: by_idx[fi].source_file).astype(object),
        "row_number": rec[_ROW].astype("int64"),
        "reason_code": rec["reason_code"].astype(object),
        "reason": rec["reason"].astype(object),
        "raw": raw_json,
        "__file": rec[_FILE].astype("int64"),
    })[QUARANTINE_COLUMNS + ["__file"]]


def _cast_contract_columns(kind: str, df: pd.DataFrame) -> pd.DataFrame:
    for name, col in _schemas.SCHEMAS[kind].columns.items():
        parse = col.metadata["parse"]
        if parse in _TEXT_PARSES:
            df[name] = df[name].astype(object).where(df[name].notna(), None)
        elif parse == "int":
            df[name] = df[name].astype("int64")
        elif parse == "float":
            df[name] = df[name].astype("float64")
        else:
            df[name] = df[name].astype("datetime64[ns]")
    return df


def _valid_frame(kind: str, cand: pd.DataFrame) -> pd.DataFrame:
    contract_cols = list(_schemas.SCHEMAS[kind].columns)
    extras = [c for c in cand.columns if c not in contract_cols and c not in (SOURCE_COLUMN, _FILE, _ROW)]
    valid = cand[contract_cols + extras + [SOURCE_COLUMN]].reset_index(drop=True).copy()
    valid[SOURCE_COLUMN] = valid[SOURCE_COLUMN].astype(object)
    return _cast_contract_columns(kind, valid)


# =========================================================================== public API


def empty_frame(kind: str) -> pd.DataFrame:
    """A correctly typed, empty valid frame of ``kind`` (all contract columns and ``source_file``)."""
    schema = _schemas.build_schema(kind)
    df = pd.DataFrame({name: _empty_column(col.metadata["parse"], 0, pd.RangeIndex(0))
                       for name, col in schema.columns.items()})
    df[SOURCE_COLUMN] = pd.Series(dtype=object)
    return _cast_contract_columns(kind, df)


def _check_call(kind: str, tenant: str, now) -> pd.Timestamp:
    if kind not in _schemas.SCHEMAS:
        raise ContractError(f"unknown input kind {kind!r}: expected one of {', '.join(_schemas.SCHEMAS)}")
    contract.validate_tenant(tenant)
    if now is None:
        raise ContractError("`now` is required: future dates are judged against it")
    return _schemas.as_naive_utc(now)


def validate_frame(kind: str, df: pd.DataFrame, *, tenant: str, source_file: str, now: dt.datetime,
                   week: tuple[dt.datetime, dt.datetime] | None = None) -> IngestResult:
    """Validate one already-read frame of ``kind`` (rows numbered by position, from 0)."""
    now_ts = _check_call(kind, tenant, now)
    part = _check_rows(kind, df, source_file=Path(str(source_file)).name, now=now_ts, file_idx=0)
    return _finish(kind, tenant, [part], week)


def ingest_files(kind: str, paths: list[Path], *, tenant: str, now: dt.datetime,
                 week: tuple[dt.datetime, dt.datetime] | None = None) -> IngestResult:
    """Read and validate several files of one kind; duplicates and the week are judged across all.

    A file that cannot be read raises ContractError (the caller decides whether to skip it).
    A file whose contract name says it is of another kind raises ContractError too.
    """
    now_ts = _check_call(kind, tenant, now)
    parts = []
    for i, p in enumerate(paths):
        p = Path(p)
        m = contract.FILE_RE.fullmatch(p.name)
        if m and m["kind"] != kind:
            raise ContractError(f"{p.name}: is a {m['kind']} file, not {kind}")
        df = read_incoming_file(p)
        parts.append(_check_rows(kind, df, source_file=p.name, now=now_ts, file_idx=i))
    return _finish(kind, tenant, parts, week)


def unreadable_records(kind: str, tenant: str, unreadable) -> pd.DataFrame:
    """Quarantine records (row_number -1, reason_code ``unreadable_file``) of files that cannot be read."""
    return pd.DataFrame([{"tenant": tenant, "kind": kind, "source_file": f, "row_number": -1,
                          "reason_code": "unreadable_file", "reason": r, "raw": ""} for f, r in unreadable],
                        columns=QUARANTINE_COLUMNS).astype({"row_number": "int64"})


def reads_weeks(kind: str, file_date: dt.date) -> tuple[str, ...]:
    """The week partitions whose ingestion reads a ``kind`` file dated ``file_date`` (oldest first):
    its own week, and for a routed kind (outcomes) also the LATE_WEEKS weeks before it, whose rows it may carry.
    """
    home = contract.week_start(file_date)
    back = _schemas.LATE_WEEKS if kind in _schemas.ROUTED_KINDS else 0
    return tuple((home - dt.timedelta(weeks=k)).isoformat() for k in range(back, -1, -1))


def files_for_week(kind: str, paths, week: str) -> list[Path]:
    """Among contract-named ``paths``, the ``kind`` files the ingestion of ``week`` must read, sorted by name:
    files dated in the week, plus, for a routed kind, files dated up to LATE_WEEKS weeks later."""
    start = dt.date.fromisoformat(contract.week_key(dt.date.fromisoformat(week)))
    later = _schemas.LATE_WEEKS if kind in _schemas.ROUTED_KINDS else 0
    end = start + dt.timedelta(weeks=later + 1)
    out = []
    for f in paths:
        f = Path(f)
        try:
            k, d = contract.parse_incoming_name(f.name)
        except ContractError:
            continue
        if k == kind and start <= d < end:
            out.append(f)
    return sorted(out, key=lambda f: f.name)


def _reuse(part: _Part, file_idx: int) -> _Part:
    """A fresh copy of a checked file for one more week (``_select_week`` narrows flags, info and candidates)."""
    flags = _Flags.__new__(_Flags)
    flags.code, flags.reason, flags.flagged = part.flags.code, part.flags.reason, part.flags.flagged.copy()
    cand = part.cand
    if cand is not None and file_idx != part.file_idx:
        cand = cand.assign(**{_FILE: file_idx})
    return _Part(file_idx, part.source_file, part.raw, flags, cand, dict(part.info), part.owner)


def _file_key(p: Path, *rest) -> tuple | None:
    try:
        st = p.stat()
    except OSError:
        return None
    return (str(p.resolve()), st.st_mtime_ns, st.st_size, *rest)


def ingest_week(kind: str, paths, *, tenant: str, now: dt.datetime, week: str,
                first_week: str | None = None, cache: dict | None = None) -> IngestResult:
    """The rows of ``kind`` that belong to the Monday-anchored ``week``, read from ``paths``
    (contract-named files, e.g. :func:`files_for_week`), one unreadable file never stopping the others.

    * Snapshots, activities, interactions: a file belongs to the week of its date; its rows with an
      event date outside the week are quarantined (``outside_week``).
    * Outcomes (:data:`~riskml_assets.core.schemas.ROUTED_KINDS`): each row belongs to the week of its own
      ``closed_at`` when the file is dated at most LATE_WEEKS weeks after it, else to the file's week.
      A ``closed_at`` after the file's date is quarantined (``after_file_date``), one before the first
      week too (``before_first_week``); both, and rows without a usable ``closed_at``, in the file's week.
      Rows of other weeks are neither valid nor quarantined here (``stats["rows_other_weeks"]`` counts
      them): ingested week by week, every row lands in exactly one week, and duplicates are judged
      among the rows of one week, whichever files they came from.
    * A file that cannot be read is skipped; ``stats["unreadable_files"]`` lists it with the reason and the
      quarantine gets one ``unreadable_file`` record (row_number -1) for it. ContractError only when there
      are files and none of them can be read (the message names every file).

    ``len(valid) + stats["rows_quarantined"] == stats["rows_read"]`` (rows of this week);
    ``len(quarantine) == stats["rows_quarantined"] + len(stats["unreadable_files"])``.

    ``cache``: a dict shared by the weeks of one history (same ``now``): a file read and row-checked for one
    week is reused by the next (an outcomes file feeds up to LATE_WEEKS + 1 weeks), keyed by its path, mtime
    and size, so a changed file is read again. The results are the same as without it.
    """
    now_ts = _check_call(kind, tenant, now)
    start_d = dt.date.fromisoformat(week)
    bounds = contract.week_bounds(start_d.isoformat())
    routed = kind in _schemas.ROUTED_KINDS
    first = contract.first_week(first_week)
    parts, unreadable = [], []
    for i, p in enumerate(paths):
        p = Path(p)
        m = contract.FILE_RE.fullmatch(p.name)
        if m and m["kind"] != kind:
            raise ContractError(f"{p.name}: is a {m['kind']} file, not {kind}")
        file_date = None
        if routed:
            if not m:
                raise ContractError(f"{p.name}: an {kind} file needs a contract name <kind>-<YYYY-MM-DD> (its date "
                                    "decides which closes it may report)")
            file_date = contract.parse_incoming_name(p.name)[1]
        key = _file_key(p, kind, now_ts, file_date, first) if cache is not None else None
        if key is not None and key in cache:
            parts.append(_reuse(cache[key], i))
            continue
        try:
            df = read_incoming_file(p)
        except ContractError as exc:
            unreadable.append((p.name, str(exc)))
            continue
        part = _check_rows(kind, df, source_file=p.name, now=now_ts, file_idx=i, file_date=file_date,
                           first_week=first)
        if key is not None:
            cache[key] = part
            part = _reuse(part, i)
        parts.append(part)
    if unreadable and not parts:
        raise ContractError("no readable file: " + "; ".join(r for _, r in unreadable))
    if routed:
        return _finish(kind, tenant, parts, None, target=start_d.isoformat(), unreadable=unreadable)
    return _finish(kind, tenant, parts, bounds, unreadable=unreadable)


_REEXPORTED = ("EVENT_DATE", "KEYS", "REASON_CODES", "SCHEMAS")


def __getattr__(name: str):  # the schema names this module re-exports, without importing pandera at load time
    if name in _REEXPORTED:
        return getattr(_schemas, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EVENT_DATE",
    "KEYS",
    "QUARANTINE_COLUMNS",
    "REASON_CODES",
    "SCHEMAS",
    "IngestResult",
    "empty_frame",
    "files_for_week",
    "ingest_files",
    "ingest_week",
    "reads_weeks",
    "read_incoming_file",
    "unreadable_records",
    "validate_frame",
]
