"""Runs started by the riskml CLI are runs of the code location's jobs (issue 10 item 5): they carry the remote
origin of the location ``riskml``, the UI's Runs tab of the job lists them, and a history is one backfill."""
from __future__ import annotations

import dagster as dg
import pytest

from riskml_assets import cli
from riskml_assets.core import simulator

REPO_LABEL = "__repository__@riskml"


@pytest.fixture
def user_dir(user_dir):
    """The shared fresh working folder, with a tiny simulated tenant in data/incoming."""
    tmp_path = user_dir
    sim = simulator.simulate_tenant(simulator.TenantSpec("tiny", 4.0, 3), weeks=2)
    simulator.write_tenant(sim, tmp_path / "data" / "incoming", tmp_path / "data" / "oracle")
    return tmp_path


def _graphql(launcher, query: str, variables: dict):
    """Ask the webserver's GraphQL schema, on a workspace of the code location (what the UI asks)."""
    from dagster_graphql.test.utils import execute_dagster_graphql

    res = execute_dagster_graphql(launcher._ctx.create_request_context(), query, variables)
    assert not res.errors, res.errors
    return res.data


JOB_RUNS = """query ($job: String!) {
  pipelineOrError(params: {pipelineName: $job, repositoryName: "__repository__", repositoryLocationName: "riskml"}) {
    ... on Pipeline { runs { runId pipelineName repositoryOrigin { repositoryLocationName repositoryName } } }
  }
}"""
BACKFILL = """query ($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status numPartitions partitionNames runs(limit: 100) { runId } }
  }
}"""


def test_ingest_history_is_one_backfill_of_runs_listed_under_ingest_job(user_dir, capsys):
    assert cli.main(["ingest-history"]) == 0
    out = capsys.readouterr().out
    weeks = cli.tenant_weeks(user_dir / "data" / "incoming")[0]["tiny"]
    assert len(weeks) >= 2
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs(dg.RunsFilter(job_name="ingest_job"))
        # the tenant's history is ONE run over its range of weeks (single-run backfill policy)
        [run] = runs
        assert (run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]) == \
            (f"tiny|{weeks[0]}", f"tiny|{weeks[-1]}")
        # ... and yet every week is its own materialization and keeps its own gate results, from that run
        for asset in ("risk_snapshots", "opportunity_outcomes", "activity_events"):
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == {f"tiny|{w}" for w in weeks}
        from riskml_assets.checks import partition_checks

        key = dg.AssetCheckKey(dg.AssetKey("risk_snapshots"), "risk_snapshots_not_empty")
        for w in weeks:
            [res] = partition_checks(instance, [key], f"tiny|{w}").values()
            assert (res.status, res.run_id, res.evaluation.partition) == ("SUCCEEDED", run.run_id, f"tiny|{w}")
            assert res.evaluation.metadata["value"].value > 0
        for r in runs:  # the code location's origin, as runs launched from the UI have
            assert r.remote_job_origin is not None
            assert r.remote_job_origin.location_name == "riskml"
            assert r.remote_job_origin.repository_origin.repository_name == "__repository__"
            assert r.job_code_origin is not None and r.status == dg.DagsterRunStatus.SUCCESS
        # what the UI's Runs tab filters on: job name + the repository label tag
        labelled = instance.get_runs(dg.RunsFilter(job_name="ingest_job", tags={".dagster/repository": REPO_LABEL}))
        assert {r.run_id for r in labelled} == {r.run_id for r in runs}
        # one backfill, every run under it
        [backfill_id] = {r.tags["dagster/backfill"] for r in runs}
        assert f"backfill {backfill_id} of ingest_job" in out
        # a run executed the old way (execute_in_process) is not listed under the job: that was the bug
        from riskml_assets.definitions import defs

        old = defs.resolve_job_def("ingest_job").execute_in_process(
            partition_key=f"tiny|{weeks[0]}", instance=instance, raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
        assert old.dagster_run.remote_job_origin is None

        from riskml_assets.launch import Launcher

        with Launcher(instance) as launcher:
            data = _graphql(launcher, JOB_RUNS, {"job": "ingest_job"})
            bf = _graphql(launcher, BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        listed = data["pipelineOrError"]["runs"]
        assert {r["runId"] for r in listed} == {r.run_id for r in runs}  # not the execute_in_process run
        assert all(r["repositoryOrigin"] == {"repositoryLocationName": "riskml", "repositoryName": "__repository__"}
                   for r in listed)
        assert bf["status"] == "COMPLETED_SUCCESS" and bf["numPartitions"] == len(weeks)
        assert sorted(bf["partitionNames"]) == [f"tiny|{w}" for w in weeks]
        assert {r["runId"] for r in bf["runs"]} == {r.run_id for r in runs}
    # nothing left to ingest: a second call starts no run and no backfill
    assert cli.main(["ingest-history"]) == 0
    with dg.DagsterInstance.get() as instance:
        assert len(instance.get_runs(dg.RunsFilter(job_name="ingest_job"))) == 2  # the history run + the old-way run
        assert len(instance.get_backfills()) == 1


def test_launch_command_records_the_run_under_its_job_and_refuses_bad_partitions(user_dir, capsys):
    assert cli.main(["register-tenants"]) == 0
    week = cli.tenant_weeks(user_dir / "data" / "incoming")[0]["tiny"][-1]
    assert cli.main(["launch", "--job", "ingest_job", "--partition", f"tiny|{week}"]) == 0
    assert "ingest_job tiny|" in capsys.readouterr().out
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs(dg.RunsFilter(job_name="ingest_job", tags={".dagster/repository": REPO_LABEL}))
        assert run.tags["dagster/partition"] == f"tiny|{week}" and "dagster/backfill" not in run.tags
    assert cli.main(["launch", "--job", "ingest_job", "--partition", f"nobody|{week}"]) == 2
    assert "unknown tenant 'nobody'" in capsys.readouterr().err
    assert cli.main(["launch", "--job", "ingest_job", "--partition", "tiny|2026-11-17"]) == 2
    assert "not a Monday" in capsys.readouterr().err


def test_ctrl_c_inside_a_run_stops_the_command_and_frees_the_runs_pool_slots(tmp_path, monkeypatch):
    """Dagster turns a KeyboardInterrupt inside a step into a failed run and returns; the launcher raises it
    again (the CLI stops instead of going on with the next week) and frees the run's pool slots."""
    from riskml_assets.launch import Launcher

    monkeypatch.setenv("RISKML_TEST_INTERRUPT", "1")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "dagster.yaml").write_text("concurrency:\n  pools:\n    default_limit: 1\n")
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        with Launcher(instance, module="riskml_assets_tests.interrupt_defs", location="riskml") as launcher:
            seen = []
            with pytest.raises(KeyboardInterrupt):
                launcher.backfill("interrupt_job", ["a|2026-11-16", "a|2026-11-16"],
                                  progress=lambda i, n, out: seen.append(out))
        [run] = instance.get_runs(dg.RunsFilter(job_name="interrupt_job"))
        assert seen == [] and run.is_finished and run.status != dg.DagsterRunStatus.SUCCESS
        info = instance.event_log_storage.get_concurrency_info("interrupt_pool")
        assert info.claimed_slots == [] and info.pending_steps == []
        [bf] = instance.get_backfills()  # the backfill is recorded, canceled, with its one run
        assert bf.status.value == "CANCELED" and bf.tags.get("riskml/launched_by") == "riskml"
        assert run.tags["dagster/backfill"] == bf.backfill_id


def test_week_ranges_group_consecutive_weeks_of_one_tenant():
    from riskml_assets.launch import week_ranges

    keys = ["b|2026-01-05", "a|2026-01-12", "a|2026-01-05", "a|2026-01-26", "a|2026-02-02", "b|2026-01-12", "a|2026-01-05"]
    assert week_ranges(keys) == [
        ("a|2026-01-05", "a|2026-01-12", ["a|2026-01-05", "a|2026-01-12"]),
        ("a|2026-01-26", "a|2026-02-02", ["a|2026-01-26", "a|2026-02-02"]),  # a gap (2026-01-19) starts a new run
        ("b|2026-01-05", "b|2026-01-12", ["b|2026-01-05", "b|2026-01-12"]),
    ]
    assert week_ranges([]) == []
