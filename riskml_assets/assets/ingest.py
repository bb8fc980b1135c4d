"""Ingestion assets: the week's validated input rows of one tenant, with a quarantine table for the rest.

One factory builds ``risk_snapshots``, ``opportunity_outcomes`` and ``activity_events`` (and later
``recommendation_interactions``) from their kind; the validation rules live in ``core.schemas``.
"""

import datetime as dt
from pathlib import Path

import dagster as dg
import pandas as pd

from ..checks import gate_results, gate_specs
from ..core import ingest as core_ingest
from ..core.contract import ContractError, parse_incoming_name, week_bounds
from ..partitions import split_key, tenant_week
from ..resources import RiskmlSettings
from .common import OWNERS, frame_metadata, md_table

INGEST_ASSETS = {
    # kind: (asset name, description, gates)
    "snapshots": ("risk_snapshots", "The week's validated CRM risk snapshots (one row per opportunity per snapshot date).",
                  ("risk_snapshots_schema", "risk_snapshots_duplicate_keys", "risk_snapshots_future_dates",
                   "risk_snapshots_not_empty")),
    "outcomes": ("opportunity_outcomes", "Outcomes (won/lost, revenue) of opportunities closed during the week.",
                 ("opportunity_outcomes_schema", "opportunity_outcomes_duplicate_keys")),
    "activities": ("activity_events", "Activity events (email, call, meeting, ...) that occurred during the week.",
                   ("activity_events_schema",)),
    "interactions": ("recommendation_interactions",
                     "Feedback on recommended mitigation actions shown during the week (0 ignored, 1 clicked, 2 accepted).",
                     ("recommendation_interactions_schema",)),
}


def week_files(incoming: Path, kind: str, week: str) -> list[Path]:
    """The tenant's files of ``kind`` whose date falls in the Monday-anchored ``week``."""
    start, end = week_bounds(week)
    out = []
    if not incoming.exists():
        return out
    for f in sorted(incoming.iterdir()):
        try:
            k, d = parse_incoming_name(f.name)
        except ContractError:
            continue  # not a contract file: the sensor reports those
        if k == kind and start.date() <= d < end.date():
            out.append(f)
    return out


def _write_quarantine(settings: RiskmlSettings, kind: str, tenant: str, week: str, q: pd.DataFrame) -> Path | None:
    path = Path(settings.quarantine_dir) / kind / tenant / f"{week}.parquet"
    if len(q) == 0:
        if path.exists():
            path.unlink()
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    q.to_parquet(path, index=False)
    return path


def build_ingest_asset(kind: str) -> dg.AssetsDefinition:
    name, description, gates = INGEST_ASSETS[kind]

    @dg.asset(
        name=name, description=description, partitions_def=tenant_week, group_name="ingest",
        kinds={"parquet", "pandas"}, owners=OWNERS, tags={"domain": "risk", "layer": "bronze"},
        check_specs=gate_specs(name, gates), code_version="1",
    )
    def _ingest(context: dg.AssetExecutionContext, riskml: RiskmlSettings):
        tenant, week = split_key(context)
        incoming = riskml.tenant_dir(tenant)
        files = week_files(incoming, kind, week)
        context.log.info(f"{name}: {len(files)} {kind} file(s) for tenant {tenant}, week {week}: "
                         f"{[f.name for f in files]}")
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        try:
            res = core_ingest.ingest_files(kind, files, tenant=tenant, now=now, week=week_bounds(week))
        except ContractError as exc:
            bad = pd.DataFrame([{"tenant": tenant, "kind": kind, "source_file": ",".join(f.name for f in files),
                                 "row_number": -1, "reason_code": "unreadable_file", "reason": str(exc), "raw": ""}],
                               columns=core_ingest.QUARANTINE_COLUMNS)
            _write_quarantine(riskml, kind, tenant, week, bad)
            raise dg.Failure(description=f"{name} {tenant}|{week}: {exc}",
                             metadata={"incoming_dir": str(incoming)}) from exc
        valid, q, stats = res.valid, res.quarantine, res.stats
        qpath = _write_quarantine(riskml, kind, tenant, week, q)
        rows_read = max(int(stats.get("rows_read", 0)), 1)
        values = {
            f"{name}_schema": stats.get("rows_quarantined", 0) / rows_read,
        }
        if f"{name}_duplicate_keys" in gates:
            values[f"{name}_duplicate_keys"] = stats.get("duplicate_keys", 0) / rows_read
        if f"{name}_future_dates" in gates:
            values[f"{name}_future_dates"] = int(stats.get("reasons", {}).get("future_date", 0))
        if f"{name}_not_empty" in gates:
            values[f"{name}_not_empty"] = int(len(valid))
        reasons = pd.DataFrame(sorted(stats.get("reasons", {}).items()), columns=["reason", "rows"])
        checks = gate_results(riskml.gates(), values, log=context.log,
                              extra={f"{name}_schema": {"reasons": dg.MetadataValue.md(md_table(reasons))}})
        if len(q):
            context.log.warning(f"{name}: {len(q)} row(s) quarantined to {qpath}: "
                                f"{dict(stats.get('reasons', {}))}")
        metadata = {
            **frame_metadata(valid),
            "files": dg.MetadataValue.json([f.name for f in files]),
            "rows_read": int(stats.get("rows_read", 0)),
            "rows_quarantined": int(len(q)),
            "quarantine_reasons": dg.MetadataValue.md(md_table(reasons)),
            "preview": dg.MetadataValue.md(md_table(valid.head(5))),
        }
        if qpath:
            metadata["quarantine_path"] = dg.MetadataValue.path(str(qpath))
            metadata["quarantine_preview"] = dg.MetadataValue.md(md_table(q[["source_file", "row_number", "reason"]].head(10)))
        return dg.MaterializeResult(value=valid, metadata=metadata, check_results=checks)

    return _ingest


risk_snapshots = build_ingest_asset("snapshots")
opportunity_outcomes = build_ingest_asset("outcomes")
activity_events = build_ingest_asset("activities")
recommendation_interactions = build_ingest_asset("interactions")
ingest_assets = [risk_snapshots, opportunity_outcomes, activity_events, recommendation_interactions]
