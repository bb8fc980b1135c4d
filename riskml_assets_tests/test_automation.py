"""Sensor, schedule and failure recorder against a real instance and real files."""
import datetime as dt
import json
import shutil

import dagster as dg
import pandas as pd
import pytest

from riskml_assets.core import simulator
from riskml_assets.sensors import failure_log_path, snapshot_sensor, weekly_retraining_schedule


@pytest.fixture()
def watch(tmp_path):
    """A fresh instance and incoming folder per test, so cursors and tenants start empty."""
    from .conftest import Platform

    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        yield Platform(tmp_path, instance)


def tick(platform, cursor=None):
    ctx = dg.build_sensor_context(instance=platform.instance, cursor=cursor, definitions=platform.defs,
                                  resources={"riskml": platform.resources["riskml"]})
    return snapshot_sensor(ctx), ctx


def write_week(platform, tenant, kinds=("snapshots",), weeks=1, offset=11):
    sim = simulator.simulate_tenant(simulator.TenantSpec(tenant, 5.0, offset), weeks=weeks)
    files = simulator.write_tenant(sim, platform.incoming, platform.oracle)
    keep = [f for f in files if f.name.split("-")[0] in kinds]
    for f in files:
        if f not in keep:
            f.unlink()
    return sorted(keep)


def test_new_file_once_then_nothing_then_two_files_two_requests(watch):
    [f1] = write_week(watch, "alpha")
    res, _ = tick(watch)
    assert len(res.run_requests) == 1
    rr = res.run_requests[0]
    assert rr.partition_key == f"alpha|{simulator.last_friday(simulator.DEFAULT_END) - dt.timedelta(days=4)}"
    # the new tenant is added in the same tick, before its run is requested (the daemon applies these first)
    assert res.dynamic_partitions_requests[0].partition_keys == ["alpha"]
    # same file, next tick: nothing
    res2, _ = tick(watch, res.cursor)
    assert res2.run_requests == [] or res2.run_requests is None
    # touching a file without changing its content does not re-request it
    f1.touch()
    assert not tick(watch, res.cursor)[0].run_requests
    # two new files in one tick: two requests with distinct run keys
    write_week(watch, "beta", kinds=("snapshots", "outcomes"), weeks=2, offset=12)
    res3, _ = tick(watch, res.cursor)
    files = [r.tags["riskml/file"] for r in res3.run_requests]
    assert len(files) == len(set(r.run_key for r in res3.run_requests)) >= 2
    assert all(f.startswith("beta/") for f in files)
    # changed content -> requested again, with a new run key
    df = pd.read_parquet(f1)
    df.head(len(df) - 1).to_parquet(f1, index=False)
    res4, _ = tick(watch, res3.cursor)
    assert [r.tags["riskml/file"] for r in res4.run_requests] == [f"alpha/{f1.name}"]
    assert res4.run_requests[0].run_key != rr.run_key


def test_hostile_and_malformed_names_yield_no_request_and_a_clear_log(watch, caplog):
    (watch.incoming / "..x").mkdir(parents=True)
    (watch.incoming / "..x" / "snapshots-2026-11-20.parquet").write_bytes(b"x")
    (watch.incoming / "Bad Tenant").mkdir()
    (watch.incoming / "good").mkdir()
    (watch.incoming / "good" / "snapshots-2026-13-45.parquet").write_bytes(b"x")
    (watch.incoming / "good" / "notes.txt").write_text("hello")
    (watch.incoming / "good" / "snapshots-2026-11-20.parquet").write_bytes(b"")
    res, ctx = tick(watch)
    assert not res.run_requests and not res.dynamic_partitions_requests
    state = json.loads(res.cursor)
    assert set(state["refused"]) == {"..x/", "Bad Tenant/", "good/snapshots-2026-13-45.parquet", "good/notes.txt",
                                     "good/snapshots-2026-11-20.parquet"}
    assert "invalid tenant id" in state["refused"]["..x/"]["reason"]
    assert "empty file" in state["refused"]["good/snapshots-2026-11-20.parquet"]["reason"]
    # refusals are not repeated on the next tick, and nothing was deleted
    res2, _ = tick(watch, res.cursor)
    assert not res2.run_requests
    assert (watch.incoming / "good" / "notes.txt").exists() and (watch.incoming / "..x").exists()
    # a good file next to the bad ones still goes through
    write_week(watch, "good", offset=13)
    res3, _ = tick(watch, res2.cursor)
    assert len(res3.run_requests) == 1 and res3.run_requests[0].partition_key.startswith("good|")


def test_schedule_requests_exactly_the_expected_tenant_weeks_and_skips_blocked(watch):
    # two tenants with an ingested, clean last week; one with a duplicate-key failure; one never ingested
    for i, t in enumerate(("t1", "t2", "t3")):
        sim = simulator.simulate_tenant(simulator.TenantSpec(t, 15.0, 20 + i), weeks=1)
        files = simulator.write_tenant(sim, watch.incoming, watch.oracle)
        if t == "t3":
            snap = [f for f in files if f.name.startswith("snapshots-")][0]
            df = pd.read_parquet(snap)
            dup = df.head(len(df) // 5).assign(deal_value=lambda d: d.deal_value + 1)
            pd.concat([df, dup]).to_parquet(snap, index=False)
        watch.run("ingest_job", t, watch.weeks(t)[-1])
    watch.add_tenant("t4")
    week = watch.weeks("t1")[-1]
    monday_after = dt.datetime.fromisoformat(week) + dt.timedelta(days=7, hours=6)
    ctx = dg.build_schedule_context(instance=watch.instance,
                                    scheduled_execution_time=monday_after.replace(tzinfo=dt.timezone.utc),
                                    repository_def=watch.defs.get_repository_def())
    reqs = weekly_retraining_schedule.evaluate_tick(ctx).run_requests
    assert sorted(r.partition_key for r in reqs) == [f"t1|{week}", f"t2|{week}"]
    assert all(r.job_name in (None, "train_job") for r in reqs)


def test_failure_sensor_records_the_failed_gate(watch):
    sim = simulator.simulate_tenant(simulator.TenantSpec("failco", 15.0, 30), weeks=1)
    files = simulator.write_tenant(sim, watch.incoming, watch.oracle)
    snap = [f for f in files if f.name.startswith("snapshots-")][0]
    df = pd.read_parquet(snap)
    pd.concat([df, df.head(len(df) // 5).assign(deal_value=1.0)]).to_parquet(snap, index=False)
    res = watch.run("riskml_full_job", "failco", watch.weeks("failco")[-1])
    assert not res.success
    from riskml_assets.sensors import run_failure_recorder

    ctx = dg.build_run_status_sensor_context(
        sensor_name="run_failure_recorder", dagster_instance=watch.instance, dagster_run=res.dagster_run,
        dagster_event=res.get_run_failure_event(), resources={"riskml": watch.resources["riskml"]},
    ).for_run_failure()
    run_failure_recorder(ctx)
    lines = failure_log_path(watch.resources["riskml"]).read_text().splitlines()
    rec = json.loads(lines[-1])
    assert rec["run_id"] == res.run_id and rec["partition"] == f"failco|{watch.weeks('failco')[-1]}"
    assert "risk_snapshots" in rec["failed_steps"]
    assert "risk_snapshots_duplicate_keys" in [g["gate"] for g in rec["failed_gates"]]
