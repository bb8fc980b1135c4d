"""Preparation assets: cleaned examples, grouped splits and the balanced train split."""

from typing import Literal, Optional

import dagster as dg
from ..core.lazy import lazy_module

pd = lazy_module("pandas")

from pydantic import Field

from ..checks import checks_after_materialization, gate_results, gate_specs
from ..core import augmentation as A
from ..core import synthetic_quality as Q
from ..core.balancing import balance
from ..core.cleaning import clean_examples as clean_fn
from ..core.features import LABEL
from ..core.splits import SPLITS, split_examples, split_stats
from ..partitions import split_key, tenant_week
from ..resources import RiskmlSettings
from .common import OWNERS, Frame, frame_metadata, md_table

_common = dict(partitions_def=tenant_week, group_name="prepare", kinds={"pandas", "parquet"}, owners=OWNERS,
               tags={"domain": "risk"}, code_version="1")


@dg.asset(**_common, check_specs=gate_specs("clean_examples", ("clean_examples_drop_share",)),
          description="Validated, cleaned examples: rows with missing critical features, a CRM probability outside "
                      "0-100 or infinite values removed (with the reason); other missing values kept for the model.")
@checks_after_materialization
def clean_examples(context: dg.AssetExecutionContext, riskml: RiskmlSettings, training_examples: Frame,
                   feature_manifest: dict):
    clean, dropped, stats = clean_fn(training_examples, feature_manifest["features"])
    context.log.info(f"cleaning kept {stats['rows_out']} of {stats['rows_in']} rows; dropped: {stats['drop_reasons']}")
    reasons = pd.DataFrame(sorted(stats["drop_reasons"].items()), columns=["reason", "rows"])
    checks = gate_results(riskml.gates(), {"clean_examples_drop_share": stats["drop_share"]}, log=context.log,
                          extra={"clean_examples_drop_share": {"reasons": dg.MetadataValue.md(md_table(reasons))}})
    return dg.MaterializeResult(value=clean, check_results=checks, metadata={
        **frame_metadata(clean), "rows_dropped": stats["rows_dropped"], "drop_share": stats["drop_share"],
        "drop_reasons": dg.MetadataValue.md(md_table(reasons)),
        "dropped_examples": dg.MetadataValue.md(md_table(dropped[["opportunity_id", "snapshot_date", "drop_reason"]]
                                                         if len(dropped) else dropped, 10)),
    })


class SplitConfig(dg.Config):
    method: Literal["stratified", "walk_forward"] = Field(
        "stratified", description="stratified: by a stable hash of tenant + opportunity id (an opportunity keeps its "
                                  "split from week to week, so a champion is never tested on its own training rows); "
                                  "walk_forward: by outcome time.")
    train_fraction: float = 0.70
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0


@dg.asset(**_common, check_specs=gate_specs("dataset_splits", (
    "dataset_splits_disjoint", "dataset_splits_min_rows", "dataset_splits_min_class", "dataset_splits_walk_forward_order")),
    description="Train / validation / test (column `split`), grouped by opportunity: all snapshots of an "
                "opportunity land in one split, and the same split every week (stable hash of tenant + opportunity).")
@checks_after_materialization
def dataset_splits(context: dg.AssetExecutionContext, config: SplitConfig, riskml: RiskmlSettings,
                   clean_examples: Frame):
    tenant, _ = split_key(context)
    df = split_examples(clean_examples, method=config.method, seed=config.seed, tenant=tenant,
                        fractions=(config.train_fraction, config.validation_fraction, config.test_fraction))
    stats = split_stats(df)
    per = pd.DataFrame([{"split": s, **{k: v for k, v in stats[s].items()}} for s in SPLITS])
    order_violations = 0
    if config.method == "walk_forward" and len(df):
        last_train = df.loc[df.split == "train", "closed_at"].max()
        order_violations = int((df.loc[df.split == "test", "closed_at"] < last_train).sum())
    values = {
        "dataset_splits_disjoint": stats["opportunities_in_several_splits"],
        "dataset_splits_min_rows": int(per["rows"].min()),
        "dataset_splits_min_class": int(per[["lost", "won"]].min().min()),
        "dataset_splits_walk_forward_order": order_violations,
    }
    checks = gate_results(riskml.gates(), values, log=context.log)
    return dg.MaterializeResult(value=df, check_results=checks, metadata={
        **frame_metadata(df), "method": config.method, "splits": dg.MetadataValue.md(md_table(per)),
        **{f"{s}_rows": stats[s]["rows"] for s in SPLITS},
    })


class AugmentConfig(dg.Config):
    methods: list[str] = Field(list(A.DEFAULT_METHODS),
                               description="Any of smote (SMOTE-NC with categoricals), copula (Gaussian copula), "
                                           "rules (domain rules as data: core/augmentation_rules.yaml); [] disables "
                                           "augmentation. Rules are opt-in: their rows sample chosen regions on "
                                           "purpose, so they pass the KS gate only where those regions are common.")
    target_rows: int = Field(5000, ge=0, description="Augment the train split up to this many rows; skip when "
                                                      "the real train rows already reach it.")
    rules_file: Optional[str] = Field(None, description="Domain rules as YAML (default: the shipped rules).")
    seed: int = 0


QUALITY_GATE_NAMES = tuple(g.name for g in Q.QUALITY_GATES)
_WORST = {"impossible_rows": sum}


@dg.asset(**_common, check_specs=gate_specs("augmented_examples", QUALITY_GATE_NAMES),
          description="Real examples plus synthetic TRAIN rows (SMOTE/SMOTE-NC, Gaussian copula, domain rules) up to a "
                      "target size when data is scarce; every synthetic row has is_synthetic=True and its method. "
                      "Validation and test rows are passed through untouched.")
@checks_after_materialization
def augmented_examples(context: dg.AssetExecutionContext, config: AugmentConfig, riskml: RiskmlSettings,
                       dataset_splits: Frame, feature_manifest: dict):
    manifest = feature_manifest["features"]
    rules = A.load_rules(config.rules_file) if config.rules_file else None
    if config.methods:
        out, info = A.augment_splits(dataset_splits, manifest, methods=tuple(config.methods),
                                     target_rows=config.target_rows, seed=config.seed, rules=rules)
    else:
        out, info = A.augment_splits(dataset_splits, manifest, methods=("smote",), target_rows=0, seed=config.seed)
    quality = info.get("quality") or {}
    values = {}
    for g in Q.QUALITY_GATES:
        vals = [q.get(g.metric) for q in quality.values() if q.get(g.metric) is not None]
        values[g.name] = (_WORST.get(g.metric, max)(vals) if vals else 0.0)
    per_method = pd.DataFrame([{"method": m, **{k: v for k, v in q.items() if isinstance(v, (int, float, str))}}
                               for m, q in quality.items()])
    methods = pd.DataFrame([{"method": m, **{k: v for k, v in d.items() if isinstance(v, (int, float, str, bool))}}
                            for m, d in (info.get("methods") or {}).items()])
    if info.get("skipped"):
        context.log.info(f"augmentation skipped: {info.get('reason')}")
    else:
        context.log.info(f"augmented {info.get('real_rows')} real train rows with {info.get('synthetic_rows')} "
                         f"synthetic rows: {dict((m, d.get('rows')) for m, d in (info.get('methods') or {}).items())}")
    checks = gate_results(riskml.gates(), values, log=context.log, extra={
        "augmented_examples_ks": {"per_method": dg.MetadataValue.md(md_table(per_method, 10))}})
    syn = out[out["is_synthetic"]] if "is_synthetic" in out.columns else out.iloc[0:0]
    assert not (syn["split"] != "train").any(), "synthetic rows outside the train split"
    meta = {**frame_metadata(out), "skipped": bool(info.get("skipped", False)), "reason": str(info.get("reason", "")),
            "real_train_rows": int(info.get("real_rows", 0)), "synthetic_rows": int(len(syn)),
            "methods": dg.MetadataValue.md(md_table(methods)),
            "quality_per_method": dg.MetadataValue.md(md_table(per_method, 10))}
    if len(syn):
        real_train = out[(out["split"] == "train") & ~out["is_synthetic"]]
        rep = Q.quality_report(real_train, syn, manifest)
        meta["quality_per_feature"] = dg.MetadataValue.md(md_table(Q.feature_table(rep), 60))
    return dg.MaterializeResult(value=out, check_results=checks, metadata=meta)


class BalanceConfig(dg.Config):
    strategy: Literal["none", "undersample", "oversample", "smote"] = Field(
        "none", description="How to balance the train split (validation and test are never touched). Off by default: "
                            "random oversampling cost AUC on a real tenant. When set, risk_evaluation's ablation "
                            "keeps the balanced model only if it helps on both Brier and AUC (interval-aware); "
                            "otherwise the real-rows baseline is evaluated and registered.")
    target_ratio: float = Field(1.0, gt=0, le=1, description="Wanted minority/majority ratio after balancing.")
    min_ratio: float = Field(0.5, ge=0, le=1, description="Leave the split alone when it is already this balanced.")
    seed: int = 0


@dg.asset(**_common, check_specs=gate_specs("balanced_train", ("balanced_train_ratio",)),
          description="The train split, balanced between won and lost (imbalanced-learn) only when configured "
                      "(default: passed through unchanged); only train rows.")
@checks_after_materialization
def balanced_train(context: dg.AssetExecutionContext, config: BalanceConfig, riskml: RiskmlSettings,
                   augmented_examples: Frame, feature_manifest: dict):
    train = augmented_examples[augmented_examples["split"] == "train"].reset_index(drop=True)
    out, info = balance(train, strategy=config.strategy, target_ratio=config.target_ratio,
                        min_ratio=config.min_ratio, seed=config.seed, features=feature_manifest["features"])
    wanted = config.target_ratio if info["applied"] else info["ratio_before"]
    shortfall = max(0.0, wanted - info["ratio_after"])
    context.log.info(f"balancing ({config.strategy}): ratio {info['ratio_before']:.3f} -> {info['ratio_after']:.3f}, "
                     f"rows {info['rows_before']} -> {info['rows_after']} (applied: {info['applied']})")
    checks = gate_results(riskml.gates(), {"balanced_train_ratio": shortfall}, log=context.log)
    counts = out[LABEL].value_counts().rename({0: "won", 1: "lost"}).to_dict()
    return dg.MaterializeResult(value=out, check_results=checks, metadata={
        **frame_metadata(out), **{k: v for k, v in info.items() if isinstance(v, (int, float, str, bool))},
        "class_counts": dg.MetadataValue.json({str(k): int(v) for k, v in counts.items()}),
    })


prep_assets = [clean_examples, dataset_splits, augmented_examples, balanced_train]
