"""Bad input through the real ingestion asset: clear messages, quarantine rows with reasons, no valid row lost."""
import dagster as dg
import pandas as pd
import pytest

from riskml_assets.core import simulator

from .conftest import check_results


@pytest.fixture(scope="module")
def week_files(platform):
    sim = simulator.simulate_tenant(simulator.TenantSpec("badco", 15.0, 9), weeks=2)
    files = simulator.write_tenant(sim, platform.incoming, platform.oracle)
    return platform, sorted(p for p in files if p.name.startswith("snapshots-"))[-1]


def test_bad_rows_are_quarantined_with_reasons_and_every_valid_row_kept(week_files):
    platform, snap = week_files
    good = pd.read_parquet(snap)
    bad = good.head(6).copy()
    bad["opportunity_id"] = [f"bad-{i}" for i in range(6)]
    bad = bad.astype({"deal_value": object, "probability": object, "snapshot_date": object})
    bad.loc[bad.index[0], "deal_value"] = "abc"                   # wrong type
    bad.loc[bad.index[1], "probability"] = float("nan")           # NaN
    bad.loc[bad.index[2], "probability"] = 150.0                  # out of range
    bad.loc[bad.index[3], "snapshot_date"] = pd.Timestamp("2099-01-02")  # future (and outside the week)
    bad.loc[bad.index[4], "deal_value"] = -5.0                    # negative value
    bad.loc[bad.index[5], "opportunity_id"] = "../../etc/passwd"  # hostile id: kept as data, never a path
    mixed = pd.concat([good.astype(object), bad], ignore_index=True)
    csv = snap.with_suffix(".csv")
    snap.unlink()
    mixed.to_csv(csv, index=False)
    week = platform.weeks("badco")[-1]
    res = platform.run("ingest_job", "badco", week)
    valid = platform.load("risk_snapshots", "badco", week)
    q = pd.read_parquet(platform.root / "quarantine" / "snapshots" / "badco" / f"{week}.parquet")
    assert set(valid["opportunity_id"]) == set(good["opportunity_id"]) | {"../../etc/passwd"}
    assert len(valid) + len(q) == len(mixed)
    by_id = q.set_index(q["raw"].str.extract(r'"opportunity_id": ?"([^"]+)"')[0])["reason_code"].to_dict()
    assert by_id == {"bad-0": "bad_type", "bad-1": "missing_value", "bad-2": "out_of_range",
                     "bad-3": "future_date", "bad-4": "out_of_range"}
    assert all("probability" in r or "deal_value" in r or "snapshot_date" in r for r in q["reason"])
    # 5 of ~N rows quarantined is below the 5% gate; the metadata names the reasons
    mat = [e for e in res.get_asset_materialization_events() if e.asset_key.to_user_string() == "risk_snapshots"][0]
    md = mat.step_materialization_data.materialization.metadata
    assert md["rows_quarantined"].value == 5 and "out_of_range" in md["quarantine_reasons"].value
    assert check_results(res)["risk_snapshots_future_dates"] is False  # a future date is a blocking gate


def test_unreadable_file_fails_naming_the_file(platform):
    sim = simulator.simulate_tenant(simulator.TenantSpec("brokenco", 15.0, 10), weeks=1)
    files = simulator.write_tenant(sim, platform.incoming, platform.oracle)
    snap = [p for p in files if p.name.startswith("snapshots-")][0]
    snap.write_bytes(b"PAR1 this is not a parquet file")
    week = platform.weeks("brokenco")[-1]
    res = platform.run("ingest_job", "brokenco", week)
    assert not res.success
    failure = [e for e in res.all_events if e.event_type_value == "STEP_FAILURE"
               and e.step_key == "risk_snapshots"][0]
    assert snap.name in failure.event_specific_data.error.message or snap.name in str(failure.event_specific_data)
    q = pd.read_parquet(platform.root / "quarantine" / "snapshots" / "brokenco" / f"{week}.parquet")
    assert q["reason_code"].tolist() == ["unreadable_file"] and snap.name in q["source_file"][0]
    # the other kinds of the same week are unaffected
    assert dg.AssetKey("opportunity_outcomes") in {e.asset_key for e in res.get_asset_materialization_events()} or \
        not any(p.name.startswith("outcomes-") for p in files)


# --------------------------------------------------------------------------- issue 9: items 1, 2, 16, 17


def _snapshots(n: int, day: str, prefix: str = "opp") -> pd.DataFrame:
    return pd.DataFrame({
        "opportunity_id": [f"{prefix}-{k}" for k in range(n)],
        "snapshot_date": pd.Timestamp(day), "deal_value": 1000.0, "currency": "EUR", "probability": 40.0,
        "stage": "proposal", "close_date": pd.Timestamp(day) + pd.Timedelta(days=60),
        "last_activity_at": pd.Timestamp(day) - pd.Timedelta(days=2), "owner_id": "u1", "account_id": "a1",
    })


def _write(platform, tenant: str, name: str, df: pd.DataFrame):
    d = platform.incoming / tenant
    d.mkdir(parents=True, exist_ok=True)
    df.to_parquet(d / name)
    return d / name


def test_history_from_2015_is_ingested_and_out_of_range_files_are_refused_with_a_reason(platform, tmp_path):
    from types import SimpleNamespace

    from riskml_assets.cli import tenant_weeks

    t = "oldco"
    _write(platform, t, "snapshots-2015-03-06.parquet", _snapshots(5, "2015-03-06"))
    # out-of-range files in a separate incoming folder (the shared one is also watched by sensor tests)
    other = SimpleNamespace(incoming=tmp_path / "incoming")
    _write(other, t, "snapshots-2015-03-06.parquet", _snapshots(5, "2015-03-06"))
    _write(other, t, "snapshots-2009-06-05.parquet", _snapshots(2, "2009-06-05"))  # before the first week
    _write(other, t, "snapshots-2099-01-02.parquet", _snapshots(2, "2099-01-02"))  # the future
    weeks, refused = tenant_weeks(other.incoming)
    assert weeks[t] == ["2015-03-02"]
    why = {p.name: r for p, r in refused if p.parent.name == t}
    assert set(why) == {"snapshots-2009-06-05.parquet", "snapshots-2099-01-02.parquet"}
    assert "before the first week 2010-01-04" in why["snapshots-2009-06-05.parquet"]
    assert "in the future" in why["snapshots-2099-01-02.parquet"]
    res = platform.run("ingest_job", t, "2015-03-02")  # before the fix: DagsterUnknownPartitionError
    assert res.success
    assert len(platform.load("risk_snapshots", t, "2015-03-02")) == 5


def test_outcomes_exported_on_monday_feed_the_week_they_closed(platform):
    t = "mondayco"
    _write(platform, t, "snapshots-2016-05-06.parquet", _snapshots(6, "2016-05-06"))
    _write(platform, t, "snapshots-2016-05-13.parquet", _snapshots(6, "2016-05-13"))
    closes = pd.DataFrame({"opportunity_id": [f"opp-{k}" for k in range(5)] + ["x-0"],
                           "outcome": ["won", "lost", "won", "lost", "won", "lost"],
                           "closed_at": pd.to_datetime(["2016-05-02", "2016-05-03", "2016-05-05", "2016-05-07",
                                                        "2016-05-08", "2016-05-09"]),
                           "actual_revenue": [1.0, 0.0, 3.0, 0.0, 5.0, 0.0]})
    _write(platform, t, "outcomes-2016-05-09.parquet", closes)  # Monday export: last 7 days + today
    r1 = platform.run("ingest_job", t, "2016-05-02")
    r2 = platform.run("ingest_job", t, "2016-05-09")
    assert r1.success and r2.success
    w1, w2 = (platform.load("opportunity_outcomes", t, w) for w in ("2016-05-02", "2016-05-09"))
    assert sorted(w1["opportunity_id"]) == [f"opp-{k}" for k in range(5)] and w2["opportunity_id"].tolist() == ["x-0"]
    assert not (platform.root / "quarantine" / "outcomes" / t).exists()  # before the fix: 5 of 6 rows quarantined
    assert check_results(r1)["opportunity_outcomes_schema"] and check_results(r2)["opportunity_outcomes_schema"]


def test_an_unreadable_file_is_recorded_the_others_ingested_and_the_schedule_sees_it(platform):
    from riskml_assets.sensors import ingestion_blocked

    t, week = "halfbroken", "2016-05-02"
    _write(platform, t, "snapshots-2016-05-04.parquet", _snapshots(7, "2016-05-04"))
    broken = platform.incoming / t / "snapshots-2016-05-06.csv"
    broken.write_bytes(b"opportunity_id,snapshot_date\n\xff\xfe\x00 not utf-8\n")
    res = platform.run("ingest_job", t, week)
    assert len(platform.load("risk_snapshots", t, week)) == 7         # the readable file is ingested
    checks = check_results(res)
    assert checks["risk_snapshots_files_readable"] is False and checks["risk_snapshots_schema"] is True
    q = pd.read_parquet(platform.root / "quarantine" / "snapshots" / t / f"{week}.parquet")
    assert q[["source_file", "row_number", "reason_code"]].values.tolist() == [[broken.name, -1, "unreadable_file"]]
    assert "not UTF-8" in q["reason"].iloc[0]
    why = ingestion_blocked(platform.instance, t, week)  # what the weekly schedule asks before training
    assert why is not None and "risk_snapshots_files_readable" in why


def test_a_hostile_tenant_partition_key_is_refused_before_any_path_is_built(platform):
    from riskml_assets.core.contract import ContractError
    from riskml_assets.partitions import partition_key

    with pytest.raises(ContractError, match="invalid tenant id"):
        partition_key("../evil", "2016-05-02")
    platform.instance.add_dynamic_partitions("tenant", ["../evil"])
    try:
        res = platform.defs.resolve_job_def("ingest_job").execute_in_process(
            partition_key="../evil|2016-05-02", instance=platform.instance, raise_on_error=False)
    finally:  # the instance is shared by the session: leave no hostile tenant behind
        platform.instance.delete_dynamic_partition("tenant", "../evil")
    assert not res.success
    errors = [e.event_specific_data.error.to_string() for e in res.all_events if e.event_type_value == "STEP_FAILURE"]
    assert errors and all("invalid tenant id '../evil'" in m for m in errors)
    assert not (platform.root / "evil").exists() and not (platform.root / "quarantine" / "evil").exists()
    assert not (platform.root / "assets" / "evil").exists()
    assert not list(platform.root.parent.glob("evil*"))


# --------------------------------------------------------------------------- issue 11 item 4: a history in one run


def test_a_history_run_keeps_per_week_frames_quarantine_and_gate_results(platform):
    """One run over a range of weeks (single-run backfill policy): each week is stored, quarantined and gated on its
    own; a week whose only snapshots file is unreadable fails its own gates (and the run), the others pass."""
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from riskml_assets.checks import partition_checks

    sim = simulator.simulate_tenant(simulator.TenantSpec("rangeco", 12.0, 21), weeks=3)
    files = simulator.write_tenant(sim, platform.incoming, platform.oracle)
    snaps = sorted(p for p in files if p.name.startswith("snapshots-"))
    weeks = platform.weeks("rangeco")
    assert len(weeks) == 3 and len(snaps) >= 3
    first = pd.read_parquet(snaps[0])
    bad = first.head(1).astype({"probability": object})
    bad["opportunity_id"], bad["probability"] = "bad-1", 150.0  # one row out of range in the first week
    pd.concat([first, bad], ignore_index=True).to_parquet(snaps[0])
    snaps[-1].write_bytes(b"PAR1 not parquet")                   # the last week: nothing readable
    platform.add_tenant("rangeco")
    res = platform.defs.resolve_job_def("ingest_job").execute_in_process(
        instance=platform.instance, raise_on_error=False,
        tags={ASSET_PARTITION_RANGE_START_TAG: f"rangeco|{weeks[0]}", ASSET_PARTITION_RANGE_END_TAG: f"rangeco|{weeks[-1]}"},
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    assert not res.success  # the last week's blocking gate failed
    mats = {(e.asset_key.to_user_string(), e.partition) for e in res.get_asset_materialization_events()}
    assert {("risk_snapshots", f"rangeco|{w}") for w in weeks} <= mats
    # frames per week: the first keeps every valid row and quarantines the bad one; the last is empty
    w0 = platform.load("risk_snapshots", "rangeco", weeks[0])
    assert len(w0) == len(first) and "bad-1" not in set(w0["opportunity_id"])
    assert len(platform.load("risk_snapshots", "rangeco", weeks[1])) > 0
    assert len(platform.load("risk_snapshots", "rangeco", weeks[-1])) == 0
    q0 = pd.read_parquet(platform.root / "quarantine" / "snapshots" / "rangeco" / f"{weeks[0]}.parquet")
    assert q0["raw"].str.contains("bad-1").tolist() == [True]
    q2 = pd.read_parquet(platform.root / "quarantine" / "snapshots" / "rangeco" / f"{weeks[-1]}.parquet")
    assert q2["reason_code"].tolist() == ["unreadable_file"] and snaps[-1].name in q2["source_file"][0]
    assert not (platform.root / "quarantine" / "snapshots" / "rangeco" / f"{weeks[1]}.parquet").exists()
    # gate results per week, stored with the week's own partition key
    keys = [dg.AssetCheckKey(dg.AssetKey("risk_snapshots"), n)
            for n in ("risk_snapshots_files_readable", "risk_snapshots_not_empty", "risk_snapshots_schema")]
    status = {w: {k.name: r.status for k, r in partition_checks(platform.instance, keys, f"rangeco|{w}").items()}
              for w in weeks}
    assert status[weeks[0]] == status[weeks[1]] == {k.name: "SUCCEEDED" for k in keys}
    assert status[weeks[-1]]["risk_snapshots_files_readable"] == "FAILED"
    assert status[weeks[-1]]["risk_snapshots_not_empty"] == "FAILED"
    readable = partition_checks(platform.instance, keys[:1], f"rangeco|{weeks[-1]}")[keys[0]]
    assert snaps[-1].name in readable.evaluation.description
    # per-week materialization metadata (rows read), not one copy for the whole range
    rows = {e.partition: e.materialization.metadata["rows_read"].value for e in res.get_asset_materialization_events()
            if e.asset_key == dg.AssetKey("risk_snapshots")}
    assert rows[f"rangeco|{weeks[0]}"] == len(first) + 1 and rows[f"rangeco|{weeks[1]}"] != rows[f"rangeco|{weeks[0]}"]
    # the weeks are ingested and their gate results emitted oldest first
    stored = [e.partition for e in res.get_asset_check_evaluations()
              if e.asset_check_key == keys[0]]
    assert stored == [f"rangeco|{w}" for w in weeks]
