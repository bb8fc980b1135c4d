"""Preparation assets: cleaned examples, grouped splits and the balanced train split."""

from typing import Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from ..checks import gate_results, gate_specs
from ..core.balancing import balance
from ..core.cleaning import clean_examples as clean_fn
from ..core.features import LABEL
from ..core.splits import SPLITS, split_examples, split_stats
from ..partitions import tenant_week
from ..resources import RiskmlSettings
from .common import OWNERS, frame_metadata, md_table

_common = dict(partitions_def=tenant_week, group_name="prepare", kinds={"pandas", "parquet"}, owners=OWNERS,
               tags={"domain": "risk"}, code_version="1")


@dg.asset(**_common, check_specs=gate_specs("clean_examples", ("clean_examples_drop_share",)),
          description="Validated, cleaned examples: rows with missing critical features, a CRM probability outside "
                      "0-100 or infinite values removed (with the reason); other missing values kept for the model.")
def clean_examples(context: dg.AssetExecutionContext, riskml: RiskmlSettings, training_examples: pd.DataFrame,
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
        "stratified", description="stratified: random by opportunity within each class; walk_forward: by outcome time.")
    train_fraction: float = 0.70
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0


@dg.asset(**_common, check_specs=gate_specs("dataset_splits", (
    "dataset_splits_disjoint", "dataset_splits_min_rows", "dataset_splits_min_class", "dataset_splits_walk_forward_order")),
    description="Train / validation / test (column `split`), grouped by opportunity: all snapshots of an "
                "opportunity land in one split.")
def dataset_splits(context: dg.AssetExecutionContext, config: SplitConfig, riskml: RiskmlSettings,
                   clean_examples: pd.DataFrame):
    df = split_examples(clean_examples, method=config.method, seed=config.seed,
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


class BalanceConfig(dg.Config):
    strategy: Literal["none", "undersample", "oversample"] = Field(
        "oversample", description="How to balance the train split (validation and test are never touched).")
    target_ratio: float = Field(1.0, gt=0, le=1, description="Wanted minority/majority ratio after balancing.")
    min_ratio: float = Field(0.5, ge=0, le=1, description="Leave the split alone when it is already this balanced.")
    seed: int = 0


@dg.asset(**_common, check_specs=gate_specs("balanced_train", ("balanced_train_ratio",)),
          description="The train split balanced between won and lost (imbalanced-learn); only train rows.")
def balanced_train(context: dg.AssetExecutionContext, config: BalanceConfig, riskml: RiskmlSettings,
                   dataset_splits: pd.DataFrame):
    train = dataset_splits[dataset_splits["split"] == "train"].reset_index(drop=True)
    out, info = balance(train, strategy=config.strategy, target_ratio=config.target_ratio,
                        min_ratio=config.min_ratio, seed=config.seed)
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


prep_assets = [clean_examples, dataset_splits, balanced_train]
