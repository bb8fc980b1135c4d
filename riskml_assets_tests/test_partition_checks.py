"""Check results per partition (issue 10 item 6): each tenant-week keeps its own gate results.

Before, the in-asset checks of the partitioned assets were stored without a partition, so the UI, the
schedule and "the latest result of a check" showed whichever tenant-week ran last. Two tenants are ingested
for the same week, one passing and one failing the duplicate-key gate, on a real instance.
"""
import functools

import dagster as dg
import pandas as pd
import pytest
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus as S

from riskml_assets.checks import partition_checks
from riskml_assets.core import simulator
from riskml_assets.partitions import tenant_week
from riskml_assets.sensors import ingestion_blocked

DUP = dg.AssetCheckKey(dg.AssetKey("risk_snapshots"), "risk_snapshots_duplicate_keys")


@pytest.fixture()
def two_tenants(tmp_path):
    """good|W passes every ingest gate, bad|W fails risk_snapshots_duplicate_keys; bad runs last."""
    from .conftest import Platform

    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        p = Platform(tmp_path, instance)
        for i, t in enumerate(("good", "bad")):
            files = simulator.write_tenant(simulator.simulate_tenant(simulator.TenantSpec(t, 15.0, 20 + i), weeks=1),
                                           p.incoming, p.oracle)
            if t == "bad":
                snap = [f for f in files if f.name.startswith("snapshots-")][0]
                clean = (snap, snap.read_bytes())
                df = pd.read_parquet(snap)
                dup = df.head(len(df) // 5).assign(deal_value=lambda d: d.deal_value + 1)
                pd.concat([df, dup]).to_parquet(snap, index=False)
        week = p.weeks("good")[-1]
        assert p.weeks("bad")[-1] == week
        assert p.run("ingest_job", "good", week).success
        res = p.run("ingest_job", "bad", week)
        assert not res.success
        yield p, week, res, clean


def test_every_gate_spec_is_partitioned_like_its_asset():
    from riskml_assets.definitions import defs

    specs = [(a, s) for a in defs.assets for s in a.check_specs]
    assert len(specs) >= 40
    for asset, spec in specs:
        assert asset.partitions_def == tenant_week
        assert spec.partitions_def == tenant_week, spec.key


def test_each_partition_keeps_its_own_check_result(two_tenants):
    p, week, res, (snap, clean) = two_tenants
    good, bad = f"good|{week}", f"bad|{week}"
    # the evaluations are stored with their partition
    evals = {e.check_name: e for e in res.get_asset_check_evaluations()}
    assert evals[DUP.name].partition == bad and evals[DUP.name].passed is False
    # the instance answers per partition: good passed although bad ran last and failed
    storage = p.instance.event_log_storage
    info = {i.partition_key: i for i in storage.get_asset_check_partition_info([DUP])}
    assert set(info) == {good, bad}
    assert info[good].latest_execution_status == S.SUCCEEDED and info[bad].latest_execution_status == S.FAILED
    assert info[good].is_current and info[bad].is_current  # each targets its own partition's materialization
    mine = partition_checks(p.instance, [DUP], good)[DUP]
    assert (mine.status, mine.evaluation.passed, mine.evaluation.partition) == ("SUCCEEDED", True, good)
    theirs = partition_checks(p.instance, [DUP], bad)[DUP]
    assert (theirs.status, theirs.evaluation.passed) == ("FAILED", False)
    assert theirs.evaluation.metadata["value"].value > 0.01
    # blocking still stops the rest of the same run: the failed step is risk_snapshots, its gate is recorded
    assert "risk_snapshots" in [e.step_key for e in res.get_step_failure_events()]
    # the schedule's judgement and `riskml checks` read each partition's own results
    assert ingestion_blocked(p.instance, "good", week) is None
    assert "failed input gate risk_snapshots_duplicate_keys" in ingestion_blocked(p.instance, "bad", week)
    from riskml_assets.cli import check_rows

    rows = {tenant: {r["check"]: r for r in check_rows(p.instance, tenant, week)} for tenant in ("good", "bad")}
    assert rows["good"][DUP.name]["passed"] is True and rows["good"][DUP.name]["partition"] == good
    assert rows["bad"][DUP.name]["passed"] is False and rows["bad"][DUP.name]["partition"] == bad
    assert rows["good"][DUP.name]["run_id"] != rows["bad"][DUP.name]["run_id"]
    # a later clean re-run of bad changes bad only
    snap.write_bytes(clean)
    assert p.run("ingest_job", "bad", week).success
    assert partition_checks(p.instance, [DUP], bad)[DUP].evaluation.passed is True
    assert partition_checks(p.instance, [DUP], good)[DUP].run_id == mine.run_id
    assert ingestion_blocked(p.instance, "bad", week) is None


def test_results_stored_without_a_partition_before_the_upgrade_still_block(tmp_path, monkeypatch):
    """An instance with results recorded by the former unpartitioned specs: the schedule still sees the gate."""
    from riskml_assets import checks
    from riskml_assets.assets import ingest

    from .conftest import Platform

    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        p = Platform(tmp_path, instance)
        files = simulator.write_tenant(simulator.simulate_tenant(simulator.TenantSpec("old", 15.0, 21), weeks=1),
                                       p.incoming, p.oracle)
        snap = [f for f in files if f.name.startswith("snapshots-")][0]
        df = pd.read_parquet(snap)
        pd.concat([df, df.head(len(df) // 5).assign(deal_value=lambda d: d.deal_value + 1)]).to_parquet(snap, index=False)
        week = p.weeks("old")[-1]
        monkeypatch.setattr(ingest, "gate_specs", functools.partial(checks.gate_specs, partitions_def=None))
        legacy = ingest.build_ingest_asset("snapshots")
        assert all(s.partitions_def is None for s in legacy.check_specs)
        p.add_tenant("old")
        res = dg.materialize([legacy], partition_key=f"old|{week}", instance=instance, raise_on_error=False,
                             resources={"riskml": p.resources["riskml"], "io_manager": p.resources["io_manager"]})
        assert not res.success
        assert {e.partition for e in res.get_asset_check_evaluations()} == {None}
        assert partition_checks(instance, [DUP], f"old|{week}") == {}
        why = ingestion_blocked(instance, "old", week)
        assert why is not None and "failed input gate risk_snapshots_duplicate_keys" in why


def test_each_gate_result_points_at_its_own_materialization_found_once(tmp_path, monkeypatch):
    """Issue 11: the gate results are yielded after their materialization (``checks.checks_after_materialization``):
    each stored evaluation still points at the materialization of its asset made by this run and partition, and
    Dagster looks that materialization up once per gate (embedded in the ``MaterializeResult`` it did so twice, the
    first time before the materialization existed, only to learn the check's key)."""
    from dagster._core.definitions.asset_checks.asset_check_result import AssetCheckResult

    from .conftest import Platform

    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        p = Platform(tmp_path, instance)
        simulator.write_tenant(simulator.simulate_tenant(simulator.TenantSpec("once", 15.0, 3), weeks=1),
                               p.incoming, p.oracle)
        week = p.weeks("once")[-1]
        lookups = []
        real = AssetCheckResult._get_partitioned_target_materialization_data
        monkeypatch.setattr(AssetCheckResult, "_get_partitioned_target_materialization_data",
                            lambda self, ctx, key, part: lookups.append((key.to_user_string(), self.check_name))
                            or real(self, ctx, key, part))
        res = p.run("ingest_job", "once", week)
        assert res.success
        mats = {e.asset_key.to_user_string(): e for e in res.get_asset_materialization_events()}
        records = {a: instance.fetch_materializations(dg.AssetKey(a), limit=1).records[0] for a in mats}
        evaluations = res.get_asset_check_evaluations()
        assert len(evaluations) == 12 and len(mats) == 4
        assert sorted(lookups) == sorted((e.asset_key.to_user_string(), e.check_name) for e in evaluations)
        for e in evaluations:
            target = e.target_materialization_data
            rec = records[e.asset_key.to_user_string()]
            assert e.partition == f"once|{week}" and target is not None, e.check_name
            assert (target.run_id, target.storage_id) == (res.run_id, rec.storage_id), e.check_name
