"""A run killed with kill -9 while it holds the `mlflow_registry` pool slot must not block every later registration.

Real processes and a real instance: `dagster asset materialize` subprocesses against a temporary DAGSTER_HOME
with the repository's instance config (pool limit 1), killed with SIGKILL while they hold the slot.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest

from riskml_assets.recovery import process_alive, recover_dead_runs

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POOL = "mlflow_registry"

HOLDER = textwrap.dedent('''
    import os, time
    import dagster as dg

    @dg.asset(pool="mlflow_registry")
    def registry_write():
        time.sleep(float(os.environ.get("HOLD_S", "0")))
        return 1

    defs = dg.Definitions(assets=[registry_write], executor=dg.in_process_executor)
''')


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A DAGSTER_HOME with the instance config riskml installs (pools default to 1 slot)."""
    h = tmp_path / "dagster_home"
    h.mkdir()
    shutil.copy(REPO / "config" / "dagster_home.yaml", h / "dagster.yaml")
    (tmp_path / "holder.py").write_text(HOLDER)
    monkeypatch.setenv("DAGSTER_HOME", str(h))
    with dg.DagsterInstance.from_config(str(h)) as instance:
        yield tmp_path, instance


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RISKML_", "MLFLOW_"))}
    env.update(DAGSTER_HOME=str(tmp_path / "dagster_home"), **extra)
    return env


def _start_holder(tmp_path, hold_s: float) -> subprocess.Popen:
    return subprocess.Popen([BIN / "dagster", "asset", "materialize", "-f", "holder.py", "--select", "registry_write"],
                            cwd=tmp_path, env=_env(tmp_path, HOLD_S=str(hold_s)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for(cond, timeout: float, what: str, step: float = 0.05):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _claimed(instance):
    return instance.event_log_storage.get_concurrency_info(POOL).claimed_slots


def _pending_runs(instance):
    info = instance.event_log_storage.get_concurrency_info(POOL)
    claimed = {s.run_id for s in info.claimed_slots}
    return [p.run_id for p in info.pending_steps if p.run_id not in claimed]


def test_process_alive_judges_live_dead_and_reused_pids():
    assert process_alive(os.getpid())
    assert process_alive(os.getpid(), last_seen=time.time())  # created before its last event: the same process
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert not process_alive(p.pid)                      # gone
    assert not process_alive(os.getpid(), last_seen=0)   # this pid "wrote its last event" in 1970: a reused pid


def test_killed_slot_holder_is_failed_and_freed_and_the_waiting_run_then_completes(home):
    tmp_path, instance = home
    # a live holder is never touched
    live = _start_holder(tmp_path, hold_s=60)
    try:
        slot = _wait_for(lambda: _claimed(instance), 60, "the first run to claim the pool slot")[0]
        assert recover_dead_runs(instance, log=None) == []
        assert instance.get_run_by_id(slot.run_id).status == dg.DagsterRunStatus.STARTED
        assert [s.run_id for s in _claimed(instance)] == [slot.run_id]
        # kill -9 inside the pooled step: the run stays STARTED and keeps the slot (Dagster never frees it)
        live.send_signal(signal.SIGKILL)
        live.wait(10)
    finally:
        if live.poll() is None:
            live.kill()
            live.wait()
    time.sleep(0.5)
    assert instance.get_run_by_id(slot.run_id).status == dg.DagsterRunStatus.STARTED
    assert [s.run_id for s in _claimed(instance)] == [slot.run_id]

    # the next registration waits for the dead run's slot ...
    waiter = _start_holder(tmp_path, hold_s=0)
    try:
        waiting = _wait_for(lambda: _pending_runs(instance), 60, "the second run to queue for the slot")
        time.sleep(3)
        assert waiter.poll() is None and _pending_runs(instance) == waiting  # still stuck behind the dead run
        # ... until a riskml command starts: it recovers dead runs first (here the cheapest one, ingest-history)
        (tmp_path / "incoming").mkdir()
        out = subprocess.run([BIN / "riskml", "ingest-history", "--incoming", str(tmp_path / "incoming")],
                             cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert f"recovered run {slot.run_id}" in out.stdout and POOL in out.stdout
        assert waiter.wait(90) == 0  # the waiting run got the slot and finished
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    dead = instance.get_run_by_id(slot.run_id)
    assert dead.status == dg.DagsterRunStatus.FAILURE
    failure = instance.get_records_for_run(slot.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    assert "no longer exists" in failure[-1].event_log_entry.dagster_event.message
    assert instance.get_run_by_id(waiting[0]).status == dg.DagsterRunStatus.SUCCESS
    assert _claimed(instance) == [] and _pending_runs(instance) == []
    # nothing left to do: a second recovery is a no-op
    assert recover_dead_runs(instance, log=None) == []


@pytest.mark.slow
def test_registration_killed_inside_registered_models_does_not_block_the_next_one(tmp_path):
    """The real step: a small simulated tenant trained up to its evaluation, then `registered_models` is
    materialized by `dagster asset materialize` and killed with SIGKILL inside the step, holding the slot."""
    from riskml_assets.cli import target_weeks, train_assets
    from riskml_assets.core import simulator
    from riskml_assets.registry import ModelRegistry

    sim = simulator.simulate_tenant(simulator.TenantSpec("smallco", 20.0, 5), weeks=30)
    simulator.write_tenant(sim, tmp_path / "data" / "incoming", tmp_path / "data" / "oracle")
    (tmp_path / "dagster_home").mkdir()
    shutil.copy(REPO / "config" / "dagster_home.yaml", tmp_path / "dagster_home" / "dagster.yaml")
    env = _env(tmp_path)
    run = lambda *argv, **kw: subprocess.run([*argv], cwd=tmp_path, env=env, capture_output=True, text=True,  # noqa: E731
                                             timeout=900, **kw)
    p = run(BIN / "riskml", "ingest-history")
    assert p.returncode == 0, p.stdout + p.stderr
    week = target_weeks(tmp_path / "data" / "incoming")["smallco"]  # the latest complete week with snapshots
    pk = f"smallco|{week}"
    upstream = [a for a in train_assets() if a not in ("registered_models", "risk_scores")]
    materialize = [BIN / "dagster", "asset", "materialize", "-m", "riskml_assets.definitions", "--partition", pk]
    p = run(*materialize, "--select", ",".join(upstream))
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        # a blocking gate may fail on such a small tenant: the evaluation is stored all the same, and registration
        # (which then only registers, without promotion) is what this test is about
        assert instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("risk_evaluation"), asset_partitions=[pk]), limit=1).records, p.stderr[-3000:]
        killed = subprocess.Popen([*materialize, "--select", "registered_models"], cwd=tmp_path, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            slot = _wait_for(lambda: _claimed(instance), 120, "registered_models to claim the registry slot")[0]
            _wait_for(lambda: instance.get_records_for_run(slot.run_id, of_type=dg.DagsterEventType.STEP_START,
                                                           limit=1).records, 60, "the step to start")
            killed.send_signal(signal.SIGKILL)  # inside registered_models, holding mlflow_registry
            killed.wait(10)
        finally:
            if killed.poll() is None:
                killed.kill()
                killed.wait()
        assert slot.step_key == "registered_models"
        assert instance.get_run_by_id(slot.run_id).status == dg.DagsterRunStatus.STARTED
        assert [s.run_id for s in _claimed(instance)] == [slot.run_id]

        nxt = subprocess.Popen([*materialize, "--select", "registered_models"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            waiting = _wait_for(lambda: _pending_runs(instance), 120, "the next registration to queue")
            time.sleep(3)
            assert nxt.poll() is None  # stuck behind the dead run
            p = run(BIN / "riskml", "recover")
            assert p.returncode == 0 and f"recovered run {slot.run_id}" in p.stdout, p.stdout + p.stderr
            _, err = nxt.communicate(timeout=300)
            assert nxt.returncode == 0, err[-3000:]
        finally:
            if nxt.poll() is None:
                nxt.kill()
                nxt.wait()
        assert instance.get_run_by_id(slot.run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(waiting[0]).status == dg.DagsterRunStatus.SUCCESS
        recs = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey("registered_models"),
                                                                     asset_partitions=[pk]), limit=1).records
        assert recs and recs[0].run_id == waiting[0]
        version = recs[0].asset_materialization.metadata["version"].value
        assert _claimed(instance) == []
    reg = ModelRegistry(f"sqlite:///{tmp_path / 'data' / 'mlflow.db'}")
    versions = reg.client.search_model_versions("name='riskml.smallco.risk'")
    assert version in {str(v.version) for v in versions}
