"""The catalogue of bad inputs: one table, one case per kind of bad input, through the real ingest API.

Every case mixes clean rows and bad rows (or a clean file and a bad file) and asserts
1. the exact reason code of each quarantined row (by its row number in the file), and
2. valid rows in = valid rows out: every clean row survives, nothing else is quarantined, and the
   bad-looking values the contract accepts (``|``, formula text, unicode, ``WON``, ``1e3`` ...) are kept,
   normalised where the contract says so.

``python -m riskml_assets_tests.core.test_bad_inputs`` prints the table of kinds (kind, file kind, reason code).
"""
from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest

from riskml_assets.core import contract, ingest, schemas

NOW = dt.datetime(2024, 1, 15, 12, 0)
WEEK = "2024-01-08"
TENANT = "acme"
N_CLEAN = 5
KEPT = None  # expected "reason" of a bad-looking row the contract accepts

TEMPLATES: dict[str, dict[str, str]] = {
    "snapshots": {"opportunity_id": "", "snapshot_date": "2024-01-10", "deal_value": "1000", "currency": "EUR",
                  "probability": "40", "stage": "proposal", "close_date": "2024-03-01",
                  "last_activity_at": "2024-01-08T10:00:00", "owner_id": "u1", "account_id": "a1"},
    "outcomes": {"opportunity_id": "", "outcome": "won", "closed_at": "2024-01-10", "actual_revenue": "500"},
    "activities": {"opportunity_id": "", "occurred_at": "2024-01-09T10:00:00", "activity_type": "call"},
    "interactions": {"user_id": "user-1", "opportunity_id": "", "action_id": "act-1",
                     "shown_at": "2024-01-09T10:00:00", "relevance": "1"},
}


@dataclass
class Case:
    name: str
    kind: str
    #: bad rows: overrides of the template (the id defaults to bad-<j>); a value may be any Python object (parquet)
    rows: list[dict] = field(default_factory=list)
    #: expected reason code of each bad row, KEPT when the row is valid
    expect: list = field(default_factory=list)
    fmt: str = "csv"
    #: a whole bad file instead of rows: bytes, or a function of the clean CSV text -> bytes
    file: bytes | Callable[[str], bytes] | None = None
    #: for a whole-file case: the code of every row of that file ("unreadable_file": the file is skipped)
    file_code: str | None = None
    #: extra assertion on the valid frame
    check: Callable[[pd.DataFrame], bool] | None = None

    @property
    def code(self) -> str:
        if self.file is not None:
            return self.file_code or "(kept)"
        codes = sorted({c or "(kept)" for c in self.expect})
        return ", ".join(codes)


def r(**kw) -> dict:
    return kw


S, O, A, I = "snapshots", "outcomes", "activities", "interactions"
HYPERLINK = '=HYPERLINK("http://evil.example/x","click")'

CASES: list[Case] = [
    # ------------------------------------------------------------------ snapshots: numbers
    Case("deal_value not a number", S, [r(deal_value="abc")], ["bad_type"]),
    Case("deal_value empty", S, [r(deal_value="")], ["missing_value"]),
    Case("deal_value 'NaN' text", S, [r(deal_value="NaN")], ["missing_value"]),
    Case("deal_value negative", S, [r(deal_value="-5")], ["out_of_range"]),
    Case("deal_value zero", S, [r(deal_value="0")], ["out_of_range"]),
    Case("deal_value +Inf text", S, [r(deal_value="inf")], ["non_finite"]),
    Case("deal_value -Inf text", S, [r(deal_value="-Infinity")], ["non_finite"]),
    Case("deal_value scientific notation", S, [r(deal_value="1.5e3")], [KEPT],
         check=lambda v: 1500.0 in set(v["deal_value"])),
    Case("deal_value thousands separator", S, [r(deal_value="1,000")], ["bad_type"]),
    Case("deal_value decimal comma", S, [r(deal_value="1000,50")], ["bad_type"]),
    Case("deal_value currency symbol", S, [r(deal_value="€1000")], ["bad_type"]),
    Case("deal_value hex literal", S, [r(deal_value="0x10")], ["bad_type"]),
    Case("deal_value padded with spaces", S, [r(deal_value="  2000 ")], [KEPT],
         check=lambda v: 2000.0 in set(v["deal_value"])),
    Case("probability 101", S, [r(probability="101")], ["out_of_range"]),
    Case("probability negative", S, [r(probability="-1")], ["out_of_range"]),
    Case("probability with percent sign", S, [r(probability="40%")], ["bad_type"]),
    Case("probability bounds 0 and 100", S, [r(probability="0"), r(probability="100")], [KEPT, KEPT]),
    Case("risk_score above 1 (optional column)", S, [r(risk_score="1.5")], ["out_of_range"]),
    Case("risk_score not a number (optional column)", S, [r(risk_score="high")], ["bad_type"]),
    Case("revenue_at_risk negative (optional column)", S, [r(revenue_at_risk="-1")], ["out_of_range"]),
    Case("NaN in parquet", S, [r(deal_value=float("nan"))], ["missing_value"], fmt="parquet"),
    Case("+Inf in parquet", S, [r(deal_value=float("inf"))], ["non_finite"], fmt="parquet"),
    Case("-Inf in parquet", S, [r(probability=float("-inf"))], ["non_finite"], fmt="parquet"),
    Case("wrong type in parquet (text in a number column)", S, [r(deal_value="12k")], ["bad_type"], fmt="parquet"),
    Case("integer ids in parquet", S, [r(opportunity_id=12345)], [KEPT], fmt="parquet",
         check=lambda v: "12345" in set(v["opportunity_id"])),
    # ------------------------------------------------------------------ snapshots: text
    Case("currency lower case", S, [r(currency="usd")], [KEPT], check=lambda v: set(v["currency"]) == {"EUR", "USD"}),
    Case("currency unknown code", S, [r(currency="XYZ")], ["not_allowed"]),
    Case("currency symbol", S, [r(currency="€")], ["bad_format"]),
    Case("currency four letters", S, [r(currency="EURO")], ["bad_format"]),
    Case("stage empty", S, [r(stage="")], ["missing_value"]),
    Case("whitespace-only id", S, [r(opportunity_id="   ")], ["missing_value"]),
    Case("whitespace-only owner", S, [r(owner_id="\u00a0 ")], ["missing_value"]),
    Case("control character (BEL) in id", S, [r(opportunity_id="opp\x07x")], ["bad_string"]),
    Case("NUL byte in a CSV value", S, [r(account_id="acc\x00ount")], ["bad_string"]),
    Case("newline inside a quoted value", S, [r(stage="pro\nposal")], ["bad_string"]),
    Case("tab inside a value", S, [r(owner_id="u\t1")], ["bad_string"]),
    Case("over-long string (300 characters)", S, [r(account_id="a" * 300)], ["bad_string"]),
    Case("formula cell =HYPERLINK(...)", S, [r(account_id=HYPERLINK)], [KEPT],
         check=lambda v: HYPERLINK in set(v["account_id"])),
    Case("formula cell with + and @ prefixes", S, [r(owner_id="+cmd|' /C calc'!A0"), r(owner_id="@SUM(A1)")],
         [KEPT, KEPT], check=lambda v: "+cmd|' /C calc'!A0" in set(v["owner_id"])),
    Case("| in strings", S, [r(opportunity_id="opp|1", stage="nego|tiation")], [KEPT],
         check=lambda v: "opp|1" in set(v["opportunity_id"]) and "nego|tiation" in set(v["stage"])),
    Case("unicode (accents, CJK, emoji, RTL)", S, [r(account_id="Société Générale 株式会社 🚀 שלום")], [KEPT],
         check=lambda v: "Société Générale 株式会社 🚀 שלום" in set(v["account_id"])),
    Case("hostile path-like id", S, [r(opportunity_id="../../etc/passwd")], [KEPT],
         check=lambda v: "../../etc/passwd" in set(v["opportunity_id"])),
    # ------------------------------------------------------------------ snapshots: dates
    Case("impossible date", S, [r(snapshot_date="2024-02-30")], ["bad_type"]),
    Case("mixed date formats (US style among ISO)", S, [r(snapshot_date="01/10/2024")], ["bad_type"]),
    Case("mixed date formats (day-first with dots)", S, [r(close_date="10.01.2024")], ["bad_type"]),
    Case("timezone suffix +02:00 on a date", S, [r(snapshot_date="2024-01-10T23:30:00+02:00")], [KEPT],
         check=lambda v: (v["snapshot_date"] == pd.Timestamp("2024-01-10")).all()),
    Case("timezone suffix Z on a date-time", S, [r(last_activity_at="2024-01-08T10:00:00Z")], [KEPT]),
    Case("timezone offset crossing midnight", S,
         [r(snapshot_date="2024-01-10T23:30:00-05:00", last_activity_at="2024-01-10T20:00:00-05:00")], [KEPT],
         check=lambda v: pd.Timestamp("2024-01-11") in set(v["snapshot_date"])),
    Case("future snapshot date", S, [r(snapshot_date="2024-01-16", last_activity_at="2024-01-09")], ["future_date"]),
    Case("snapshot date outside the week", S, [r(snapshot_date="2024-01-05", last_activity_at="2024-01-04")],
         ["outside_week"]),
    Case("date out of the representable range (1600)", S, [r(close_date="1600-01-01")], ["bad_type"]),
    Case("date out of the representable range (9999)", S, [r(close_date="9999-12-31")], ["bad_type"]),
    Case("last activity after the snapshot", S, [r(last_activity_at="2024-01-11T09:00:00")],
         ["activity_after_snapshot"]),
    Case("last activity empty (allowed)", S, [r(last_activity_at="")], [KEPT]),
    Case("a row of empty fields", S, [{k: "" for k in TEMPLATES[S]}], ["missing_value"]),
    Case("a short row (missing trailing fields)", S, [r(_short=3)], ["missing_value"]),
    # ------------------------------------------------------------------ snapshots: duplicates
    Case("duplicate key, exact copy", S, [r(opportunity_id="ok-0")], ["duplicate_exact"]),
    Case("duplicate key, conflicting values", S, [r(opportunity_id="dup", deal_value="10"),
                                                  r(opportunity_id="dup", deal_value="20")],
         ["duplicate_conflict", "duplicate_conflict"]),
    Case("same id on another snapshot date (not a duplicate)", S,
         [r(opportunity_id="ok-1", snapshot_date="2024-01-11")], [KEPT]),
    # ------------------------------------------------------------------ outcomes
    Case("outcome WON", O, [r(outcome="WON")], [KEPT], check=lambda v: set(v["outcome"]) == {"won"}),
    Case("outcome Won with spaces", O, [r(outcome=" Won ")], [KEPT], check=lambda v: set(v["outcome"]) == {"won"}),
    Case("outcome not allowed", O, [r(outcome="maybe"), r(outcome="1")], ["not_allowed", "not_allowed"]),
    Case("outcome empty", O, [r(outcome="")], ["missing_value"]),
    Case("actual_revenue negative", O, [r(actual_revenue="-1")], ["out_of_range"]),
    Case("closed_at in the future", O, [r(closed_at="2024-01-20")], ["future_date"]),
    Case("closed_at outside the week", O, [r(closed_at="2023-12-01")], ["outside_week"]),
    Case("closed_at with a time of day", O, [r(closed_at="2024-01-10T15:45:00")], [KEPT],
         check=lambda v: (v["closed_at"] == pd.Timestamp("2024-01-10")).all()),
    Case("mitigation_effectiveness above 1 (optional)", O, [r(mitigation_effectiveness="1.2")], ["out_of_range"]),
    Case("two outcomes for one opportunity (won then lost)", O, [r(opportunity_id="x", outcome="won"),
                                                                 r(opportunity_id="x", outcome="lost")],
         ["duplicate_conflict", "duplicate_conflict"]),
    Case("outcome sent twice (exact copy)", O, [r(opportunity_id="ok-2")], ["duplicate_exact"]),
    # ------------------------------------------------------------------ activities
    Case("occurred_at empty", A, [r(occurred_at="")], ["missing_value"]),
    Case("occurred_at not a date", A, [r(occurred_at="yesterday")], ["bad_type"]),
    Case("occurred_at in the future", A, [r(occurred_at="2024-01-15T13:00:00")], ["future_date"]),
    Case("unknown activity type (kept, lower-cased)", A, [r(activity_type=" Webinar ")], [KEPT],
         check=lambda v: "webinar" in set(v["activity_type"])),
    Case("activity sent twice", A, [r(opportunity_id="ok-3")], ["duplicate_exact"]),
    # ------------------------------------------------------------------ interactions
    Case("relevance 3", I, [r(relevance="3")], ["not_allowed"]),
    Case("relevance -1", I, [r(relevance="-1")], ["not_allowed"]),
    Case("relevance 1.5", I, [r(relevance="1.5")], ["not_allowed"]),
    Case("relevance text", I, [r(relevance="clicked")], ["bad_type"]),
    Case("relevance '2.0' (an integer written as float)", I, [r(relevance="2.0")], [KEPT],
         check=lambda v: v["relevance"].dtype == "int64" and 2 in set(v["relevance"])),
    Case("user_id empty", I, [r(user_id="")], ["missing_value"]),
    # ------------------------------------------------------------------ whole files
    Case("empty file (0 bytes)", S, file=b"", file_code="unreadable_file"),
    Case("only a newline", S, file=b"\n", file_code="unreadable_file"),
    Case("header only", S, file=lambda text: text.splitlines(keepends=True)[0].encode(), file_code=None),
    Case("wrong delimiter ';'", S, file=lambda text: text.replace(",", ";").encode(), file_code="missing_column"),
    Case("wrong delimiter tab", O, file=lambda text: text.replace(",", "\t").encode(), file_code="missing_column"),
    Case("UTF-8 BOM", S, file=lambda text: ("\ufeff" + text).encode(), file_code=None),
    Case("CRLF line endings", O, file=lambda text: text.replace("\n", "\r\n").encode(), file_code=None),
    Case("whitespace around header names", S,
         file=lambda text: (text[:text.index("\n")].replace(",", " , ") + text[text.index("\n"):]).encode(),
         file_code=None),
    Case("duplicated column", S,
         file=lambda text: "\n".join(ln + (",x" if i else ",stage") for i, ln in enumerate(text.splitlines())).encode(),
         file_code="duplicate_column"),
    Case("reserved column source_file", O,
         file=lambda text: "\n".join(ln + (",crm" if i else ",source_file")
                                     for i, ln in enumerate(text.splitlines())).encode(),
         file_code="reserved_column"),
    Case("missing required column", O,
         file=lambda text: "\n".join(",".join(ln.split(",")[:3]) for ln in text.splitlines()).encode(),
         file_code="missing_column"),
    Case("upper-case header names", A, file=lambda text: (text[:text.index("\n")].upper() + text[text.index("\n"):]).encode(),
         file_code="missing_column"),
    Case("not UTF-8 (latin-1)", S, file=lambda text: text.replace("u1", "Jos\xe9").encode("latin-1"),
         file_code="unreadable_file"),
    Case("ragged row (too many fields)", A, file=lambda text: (text + "bad-9,2024-01-09T10:00:00,call,extra\n").encode(),
         file_code="unreadable_file"),
    Case("corrupt parquet", I, file=b"PAR1\x00\x00garbage", file_code="unreadable_file"),
]


# =========================================================================== machinery


def clean_rows(kind: str) -> list[dict]:
    rows = []
    for i in range(N_CLEAN):
        row = dict(TEMPLATES[kind])
        row["opportunity_id"] = f"ok-{i}"
        rows.append(row)
    return rows


def bad_rows(case: Case) -> list[dict]:
    out = []
    for j, over in enumerate(case.rows):
        row = dict(TEMPLATES[case.kind])
        row["opportunity_id"] = f"bad-{j}"
        row.update({k: v for k, v in over.items() if not k.startswith("_")})
        out.append(row)
    return out


def csv_text(rows: list[dict], short: dict[int, int] | None = None) -> str:
    cols = list(dict.fromkeys(c for row in rows for c in row))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for i, row in enumerate(rows):
        vals = [row.get(c, "") for c in cols]
        if short and i in short:
            vals = vals[:short[i]]
        w.writerow(vals)
    return buf.getvalue()


def typed(kind: str, rows: list[dict]) -> pd.DataFrame:
    """Rows as a parquet-ready frame: template strings converted to their types, bad values as given."""
    df = pd.DataFrame(rows)
    for c in df.columns:
        parse = schemas.parse_kind(kind, c) if c in schemas.SCHEMAS[kind].columns else "text"
        to = {"float": float, "int": int, "date": pd.Timestamp, "datetime": pd.Timestamp}.get(parse)
        if to:
            df[c] = df[c].map(lambda x, to=to: _try(to, x))
        vals = df[c].tolist()
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vals) and any(
                isinstance(x, float) for x in vals):
            df[c] = df[c].astype("float64")
        elif all(isinstance(x, pd.Timestamp) for x in vals):
            df[c] = pd.to_datetime(df[c])
        elif any(isinstance(x, str) for x in vals):
            df[c] = df[c].map(lambda x: x if isinstance(x, str) or x is None else str(x)).astype(object)
        else:
            df[c] = df[c].astype(object) if df[c].dtype == object and not all(isinstance(x, int) for x in vals) \
                else df[c]
    return df


def _try(to, x):
    """x converted when it is template text of the column's type; any other value as given (the bad value)."""
    if not isinstance(x, str) or not x:
        return x
    try:
        return to(x)
    except ValueError:
        return x


def run_case(case: Case, tmp_path: Path) -> tuple[ingest.IngestResult, dict[int, str | None], int]:
    """Ingest the case; (result, {row number in the bad file: expected code}, valid rows expected)."""
    kind = case.kind
    clean = clean_rows(kind)
    ext = "parquet" if case.fmt == "parquet" or (isinstance(case.file, bytes) and case.file.startswith(b"PAR1")) \
        else "csv"
    if case.file is not None:
        good = tmp_path / f"{kind}-2024-01-12.csv"
        good.write_text(csv_text(clean), encoding="utf-8")
        bad = tmp_path / f"{kind}-2024-01-11.{ext}"
        other = [dict(row, opportunity_id=f"f-{i}") for i, row in enumerate(clean)]
        data = case.file if isinstance(case.file, bytes) else case.file(csv_text(other))
        bad.write_bytes(data)
        res = ingest.ingest_week(kind, [good, bad], tenant=TENANT, now=NOW, week=WEEK)
        if case.file_code == "unreadable_file":
            return res, {-1: "unreadable_file"}, N_CLEAN
        rows_in_bad = res.stats["files"][1]["rows_read"]
        if case.file_code is None:
            return res, {}, N_CLEAN + rows_in_bad
        return res, {i: case.file_code for i in range(rows_in_bad)}, N_CLEAN
    rows = clean + bad_rows(case)
    path = tmp_path / f"{kind}-2024-01-10.{ext}"
    if ext == "csv":
        short = {N_CLEAN + j: over["_short"] for j, over in enumerate(case.rows) if "_short" in over}
        path.write_text(csv_text(rows, short), encoding="utf-8")
    else:
        typed(kind, rows).to_parquet(path, index=False)
    res = ingest.ingest_files(kind, [path], tenant=TENANT, now=NOW, week=contract.week_bounds(WEEK))
    expected = {N_CLEAN + j: code for j, code in enumerate(case.expect) if code is not None}
    return res, expected, N_CLEAN + sum(code is None for code in case.expect)


def test_the_catalogue_has_at_least_60_distinct_kinds():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)) and len(names) >= 60
    for c in CASES:
        assert c.file is not None or len(c.rows) == len(c.expect) >= 1, c.name
        assert c.file_code is None or c.file_code in schemas.REASON_CODES, c.name
        assert all(e is None or e in schemas.REASON_CODES for e in c.expect), c.name
    assert {c.kind for c in CASES} == set(contract.FILE_KINDS)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path: Path):
    res, expected, n_valid = run_case(case, tmp_path)
    q = res.quarantine
    got = dict(zip(q["row_number"].tolist(), q["reason_code"].tolist()))
    if case.file is not None and case.file_code not in (None, "unreadable_file"):
        got = {row: code for row, code, f in zip(q["row_number"], q["reason_code"], q["source_file"])
               if f.endswith("2024-01-11.csv") or f.endswith("2024-01-11.parquet")}
        assert set(q["source_file"]) <= {f"{case.kind}-2024-01-11.csv"}  # the clean file loses nothing
    # 1. the exact reason code of every quarantined row, and nothing else quarantined
    assert got == expected, q[["source_file", "row_number", "reason_code", "reason"]].to_string()
    # 2. valid rows in = valid rows out
    assert len(res.valid) == n_valid
    assert {f"ok-{i}" for i in range(N_CLEAN)} <= set(res.valid["opportunity_id"])
    assert len(res.valid) + res.stats["rows_quarantined"] == res.stats["rows_read"]
    schemas.SCHEMAS[case.kind].validate(res.valid)
    # every reason names what failed, on one line
    assert all(isinstance(x, str) and x and "\n" not in x for x in q["reason"])
    if case.check is not None:
        assert case.check(res.valid), res.valid.to_string()


def kinds_table() -> pd.DataFrame:
    return pd.DataFrame([(c.name, c.kind, c.code) for c in CASES], columns=["kind of bad input", "file", "reason code"])


if __name__ == "__main__":  # pragma: no cover - prints the catalogue for the closing note
    print(kinds_table().to_markdown(index=False))
