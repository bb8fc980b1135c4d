"""Runs the ``riskml`` CLI starts, recorded as runs of the code location's jobs.

``dagster asset materialize``, ``dagster job execute``, ``dg launch`` (1.13: it calls those two) and
``JobDefinition.execute_in_process`` record runs without a remote job origin: the run has no
``.dagster/repository`` tag, so the job's *Runs* tab in the UI (which filters on job name + that tag)
shows "No runs found" and an asset materialization shows "Job: None".

Here the code location ``riskml`` (module and name from ``[tool.dagster]`` of pyproject.toml) is loaded
in this process as a workspace, each run is created from the location's remote job with its origins
(``remote_job_origin``, ``job_code_origin``), the partition tags and, for a history, the tags of one
``PartitionBackfill`` — then executed in this process with ``execute_run``. No new Python process per
run (2 cores), and the run's events carry this process's pid, so ``riskml.recovery`` judges them as before.

The backfill record is stored when the history is done (``COMPLETED_SUCCESS``/``COMPLETED_FAILED``, or
``CANCELED`` after Ctrl-C): a ``REQUESTED`` record would be picked up by the backfill daemon of a running
``dagster dev`` and launched a second time. Its runs carry ``dagster/backfill`` from their start.
"""
from __future__ import annotations

import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODULE, DEFAULT_LOCATION = "riskml_assets.definitions", "riskml"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def code_location() -> tuple[str, str]:
    """(module, location name) of the code location, from ``[tool.dagster]`` in pyproject.toml."""
    try:
        conf = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text()).get("tool", {}).get("dagster", {})
    except (OSError, tomllib.TOMLDecodeError):
        conf = {}
    return conf.get("module_name", DEFAULT_MODULE), conf.get("code_location_name", DEFAULT_LOCATION)


@dataclass
class Outcome:
    run_id: str
    partition: str | None  # the run's partition, or "first...last" for a run over a range of weeks
    success: bool
    partitions: tuple[str, ...] = ()  # every tenant-week of the run

    def __post_init__(self):
        if not self.partitions and self.partition is not None:
            self.partitions = (self.partition,)


def week_ranges(partition_keys: Sequence[str]) -> list[tuple[str, str, list[str]]]:
    """``tenant|week`` keys grouped into runs of consecutive weeks of one tenant: [(first, last, keys)].

    A range of a tenant x week partitions definition is the product of the two dimensions' ranges, so a run
    over ``acme|W1...acme|W9`` covers every week between; a gap (a week without files) starts a new range."""
    import datetime as dt

    out: list[tuple[str, str, list[str]]] = []
    for key in sorted(dict.fromkeys(partition_keys), key=lambda k: tuple(k.split("|", 1))):
        tenant, week = key.split("|", 1)
        if out:
            first, last, keys = out[-1]
            t_last, w_last = last.split("|", 1)
            if t_last == tenant and dt.date.fromisoformat(week) - dt.date.fromisoformat(w_last) == dt.timedelta(days=7):
                out[-1] = (first, key, keys + [key])
                continue
        out.append((key, key, [key]))
    return out


class Launcher:
    """The code location loaded in this process; creates and executes runs of its jobs with their origins.

    Use as a context manager (the workspace is closed on exit)."""

    def __init__(self, instance: dg.DagsterInstance, module: str | None = None, location: str | None = None):
        from dagster._core.remote_origin import InProcessCodeLocationOrigin
        from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
        from dagster._core.workspace.context import WorkspaceProcessContext
        from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

        mod, loc = code_location()
        self.module, self.location_name = module or mod, location or loc
        self.instance = instance
        origin = InProcessCodeLocationOrigin(
            LoadableTargetOrigin(executable_path=sys.executable, module_name=self.module,
                                 working_directory=str(PROJECT_ROOT)),
            location_name=self.location_name)
        self._ctx = WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget([origin]))
        workspace = self._ctx.create_request_context()
        self.code_location = workspace.get_code_location(self.location_name)
        [self.repository] = self.code_location.get_repositories().values()
        self._recon: dict = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        return False

    def remote_job(self, job_name: str):
        return self.repository.get_full_job(job_name)

    def _recon_job(self, job_name: str):
        from dagster._utils.hosted_user_process import recon_job_from_origin

        if job_name not in self._recon:
            self._recon[job_name] = recon_job_from_origin(self.remote_job(job_name).get_python_origin())
        return self._recon[job_name]

    def create_run(self, job_name: str, partition_key: str | None = None, tags: dict | None = None,
                   run_config: dict | None = None) -> dg.DagsterRun:
        """A NOT_STARTED run of ``job_name`` (one partition), with the location's origins and partition tags."""
        from dagster._core.definitions.partitions.context import partition_loading_context

        remote = self.remote_job(job_name)
        recon = self._recon_job(job_name)
        job_def = recon.get_definition()
        run_tags = dict(remote.tags or {})
        if partition_key is not None:
            with partition_loading_context(dynamic_partitions_store=self.instance) as ctx:
                job_def.validate_partition_key(partition_key, selected_asset_keys=None, context=ctx)
                run_tags.update(job_def.get_tags_for_partition_key(partition_key, selected_asset_keys=None))
        run_tags.update(tags or {})
        return self.instance.create_run_for_job(
            job_def=job_def, run_config=run_config if run_config is not None else QUIET, tags=run_tags,
            remote_job_origin=remote.get_remote_origin(), job_code_origin=remote.get_python_origin())

    def execute(self, run: dg.DagsterRun) -> bool:
        """Execute a created run here. Ctrl-C stops the command, not only the run: Dagster turns an interrupt
        inside a run into a failed run (reason ``UNEXPECTED_TERMINATION``) and returns, so that is raised again
        as KeyboardInterrupt here; the run's pool slots are freed first (the process is alive, so
        ``riskml recover`` would not judge it dead)."""
        from dagster._core.execution.api import execute_run

        try:
            ok = execute_run(self._recon_job(run.job_name), run, self.instance).success
        except BaseException:
            self.abandon(run.run_id, "interrupted")
            raise
        if not ok and self.interrupted(run.run_id):
            self.abandon(run.run_id, "interrupted (Ctrl-C)")
            raise KeyboardInterrupt
        return ok

    def interrupted(self, run_id: str) -> bool:
        from dagster._core.events import RunFailureReason

        for rec in self.instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records:
            data = rec.event_log_entry.dagster_event.event_specific_data
            if getattr(data, "failure_reason", None) == RunFailureReason.UNEXPECTED_TERMINATION:
                return True
        return False

    def abandon(self, run_id: str, why: str) -> None:
        run = self.instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            self.instance.report_run_canceled(run, message=f"riskml: run {why}; marked canceled, pool slots freed")
        storage = self.instance.event_log_storage
        if storage.supports_global_concurrency_limits:
            storage.free_concurrency_slots_for_run(run_id)

    def run(self, job_name: str, partition_key: str | None = None, tags: dict | None = None,
            run_config: dict | None = None) -> Outcome:
        run = self.create_run(job_name, partition_key, tags, run_config)
        return Outcome(run.run_id, partition_key, self.execute(run))

    def single_run(self, job_name: str) -> bool:
        """Whether the job's assets ask for one run per range of partitions (``BackfillPolicy.single_run()``)."""
        policy = self._recon_job(job_name).get_definition().backfill_policy
        return policy is not None and policy.max_partitions_per_run is None

    def run_range(self, job_name: str, first: str, last: str, keys: Sequence[str], tags: dict | None = None,
                  run_config: dict | None = None) -> Outcome:
        """One run over the partitions ``first``..``last`` (tags ``dagster/asset_partition_range_start/end``, as
        a single-run backfill of the daemon launches it); a single key is an ordinary partitioned run."""
        from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

        if first == last:
            return self.run(job_name, first, tags, run_config)
        from dagster._core.definitions.partitions.context import partition_loading_context

        remote, recon = self.remote_job(job_name), self._recon_job(job_name)
        job_def = recon.get_definition()
        with partition_loading_context(dynamic_partitions_store=self.instance) as ctx:
            for key in (first, last):
                job_def.validate_partition_key(key, selected_asset_keys=None, context=ctx)
        run_tags = {**(remote.tags or {}), ASSET_PARTITION_RANGE_START_TAG: first,
                    ASSET_PARTITION_RANGE_END_TAG: last, **(tags or {})}
        run = self.instance.create_run_for_job(
            job_def=job_def, run_config=run_config if run_config is not None else QUIET, tags=run_tags,
            remote_job_origin=remote.get_remote_origin(), job_code_origin=remote.get_python_origin())
        return Outcome(run.run_id, f"{first}...{last}", self.execute(run), tuple(keys))

    def backfill(self, job_name: str, partition_keys: Sequence[str], title: str | None = None,
                 progress: Callable[[int, int, Outcome], None] | None = None) -> tuple[str, list[Outcome]]:
        """One backfill of ``job_name`` over ``partition_keys``, executed in this process and recorded as a
        ``PartitionBackfill`` whose runs the UI lists under it. Returns (id, outcomes).

        A job whose assets have a single-run backfill policy (``ingest_job``) gets one run per tenant and range of
        consecutive weeks (``week_ranges``); any other job one run per partition, oldest first. ``progress`` is
        called after each run with (partitions done, partitions in all, outcome)."""
        from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
        from dagster._core.storage.tags import PARTITION_SET_TAG
        from dagster._core.utils import make_new_backfill_id

        backfill_id = make_new_backfill_id()
        pset = next((p for p in self.repository.get_partition_sets() if p.job_name == job_name), None)
        started = time.time()
        outcomes: list[Outcome] = []
        status = BulkActionStatus.CANCELED
        tags = {**dg.DagsterRun.tags_for_backfill_id(backfill_id)}
        if pset is not None:
            tags[PARTITION_SET_TAG] = pset.name
        groups = (week_ranges(partition_keys) if self.single_run(job_name)
                  else [(pk, pk, [pk]) for pk in partition_keys])
        try:
            done = 0
            for first, last, keys in groups:
                out = self.run_range(job_name, first, last, keys, tags=tags)
                outcomes.append(out)
                done += len(keys)
                if progress:
                    progress(done, len(partition_keys), out)
            status = (BulkActionStatus.COMPLETED_SUCCESS if all(o.success for o in outcomes)
                      else BulkActionStatus.COMPLETED_FAILED)
        finally:
            self.instance.add_backfill(PartitionBackfill(
                backfill_id=backfill_id, status=status, from_failure=False, tags={"riskml/launched_by": "riskml"},
                backfill_timestamp=started, title=title,
                partition_set_origin=pset.get_remote_origin() if pset is not None else None,
                partition_names=list(partition_keys),
                last_submitted_partition_name=outcomes[-1].partitions[-1] if outcomes else None,
                failure_count=sum(1 for o in outcomes if not o.success),
                backfill_end_timestamp=time.time()))
        return backfill_id, outcomes
