"""Feature assets: the pinned feature manifest and the point-in-time training examples."""

import json
from pathlib import Path

import dagster as dg
from ..core.lazy import lazy_module

pd = lazy_module("pandas")

from pydantic import Field

from ..checks import checks_after_materialization, gate_results, gate_specs
from ..core import features as F
from ..core.contract import week_bounds
from ..partitions import MAX_WINDOW_WEEKS, split_key, tenant_week, window_in
from ..resources import RiskmlSettings
from .common import OWNERS, frame_metadata, md_table

FEATURE_LOCK = Path(__file__).resolve().parent.parent / "core" / "feature_lock.json"


class FeatureManifestConfig(dg.Config):
    versions: dict[str, int] = Field(default_factory=dict,
                                     description="Pin a feature to a version other than the latest, e.g. {'engagement': 1}.")
    exclude: list[str] = Field(default_factory=list, description="Features not to use for this partition.")


def lock_mismatches(manifest: dict, lock_path: Path = FEATURE_LOCK) -> list[str]:
    """Features whose (name, version) is in the lock file with another definition hash: the code of a
    released version changed without a version bump (for per-tenant features: the template's code)."""
    if not lock_path.exists():
        return []
    lock = json.loads(lock_path.read_text())
    out = []
    for name, pin in manifest.items():
        key, h = F.lock_key(name, pin)
        if key in lock and lock[key] != h:
            out.append(f"{key}: locked hash {lock[key]} != current {h}")
    return out


@dg.asset(
    partitions_def=tenant_week, group_name="features", kinds={"python"}, owners=OWNERS, code_version="2",
    # read as polars, as training_examples reads it: the extra columns' kinds are decided on the frame the
    # features are computed from (and the run reads the weeks once: the IO manager's read cache)
    tags={"domain": "risk"}, ins={"risk_snapshots": window_in(polars=True)},
    check_specs=gate_specs("feature_manifest", ("feature_manifest_parity",)),
    description="Feature versions pinned for this training partition: name -> version + definition hash, "
                "with the tenant's own parameters (stage order, extra columns) decided from its snapshot "
                "history and config/tenants/<tenant>.yaml, and pinned.",
)
@checks_after_materialization
def feature_manifest(context: dg.AssetExecutionContext, config: FeatureManifestConfig,
                     riskml: RiskmlSettings, risk_snapshots):
    tenant, week = split_key(context)
    _, end = week_bounds(week)
    snaps = F.snapshots_before(F.concat_frames(risk_snapshots), end.isoformat())
    tenant_cfg = F.parse_tenant_config(riskml.tenant_config(tenant), where=str(riskml.tenant_config_path(tenant)))
    report: dict = {}
    manifest = F.build_manifest(config.versions, tuple(config.exclude), snapshots=snaps if len(snaps) else None,
                                tenant_config=tenant_cfg, report=report)
    problems = lock_mismatches(manifest)
    for p in problems:
        context.log.error(f"feature definition changed without a version bump: {p}")
    table = pd.DataFrame([{"feature": n, "version": p["version"], "hash": p["hash"], "kind": p["kind"],
                           "sources": ", ".join(p["sources"]), "params": p.get("params_source", "")}
                          for n, p in manifest.items()])
    extras = pd.DataFrame([{"feature": n, **d} for n, d in report.get("extra_features", {}).items()])
    skipped = pd.DataFrame(sorted(report.get("extra_columns_skipped", {}).items()), columns=["column", "why skipped"])
    if report.get("stages_outside_order"):
        context.log.warning(f"{tenant}: stages seen outside the pinned stage order (stage_index null for them): "
                            f"{report['stages_outside_order']}")
    checks = gate_results(riskml.gates(), {"feature_manifest_parity": len(problems)}, log=context.log,
                          extra={"feature_manifest_parity": {"problems": dg.MetadataValue.json(problems)}})
    value = {"features": manifest, "fingerprint": F.manifest_fingerprint(manifest)}
    return dg.MaterializeResult(value=value, check_results=checks, metadata={
        "fingerprint": value["fingerprint"], "features": len(manifest),
        "manifest": dg.MetadataValue.md(md_table(table, max_rows=100)),
        "stage_order": dg.MetadataValue.json({"order": report.get("stage_order", []),
                                              "source": report.get("stage_order_source", ""),
                                              "stages_outside_order": report.get("stages_outside_order", [])}),
        "extra_features": dg.MetadataValue.md(md_table(extras, max_rows=100)),
        "extra_columns_skipped": dg.MetadataValue.md(md_table(skipped, max_rows=100)),
    })


class TrainingExamplesConfig(dg.Config):
    window_weeks: int = Field(52, ge=1, le=MAX_WINDOW_WEEKS,
                              description="Rolling training window: labelled snapshots of the last N weeks.")


@dg.asset(
    partitions_def=tenant_week, group_name="features", kinds={"polars", "parquet"}, owners=OWNERS, code_version="1",
    tags={"domain": "risk"},
    # read as polars frames: the features are computed in polars, no pandas round trip of the history
    ins={"risk_snapshots": window_in(polars=True), "opportunity_outcomes": window_in(polars=True),
         "activity_events": window_in(polars=True)},
    check_specs=gate_specs("training_examples", ("training_examples_min_rows", "training_examples_max_null_rate",
                                                 "training_examples_parity")),
    description="Point-in-time features (pinned versions) for every labelled snapshot in the rolling window, "
                "with labels only from outcomes closed before the partition's end.",
)
@checks_after_materialization
def training_examples(context: dg.AssetExecutionContext, config: TrainingExamplesConfig, riskml: RiskmlSettings,
                      risk_snapshots, opportunity_outcomes, activity_events, feature_manifest: dict):
    tenant, week = split_key(context)
    _, end = week_bounds(week)
    snaps, outs, acts = (F.concat_frames(risk_snapshots), F.concat_frames(opportunity_outcomes),
                         F.concat_frames(activity_events))
    context.log.info(f"training_examples {tenant}|{week}: {len(snaps)} snapshot rows, {len(outs)} outcomes, "
                     f"{len(acts)} activity events in the {config.window_weeks}-week window + history")
    manifest = feature_manifest["features"]
    parity_problems = []
    try:
        F.verify_manifest(manifest)
    except F.FeatureVersionError as exc:
        parity_problems.append(str(exc))
        context.log.error(str(exc))
    if len(snaps) == 0:
        df, stats = pd.DataFrame(columns=list(F.META_COLUMNS)), {"labelled_rows": 0, "unavailable_features": {},
                                                               "features": []}
    elif parity_problems:
        df, stats = pd.DataFrame(columns=list(F.META_COLUMNS)), {"labelled_rows": 0, "unavailable_features": {},
                                                               "features": []}
    else:
        df, stats = F.build_training_examples(snaps, outs, acts, manifest, partition_end=end.isoformat(),
                                              window_weeks=config.window_weeks)
    feats = stats["features"]
    conflicts = stats.pop("conflicts", None)
    conflict_file = write_conflicts(Path(riskml.quarantine_dir), tenant, week, conflicts)
    if conflicts is not None and conflicts.height:
        context.log.warning(f"{tenant}|{week}: {conflicts['opportunity_id'].n_unique()} opportunities with "
                            f"conflicting outcomes excluded from training (rows in {conflict_file})")
    nulls = {c: float(df[c].isna().mean()) for c in feats} if len(df) else {}
    values = {
        "training_examples_min_rows": stats["labelled_rows"],
        "training_examples_max_null_rate": max(nulls.values()) if nulls else 0.0,
        "training_examples_parity": len(parity_problems),
    }
    unavailable = pd.DataFrame(sorted(stats["unavailable_features"].items()), columns=["feature", "reason"])
    null_table = pd.DataFrame(sorted(nulls.items(), key=lambda kv: -kv[1]), columns=["feature", "null_rate"])
    checks = gate_results(riskml.gates(), values, log=context.log, extra={
        "training_examples_max_null_rate": {"null_rates": dg.MetadataValue.md(md_table(null_table, 40))},
        "training_examples_parity": {"problems": dg.MetadataValue.json(parity_problems)},
    })
    if len(unavailable):
        context.log.warning(f"features unavailable for {tenant} (reported, not fabricated): "
                            f"{dict(stats['unavailable_features'])}")
    meta = {
        **frame_metadata(df),
        **{k: v for k, v in stats.items() if isinstance(v, (int, float))},
        "features_used": dg.MetadataValue.json(feats),
        "unavailable_features": dg.MetadataValue.md(md_table(unavailable)),
        "null_rates": dg.MetadataValue.md(md_table(null_table, 40)),
        "manifest_fingerprint": feature_manifest.get("fingerprint", ""),
        "conflicting_outcome_opportunities": int(stats.get("conflicting_outcome_opportunities", 0)),
        "conflicts_file": str(conflict_file) if conflict_file else "",
    }
    return dg.MaterializeResult(value=df, metadata=meta, check_results=checks)


def write_conflicts(quarantine_dir: Path, tenant: str, week: str, conflicts) -> Path | None:
    """Write the outcome rows excluded as ``conflicting_outcome`` to
    ``<quarantine_dir>/conflicts/<tenant>/<week>.parquet`` (tenant column added). With no conflict, an
    earlier file of the same partition is replaced by an empty table (so it never tells a stale story)."""
    from ..core.contract import validate_tenant

    path = Path(quarantine_dir) / "conflicts" / validate_tenant(tenant) / f"{week_bounds(week)[0].date().isoformat()}.parquet"
    if conflicts is None or (not conflicts.height and not path.exists()):
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    conflicts.to_pandas().assign(tenant=tenant, kind="outcomes").to_parquet(tmp, index=False)
    tmp.replace(path)
    return path if conflicts.height else None


feature_assets = [feature_manifest, training_examples]
