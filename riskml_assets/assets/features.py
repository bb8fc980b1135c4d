"""Feature assets: the pinned feature manifest and the point-in-time training examples."""

import json
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from ..checks import gate_results, gate_specs
from ..core import features as F
from ..core.contract import week_bounds
from ..partitions import MAX_WINDOW_WEEKS, lookback_mapping, split_key, tenant_week
from ..resources import RiskmlSettings
from .common import OWNERS, concat, frame_metadata, md_table

FEATURE_LOCK = Path(__file__).resolve().parent.parent / "core" / "feature_lock.json"


class FeatureManifestConfig(dg.Config):
    versions: dict[str, int] = Field(default_factory=dict,
                                     description="Pin a feature to a version other than the latest, e.g. {'engagement': 1}.")
    exclude: list[str] = Field(default_factory=list, description="Features not to use for this partition.")


def lock_mismatches(manifest: dict, lock_path: Path = FEATURE_LOCK) -> list[str]:
    """Features whose (name, version) is in the lock file with another definition hash: the code of a
    released version changed without a version bump."""
    if not lock_path.exists():
        return []
    lock = json.loads(lock_path.read_text())
    out = []
    for name, pin in manifest.items():
        key = f"{name}@{pin['version']}"
        if key in lock and lock[key] != pin["hash"]:
            out.append(f"{key}: locked hash {lock[key]} != current {pin['hash']}")
    return out


@dg.asset(
    partitions_def=tenant_week, group_name="features", kinds={"python"}, owners=OWNERS, code_version="1",
    tags={"domain": "risk"}, check_specs=gate_specs("feature_manifest", ("feature_manifest_parity",)),
    description="Feature versions pinned for this training partition: name -> version + definition hash.",
)
def feature_manifest(context: dg.AssetExecutionContext, config: FeatureManifestConfig,
                     riskml: RiskmlSettings):
    manifest = F.build_manifest(config.versions, tuple(config.exclude))
    problems = lock_mismatches(manifest)
    for p in problems:
        context.log.error(f"feature definition changed without a version bump: {p}")
    table = pd.DataFrame([{"feature": n, "version": p["version"], "hash": p["hash"], "kind": p["kind"],
                           "sources": ", ".join(p["sources"])} for n, p in manifest.items()])
    checks = gate_results(riskml.gates(), {"feature_manifest_parity": len(problems)}, log=context.log,
                          extra={"feature_manifest_parity": {"problems": dg.MetadataValue.json(problems)}})
    value = {"features": manifest, "fingerprint": F.manifest_fingerprint(manifest)}
    return dg.MaterializeResult(value=value, check_results=checks, metadata={
        "fingerprint": value["fingerprint"], "features": len(manifest),
        "manifest": dg.MetadataValue.md(md_table(table, max_rows=100)),
    })


class TrainingExamplesConfig(dg.Config):
    window_weeks: int = Field(52, ge=1, le=MAX_WINDOW_WEEKS,
                              description="Rolling training window: labelled snapshots of the last N weeks.")


_window_in = dict(partition_mapping=lookback_mapping, metadata={"allow_missing_partitions": True})


@dg.asset(
    partitions_def=tenant_week, group_name="features", kinds={"polars", "parquet"}, owners=OWNERS, code_version="1",
    tags={"domain": "risk"},
    ins={"risk_snapshots": dg.AssetIn(**_window_in), "opportunity_outcomes": dg.AssetIn(**_window_in),
         "activity_events": dg.AssetIn(**_window_in)},
    check_specs=gate_specs("training_examples", ("training_examples_min_rows", "training_examples_max_null_rate",
                                                 "training_examples_parity")),
    description="Point-in-time features (pinned versions) for every labelled snapshot in the rolling window, "
                "with labels only from outcomes closed before the partition's end.",
)
def training_examples(context: dg.AssetExecutionContext, config: TrainingExamplesConfig, riskml: RiskmlSettings,
                      risk_snapshots, opportunity_outcomes, activity_events, feature_manifest: dict):
    tenant, week = split_key(context)
    _, end = week_bounds(week)
    snaps, outs, acts = concat(risk_snapshots), concat(opportunity_outcomes), concat(activity_events)
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
    }
    return dg.MaterializeResult(value=df, metadata=meta, check_results=checks)


feature_assets = [feature_manifest, training_examples]
