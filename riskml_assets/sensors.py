"""Automation: the snapshot-file sensor, the weekly retraining schedule and the run-failure recorder.

Decision (documented in the README): training assets do *not* follow ingestion through declarative
automation. New files trigger ingestion (sensor); training is a deliberate weekly run (schedule) that
skips tenants whose latest ingestion failed a blocking gate, so a later run never trains past a gate.
"""
import datetime as dt
import json
from pathlib import Path

import dagster as dg

from .core.contract import latest_complete_week
from .core.watch import dump_state, load_state, scan
from .jobs import full_job, ingest_job, train_job
from .partitions import partition_key, tenant_partitions
from .resources import RiskmlSettings

INGEST_GATES = ("risk_snapshots_schema", "risk_snapshots_duplicate_keys", "risk_snapshots_future_dates",
                "risk_snapshots_not_empty")


@dg.sensor(job=ingest_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Watches <incoming_dir>/<tenant>/ and requests the ingestion of each new or changed file's "
                       "tenant-week once; new tenants are added to the tenant partitions first.")
def snapshot_sensor(context: dg.SensorEvaluationContext, riskml: RiskmlSettings):
    state = load_state(context.cursor)
    events, refused, new_state = scan(Path(riskml.incoming_dir), state)
    for rel, reason in refused:
        context.log.warning(f"refused incoming file {rel!r}: {reason} (listed in the sensor cursor, not retried "
                            f"until it changes; the file is left in place)")
    known = set(context.instance.get_dynamic_partitions(tenant_partitions.name))
    new_tenants = sorted({e.tenant for e in events} - known)
    requests = [
        dg.RunRequest(run_key=e.run_key, partition_key=partition_key(e.tenant, e.week),
                      tags={"riskml/file": e.rel_path, "riskml/kind": e.kind, "riskml/sha256": e.digest[:16]})
        for e in events
    ]
    for e in events:
        context.log.info(f"new file {e.rel_path} -> ingest {e.tenant}|{e.week}")
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[tenant_partitions.build_add_request(new_tenants)] if new_tenants else [],
        cursor=dump_state(new_state),
        skip_reason=None if requests else dg.SkipReason(
            f"no new files ({len(new_state['files'])} known, {len(new_state['refused'])} refused)"),
    )


def ingestion_blocked(instance: dg.DagsterInstance, tenant: str, week: str) -> str | None:
    """Why a tenant-week must not be trained: no ingestion, or a failed blocking input gate in its last ingestion."""
    pk = partition_key(tenant, week)
    recs = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("risk_snapshots"), asset_partitions=[pk]), limit=1).records
    if not recs:
        return "no ingested snapshots for the week"
    failed = [
        e.dagster_event.event_specific_data.check_name
        for e in instance.all_logs(recs[0].run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        if not e.dagster_event.event_specific_data.passed
        and e.dagster_event.event_specific_data.severity == dg.AssetCheckSeverity.ERROR
    ]
    return f"failed input gates: {', '.join(failed)}" if failed else None


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
