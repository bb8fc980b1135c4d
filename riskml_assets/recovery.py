"""Recover from runs whose process died (``kill -9``, OOM, a closed laptop) while they were in progress.

A run killed inside a pooled step (``registered_models`` runs in pool ``mlflow_registry``, limit 1) keeps its
pool slot forever: Dagster frees slots when a run *ends*, and a killed run never ends — it stays ``STARTED``.
Every later registration then waits for that slot. Dagster's own answer (``run_monitoring`` in the instance
config) needs the daemon (``dagster dev``) and a run launcher that can check run-worker health; runs started by
``dagster asset materialize`` or ``riskml`` have neither.

So: every event a run writes records the pid of the process that wrote it. A run that is ``STARTING``/``STARTED``/
``CANCELING`` and none of whose processes is alive any more (the pid does not exist, is a zombie, or now belongs
to a process created after the run's last event from that pid) is dead. It is marked failed (with the reason)
and every concurrency slot it holds or waits for is freed. Runs whose processes live are never touched, nor are
runs with no event carrying a pid yet. Judging by pid needs the runs to execute on this machine, which is the
case for the SQLite instance storage riskml uses; with any other storage only the slots of runs that have already
ended are freed (what ``free_slots_after_run_end_seconds`` does in the daemon).

Used at the start of ``riskml run``/``backfill``/``ingest-history``, while they wait for their runs, and by
``riskml recover``.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable

import dagster as dg

IN_PROGRESS = (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)
# a process created this long after the run's last event from that pid is another process that reuses the pid
PID_REUSE_MARGIN_S = 1.0


def process_alive(pid: int, last_seen: float | None = None) -> bool:
    """True when ``pid`` is a live (non-zombie) process that existed at ``last_seen`` (epoch seconds)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    try:
        import psutil

        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if last_seen is not None and proc.create_time() > last_seen + PID_REUSE_MARGIN_S:
            return False  # the pid was reused by a process that started after the run's last word
    except ImportError:
        return True
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # cannot tell: assume alive, never fail a run on a guess
    return True


def run_processes(instance: dg.DagsterInstance, run_id: str) -> dict[int, float]:
    """{pid: timestamp of the run's last event written by that pid} over all of the run's events."""
    pids: dict[int, float] = {}
    cursor = None
    while True:
        conn = instance.get_records_for_run(run_id, cursor=cursor, limit=1000)
        for rec in conn.records:
            ev = rec.event_log_entry.dagster_event
            pid = getattr(ev, "pid", None) if ev is not None else None
            if pid:
                pids[pid] = max(pids.get(pid, 0.0), rec.event_log_entry.timestamp)
        if not conn.has_more:
            return pids
        cursor = conn.cursor


def pids_are_local(instance: dg.DagsterInstance) -> bool:
    """Runs of a SQLite instance execute on this machine, so their pids can be judged here."""
    return "sqlite" in type(instance.event_log_storage).__name__.lower()


def dead_run_reason(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """Why an in-progress run is dead, or None when it is (or may be) alive."""
    if run.status not in IN_PROGRESS or not pids_are_local(instance):
        return None
    pids = run_processes(instance, run.run_id)
    if not pids:
        return None  # no evidence yet (a run that is only starting)
    if any(process_alive(pid, ts) for pid, ts in pids.items()):
        return None
    if len(pids) == 1:
        return f"its process (pid {next(iter(pids))}) no longer exists"
    return f"its processes (pids {', '.join(map(str, sorted(pids)))}) no longer exist"


def slot_holders(instance: dg.DagsterInstance, pools: Iterable[str] | None = None) -> dict[str, list[dict]]:
    """{run_id: [{pool, step, state: claimed|pending}]} over the given pools (default: every pool)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return {}
    keys = sorted(pools) if pools is not None else sorted(storage.get_concurrency_keys())
    out: dict[str, list[dict]] = {}
    for key, info in storage.get_concurrency_infos(keys).items():
        for s in info.claimed_slots:
            out.setdefault(s.run_id, []).append({"pool": key, "step": s.step_key, "state": "claimed"})
        for s in info.pending_steps:
            out.setdefault(s.run_id, []).append({"pool": key, "step": s.step_key, "state": "pending"})
    return out


def recover_dead_runs(instance: dg.DagsterInstance, pools: Iterable[str] | None = None,
                      log: Callable[[str], None] | None = print) -> list[dict]:
    """Mark dead in-progress runs failed and free every pool slot held or awaited by a run that is dead or over.

    Returns one record per run acted on: ``{run_id, status_before, reason, slots}``.
    """
    storage = instance.event_log_storage
    holders = slot_holders(instance, pools)
    candidates = {r.run_id: r for r in instance.get_runs(filters=dg.RunsFilter(statuses=list(IN_PROGRESS)))}
    acted = []
    for run_id in sorted(set(holders) | set(candidates)):
        run = candidates.get(run_id) or instance.get_run_by_id(run_id)
        slots = holders.get(run_id, [])
        if run is None:
            reason, before = "the run no longer exists", None
        elif run.is_finished:
            reason, before = f"the run already ended ({run.status.value})", run.status.value
        else:
            reason, before = dead_run_reason(instance, run), run.status.value
            if reason is None:
                continue
            instance.report_run_failed(run, message=f"riskml recover: run marked failed because {reason} "
                                                    f"(killed while {run.status.value}); its pool slots are freed")
        if not slots and run is not None and run.is_finished:
            continue
        if slots:
            storage.free_concurrency_slots_for_run(run_id)
        rec = {"run_id": run_id, "status_before": before, "reason": reason, "slots": slots}
        acted.append(rec)
        if log:
            held = ", ".join(f"{s['pool']}:{s['step']} ({s['state']})" for s in slots) or "no pool slots"
            log(f"recovered run {run_id}: {reason}; marked failed, freed {held}")
    return acted


class SlotWatchdog:
    """While a long command waits for its runs, recover dead runs every ``interval`` seconds (a thread)."""

    def __init__(self, instance: dg.DagsterInstance, interval: float = 10.0, pools: Iterable[str] | None = None,
                 log: Callable[[str], None] | None = print):
        self.instance, self.interval, self.pools, self.log = instance, interval, pools, log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="riskml-slot-watchdog", daemon=True)
        self.recovered: list[dict] = []

    def _loop(self):
        while not self._stop.wait(self.interval):
            try:
                self.recovered += recover_dead_runs(self.instance, self.pools, log=self.log)
            except Exception as exc:  # a busy SQLite file must never break the command it guards
                if self.log:
                    self.log(f"(slot watchdog: {type(exc).__name__}: {exc})")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)
        return False
