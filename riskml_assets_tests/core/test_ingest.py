"""Tests of riskml_assets.core.ingest / schemas: bad input gets a clear error and loses nothing."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from riskml_assets.core import contract, ingest, schemas
from riskml_assets.core.contract import ContractError
from riskml_assets.core.ingest import (
    QUARANTINE_COLUMNS,
    empty_frame,
    ingest_files,
    read_incoming_file,
    validate_frame,
)

NOW = dt.datetime(2024, 1, 15, 12, 0)
TENANT = "acme"


# --------------------------------------------------------------------------- helpers


def make_snapshots(n: int, *, start: int = 0, snapshot_date: str = "2024-01-08") -> pd.DataFrame:
    """N valid snapshot rows with ids opp-<start>..opp-<start+n-1>."""
    i = np.arange(start, start + n)
    return pd.DataFrame({
        "opportunity_id": [f"opp-{k}" for k in i],
        "snapshot_date": pd.Timestamp(snapshot_date),
        "deal_value": 1000.0 + 10.0 * i,
        "currency": "EUR",
        "probability": (i % 101).astype(float),
        "stage": [contract.OPEN_STAGES[k % len(contract.OPEN_STAGES)] for k in i],
        "close_date": pd.Timestamp("2024-03-01"),
        "last_activity_at": pd.Timestamp(snapshot_date) - pd.Timedelta("2 days 14:30:00"),
        "owner_id": [f"u{k % 3}" for k in i],
        "account_id": [f"a{k % 5}" for k in i],
    })


def make_outcomes(n: int) -> pd.DataFrame:
    i = np.arange(n)
    return pd.DataFrame({
        "opportunity_id": [f"opp-{k}" for k in i],
        "outcome": ["won" if k % 2 else "lost" for k in i],
        "closed_at": pd.Timestamp("2024-01-10"),
        "actual_revenue": 500.0 * i,
    })


def make_activities(n: int) -> pd.DataFrame:
    i = np.arange(n)
    return pd.DataFrame({
        "opportunity_id": [f"opp-{k % 4}" for k in i],
        "occurred_at": pd.Timestamp("2024-01-08 08:00") + pd.to_timedelta(i, unit="h"),
        "activity_type": [contract.ACTIVITY_TYPES[k % len(contract.ACTIVITY_TYPES)] for k in i],
    })


def make_interactions(n: int) -> pd.DataFrame:
    i = np.arange(n)
    return pd.DataFrame({
        "user_id": [f"user-{k % 2}" for k in i],
        "opportunity_id": [f"opp-{k}" for k in i],
        "action_id": "act-1",
        "shown_at": pd.Timestamp("2024-01-09 10:00"),
        "relevance": (i % 3).astype("int64"),
    })


def run(kind: str, df: pd.DataFrame, **kw) -> ingest.IngestResult:
    kw.setdefault("tenant", TENANT)
    kw.setdefault("source_file", f"{kind}-2024-01-08.parquet")
    kw.setdefault("now", NOW)
    res = validate_frame(kind, df, **kw)
    check_invariants(kind, res)
    return res


def check_invariants(kind: str, res: ingest.IngestResult) -> None:
    """Nothing lost, nothing counted twice, output matches the schema."""
    assert len(res.valid) + len(res.quarantine) == res.stats["rows_read"]
    assert res.stats["rows_valid"] == len(res.valid)
    assert res.stats["rows_quarantined"] == len(res.quarantine)
    assert sum(res.stats["reasons"].values()) == len(res.quarantine)
    assert list(res.quarantine.columns) == QUARANTINE_COLUMNS
    assert not res.quarantine.duplicated(["source_file", "row_number"]).any()
    assert set(res.quarantine["reason_code"]) <= set(schemas.REASON_CODES)
    schemas.SCHEMAS[kind].validate(res.valid)  # the output obeys the one definition of the rules


def ids(res: ingest.IngestResult, col: str = "opportunity_id") -> list[str]:
    return sorted(res.valid[col].tolist())


def reasons_by_row(res: ingest.IngestResult) -> dict[int, str]:
    return dict(zip(res.quarantine["row_number"], res.quarantine["reason_code"]))


def obj(df: pd.DataFrame, *cols: str) -> pd.DataFrame:
    """Make columns object so that hand-written bad values can be put in."""
    df = df.copy()
    for c in cols:
        df[c] = df[c].astype(object)
    return df


# --------------------------------------------------------------------------- clean input


def test_clean_snapshots_pass_entirely_and_are_normalised():
    df = make_snapshots(20)
    df["currency"] = [" eur", "usd"] * 10
    df["stage"] = " Proposal "
    res = run("snapshots", df)
    assert res.quarantine.empty
    assert ids(res) == sorted(df["opportunity_id"])
    assert res.stats["rows_read"] == 20 and res.stats["reasons"] == {} and res.stats["duplicate_keys"] == 0
    assert set(res.valid["currency"]) == {"EUR", "USD"}
    assert set(res.valid["stage"]) == {"proposal"}
    assert (res.valid["source_file"] == "snapshots-2024-01-08.parquet").all()
    dtypes = res.valid.dtypes
    assert dtypes["snapshot_date"] == "datetime64[ns]" and dtypes["last_activity_at"] == "datetime64[ns]"
    assert dtypes["deal_value"] == "float64" and dtypes["probability"] == "float64"
    assert dtypes["opportunity_id"] == object
    # all contract columns are there, optional ones all-missing when absent from the file
    assert list(res.valid.columns[: len(schemas.SCHEMAS["snapshots"].columns)]) == list(schemas.SCHEMAS["snapshots"].columns)
    assert res.valid["risk_score"].isna().all() and res.valid["industry"].isna().all()
    assert "risk_score" in res.stats["files"][0]["missing_optional"]


def test_source_file_is_a_name_not_a_path():
    res = run("snapshots", make_snapshots(2), source_file="/some/dir/tenant/snapshots-2024-01-08.csv")
    assert set(res.valid["source_file"]) == {"snapshots-2024-01-08.csv"}


def test_empty_frame_is_typed_and_matches_schema():
    for kind in contract.FILE_KINDS:
        e = empty_frame(kind)
        assert len(e) == 0
        assert list(e.columns) == [*schemas.SCHEMAS[kind].columns, "source_file"]
        schemas.SCHEMAS[kind].validate(e)
    assert empty_frame("interactions")["relevance"].dtype == "int64"
    assert empty_frame("snapshots")["snapshot_date"].dtype == "datetime64[ns]"


def test_pure_modules_do_not_import_dagster():
    for module in (ingest, schemas):
        source = Path(module.__file__).read_text()
        assert "import dagster" not in source and "from dagster" not in source


def test_schemas_define_keys_event_dates_and_reason_codes_for_every_kind():
    assert set(schemas.SCHEMAS) == set(schemas.KEYS) == set(schemas.EVENT_DATE) == set(contract.FILE_KINDS)
    for kind, schema in schemas.SCHEMAS.items():
        assert set(schemas.KEYS[kind]) <= set(schema.columns) and schemas.EVENT_DATE[kind] in schema.columns
        for col in schema.columns.values():
            assert all(c.name in schemas.REASON_CODES for c in col.checks)
    assert {c.name for c in schemas.build_schema("snapshots", now=NOW, week=contract.week_bounds("2024-01-08")).checks} \
        == {"activity_after_snapshot", "future_date", "outside_week"}


def test_schemas_are_built_once_per_kind_now_and_week_and_the_week_check_is_the_schemas():
    """A history run validates every week against the same ``now``: the schema is built once (building one
    deep-copies each column). ``inside_week_check`` is the schema's own week rule, without building a schema."""
    now = dt.datetime(2026, 11, 20, 12)
    week = (dt.datetime(2026, 11, 9), dt.datetime(2026, 11, 16))
    assert schemas.build_schema("snapshots", now=now) is schemas.build_schema("snapshots", now=now)
    assert schemas.build_schema("snapshots", now=now) is not schemas.build_schema("snapshots", now=now + dt.timedelta(1))
    assert schemas.build_schema("outcomes") is schemas.SCHEMAS["outcomes"]
    for kind in schemas.KINDS:
        col = schemas.EVENT_DATE[kind]
        frame = pd.DataFrame({col: pd.to_datetime(["2026-11-08 23:59", "2026-11-09 00:00", "2026-11-15 23:59",
                                                    "2026-11-16 00:00"])})
        alone = schemas.inside_week_check(kind, *week)
        [in_schema] = [c for c in schemas.build_schema(kind, week=week).checks if c.name == "outside_week"]
        assert alone.name == in_schema.name and alone.error == in_schema.error
        assert list(alone(frame).check_output) == list(in_schema(frame).check_output) == [False, True, True, False]


def test_unknown_kind_and_bad_tenant_are_refused():
    with pytest.raises(ContractError, match="unknown input kind"):
        validate_frame("forecasts", make_snapshots(1), tenant=TENANT, source_file="x.csv", now=NOW)
    with pytest.raises(ContractError, match="invalid tenant"):
        validate_frame("snapshots", make_snapshots(1), tenant="../etc", source_file="x.csv", now=NOW)


# --------------------------------------------------------------------------- bad values


def test_missing_required_column_quarantines_every_row_of_that_file():
    res = run("snapshots", make_snapshots(5).drop(columns=["probability", "owner_id"]))
    assert res.valid.empty
    assert res.stats["reasons"] == {"missing_column": 5}
    assert res.quarantine["row_number"].tolist() == [0, 1, 2, 3, 4]
    msg = res.quarantine["reason"].iloc[0]
    assert "probability" in msg and "owner_id" in msg and "snapshots-2024-01-08.parquet" in msg
    assert res.stats["files"][0]["missing_columns"] == ["probability", "owner_id"]


def test_wrong_type_quarantines_only_that_row():
    df = obj(make_snapshots(6), "deal_value", "snapshot_date", "last_activity_at")
    df.loc[2, "deal_value"] = "abc"
    df.loc[4, "snapshot_date"] = "not-a-date"
    df.loc[5, "last_activity_at"] = "2024-13-45"
    res = run("snapshots", df)
    assert reasons_by_row(res) == {2: "bad_type", 4: "bad_type", 5: "bad_type"}
    assert ids(res) == ["opp-0", "opp-1", "opp-3"]
    q = res.quarantine.set_index("row_number")["reason"]
    assert "deal_value" in q[2] and "'abc'" in q[2]
    assert "snapshot_date" in q[4] and "'not-a-date'" in q[4]
    assert "last_activity_at" in q[5]


def test_nan_and_out_of_range_probability():
    df = make_snapshots(5)
    df.loc[1, "probability"] = np.nan
    df.loc[3, "probability"] = 150.0
    df.loc[4, "probability"] = -0.5
    res = run("snapshots", df)
    assert reasons_by_row(res) == {1: "missing_value", 3: "out_of_range", 4: "out_of_range"}
    assert ids(res) == ["opp-0", "opp-2"]
    q = res.quarantine.set_index("row_number")["reason"]
    assert "probability" in q[1]
    assert "probability" in q[3] and "150" in q[3] and "[0, 100]" in q[3]


def test_probability_bounds_are_inclusive():
    df = make_snapshots(2)
    df["probability"] = [0.0, 100.0]
    assert len(run("snapshots", df).valid) == 2


def test_negative_zero_and_infinite_deal_value():
    df = make_snapshots(5)
    df.loc[0, "deal_value"] = -10.0
    df.loc[1, "deal_value"] = 0.0
    df.loc[2, "deal_value"] = np.inf
    res = run("snapshots", df)
    assert reasons_by_row(res) == {0: "out_of_range", 1: "out_of_range", 2: "non_finite"}
    assert ids(res) == ["opp-3", "opp-4"]
    assert "deal_value" in res.quarantine["reason"].iloc[0] and "-10" in res.quarantine["reason"].iloc[0]
    assert json.loads(res.quarantine["raw"].iloc[2])["deal_value"] == "inf"


def test_currency_must_have_iso_4217_shape():
    df = make_snapshots(5)
    df["currency"] = ["usd", "EURO", "E1R", "", " gbp "]
    res = run("snapshots", df)
    assert reasons_by_row(res) == {1: "bad_format", 2: "bad_format", 3: "missing_value"}
    assert res.valid.set_index("opportunity_id")["currency"].to_dict() == {"opp-0": "USD", "opp-4": "GBP"}


def test_empty_required_ids_and_stage():
    df = make_snapshots(4)
    df.loc[0, "owner_id"] = None
    df.loc[1, "account_id"] = "   "
    df.loc[2, "stage"] = ""
    res = run("snapshots", df)
    assert reasons_by_row(res) == {0: "missing_value", 1: "missing_value", 2: "missing_value"}
    assert ids(res) == ["opp-3"]


def test_optional_columns_may_be_empty_but_must_be_in_range_when_present():
    df = make_snapshots(6)
    df["risk_score"] = [0.2, np.nan, 1.5, 0.9, 0.1, 1.0]
    df["revenue_at_risk"] = [10.0, np.nan, 1.0, -1.0, 0.0, 5.0]
    df["risk_commercial"] = [0.1, 0.2, 0.3, 0.4, -0.1, np.nan]
    df["industry"] = ["saas", None, "retail", "", "x", "y"]
    res = run("snapshots", df)
    assert reasons_by_row(res) == {2: "out_of_range", 3: "out_of_range", 4: "out_of_range"}
    assert ids(res) == ["opp-0", "opp-1", "opp-5"]
    v = res.valid.set_index("opportunity_id")
    assert np.isnan(v.loc["opp-1", "risk_score"]) and v.loc["opp-1", "industry"] is None


def test_future_snapshot_date():
    df = make_snapshots(4)
    df.loc[1, "snapshot_date"] = pd.Timestamp("2024-01-16")  # after NOW
    df.loc[2, "snapshot_date"] = pd.Timestamp("2024-01-15")  # the day of NOW is not the future
    res = run("snapshots", df)
    assert reasons_by_row(res) == {1: "future_date"}
    assert ids(res) == ["opp-0", "opp-2", "opp-3"]
    assert "2024-01-16" in res.quarantine["reason"].iloc[0]


def test_last_activity_after_snapshot_is_a_point_in_time_leak():
    df = make_snapshots(4)
    df.loc[0, "last_activity_at"] = pd.Timestamp("2024-01-09 10:00")  # the day after the snapshot
    df.loc[1, "last_activity_at"] = pd.Timestamp("2024-01-08 17:00")  # same day: allowed
    df.loc[2, "last_activity_at"] = pd.NaT  # nullable
    res = run("snapshots", df)
    assert reasons_by_row(res) == {0: "activity_after_snapshot"}
    assert ids(res) == ["opp-1", "opp-2", "opp-3"]
    assert "last_activity_at=2024-01-09T10:00" in res.quarantine["reason"].iloc[0]


def test_first_failing_rule_wins():
    df = obj(make_snapshots(2), "deal_value")
    df.loc[0, "deal_value"] = "abc"
    df.loc[0, "probability"] = 150.0
    df.loc[0, "snapshot_date"] = pd.Timestamp("2030-01-01")
    res = run("snapshots", df)
    assert reasons_by_row(res) == {0: "bad_type"}


def test_hostile_strings():
    df = make_snapshots(8)
    df["opportunity_id"] = [
        "opp-0\x00evil",                    # NUL byte
        "opp-1\nDROP",                      # embedded newline
        "x" * 5000,                         # absurdly long
        "'; DROP TABLE snapshots; --",      # SQL: just data
        "../../etc/passwd",                 # path-like: just data, never a path
        "=HYPERLINK(\"http://evil\")",      # spreadsheet formula: just data
        "Société Générale – 東京 🚀",        # unicode is fine
        "opp-7",
    ]
    df.loc[7, "stage"] = "proposal\x1b[31m"  # ANSI escape in a text column
    res = run("snapshots", df)
    assert reasons_by_row(res) == {0: "bad_string", 1: "bad_string", 2: "bad_string", 7: "bad_string"}
    assert ids(res) == sorted(df["opportunity_id"].iloc[3:7])
    # reasons are one printable line, long values truncated; the raw row keeps the exact value
    for reason in res.quarantine["reason"]:
        assert "\n" not in reason and "\x00" not in reason and len(reason) < 400
    raw0 = json.loads(res.quarantine.set_index("row_number").loc[0, "raw"])
    assert raw0["opportunity_id"] == "opp-0\x00evil"
    raw2 = json.loads(res.quarantine.set_index("row_number").loc[2, "raw"])
    assert raw2["opportunity_id"] == "x" * 5000


def test_quarantine_rows_carry_tenant_kind_file_and_raw_row():
    df = make_snapshots(3)
    df["my_feature"] = ["a", "b", "c"]
    df.loc[1, "probability"] = 150.0
    res = run("snapshots", df)
    q = res.quarantine.iloc[0]
    assert (q["tenant"], q["kind"], q["source_file"], q["row_number"]) == (
        TENANT, "snapshots", "snapshots-2024-01-08.parquet", 1)
    raw = json.loads(q["raw"])
    assert raw["opportunity_id"] == "opp-1" and raw["probability"] == 150.0 and raw["my_feature"] == "b"
    assert raw["snapshot_date"] == "2024-01-08" and raw["last_activity_at"] == "2024-01-05T09:30"


# --------------------------------------------------------------------------- duplicates


def test_exact_duplicate_keeps_first():
    df = make_snapshots(4)
    df = pd.concat([df, df.iloc[[1, 1]]], ignore_index=True)  # rows 4 and 5 copy row 1
    res = run("snapshots", df)
    assert reasons_by_row(res) == {4: "duplicate_exact", 5: "duplicate_exact"}
    assert ids(res) == ["opp-0", "opp-1", "opp-2", "opp-3"]
    assert res.stats["duplicate_keys"] == 1
    assert "row 1" in res.quarantine["reason"].iloc[0]


def test_conflicting_duplicates_are_all_quarantined():
    df = make_snapshots(4)
    extra = df.iloc[[2]].copy()
    extra["deal_value"] = 99999.0
    df = pd.concat([df, extra, df.iloc[[0]]], ignore_index=True)  # row 4 conflicts with 2, row 5 copies 0
    res = run("snapshots", df)
    assert reasons_by_row(res) == {2: "duplicate_conflict", 4: "duplicate_conflict", 5: "duplicate_exact"}
    assert ids(res) == ["opp-0", "opp-1", "opp-3"]
    assert res.stats["duplicate_keys"] == 2
    conflict_reason = res.quarantine.set_index("row_number").loc[2, "reason"]
    assert "deal_value" in conflict_reason and "opp-2" in conflict_reason


def test_same_opportunity_on_other_snapshot_date_is_not_a_duplicate():
    a = make_snapshots(3)
    b = make_snapshots(3, snapshot_date="2024-01-01")
    res = run("snapshots", pd.concat([a, b], ignore_index=True))
    assert res.quarantine.empty and len(res.valid) == 6


def test_duplicates_are_found_across_files(tmp_path: Path):
    a = make_snapshots(3)
    b = make_snapshots(3, start=2)  # opp-2 repeated identically
    b.loc[1, "deal_value"] = 1.0    # opp-3 ... only in b: no conflict
    c = make_snapshots(1, start=0)
    c["deal_value"] = 5.0           # opp-0 conflicts with a
    paths = []
    for name, df in [("a.parquet", a), ("b.parquet", b), ("c.parquet", c)]:
        df.to_parquet(tmp_path / name)
        paths.append(tmp_path / name)
    res = ingest_files("snapshots", paths, tenant=TENANT, now=NOW)
    check_invariants("snapshots", res)
    got = set(zip(res.quarantine["source_file"], res.quarantine["row_number"], res.quarantine["reason_code"]))
    assert got == {("b.parquet", 0, "duplicate_exact"),
                   ("a.parquet", 0, "duplicate_conflict"), ("c.parquet", 0, "duplicate_conflict")}
    assert ids(res) == ["opp-1", "opp-2", "opp-3", "opp-4"]
    assert res.valid.set_index("opportunity_id").loc["opp-2", "source_file"] == "a.parquet"
    assert res.stats["duplicate_keys"] == 2
    per_file = {f["source_file"]: (f["rows_valid"], f["rows_quarantined"]) for f in res.stats["files"]}
    assert per_file == {"a.parquet": (2, 1), "b.parquet": (2, 1), "c.parquet": (0, 1)}


# --------------------------------------------------------------------------- files


def test_unreadable_parquet_raises_with_file_name(tmp_path: Path):
    p = tmp_path / "snapshots-2024-01-08.parquet"
    p.write_bytes(b"\x00\x01garbage that is not parquet\xff" * 10)
    with pytest.raises(ContractError, match="snapshots-2024-01-08.parquet"):
        read_incoming_file(p)
    with pytest.raises(ContractError, match="snapshots-2024-01-08.parquet"):
        ingest_files("snapshots", [p], tenant=TENANT, now=NOW)


@pytest.mark.parametrize("name", ["snapshots-2024-01-08.parquet", "snapshots-2024-01-08.csv"])
def test_empty_file_raises_with_file_name(tmp_path: Path, name: str):
    p = tmp_path / name
    p.write_bytes(b"")
    with pytest.raises(ContractError, match=name.replace(".", r"\.")) as exc:
        read_incoming_file(p)
    assert "empty" in str(exc.value)


def test_other_unreadable_files(tmp_path: Path):
    xlsx = tmp_path / "snapshots-2024-01-08.xlsx"
    xlsx.write_bytes(b"PK\x03\x04")
    with pytest.raises(ContractError, match="snapshots-2024-01-08.xlsx.*unsupported"):
        read_incoming_file(xlsx)
    with pytest.raises(ContractError, match="missing.csv"):
        read_incoming_file(tmp_path / "missing.csv")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n1,2,3,4\n")
    with pytest.raises(ContractError, match="ragged.csv.*malformed"):
        read_incoming_file(ragged)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("opportunity_id\nSoci\xe9t\xe9\n".encode("latin-1"))
    with pytest.raises(ContractError, match="latin.csv.*UTF-8"):
        read_incoming_file(latin)
    dup = tmp_path / "dup.csv"  # readable: every row is quarantined as duplicate_column (see test_bad_inputs)
    dup.write_text("a,b,a\n1,2,3\n")
    assert list(read_incoming_file(dup).columns) == ["a", "b", "a"]
    blank = tmp_path / "blank.csv"
    blank.write_text("\n\n")
    with pytest.raises(ContractError, match="blank.csv"):
        read_incoming_file(blank)


def test_header_only_csv_is_an_empty_valid_file(tmp_path: Path):
    p = tmp_path / "snapshots-2024-01-08.csv"
    p.write_text(",".join(contract.SNAPSHOT_REQUIRED) + "\n")
    res = ingest_files("snapshots", [p], tenant=TENANT, now=NOW)
    check_invariants("snapshots", res)
    assert res.stats["rows_read"] == 0 and res.valid.empty and res.quarantine.empty


def test_file_of_another_kind_is_refused(tmp_path: Path):
    p = tmp_path / "outcomes-2024-01-08.parquet"
    make_outcomes(2).to_parquet(p)
    with pytest.raises(ContractError, match="outcomes-2024-01-08.parquet.*not snapshots"):
        ingest_files("snapshots", [p], tenant=TENANT, now=NOW)


def test_csv_round_trip_gives_the_same_valid_rows_as_parquet(tmp_path: Path):
    df = make_snapshots(30)
    df["industry"] = ["saas", None, "retail"] * 10
    df["risk_score"] = np.where(np.arange(30) % 4 == 0, np.nan, np.linspace(0, 1, 30))
    df["region"] = "NA"  # North America, not a missing value
    df.loc[3, "last_activity_at"] = pd.NaT
    df["custom_flag"] = ["yes", "no"] * 15
    df.loc[5, "probability"] = 150.0  # one bad row, quarantined in both
    pq_path = tmp_path / "snapshots-2024-01-08.parquet"
    csv_path = tmp_path / "snapshots-2024-01-09.csv"
    df.to_parquet(pq_path)
    df.to_csv(csv_path, index=False)
    a = ingest_files("snapshots", [pq_path], tenant=TENANT, now=NOW)
    b = ingest_files("snapshots", [csv_path], tenant=TENANT, now=NOW)
    check_invariants("snapshots", a)
    check_invariants("snapshots", b)
    assert len(a.valid) == 29 and a.quarantine["row_number"].tolist() == [5] == b.quarantine["row_number"].tolist()
    assert a.quarantine["reason_code"].tolist() == b.quarantine["reason_code"].tolist() == ["out_of_range"]
    pd.testing.assert_frame_equal(a.valid.drop(columns="source_file"), b.valid.drop(columns="source_file"))
    assert set(b.valid["region"]) == {"NA"}


def test_csv_values_are_parsed_per_row(tmp_path: Path):
    p = tmp_path / "snapshots-2024-01-08.csv"
    header = ",".join(contract.SNAPSHOT_REQUIRED)
    rows = [
        "opp-0,2024-01-08,1000,eur,50,Proposal,2024-03-01,2024-01-05T10:00:00Z,u1,a1",
        "opp-1,2024-01-08,abc,eur,50,proposal,2024-03-01,,u1,a1",              # bad number
        "opp-2,2024-01-08, 2500.5 ,EUR,NaN,proposal,2024-03-01,,u1,a1",        # NaN probability
        "opp-3,08/01/2024,1000,EUR,10,proposal,2024-03-01,,u1,a1",             # not ISO 8601
        "opp-4,2024-01-08,1e3,usd,100,commit,2024-03-01,2024-01-07 23:30:00+02:00,u2,a2",
    ]
    p.write_text(header + "\n" + "\n".join(rows) + "\n")
    res = ingest_files("snapshots", [p], tenant=TENANT, now=NOW)
    check_invariants("snapshots", res)
    assert reasons_by_row(res) == {1: "bad_type", 2: "missing_value", 3: "bad_type"}
    assert ids(res) == ["opp-0", "opp-4"]
    v = res.valid.set_index("opportunity_id")
    assert v.loc["opp-4", "deal_value"] == 1000.0
    assert v.loc["opp-0", "last_activity_at"] == pd.Timestamp("2024-01-05 10:00")  # UTC, naive
    assert v.loc["opp-4", "last_activity_at"] == pd.Timestamp("2024-01-07 21:30")  # +02:00 -> UTC
    assert json.loads(res.quarantine["raw"].iloc[0])["deal_value"] == "abc"


def test_missing_column_in_one_file_leaves_the_others_alone(tmp_path: Path):
    good = make_snapshots(3)
    bad = make_snapshots(2, start=10).drop(columns="currency")
    good.to_parquet(tmp_path / "good.parquet")
    bad.to_csv(tmp_path / "bad.csv", index=False)
    res = ingest_files("snapshots", [tmp_path / "good.parquet", tmp_path / "bad.csv"], tenant=TENANT, now=NOW)
    check_invariants("snapshots", res)
    assert ids(res) == ["opp-0", "opp-1", "opp-2"]
    assert set(res.quarantine["source_file"]) == {"bad.csv"}
    assert res.stats["reasons"] == {"missing_column": 2}
    assert "currency" in res.quarantine["reason"].iloc[0] and "bad.csv" in res.quarantine["reason"].iloc[0]


def test_outside_week(tmp_path: Path):
    df = make_snapshots(4)
    df["snapshot_date"] = pd.to_datetime(["2024-01-07", "2024-01-08", "2024-01-14", "2024-01-15"])
    df["last_activity_at"] = pd.Timestamp("2024-01-01")
    p = tmp_path / "snapshots-2024-01-08.parquet"
    df.to_parquet(p)
    week = contract.week_bounds("2024-01-08")
    res = ingest_files("snapshots", [p], tenant=TENANT, now=NOW, week=week)
    check_invariants("snapshots", res)
    assert reasons_by_row(res) == {0: "outside_week", 3: "outside_week"}
    assert ids(res) == ["opp-1", "opp-2"]
    assert "2024-01-07" in res.quarantine["reason"].iloc[0]
    # without a week every row is valid
    assert len(ingest_files("snapshots", [p], tenant=TENANT, now=NOW).valid) == 4


def test_unknown_extra_columns_are_preserved(tmp_path: Path):
    df = make_snapshots(3)
    df["champion_engaged"] = [True, False, True]
    df["notes"] = ["a", None, "c"]
    res = run("snapshots", df)
    assert res.valid["champion_engaged"].tolist() == [True, False, True]
    assert res.valid["notes"].tolist() == ["a", None, "c"]
    assert res.stats["files"][0]["extra_columns"] == ["champion_engaged", "notes"]
    assert list(res.valid.columns[-3:]) == ["champion_engaged", "notes", "source_file"]


def test_reserved_column_name_is_refused_without_losing_rows():
    df = make_snapshots(2)
    df["source_file"] = "crm-export"
    res = run("snapshots", df)
    assert res.stats["reasons"] == {"reserved_column": 2}
    assert json.loads(res.quarantine["raw"].iloc[0])["source_file"] == "crm-export"


def test_timezone_aware_datetimes_become_naive_utc():
    df = make_snapshots(2)
    df["last_activity_at"] = pd.to_datetime(["2024-01-05 10:00", "2024-01-05 23:30"]).tz_localize("Europe/Berlin")
    res = run("snapshots", df)
    assert res.valid["last_activity_at"].tolist() == [pd.Timestamp("2024-01-05 09:00"), pd.Timestamp("2024-01-05 22:30")]
    assert res.valid["last_activity_at"].dt.tz is None


def test_integer_ids_from_parquet_become_strings():
    df = make_snapshots(2)
    df["opportunity_id"] = [101, 102]
    df["account_id"] = [7.0, 8.0]
    res = run("snapshots", df)
    assert ids(res) == ["101", "102"] and res.valid["account_id"].tolist() == ["7", "8"]


# --------------------------------------------------------------------------- the other kinds


def test_outcomes_rules():
    df = obj(make_outcomes(7), "closed_at", "actual_revenue")
    df.loc[0, "outcome"] = " WON "
    df.loc[1, "outcome"] = "maybe"
    df.loc[2, "closed_at"] = pd.Timestamp("2024-02-01")
    df.loc[3, "actual_revenue"] = -5.0
    df.loc[4, "actual_revenue"] = "lots"
    df["mitigation_effectiveness"] = [0.5, 0.5, 0.5, 0.5, 0.5, 2.0, np.nan]
    res = run("outcomes", df)
    assert reasons_by_row(res) == {1: "not_allowed", 2: "future_date", 3: "out_of_range", 4: "bad_type",
                                   5: "out_of_range"}
    assert ids(res) == ["opp-0", "opp-6"]
    assert res.valid.set_index("opportunity_id").loc["opp-0", "outcome"] == "won"
    assert "'maybe'" in res.quarantine["reason"].iloc[0] and "won, lost" in res.quarantine["reason"].iloc[0]


def test_outcome_duplicate_key_is_the_opportunity():
    df = make_outcomes(3)
    again = df.iloc[[1]].assign(outcome="lost" if df.loc[1, "outcome"] == "won" else "won")
    res = run("outcomes", pd.concat([df, again], ignore_index=True))
    assert reasons_by_row(res) == {1: "duplicate_conflict", 3: "duplicate_conflict"}
    assert ids(res) == ["opp-0", "opp-2"]


def test_activities_rules():
    df = make_activities(6)
    df.loc[0, "activity_type"] = " Webinar "  # unknown type: kept, normalised
    df.loc[1, "activity_type"] = None
    df.loc[2, "occurred_at"] = pd.Timestamp("2024-01-15 12:30")  # 30 min after NOW
    df = pd.concat([df, df.iloc[[3]]], ignore_index=True)  # exact duplicate event
    res = run("activities", df)
    assert reasons_by_row(res) == {1: "missing_value", 2: "future_date", 6: "duplicate_exact"}
    assert len(res.valid) == 4
    assert "webinar" in set(res.valid["activity_type"])


def test_interactions_rules():
    df = obj(make_interactions(6), "relevance")
    df.loc[0, "relevance"] = 3
    df.loc[1, "relevance"] = 1.5
    df.loc[2, "relevance"] = "x"
    df.loc[3, "action_id"] = ""
    res = run("interactions", df)
    assert reasons_by_row(res) == {0: "not_allowed", 1: "not_allowed", 2: "bad_type", 3: "missing_value"}
    assert ids(res) == ["opp-4", "opp-5"]
    assert res.valid["relevance"].dtype == "int64"
    assert res.valid["relevance"].tolist() == [1, 2]


# --------------------------------------------------------------------------- scale


def test_100k_snapshot_rows_validate_with_every_bad_row_found():
    """At 100k rows every bad row is still found and every valid one kept (how fast: benchmarks/bench_p2_ingest.py;
    speed is measured there, not asserted in a timed test)."""
    df = make_snapshots(100_000)
    df.loc[::1000, "probability"] = 150.0
    res = run("snapshots", df)
    assert res.stats["reasons"] == {"out_of_range": 100}
    assert len(res.valid) == 99_900
    assert not res.valid["opportunity_id"].isin(df.loc[::1000, "opportunity_id"]).any()


# --------------------------------------------------------------------------- item 1: the accepted range of weeks


def test_first_week_is_a_validated_monday(monkeypatch):
    monkeypatch.delenv(contract.FIRST_WEEK_ENV, raising=False)
    assert contract.first_week() == contract.DEFAULT_FIRST_WEEK == "2010-01-04"
    monkeypatch.setenv(contract.FIRST_WEEK_ENV, "2015-01-05")
    assert contract.first_week() == "2015-01-05"
    assert contract.first_week("2016-02-01") == "2016-02-01"  # an explicit value wins
    for bad, words in [("2015-01-06", ("Tuesday", "not a Monday", "2015-01-05")), ("soon", ("not a date",)),
                       ("1969-12-29", ("before 1970",))]:
        monkeypatch.setenv(contract.FIRST_WEEK_ENV, bad)
        with pytest.raises(ContractError) as err:
            contract.first_week()
        assert contract.FIRST_WEEK_ENV in str(err.value) and all(w in str(err.value) for w in words)
        assert "\n" not in str(err.value)


def test_week_in_range_accepts_history_and_the_current_week_and_refuses_the_future():
    today = dt.date(2026, 12, 3)  # a Thursday
    first = "2010-01-04"
    ok = contract.week_in_range
    assert ok(dt.date(2015, 3, 4), today=today, first=first) == contract.WeekVerdict(True, "ok", "2015-03-02")
    assert ok("2010-01-04", today=today, first=first).ok                       # the first week itself
    assert ok(today, today=today, first=first).ok                              # today: the current, incomplete week
    assert ok(dt.date(2026, 12, 4), today=today, first=first).ok               # one day ahead: time zones
    assert ok(dt.datetime(2026, 11, 30, 23, 59), today=today, first=first).week == "2026-11-30"
    v = ok(dt.date(2009, 12, 31), today=today, first=first)
    assert (v.ok, v.code, v.week) == (False, "before_first_week", "2009-12-28")
    assert "2009-12-31" in v.reason and "2010-01-04" in v.reason and contract.FIRST_WEEK_ENV in v.reason
    for d in (dt.date(2026, 12, 5), dt.date(2099, 1, 2)):
        v = ok(d, today=today, first=first)
        assert (v.ok, v.code) == (False, "future") and d.isoformat() in v.reason and "2026-12-03" in v.reason
    # Sunday: tomorrow is within the tolerance but in a week that has no partition yet
    v = ok(dt.date(2026, 12, 7), today=dt.date(2026, 12, 6), first=first)
    assert (v.ok, v.code) == (False, "future")
    assert not ok("2024-13-01", today=today, first=first).ok
    assert not bool(ok(dt.date(2023, 5, 1), today=today, first="2024-01-01"))


def test_partitions_start_follows_the_environment_at_import(tmp_path: Path):
    import os
    import subprocess
    import sys

    code = ("from riskml_assets import partitions as p; "
            "print(p.PARTITIONS_START, p.week_partitions.get_first_partition_key())")
    env = {**os.environ, contract.FIRST_WEEK_ENV: "2015-01-05"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["2015-01-05", "2015-01-05"], out.stderr[-500:]
    env[contract.FIRST_WEEK_ENV] = "2015-01-07"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "RISKML_FIRST_WEEK='2015-01-07' is a Wednesday, not a Monday" in out.stderr


# --------------------------------------------------------------------------- item 2: outcomes by their own closed_at


def export_habit_outcomes(tmp_path: Path, mondays: list[str]) -> tuple[list[Path], pd.DataFrame]:
    """Monday exports of the closes of the last 7 days (Monday before .. Sunday) plus the closes of the
    Monday itself, so consecutive exports overlap by one day: a Monday's closes are sent twice."""
    by_day: dict[pd.Timestamp, list[dict]] = {}
    rows, files = [], []
    for m in mondays:
        mon = pd.Timestamp(m)
        part = []
        for d in pd.date_range(mon - pd.Timedelta(days=7), mon):  # 8 days: previous Monday .. this Monday
            if d not in by_day:
                k0 = sum(len(v) for v in by_day.values())
                by_day[d] = [{"opportunity_id": f"o{k}", "outcome": "won" if k % 3 else "lost", "closed_at": d,
                              "actual_revenue": float(k)} for k in range(k0, k0 + 3)]
            part.extend(by_day[d])
        df = pd.DataFrame(part)
        p = tmp_path / f"outcomes-{m}.parquet"
        df.to_parquet(p)
        files.append(p)
        rows.append(df.assign(file=p.name))
    return files, pd.concat(rows, ignore_index=True)


def ingest_weeks(kind: str, files: list[Path], weeks: list[str], now=dt.datetime(2024, 3, 1)) -> dict:
    out = {}
    for w in weeks:
        res = ingest.ingest_week(kind, ingest.files_for_week(kind, files, w), tenant=TENANT, now=now, week=w,
                                 first_week="2010-01-04")
        assert len(res.valid) + res.stats["rows_quarantined"] == res.stats["rows_read"]
        schemas.SCHEMAS[kind].validate(res.valid)
        out[w] = res
    return out


def test_outcomes_filed_by_export_date_land_in_the_week_they_closed(tmp_path: Path):
    mondays = ["2024-01-15", "2024-01-22", "2024-01-29"]
    files, rows = export_habit_outcomes(tmp_path, mondays)
    weeks = ["2024-01-08", "2024-01-15", "2024-01-22", "2024-01-29"]
    res = ingest_weeks("outcomes", files, weeks)
    valid = pd.concat([r.valid.assign(week=w) for w, r in res.items()], ignore_index=True)
    q = pd.concat([r.quarantine for r in res.values()], ignore_index=True)
    # counts in = counts out: every row of every file is valid or quarantined in exactly one week
    assert len(rows) == 3 * 24
    assert sum(r.stats["rows_read"] for r in res.values()) == len(rows)
    assert len(valid) + len(q) == len(rows)
    assert not valid["opportunity_id"].duplicated().any()          # no outcome in two partitions
    assert (valid["closed_at"].map(contract.week_key) == valid["week"]).all()
    assert sorted(valid["opportunity_id"]) == sorted(rows["opportunity_id"].unique())  # nothing lost
    # the Mondays sent twice are exact duplicates in the week they closed, and nothing else is quarantined
    assert q["reason_code"].tolist() == ["duplicate_exact"] * 6
    assert sorted(q["source_file"]) == ["outcomes-2024-01-22.parquet"] * 3 + ["outcomes-2024-01-29.parquet"] * 3
    assert {w: len(r.valid) for w, r in res.items()} == {"2024-01-08": 21, "2024-01-15": 21, "2024-01-22": 21,
                                                          "2024-01-29": 3}
    # before the fix the files were ingested in the week of their date, 7 of 8 days as outside_week
    assert res["2024-01-15"].stats["rows_other_weeks"] == {"2024-01-08": 21, "2024-01-22": 24, "2024-01-29": 3}
    assert res["2024-01-08"].stats["rows_quarantined"] == 0


def test_an_outcome_in_two_exports_is_one_duplicate_in_its_own_week_only(tmp_path: Path):
    a = pd.DataFrame({"opportunity_id": ["x", "y", "z"], "outcome": ["won", "lost", "won"],
                      "closed_at": pd.to_datetime(["2024-01-10", "2024-01-15", "2024-01-15"]),
                      "actual_revenue": [1.0, 0.0, 5.0]})
    b = pd.DataFrame({"opportunity_id": ["y", "z", "w"], "outcome": ["lost", "lost", "won"],
                      "closed_at": pd.to_datetime(["2024-01-15", "2024-01-15", "2024-01-16"]),
                      "actual_revenue": [0.0, 0.0, 2.0]})
    pa_, pb = tmp_path / "outcomes-2024-01-15.parquet", tmp_path / "outcomes-2024-01-22.parquet"
    a.to_parquet(pa_)
    b.to_parquet(pb)
    res = ingest_weeks("outcomes", [pa_, pb], ["2024-01-08", "2024-01-15", "2024-01-22"])
    assert ids(res["2024-01-08"]) == ["x"]
    wk = res["2024-01-15"]
    assert ids(wk) == ["w", "y"]  # y: exact copy kept once; z: won in one export, lost in the other
    assert sorted(zip(wk.quarantine["source_file"], wk.quarantine["reason_code"])) == [
        ("outcomes-2024-01-15.parquet", "duplicate_conflict"), ("outcomes-2024-01-22.parquet", "duplicate_conflict"),
        ("outcomes-2024-01-22.parquet", "duplicate_exact")]
    assert len(res["2024-01-22"].valid) == 0 and len(res["2024-01-22"].quarantine) == 0


def test_outcome_rules_against_the_file_date(tmp_path: Path):
    df = pd.DataFrame({"opportunity_id": ["late", "ok", "after", "old", "nodate", "bad"],
                       "outcome": ["won", "won", "won", "lost", "won", "maybe"],
                       "closed_at": pd.to_datetime(["2023-10-02", "2024-01-22", "2024-01-23", "2009-06-01", None,
                                                    "2024-01-16"]),
                       "actual_revenue": 1.0})
    p = tmp_path / "outcomes-2024-01-22.parquet"
    df.to_parquet(p)
    first = "2010-01-04"
    home = ingest.ingest_week("outcomes", [p], tenant=TENANT, now=NOW.replace(month=2), week="2024-01-22",
                              first_week=first)
    # reported more than LATE_WEEKS weeks after it closed: it belongs to the week it became known
    assert ids(home) == ["late", "ok"]
    assert reasons_by_row(home) == {2: "after_file_date", 3: "before_first_week", 4: "missing_value"}
    assert "2024-01-23" in home.quarantine["reason"].iloc[0] and "2024-01-22" in home.quarantine["reason"].iloc[0]
    assert home.stats["rows_other_weeks"] == {"2024-01-15": 1}
    prev = ingest.ingest_week("outcomes", [p], tenant=TENANT, now=NOW.replace(month=2), week="2024-01-15",
                              first_week=first)
    assert reasons_by_row(prev) == {5: "not_allowed"} and len(prev.valid) == 0  # judged in the week it closed
    assert ingest.reads_weeks("outcomes", dt.date(2024, 1, 24))[-2:] == ("2024-01-15", "2024-01-22")
    assert len(ingest.reads_weeks("outcomes", dt.date(2024, 1, 24))) == schemas.LATE_WEEKS + 1
    assert ingest.reads_weeks("snapshots", dt.date(2024, 1, 24)) == ("2024-01-22",)
    names = [f"outcomes-{d}.csv" for d in ("2024-01-14", "2024-01-15", "2024-03-17", "2024-03-18")]
    assert [f.name for f in ingest.files_for_week("outcomes", [Path(n) for n in names], "2024-01-15")] == names[1:3]
    assert ingest.files_for_week("snapshots", [Path("snapshots-2024-01-21.csv"), Path("snapshots-2024-01-22.csv")],
                                 "2024-01-15") == [Path("snapshots-2024-01-21.csv")]


# --------------------------------------------------------------------------- item 17: one unreadable file


def test_one_unreadable_file_does_not_drop_the_week(tmp_path: Path):
    good = tmp_path / "snapshots-2024-01-08.parquet"
    make_snapshots(4).to_parquet(good)
    broken = tmp_path / "snapshots-2024-01-10.parquet"
    broken.write_bytes(b"PAR1 not really parquet")
    res = ingest.ingest_week("snapshots", [good, broken], tenant=TENANT, now=NOW, week="2024-01-08")
    assert len(res.valid) == 4 and res.stats["rows_read"] == 4 and res.stats["rows_quarantined"] == 0
    assert [u["source_file"] for u in res.stats["unreadable_files"]] == [broken.name]
    assert res.quarantine[["source_file", "row_number", "reason_code"]].values.tolist() == [
        [broken.name, -1, "unreadable_file"]]
    assert "not a readable parquet file" in res.quarantine["reason"].iloc[0]
    assert list(res.quarantine.columns) == QUARANTINE_COLUMNS
    with pytest.raises(ContractError) as err:
        ingest.ingest_week("snapshots", [broken], tenant=TENANT, now=NOW, week="2024-01-08")
    assert broken.name in str(err.value)
    # no file at all is not an error: an empty week
    assert len(ingest.ingest_week("snapshots", [], tenant=TENANT, now=NOW, week="2024-01-08").valid) == 0


# --------------------------------------------------------------------------- issue 11: one history, files read once


def test_a_history_reads_each_file_once_with_the_same_results(tmp_path):
    """The weeks of one history share a cache: an outcomes file feeding several weeks is read and checked once, and
    every week's valid rows, quarantine and stats are those of an ingestion without the cache."""
    import os

    from riskml_assets.core import contract, simulator
    from riskml_assets.core.ingest import files_for_week, ingest_week

    sim = simulator.simulate_tenant(simulator.TenantSpec("cacheco", 10.0, 5), weeks=6)
    files = simulator.write_tenant(sim, tmp_path / "in", tmp_path / "oracle")
    outcomes = sorted(p for p in files if p.name.startswith("outcomes-"))
    # a bad row in the first file: its quarantine must still appear in its own week only
    first = pd.read_parquet(outcomes[0])
    bad = first.head(1).copy()
    bad["opportunity_id"], bad["closed_at"] = "bad-x", pd.Timestamp("2029-06-01")  # after the file's date
    pd.concat([first, bad], ignore_index=True).to_parquet(outcomes[0])
    weeks = sorted({contract.week_start(contract.parse_incoming_name(p.name)[1]).isoformat() for p in outcomes})
    now = dt.datetime(2030, 1, 1)
    cache, reads, quarantined = {}, 0, 0
    for w in weeks:
        paths = files_for_week("outcomes", outcomes, w)
        reads += len(paths)
        plain = ingest_week("outcomes", paths, tenant="cacheco", now=now, week=w)
        cached = ingest_week("outcomes", paths, tenant="cacheco", now=now, week=w, cache=cache)
        pd.testing.assert_frame_equal(plain.valid.reset_index(drop=True), cached.valid.reset_index(drop=True))
        pd.testing.assert_frame_equal(plain.quarantine.reset_index(drop=True), cached.quarantine.reset_index(drop=True))
        assert plain.stats == cached.stats
        quarantined += len(cached.quarantine)
    assert quarantined >= 1  # the bad row, in one week
    assert len(cache) == len(outcomes) < reads  # every file checked once although several weeks read it
    # a file changed since: read again
    st = outcomes[-1].stat()
    os.utime(outcomes[-1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    ingest_week("outcomes", files_for_week("outcomes", outcomes, weeks[-1]), tenant="cacheco", now=now,
                week=weeks[-1], cache=cache)
    assert len(cache) == len(outcomes) + 1
