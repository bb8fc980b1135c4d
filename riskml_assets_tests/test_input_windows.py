"""Issue 10 item 8: a lookback window that reaches before a tenant's history misses partitions as a matter of
course; the run says so once per input (how many, which span), not with one warning per missing partition."""
import re

import dagster as dg
import pytest

from riskml_assets.core import simulator
from riskml_assets.partitions import LOOKBACK_WEEKS


@pytest.fixture()
def small(tmp_path):
    from .conftest import Platform

    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        p = Platform(tmp_path, instance)
        simulator.write_tenant(simulator.simulate_tenant(simulator.TenantSpec("windowco", 6.0, 31), weeks=2),
                               p.incoming, p.oracle)
        p.ingest_all("windowco")
        yield p


def test_missing_lookback_partitions_are_said_once_per_input_with_their_count(small):
    week = small.weeks("windowco")[-1]
    pk = f"windowco|{week}"
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
                    if k.startswith("windowco|") and k.split("|")[1] <= week]
            expected.append((step, (asset, str(LOOKBACK_WEEKS - len(have)), str(LOOKBACK_WEEKS))))
    assert got == sorted(expected)
    assert all(int(n) >= LOOKBACK_WEEKS - 3 for _, (_, n, _) in got)  # 2-3 weeks of history in a 78-week window
    # an input whose partitions all exist says nothing: a week of the window is loaded, not reported
    assert all("windowco|" in m and week not in m.split("(")[1].split(")")[0] for _, m in summaries)
