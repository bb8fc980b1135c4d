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
