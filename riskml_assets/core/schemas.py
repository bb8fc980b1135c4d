"""Pandera schemas of the four input kinds: the one definition of the data-contract rules.

Every rule an incoming row must pass lives here, and nowhere else:

* the columns of each kind, in contract order, with their normalised dtype, whether they are
  required in the file, whether they may be empty, and how raw text is parsed
  (``Column.metadata["parse"]``, one of :data:`PARSE_KINDS`);
* the column checks (ranges, formats, allowed values, string hygiene), each a pandera ``Check``
  whose ``name`` is the *reason code* a failing row is quarantined with and whose ``error`` is
  the human-readable rule;
* the row-level checks (``DataFrameSchema.checks``): point-in-time sanity, and, when
  :func:`build_schema` is given ``now`` / ``week``, "no future dates" and "inside the week";
* the keys (:data:`KEYS`, also declared as ``unique`` on the schema) and the event date of each
  kind (:data:`EVENT_DATE`).

:data:`SCHEMAS` describes a *valid* frame as produced by :mod:`riskml_assets.core.ingest`
(normalised dtypes, unique keys, extra columns allowed), so ``SCHEMAS[kind].validate(valid)``
passes on any ingest result. ``ingest`` evaluates the very same ``Check`` objects as vectorised
masks so that it can quarantine row by row with a reason instead of failing the whole frame.

Pure module: never imports dagster.
"""
from __future__ import annotations

import datetime as dt
import functools
from typing import Callable

import numpy as np
import pandas as pd
import pandera.pandas as pa

from riskml_assets.core import contract

# --------------------------------------------------------------------------- constants

#: How raw values of a column are parsed before the checks run (see ingest._parse_column).
PARSE_KINDS = ("id", "text", "lower", "upper", "date", "datetime", "float", "int")

#: Longest accepted string in a contract text column (ids, stage, currency, industry, ...).
MAX_TEXT_LEN = 256
#: ASCII control characters (NUL, newline, tab, escape, DEL, ...) are refused in contract text columns.
CONTROL_CHARS_RE = r"[\x00-\x1f\x7f]"
CURRENCY_RE = r"^[A-Z]{3}$"
#: ISO 4217 codes: the current list plus those withdrawn since 2010 (history may be that old);
#: XXX ("no currency") and XTS ("testing") are not currencies a deal can be valued in.
ISO_4217 = frozenset("""
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN BZD
CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL
GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD
KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO
NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD
SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV
WST XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XUA YER ZAR ZMW ZWG ZWL
BYR CUC EEK HRK LTL LVL MRO SLL STD VEF ZMK
""".split())
OUTCOMES = ("won", "lost")
RELEVANCE_VALUES = (0, 1, 2)

KINDS = contract.FILE_KINDS

#: Identity of a row for duplicate detection, per kind.
KEYS: dict[str, tuple[str, ...]] = {
    "snapshots": ("opportunity_id", "snapshot_date"),
    "outcomes": ("opportunity_id",),
    "activities": ("opportunity_id", "occurred_at", "activity_type"),
    "interactions": ("user_id", "opportunity_id", "action_id", "shown_at"),
}

#: The column that places a row in time (future check, week routing).
EVENT_DATE: dict[str, str] = {
    "snapshots": "snapshot_date",
    "outcomes": "closed_at",
    "activities": "occurred_at",
    "interactions": "shown_at",
}

#: Kinds whose rows belong to the week of their own event date, not to the week of the file that
#: carries them: CRM exports file outcomes by export date (a Monday export of the last 7 days' closes
#: holds mostly closes of the previous week). See :func:`riskml_assets.core.ingest.ingest_week`.
ROUTED_KINDS: tuple[str, ...] = ("outcomes",)
#: A routed row belongs to the week of its event date when the file reporting it is dated at most this many
#: weeks later; reported later than that, it belongs to the week of the file's date (when it became known).
#: It bounds the files the ingestion of one week reads (its own week's and the next LATE_WEEKS weeks').
LATE_WEEKS = 8

#: Every reason code a quarantined row can carry, with what it means.
REASON_CODES: dict[str, str] = {
    "duplicate_column": "the file has two columns with the same name; every row of that file is quarantined",
    "reserved_column": "the file has a column whose name ingest reserves (source_file); every row of that file is quarantined",
    "missing_column": "a required column is absent from the file; every row of that file is quarantined",
    "missing_value": "a required value is empty, null or NaN",
    "bad_type": "a value cannot be parsed as the column's type (number, integer, ISO 8601 date/date-time)",
    "bad_string": f"a text value is longer than {MAX_TEXT_LEN} characters or contains control characters",
    "bad_format": "a text value does not have the required shape (currency: three letters, ISO 4217)",
    "non_finite": "a number is infinite",
    "out_of_range": "a number is outside its allowed range",
    "not_allowed": "a value is not one of the allowed values",
    "future_date": "the event date is after the ingest time `now`",
    "activity_after_snapshot": "last_activity_at lies after snapshot_date (the snapshot would see the future)",
    "outside_week": "the event date is outside the week [start, end) being ingested",
    "after_file_date": "the event date is after the date in the file name (an export cannot report what has not "
                       "happened yet)",
    "before_first_week": "the event date is before the first week of the partitions (RISKML_FIRST_WEEK)",
    "unreadable_file": "the whole file cannot be read (corrupt, not UTF-8, malformed CSV, ...); one record with "
                       "row_number -1 names the file, the other files of the week are ingested",
    "duplicate_exact": "an exact copy of an earlier row with the same key (the first copy is kept)",
    "duplicate_conflict": "several rows share the key with different values (all of them are quarantined)",
}

#: Columns a row-level check reads, by reason code (used to say *what* failed).
ROW_CHECK_COLUMNS: dict[str, Callable[[str], tuple[str, ...]]] = {
    "future_date": lambda kind: (EVENT_DATE[kind],),
    "outside_week": lambda kind: (EVENT_DATE[kind],),
    "after_file_date": lambda kind: (EVENT_DATE[kind],),
    "before_first_week": lambda kind: (EVENT_DATE[kind],),
    "activity_after_snapshot": lambda kind: ("last_activity_at", "snapshot_date"),
}

# --------------------------------------------------------------------------- check builders


def _clean_text() -> pa.Check:
    return pa.Check(
        lambda s: s.str.len().le(MAX_TEXT_LEN) & ~s.str.contains(CONTROL_CHARS_RE, regex=True),
        name="bad_string",
        error=f"must be at most {MAX_TEXT_LEN} characters with no control characters",
    )


def _finite() -> pa.Check:
    return pa.Check(lambda s: pd.Series(np.isfinite(s.to_numpy(dtype="float64")), index=s.index),
                    name="non_finite", error="must be a finite number")


def _in_range(lo: float, hi: float) -> pa.Check:
    return pa.Check.in_range(lo, hi, name="out_of_range", error=f"must be within [{lo:g}, {hi:g}]")


def _col(dtype, parse: str, *, required: bool = True, nullable: bool = False, checks=(),
         description: str = "") -> pa.Column:
    assert parse in PARSE_KINDS, parse
    checks = list(checks)
    if parse in ("id", "text", "lower", "upper"):
        checks.insert(0, _clean_text())
    if parse == "float":
        checks.insert(0, _finite())
    return pa.Column(dtype, checks=checks, nullable=nullable, required=required,
                     metadata={"parse": parse}, description=description)


def _id(description: str = "") -> pa.Column:
    return _col(str, "id", description=description)


def _opt_score(description: str) -> pa.Column:
    return _col("float64", "float", required=False, nullable=True, checks=[_in_range(0, 1)],
                description=description)


# --------------------------------------------------------------------------- columns per kind


def _snapshot_columns() -> dict[str, pa.Column]:
    cols = {
        "opportunity_id": _id("CRM opportunity id"),
        "snapshot_date": _col("datetime64[ns]", "date", description="day the snapshot was taken"),
        "deal_value": _col("float64", "float", checks=[
            pa.Check.gt(0, name="out_of_range", error="must be > 0")], description="deal value in `currency`"),
        "currency": _col(str, "upper", checks=[
            pa.Check.str_matches(CURRENCY_RE, name="bad_format",
                                 error="must be a three-letter ISO 4217 code such as EUR"),
            pa.Check.isin(sorted(ISO_4217), name="not_allowed",
                          error="is not an ISO 4217 currency code (current or withdrawn since 2010)")],
            description="ISO 4217 code, upper-cased"),
        "probability": _col("float64", "float", checks=[_in_range(0, 100)],
                            description="win probability 0-100 as typed in the CRM"),
        "stage": _col(str, "lower", description="pipeline stage, stripped and lower-cased"),
        "close_date": _col("datetime64[ns]", "date", description="expected close date"),
        "last_activity_at": _col("datetime64[ns]", "datetime", nullable=True,
                                 description="time of the last recorded activity (may be empty)"),
        "owner_id": _id("sales rep id"),
        "account_id": _id("customer account id"),
        "industry": _col(str, "text", required=False, nullable=True),
        "region": _col(str, "text", required=False, nullable=True),
        "product_line": _col(str, "text", required=False, nullable=True),
        "risk_score": _opt_score("today's rule/LLM risk score 0-1"),
        "revenue_at_risk": _col("float64", "float", required=False, nullable=True, checks=[
            pa.Check.ge(0, name="out_of_range", error="must be >= 0")]),
    }
    for c in contract.RISK_CATEGORIES:
        cols[f"risk_{c}"] = _opt_score(f"{c} risk score 0-1")
    return cols


def _outcome_columns() -> dict[str, pa.Column]:
    return {
        "opportunity_id": _id("CRM opportunity id"),
        "outcome": _col(str, "lower", checks=[
            pa.Check.isin(OUTCOMES, name="not_allowed", error=f"must be one of {', '.join(OUTCOMES)}")]),
        "closed_at": _col("datetime64[ns]", "date", description="day the deal closed"),
        "actual_revenue": _col("float64", "float", checks=[
            pa.Check.ge(0, name="out_of_range", error="must be >= 0")]),
        "mitigation_effectiveness": _opt_score("how well the mitigation worked 0-1"),
    }


def _activity_columns() -> dict[str, pa.Column]:
    return {
        "opportunity_id": _id("CRM opportunity id"),
        "occurred_at": _col("datetime64[ns]", "datetime"),
        # unknown activity types are kept: contract.ACTIVITY_TYPES is the known list, not a closed set
        "activity_type": _col(str, "lower", description=f"e.g. {', '.join(contract.ACTIVITY_TYPES)}"),
    }


def _interaction_columns() -> dict[str, pa.Column]:
    return {
        "user_id": _id("user who saw the recommendation"),
        "opportunity_id": _id("CRM opportunity id"),
        "action_id": _id("recommended mitigation action"),
        "shown_at": _col("datetime64[ns]", "datetime"),
        "relevance": _col("int64", "int", checks=[
            pa.Check.isin(RELEVANCE_VALUES, name="not_allowed",
                          error="must be 0 (ignored), 1 (clicked) or 2 (accepted)")]),
    }


_COLUMNS: dict[str, Callable[[], dict[str, pa.Column]]] = {
    "snapshots": _snapshot_columns,
    "outcomes": _outcome_columns,
    "activities": _activity_columns,
    "interactions": _interaction_columns,
}

# --------------------------------------------------------------------------- row-level checks


def _activity_not_after_snapshot(df: pd.DataFrame) -> pd.Series:
    # Compared by day: the snapshot of day D may see an activity logged at any time on day D.
    return ~(df["last_activity_at"].dt.normalize() > df["snapshot_date"])


def _not_future(kind: str, now: pd.Timestamp) -> pa.Check:
    col = EVENT_DATE[kind]
    return pa.Check(lambda df: df[col] <= now, name="future_date",
                    error=f"{col} must not be after now ({now.isoformat()})")


def inside_week_check(kind: str, start, end) -> pa.Check:
    """The check "event date inside the week [start, end)" of ``build_schema(kind, week=(start, end))``, alone."""
    return _inside_week(kind, as_naive_utc(start), as_naive_utc(end))


def _inside_week(kind: str, start: pd.Timestamp, end: pd.Timestamp) -> pa.Check:
    col = EVENT_DATE[kind]
    return pa.Check(lambda df: (df[col] >= start) & (df[col] < end), name="outside_week",
                    error=f"{col} must be within the week [{start.date()}, {end.date()})")


def as_naive_utc(ts) -> pd.Timestamp:
    """A datetime/date/str as a naive pandas Timestamp (tz-aware values converted to UTC first)."""
    ts = pd.Timestamp(ts)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts


@functools.lru_cache(maxsize=64)
def build_schema(kind: str, *, now: dt.datetime | None = None,
                 week: tuple[dt.datetime, dt.datetime] | None = None) -> pa.DataFrameSchema:
    """The schema of a valid ``kind`` frame; with ``now`` it also refuses future event dates,
    with ``week`` = (start, end) it also refuses event dates outside [start, end).

    Remembered per (kind, now, week): a history run validates every week against the same ``now``, and
    building a pandera schema deep-copies each of its columns (~2.4 ms for snapshots). Schemas are only read
    by validation, never changed."""
    if kind not in _COLUMNS:
        raise contract.ContractError(f"unknown input kind {kind!r}: expected one of {', '.join(KINDS)}")
    checks: list[pa.Check] = []
    if kind == "snapshots":
        checks.append(pa.Check(_activity_not_after_snapshot, name="activity_after_snapshot",
                               error="last_activity_at must not be after snapshot_date"))
    if now is not None:
        checks.append(_not_future(kind, as_naive_utc(now)))
    if week is not None:
        checks.append(_inside_week(kind, as_naive_utc(week[0]), as_naive_utc(week[1])))
    return pa.DataFrameSchema(
        _COLUMNS[kind](),
        checks=checks,
        unique=list(KEYS[kind]),
        report_duplicates="all",
        strict=False,  # unknown extra columns are kept (they can be declared as features later)
        name=kind,
        description=f"valid {kind} rows of the riskml data contract",
    )


#: Static schemas (no `now`/`week` rules) of a valid frame per kind.
SCHEMAS: dict[str, pa.DataFrameSchema] = {k: build_schema(k) for k in KINDS}


def required_columns(kind: str) -> tuple[str, ...]:
    return tuple(n for n, c in SCHEMAS[kind].columns.items() if c.required)


def optional_columns(kind: str) -> tuple[str, ...]:
    return tuple(n for n, c in SCHEMAS[kind].columns.items() if not c.required)


def parse_kind(kind: str, column: str) -> str:
    return SCHEMAS[kind].columns[column].metadata["parse"]


def _assert_matches_contract() -> None:
    """The schemas must agree with the column tuples of the contract (one place for each idea)."""
    expected = {
        "snapshots": (contract.SNAPSHOT_REQUIRED, contract.SNAPSHOT_OPTIONAL),
        "outcomes": (contract.OUTCOME_REQUIRED, contract.OUTCOME_OPTIONAL),
        "activities": (contract.ACTIVITY_REQUIRED, ()),
        "interactions": (contract.INTERACTION_REQUIRED, ()),
    }
    for kind, (req, opt) in expected.items():
        if required_columns(kind) != tuple(req) or optional_columns(kind) != tuple(opt):
            raise RuntimeError(f"schemas.{kind} disagrees with the column tuples in contract.py")


_assert_matches_contract()
