"""Ingestion assets: the week's validated input rows of one tenant, with a quarantine table for the rest.

One factory builds ``risk_snapshots``, ``opportunity_outcomes`` and ``activity_events`` (and later
``recommendation_interactions``) from their kind; the validation rules live in ``core.schemas``.

Which rows belong to a week is decided by ``core.ingest.ingest_week``: snapshots, activities and
interactions come from the files dated in the week; outcomes rows belong to the week of their own
``closed_at`` (so the outcomes of a week are also read from files dated up to ``LATE_WEEKS`` later).
An unreadable file is recorded in the quarantine (``unreadable_file``) and fails the blocking gate
``<asset>_files_readable``; the readable files of the week are still ingested.
"""

import datetime as dt
from pathlib import Path

import dagster as dg
from ..core.lazy import lazy_module

pd = lazy_module("pandas")


from ..checks import checks_after_materialization, gate_results, gate_specs
from ..core import ingest as core_ingest
from ..core.contract import ContractError, parse_incoming_name, validate_tenant, week_in_range
from ..core.watch import entry_refusal
from ..partitions import PARTITIONS_START, split_key, tenant_week
from ..resources import RiskmlSettings
from .common import OWNERS, frame_metadata, md_cell, md_table

INGEST_ASSETS = {
    # kind: (asset name, description, gates)
    "snapshots": ("risk_snapshots", "The week's validated CRM risk snapshots (one row per opportunity per snapshot date).",
                  ("risk_snapshots_schema", "risk_snapshots_duplicate_keys", "risk_snapshots_future_dates",
                   "risk_snapshots_not_empty", "risk_snapshots_files_readable")),
    "outcomes": ("opportunity_outcomes", "Outcomes (won/lost, revenue) of opportunities closed during the week "
                 "(by their own closed_at, from the files dated in the week or up to 8 weeks later).",
                 ("opportunity_outcomes_schema", "opportunity_outcomes_duplicate_keys",
                  "opportunity_outcomes_files_readable")),
    "activities": ("activity_events", "Activity events (email, call, meeting, ...) that occurred during the week.",
                   ("activity_events_schema", "activity_events_files_readable")),
    "interactions": ("recommendation_interactions",
                     "Feedback on recommended mitigation actions shown during the week (0 ignored, 1 clicked, 2 accepted).",
                     ("recommendation_interactions_schema", "recommendation_interactions_files_readable")),
}


def week_files(incoming: Path, kind: str, week: str, today: dt.date | None = None,
               accepted: list[Path] | None = None) -> list[Path]:
    """The tenant's ``kind`` files the ingestion of ``week`` reads (``core.ingest.files_for_week``), among
    the files whose date is inside the accepted range (``core.contract.week_in_range``); ``accepted``: that
    list already made (``accepted_files``, once for the weeks of a history run)."""
    if accepted is None:
        accepted = accepted_files(incoming, today)
    return core_ingest.files_for_week(kind, accepted, week)


def accepted_files(incoming: Path, today: dt.date | None = None) -> list[Path]:
    """The tenant folder's contract files whose date may become a partition (sorted by name)."""
    if not incoming.exists():
        return []
    accepted = []
    for f in sorted(incoming.iterdir()):
        try:
            _, d = parse_incoming_name(f.name)
        except ContractError:
            continue  # not a contract file: the sensor reports those
        if entry_refusal(f, incoming):
            continue  # a symbolic link leaving the tenant folder, or dangling: the sensor reports it
        if week_in_range(d, today=today, first=PARTITIONS_START).ok:
            accepted.append(f)
    return accepted


def _write_quarantine(settings: RiskmlSettings, kind: str, tenant: str, week: str, q: "pd.DataFrame") -> Path | None:
    path = Path(settings.quarantine_dir) / kind / validate_tenant(tenant) / f"{week}.parquet"
    if len(q) == 0:
        if path.exists():
            path.unlink()
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    q.to_parquet(path, index=False)
    return path


def _ingest_week(context, riskml: RiskmlSettings, kind: str, tenant: str, week: str, history: dict | None = None):
    """Validate one tenant-week of ``kind``: (valid frame, gate results, materialization metadata).

    ``history``: shared by the weeks of one run (its ``now``, the tenant folder's accepted files, and the files
    already read and row-checked). ContractError when the week has files and none of them can be read (after
    writing its quarantine)."""
    name, _, gates = INGEST_ASSETS[kind]
    incoming = riskml.tenant_dir(tenant)
    history = history if history is not None else {}
    if "now" not in history:
        history["now"] = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    accepted = history.get(("accepted", tenant))
    if accepted is None:
        accepted = history[("accepted", tenant)] = accepted_files(incoming)
    files = week_files(incoming, kind, week, accepted=accepted)
    quiet = history.get("quiet", False)  # a history run: each log line is an event record; the metadata has it
    if not quiet:
        context.log.info(f"{name}: {len(files)} {kind} file(s) for tenant {tenant}, week {week}: "
                         f"{[f.name for f in files]}")
    now = history["now"]
    try:
        res = core_ingest.ingest_week(kind, files, tenant=tenant, now=now, week=week, first_week=PARTITIONS_START,
                                      cache=history.setdefault("files", {}))
    except ContractError as exc:  # files, but none readable (or a file of another kind): nothing to ingest
        bad = core_ingest.unreadable_records(kind, tenant, [(",".join(f.name for f in files), str(exc))])
        _write_quarantine(riskml, kind, tenant, week, bad)
        raise
    valid, q, stats = res.valid, res.quarantine, res.stats
    qpath = _write_quarantine(riskml, kind, tenant, week, q)
    unreadable = stats.get("unreadable_files", [])
    for u in unreadable:
        context.log.error(f"{name}: unreadable file {u['source_file']} skipped (the other files are ingested): "
                          f"{u['reason']}")
    rows_read = max(int(stats.get("rows_read", 0)), 1)
    values = {
        f"{name}_schema": stats.get("rows_quarantined", 0) / rows_read,
        f"{name}_files_readable": len(unreadable),
    }
    if f"{name}_duplicate_keys" in gates:
        values[f"{name}_duplicate_keys"] = stats.get("duplicate_keys", 0) / rows_read
    if f"{name}_future_dates" in gates:
        values[f"{name}_future_dates"] = int(stats.get("reasons", {}).get("future_date", 0))
    if f"{name}_not_empty" in gates:
        values[f"{name}_not_empty"] = int(len(valid))
    reasons = pd.DataFrame(sorted(stats.get("reasons", {}).items()), columns=["reason", "rows"])
    unreadable_md = dg.MetadataValue.md(md_table(pd.DataFrame(unreadable, columns=["source_file", "reason"])))
    checks = gate_results(riskml.gates(), values, log=None if quiet else context.log,
                          extra={f"{name}_schema": {"reasons": dg.MetadataValue.md(md_table(reasons))},
                                 f"{name}_files_readable": {"unreadable_files": unreadable_md}})
    for c in checks if quiet else ():  # the failed and warning gates are still said, with their week
        if not c.passed:
            (context.log.error if c.severity == dg.AssetCheckSeverity.ERROR else context.log.warning)(
                f"{tenant}|{week}: {c.description}")
    if len(q):
        context.log.warning(f"{name}: {len(q)} row(s) quarantined to {qpath}: "
                            f"{dict(stats.get('reasons', {}))}")
    metadata = {
        **frame_metadata(valid),
        "files": dg.MetadataValue.json([f.name for f in files]),
        "rows_read": int(stats.get("rows_read", 0)),
        "rows_quarantined": int(stats.get("rows_quarantined", 0)),
        "unreadable_files": unreadable_md,
        "quarantine_reasons": dg.MetadataValue.md(md_table(reasons)),
        "preview": dg.MetadataValue.md(md_table(valid.head(5))),
    }
    if stats.get("rows_other_weeks"):
        metadata["rows_other_weeks"] = dg.MetadataValue.json(stats["rows_other_weeks"])
    if qpath:
        metadata["quarantine_path"] = dg.MetadataValue.path(str(qpath))
        metadata["quarantine_preview"] = dg.MetadataValue.md(md_table(q[["source_file", "row_number", "reason"]].head(10)))
    return valid, checks, metadata


def _unreadable_week(riskml: RiskmlSettings, kind: str, exc: ContractError):
    """A week of a history run whose files are all unreadable: an empty frame and failed gates (quarantine written)."""
    name, _, gates = INGEST_ASSETS[kind]
    values = {f"{name}_schema": 0.0, f"{name}_files_readable": 1}
    if f"{name}_not_empty" in gates:
        values[f"{name}_not_empty"] = 0
    checks = gate_results(riskml.gates(), values,
                          extra={f"{name}_files_readable": {"unreadable_files": dg.MetadataValue.md(md_cell(str(exc)))}})
    checks = [c._replace(description=f"{c.description} — {exc}") if not c.passed else c for c in checks]
    valid = core_ingest.empty_frame(kind)
    return valid, checks, {**frame_metadata(valid), "rows_read": 0, "rows_quarantined": 0,
                           "error": dg.MetadataValue.text(str(exc))}


def _evaluation(name: str, key: str, res: dg.AssetCheckResult) -> dg.AssetCheckEvaluation:
    """A gate result stored with its own tenant-week (in a run over several partitions Dagster would store an
    ``AssetCheckResult`` without any partition: it takes the partition from a single-partition step only)."""
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(name), check_name=res.check_name, passed=res.passed, metadata=res.metadata,
        severity=res.severity, description=res.description, blocking=True, partition=key)


def build_ingest_asset(kind: str) -> dg.AssetsDefinition:
    name, description, gates = INGEST_ASSETS[kind]

    @dg.asset(
        name=name, description=description, partitions_def=tenant_week, group_name="ingest",
        kinds={"parquet", "pandas"}, owners=OWNERS, tags={"domain": "risk", "layer": "bronze"},
        check_specs=gate_specs(name, gates), code_version="1",
        # a tenant's history is one run (a range of weeks); each week keeps its own frame, quarantine,
        # materialization metadata and gate results (stored with the week's partition key)
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    @checks_after_materialization
    def _ingest(context: dg.AssetExecutionContext, riskml: RiskmlSettings):
        if context.has_partition_key:  # one tenant-week: the frame, its metadata and its gate results
            tenant, week = split_key(context)
            try:
                valid, checks, metadata = _ingest_week(context, riskml, kind, tenant, week)
            except ContractError as exc:
                raise dg.Failure(description=f"{name} {tenant}|{week}: {exc}",
                                 metadata={"incoming_dir": str(riskml.tenant_dir(tenant))}) from exc
            yield dg.MaterializeResult(value=valid, metadata=metadata, check_results=checks)
            return
        # several tenant-weeks in one run (single-run backfill): one frame per week, written by the IO manager
        # to the week's own path; metadata and gate results per week
        frames, evaluations, history = {}, [], {"quiet": True}
        rows = quarantined = 0
        # oldest week first, whatever order Dagster gives the range's keys: the weeks are read, logged and their
        # gate results emitted in calendar order (the check history in the UI still follows the order in which
        # Dagster planned the run's evaluations, which varies between processes)
        for key in sorted(context.partition_keys, key=str):
            dims = tenant_week.get_partition_key_from_str(str(key)).keys_by_dimension
            tenant, week = validate_tenant(dims["tenant"]), dims["week"]
            try:
                valid, checks, metadata = _ingest_week(context, riskml, kind, tenant, week, history)
            except ContractError as exc:
                context.log.error(f"{name} {key}: {exc}")
                valid, checks, metadata = _unreadable_week(riskml, kind, exc)
            frames[key] = valid
            rows, quarantined = rows + len(valid), quarantined + int(metadata.get("rows_quarantined", 0))
            context.add_asset_metadata(metadata, partition_key=key)
            evaluations += [_evaluation(name, key, c) for c in checks]
        failed = sorted({e.check_name for e in evaluations if not e.passed})
        context.log.info(f"{name}: {len(frames)} tenant-week(s) {min(frames)} .. {max(frames)}: {rows} valid row(s), "
                         f"{quarantined} quarantined; gates not passed in some week: {failed or 'none'}")
        yield dg.Output(frames)
        for spec in context.assets_def.check_specs:  # the checks' own outputs (what an AssetCheckResult yields)
            yield dg.Output(None, output_name=spec.get_python_identifier())
        yield from evaluations  # a failed ERROR gate of any week fails the step after every week is stored

    return _ingest


risk_snapshots = build_ingest_asset("snapshots")
opportunity_outcomes = build_ingest_asset("outcomes")
activity_events = build_ingest_asset("activities")
recommendation_interactions = build_ingest_asset("interactions")
ingest_assets = [risk_snapshots, opportunity_outcomes, activity_events, recommendation_interactions]
