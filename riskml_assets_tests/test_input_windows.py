"""Lookback windows on a real instance. Issue 10 item 8: a window that reaches before a tenant's history misses
partitions as a matter of course; the run says so once per input (how many, which span), not with one warning per
missing partition. Issue 11 item 1: a window is read in one call per input, with no event record per loaded
partition -- a run's records do not grow with the history."""
import re

import dagster as dg
import pytest

from riskml_assets.core import simulator
from riskml_assets.partitions import LOOKBACK_WEEKS

TENANT = "windowco"


@pytest.fixture(scope="module")
def four_weeks(tmp_path_factory):
    """A tenant with four ingested weeks (real ingest runs) on a real instance; every gate warns, so runs for
    different weeks take the same steps whatever a small window's row counts are."""
    from .conftest import Platform
    from riskml_assets.core.gates import default_gates

    root = tmp_path_factory.mktemp("windows")
    (root / "dagster").mkdir()
    (root / "gates.yaml").write_text("\n".join(f"{g}: {{action: warn}}" for g in default_gates()) + "\n")
    with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
        p = Platform(root, instance)
        simulator.write_tenant(simulator.simulate_tenant(simulator.TenantSpec(TENANT, 6.0, 31), weeks=4),
                               p.incoming, p.oracle)
        p.ingest_all(TENANT)
        yield p


def test_missing_lookback_partitions_are_said_once_per_input_with_their_count(four_weeks):
    small = four_weeks
    week = small.weeks(TENANT)[-1]
    pk = f"{TENANT}|{week}"
    res = small.defs.resolve_job_def("train_job").execute_in_process(
        partition_key=pk, instance=small.instance, raise_on_error=False,
        asset_selection=[dg.AssetKey("feature_manifest"), dg.AssetKey("training_examples")],
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    messages = [(e.step_key, e.user_message) for e in small.instance.all_logs(res.run_id) if e.user_message]
    assert not [m for _, m in messages if "Couldn't load partition" in m]
    summaries = [(step, m) for step, m in messages if "partitions of the window are not materialized" in m]
    # the windowed inputs of the two steps: feature_manifest <- risk_snapshots; training_examples <- risk_snapshots,
    # opportunity_outcomes, activity_events -- each said exactly once, with the count of its missing partitions
    got = sorted((step, re.match(r"input (\w+): (\d+) of (\d+)", m).groups()) for step, m in summaries)
    expected = []
    for step, inputs in (("feature_manifest", ["risk_snapshots"]),
                         ("training_examples", ["activity_events", "opportunity_outcomes", "risk_snapshots"])):
        for asset in inputs:
            have = [k for k in small.instance.get_materialized_partitions(dg.AssetKey(asset))
                    if k.startswith(f"{TENANT}|") and k.split("|")[1] <= week]
            expected.append((step, (asset, str(LOOKBACK_WEEKS - len(have)), str(LOOKBACK_WEEKS))))
    assert got == sorted(expected)
    assert all(int(n) >= LOOKBACK_WEEKS - 5 for _, (_, n, _) in got)  # 4-5 weeks of history in a 78-week window
    # an input whose partitions all exist says nothing: a week of the window is loaded, not reported
    assert all(f"{TENANT}|" in m and week not in m.split("(")[1].split(")")[0] for _, m in summaries)


def _records_by_type(instance, run_id) -> dict[str, int]:
    from collections import Counter

    conn = instance.get_records_for_run(run_id, limit=100_000)
    return dict(Counter(r.event_log_entry.dagster_event.event_type_value if r.event_log_entry.dagster_event
                        else "log" for r in conn.records))


def test_event_records_of_a_training_run_do_not_grow_with_the_loaded_partitions(four_weeks):
    """Issue 11: a lookback window is read in one call per input, with no event record per loaded partition
    (before issue 10 a 78-week window wrote ~770 of a training run's ~980 records). The same steps run for the
    second week (2 partitions of each input loaded) and the fourth (4 loaded): the records are the same, type by
    type, and each windowed input is one LOADED_INPUT."""
    p = four_weeks
    weeks = p.weeks(TENANT)
    assert len(weeks) == 4
    steps = [dg.AssetKey("feature_manifest"), dg.AssetKey("training_examples")]
    counts, loaded = {}, {}
    for week in (weeks[1], weeks[-1]):
        res = p.defs.resolve_job_def("train_job").execute_in_process(
            partition_key=f"{TENANT}|{week}", instance=p.instance, raise_on_error=False, asset_selection=steps,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
        assert res.success
        counts[week] = _records_by_type(p.instance, res.run_id)
        loaded[week] = len([k for k in p.instance.get_materialized_partitions(dg.AssetKey("risk_snapshots"))
                            if k.startswith(f"{TENANT}|") and k.split("|")[1] <= week])
    short, long = counts[weeks[1]], counts[weeks[-1]]
    assert (loaded[weeks[1]], loaded[weeks[-1]]) == (2, 4)
    assert short == long, f"records by type, 2 loaded partitions: {short}; 4 loaded: {long}"
    # feature_manifest <- risk_snapshots; training_examples <- risk_snapshots, opportunity_outcomes,
    # activity_events (windows) and feature_manifest: one load each
    assert long["LOADED_INPUT"] == 5
    assert sum(long.values()) < 80



def test_snapshots_before_and_a_mixed_polars_window_get_the_manifest_the_pandas_window_gave():
    """``feature_manifest`` reads its window as polars (issue 11) and cuts it with ``F.snapshots_before``, the rule
    ``build_training_examples`` uses: the same rows from a pandas or polars frame (the end excluded); a window
    whose extra columns mix numbers and text, or ints and floats, gets the manifest decisions the pandas window
    (pandas concat and filter, before this change) gave."""
    import pandas as pd
    import polars as pl

    from riskml_assets.core import features as F

    end = "2026-11-23T00:00:00"
    dates = [pd.Timestamp(x) for x in ("2026-11-09", "2026-11-16", "2026-11-22 23:59", "2026-11-23", "2026-11-30")]
    frame = pd.DataFrame({"opportunity_id": list("abcde"), "snapshot_date": dates})
    for snaps in (frame, pl.from_pandas(frame)):
        got = F.snapshots_before(snaps, end)
        assert isinstance(got, pl.DataFrame) and got["opportunity_id"].to_list() == ["a", "b", "c"]
    assert F.snapshots_before(pl.DataFrame(), end).is_empty()

    n = 60
    week1 = pd.DataFrame({"opportunity_id": [f"o{i}" for i in range(n)], "stage": ["prospecting"] * n,
                          "snapshot_date": [pd.Timestamp("2026-11-09")] * n,
                          "region_score": [float(i % 7) for i in range(n)], "seats": [i % 9 for i in range(n)]})
    week2 = week1.assign(snapshot_date=pd.Timestamp("2026-11-16"),
                         region_score=[str(i % 7) if i % 10 else "n/a" for i in range(n)],
                         seats=[float(i % 9) + 0.5 for i in range(n)])
    window = F.concat_frames({"t|2026-11-09": pl.from_pandas(week1), "t|2026-11-16": pl.from_pandas(week2)})
    assert window.height == 2 * n and window.schema["region_score"] == pl.String
    old = pd.concat([week1, week2], ignore_index=True)
    decided = {}
    for kind, snaps in (("polars", F.snapshots_before(window, end)),
                        ("pandas", old[old["snapshot_date"] < pd.Timestamp(end)].reset_index(drop=True))):
        report: dict = {}
        manifest = F.build_manifest({}, (), snapshots=snaps, tenant_config=F.parse_tenant_config({}), report=report)
        decided[kind] = {d["column"]: (name, d["kind"], d["levels"]) for name, d in report["extra_features"].items()}
        assert all(name in manifest for name, _, _ in decided[kind].values())
    assert decided["polars"] == decided["pandas"]
    assert decided["polars"]["region_score"][1:] == ("categorical", 15)
    assert decided["polars"]["seats"][1] == "numeric"
