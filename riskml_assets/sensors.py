"""Automation: the snapshot-file sensor, the weekly retraining schedule and the run-failure recorder.

Decision (documented in the README): training assets do *not* follow ingestion through declarative
automation. New files trigger ingestion (sensor); training is a deliberate weekly run (schedule) that
skips tenants whose latest ingestion failed a blocking gate, so a later run never trains past a gate.
"""
import datetime as dt
import json
from pathlib import Path

import dagster as dg

from .assets.ingest import INGEST_ASSETS, ingest_assets
from .checks import partition_checks
from .core.contract import latest_complete_week
from .core.lazy import lazy_module
from .core.watch import already_ingested, dump_state, load_state, plan_requests, scan
from .jobs import full_job, ingest_job, train_job
from .partitions import PARTITIONS_START, partition_key, tenant_partitions
from .resources import RiskmlSettings

_schemas = lazy_module("riskml_assets.core.schemas")  # pandera: imported on first use

INGEST_GATES = ("risk_snapshots_schema", "risk_snapshots_duplicate_keys", "risk_snapshots_future_dates",
                "risk_snapshots_not_empty")


def materialized_times(instance: dg.DagsterInstance, tenants) -> dict[tuple[str, str, str], float]:
    """{(tenant, week, kind): time of the latest materialization of the kind's ingest asset} for ``tenants``."""
    tenants = set(tenants)
    out: dict[tuple[str, str, str], float] = {}
    for kind, (name, *_) in INGEST_ASSETS.items():
        cursor = None
        while True:
            res = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(name)), limit=1000,
                                                  cursor=cursor)
            for rec in res.records:  # newest first: the first one of a partition is its latest
                tenant, _, week = (rec.partition_key or "").partition("|")
                if tenant in tenants:
                    out.setdefault((tenant, week, kind), rec.timestamp)
            if not res.has_more:
                break
            cursor = res.cursor
    return out


def ingested_snapshot_weeks(instance: dg.DagsterInstance) -> dict[str, set[str]]:
    weeks: dict[str, set[str]] = {}
    for pk in instance.get_materialized_partitions(dg.AssetKey("risk_snapshots")):
        t, _, w = pk.partition("|")
        weeks.setdefault(t, set()).add(w)
    return weeks


@dg.sensor(job=ingest_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Watches <incoming_dir>/<tenant>/ and requests one ingestion per tenant-week with new or "
                       "changed files; new tenants are added to the tenant partitions first. An empty cursor is "
                       "seeded from what is already ingested.")
def snapshot_sensor(context: dg.SensorEvaluationContext, riskml: RiskmlSettings):
    state = load_state(context.cursor)
    events, refused, new_state = scan(Path(riskml.incoming_dir), state, first_week=PARTITIONS_START)
    for rel, reason in refused:
        context.log.warning(f"refused incoming file {rel!r}: {reason} (listed in the sensor cursor and reported once "
                            f"per content; the other files go on; the file is left in place)")
    if not state["files"] and events:
        # the cursor knows no file yet (first tick, a reset cursor): files already ingested after their last
        # change (e.g. by `riskml ingest-history`) are recorded as seen, without a request
        events, seen = already_ingested(events, materialized_times(context.instance, {e.tenant for e in events}))
        if seen:
            context.log.info(f"cursor seeded: {len(seen)} file(s) of {len({(e.tenant, e.week) for e in seen})} "
                             f"tenant-week(s) already ingested after their last change; not requested again")
    known = set(context.instance.get_dynamic_partitions(tenant_partitions.name))
    new_tenants = sorted({e.tenant for e in events} - known)
    routed = any(e.kind in _schemas.ROUTED_KINDS for e in events)
    plan = plan_requests(events, ingested_snapshot_weeks(context.instance) if routed else None,
                         first_week=PARTITIONS_START)
    requests = []
    for req in plan:
        tags = {"riskml/file": ",".join(req.files), "riskml/files": str(len(req.files)),
                "riskml/kind": ",".join(sorted({e.kind for e in req.events})),
                "riskml/sha256": ",".join(e.digest[:16] for e in sorted(req.events, key=lambda e: e.rel_path))}
        if req.late_from:
            tags["riskml/late_rows_from"] = ",".join(req.late_from)
        requests.append(dg.RunRequest(run_key=req.run_key, partition_key=partition_key(req.tenant, req.week),
                                      tags=tags))
        context.log.info(f"ingest {req.tenant}|{req.week}: {len(req.files)} new or changed file(s) "
                         f"{', '.join(req.files)}"
                         + (f" (late rows from week(s) {', '.join(req.late_from)})" if req.late_from else ""))
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[tenant_partitions.build_add_request(new_tenants)] if new_tenants else [],
        cursor=dump_state(new_state),
        skip_reason=None if requests else dg.SkipReason(
            f"no new files ({len(new_state['files'])} known, {len(new_state['refused'])} refused)"),
    )


def ingestion_blocked(instance: dg.DagsterInstance, tenant: str, week: str) -> str | None:
    """Why a tenant-week must not be trained, judged on the latest ingestion of *that* partition; None when clean.

    Blocked when: the week has no ingested snapshots; the latest ingestion attempt of any ingest asset
    (snapshots, outcomes, activities, interactions) of the partition ended in a failed run without
    materializing, after its last successful materialization (the stored value is stale; Dagster OSS
    records no "failed to materialize" event, so the latest *planned* materialization is compared);
    or the latest result of a blocking ERROR check of the partition failed (an input gate, an unreadable
    file, ...), or its latest evaluation never completed in a failed run. Each ingest asset is judged on its
    own, so an asset re-ingested in a later, separate run is seen too.

    The gates are partitioned check specs (``checks.check_spec``): Dagster stores each result with its
    partition key, so the partition's own latest results are read directly (``checks.partition_checks``).
    Results recorded before the specs were partitioned have no partition; for those the results emitted
    with the partition's latest materialization are used (``_unpartitioned_gate_reasons``).
    """
    pk = partition_key(tenant, week)
    reasons: list[str] = []
    for asset in ingest_assets:
        key = asset.key
        name = key.to_user_string()
        flt = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[pk])
        mats = instance.fetch_materializations(flt, limit=1).records
        planned = instance.get_latest_planned_materialization_info(key, partition=pk)
        if planned is not None and (not mats or planned.storage_id > mats[0].storage_id):
            # the latest attempt did not materialize: failed (or still running) after the last stored value
            run = instance.get_run_by_id(planned.run_id)
            if run is not None and run.is_finished and run.status != dg.DagsterRunStatus.SUCCESS:
                reasons.append(f"{name} ingestion failed (run {planned.run_id[:8]} {run.status.value})"
                               + (", its stored value is stale" if mats else ""))
                continue
        if not mats:
            if name == "risk_snapshots":
                return "; ".join([*reasons, "no ingested snapshots for the week"])
            continue
        blocking = {spec.key: spec.blocking for spec in asset.check_specs}
        latest = partition_checks(instance, blocking, pk)
        if not latest:
            reasons.extend(_unpartitioned_gate_reasons(instance, asset, mats[0]))
            continue
        unfinished = []
        for ck, spec_blocking in blocking.items():
            rec = latest.get(ck)
            if rec is not None and rec.status == "PLANNED":
                run = instance.get_run_by_id(rec.run_id)
                if run is not None and run.is_finished:
                    if run.status != dg.DagsterRunStatus.SUCCESS and spec_blocking:
                        unfinished.append((ck.name, rec.run_id, run.status.value))
                    continue  # a successful run that emitted no result: Dagster does not gate on it either
                rec = partition_checks(instance, [ck], pk, completed=True).get(ck)  # in progress: the last result
            ev = rec.evaluation if rec is not None else None
            if ev is None:
                continue
            is_blocking = ev.blocking if ev.blocking is not None else spec_blocking
            if not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR and is_blocking:
                reasons.append(f"failed input gate {ck.name}")
        for run_id in dict.fromkeys(r for _, r, _ in unfinished):
            names = sorted(n for n, r, _ in unfinished if r == run_id)
            status = next(s for _, r, s in unfinished if r == run_id)
            reasons.append(f"input gates of {name} did not complete in run {run_id[:8]} ({status}): {', '.join(names)}")
    return "; ".join(reasons) or None


def _unpartitioned_gate_reasons(instance: dg.DagsterInstance, asset: dg.AssetsDefinition, rec) -> list[str]:
    """Gate failures of an ingest asset whose results were stored without a partition (before the specs were
    partitioned): the results emitted with the partition's latest materialization ``rec`` (same run,
    ``target_materialization_data`` pointing at it)."""
    key, reasons = asset.key, []
    blocking = {spec.key.name: spec.blocking for spec in asset.check_specs}
    evaluated = set()
    for e in instance.all_logs(rec.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        ev = e.dagster_event.event_specific_data
        target = ev.target_materialization_data
        if ev.asset_key != key or ev.partition is not None or (
                target is not None and target.storage_id != rec.storage_id):
            continue
        evaluated.add(ev.check_name)
        is_blocking = ev.blocking if ev.blocking is not None else blocking.get(ev.check_name, True)
        if not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR and is_blocking:
            reasons.append(f"failed input gate {ev.check_name}")
    missing = sorted(n for n, b in blocking.items() if b and n not in evaluated)
    if missing:
        run = instance.get_run_by_id(rec.run_id)
        if run is not None and run.is_finished and run.status != dg.DagsterRunStatus.SUCCESS:
            reasons.append(f"input gates of {key.to_user_string()} did not complete in run {rec.run_id[:8]} "
                           f"({run.status.value}): {', '.join(missing)}")
    return reasons


@dg.schedule(job=train_job, cron_schedule="0 6 * * 1", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED,
             description="Every Monday 06:00 UTC: retrain every registered tenant for the last complete week.")
def weekly_retraining_schedule(context: dg.ScheduleEvaluationContext):
    when = context.scheduled_execution_time or dt.datetime.now(dt.timezone.utc)
    week = latest_complete_week(when.date())
    requests, skipped = [], []
    for tenant in sorted(context.instance.get_dynamic_partitions(tenant_partitions.name)):
        why = ingestion_blocked(context.instance, tenant, week)
        if why:
            skipped.append(f"{tenant}: {why}")
            continue
        requests.append(dg.RunRequest(run_key=f"train-{tenant}-{week}", partition_key=partition_key(tenant, week),
                                      tags={"riskml/trigger": "weekly_schedule"}))
    for s in skipped:
        context.log.warning(f"not retraining {s}")
    if not requests:
        return dg.SkipReason(f"nothing to retrain for week {week}: " + ("; ".join(skipped) or "no tenants"))
    return requests


def failure_log_path(riskml: RiskmlSettings) -> Path:
    return Path(riskml.quarantine_dir).parent / "ops" / "run_failures.jsonl"


def describe_failure(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dict:
    failed_steps, errors, gates = [], [], []
    for e in instance.all_logs(run.run_id):
        ev = e.dagster_event
        if ev is None:
            continue
        if ev.event_type == dg.DagsterEventType.STEP_FAILURE:
            failed_steps.append(ev.step_key)
            err = getattr(ev.event_specific_data, "error", None)
            if err is not None:
                errors.append(err.message.strip().splitlines()[0][:500])
        elif ev.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            d = ev.event_specific_data
            if not d.passed:
                gates.append({"gate": d.check_name, "asset": d.asset_key.to_user_string(),
                              "severity": d.severity.value,
                              "value": (d.metadata.get("value").value if d.metadata.get("value") else None)})
    return {"run_id": run.run_id, "job": run.job_name, "partition": run.tags.get("dagster/partition"),
            "failed_steps": failed_steps, "failed_gates": gates, "errors": errors,
            "recorded_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


@dg.run_failure_sensor(monitored_jobs=[ingest_job, train_job, full_job], default_status=dg.DefaultSensorStatus.STOPPED,
                       description="Appends every failed riskml run (failing steps and gates) to data/ops/run_failures.jsonl.")
def run_failure_recorder(context: dg.RunFailureSensorContext, riskml: RiskmlSettings):
    record = describe_failure(context.instance, context.dagster_run)
    path = failure_log_path(riskml)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    gates = ", ".join(g["gate"] for g in record["failed_gates"]) or "none"
    context.log.info(f"recorded failed run {record['run_id']} ({record['job']} {record['partition']}): "
                     f"steps {record['failed_steps']}, gates {gates}")


sensors = [snapshot_sensor, run_failure_recorder]
schedules = [weekly_retraining_schedule]
