"""The augmentation/balancing ablation and the gate that keeps or refuses a variant."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from riskml_assets.core import ablation as AB
from riskml_assets.core import features as F
from riskml_assets.core import simulator
from riskml_assets.core.augmentation import augment_splits
from riskml_assets.core.cleaning import clean_examples
from riskml_assets.core.splits import split_examples
from riskml_assets.core.training import XGBParams

LABEL = F.LABEL
PARAMS = XGBParams(n_estimators=150, learning_rate=0.1, early_stopping_rounds=20, seed=0)
VARIANTS = {
    "baseline": {},
    "augmented:smote": {"augment": {"methods": ["smote"], "target_rows": 2500}},
    "augmented+balanced": {"augment": {"methods": ["copula", "rules"], "target_rows": 2500},
                           "balance": {"strategy": "smote", "target_ratio": 1.0, "min_ratio": 1.0}},
}


@pytest.fixture(scope="module")
def splits_df(initech_splits):
    return initech_splits


@pytest.fixture(scope="module")
def table(splits_df, manifest):
    return AB.run_ablation(splits_df, manifest, variants=VARIANTS, seed=0, params=PARAMS, n_boot=100)


def test_ablation_table_has_every_variant_and_metric(table, splits_df):
    assert list(table.columns) == list(AB.TABLE_COLUMNS)
    assert list(table["variant"]) == list(VARIANTS)
    n_train, n_test = int((splits_df["split"] == "train").sum()), int((splits_df["split"] == "test").sum())
    t = table.set_index("variant")
    assert (t["test_rows"] == n_test).all()  # the same real test rows for every variant
    assert (t["real_train_rows"] == n_train).all()
    assert t.loc["baseline", "synthetic_rows"] == 0 and t.loc["baseline", "train_rows"] == n_train
    assert t.loc["augmented:smote", "synthetic_rows"] == 2500 - n_train
    assert t.loc["augmented:smote", "quality_passed"] == True  # noqa: E712 (a numpy/pandas bool)
    assert t.loc["augmented+balanced", "synthetic_rows"] >= 2500 - n_train
    assert t.loc["augmented+balanced", "balance"] == "smote@1"
    for m in ("auc", "brier", "ece", "auc_raw", "brier_raw", "ece_raw"):
        assert t[m].between(0, 1).all(), m
    assert (t["auc"] > 0.6).all()  # every variant learns something real
    assert t.loc["baseline", ["delta_auc", "delta_brier", "delta_ece"]].tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(t["delta_brier"], t["brier"] - t.loc["baseline", "brier"])
    others = t.drop(index="baseline")
    assert (others["delta_brier_ci_low"] <= others["delta_brier"]).all()
    assert (others["delta_brier"] <= others["delta_brier_ci_high"]).all()


def test_ablation_is_reproducible_with_a_fixed_seed(table, splits_df, manifest):
    again = AB.run_ablation(splits_df, manifest, variants=VARIANTS, seed=0, params=PARAMS, n_boot=100)
    pd.testing.assert_frame_equal(table.drop(columns="seconds"), again.drop(columns="seconds"))


def test_baseline_is_always_included(splits_df, manifest):
    only = AB.run_ablation(splits_df, manifest, variants={"undersampled": {"balance": {
        "strategy": "undersample", "min_ratio": 1.0}}}, seed=0, params=PARAMS, n_boot=50)
    assert list(only["variant"]) == ["baseline", "undersampled"]
    assert only["balance"].tolist() == ["", "undersample@1"]


def test_ablation_refuses_synthetic_rows_outside_train(splits_df, manifest):
    aug, _ = augment_splits(splits_df, manifest, methods=["copula"], target_rows=1500, seed=0)
    leaked = aug.copy()
    leaked.loc[leaked["is_synthetic"], "split"] = "test"
    with pytest.raises(ValueError, match="test split contains synthetic rows"):
        AB.run_ablation(leaked, manifest, variants={}, params=PARAMS)


def _table(brier_candidate, quality=True, skipped=False, balance=""):
    return pd.DataFrame({
        "variant": ["baseline", "augmented"], "brier": [0.200, brier_candidate], "quality_passed": [None, quality],
        "augmentation_skipped": [None, skipped], "balance": ["", balance],
        "delta_brier_ci_low": [0.0, brier_candidate - 0.2 - 0.01], "delta_brier_ci_high": [0.0, brier_candidate - 0.2 + 0.01]})


def test_choose_variant_gate():
    worse = AB.choose_variant(_table(0.2050), "augmented", tolerance=0.002)
    assert worse["kept"] == "baseline" and not worse["passed"] and "refused" in worse["reason"]
    assert worse["delta_brier"] == pytest.approx(0.005)
    within = AB.choose_variant(_table(0.2015), "augmented", tolerance=0.002)
    assert within["kept"] == "augmented" and within["passed"] and "within tolerance" in within["reason"]
    better = AB.choose_variant(_table(0.1800), "augmented")
    assert better["kept"] == "augmented" and "significantly better" in better["reason"]
    # a looser tolerance lets the worse variant through; synthetic rows that failed the gates never do
    assert AB.choose_variant(_table(0.2050), "augmented", tolerance=0.01)["kept"] == "augmented"
    bad = AB.choose_variant(_table(0.1800, quality=False), "augmented")
    assert bad["kept"] == "baseline" and "quality gates" in bad["reason"]
    same = AB.choose_variant(_table(0.2000, skipped=True), "augmented")
    assert same["kept"] == "baseline" and "skipped" in same["reason"]
    assert AB.choose_variant(_table(0.2), "baseline")["kept"] == "baseline"
    # stricter: the pessimistic end of the interval must be within tolerance too
    strict = AB.choose_variant(_table(0.2015), "augmented", tolerance=0.002, require="ci")
    assert strict["kept"] == "baseline" and "upper end" in strict["reason"]
    assert AB.choose_variant(_table(0.1800), "augmented", require="ci")["kept"] == "augmented"
    with pytest.raises(ValueError, match="unknown candidate"):
        AB.choose_variant(_table(0.2), "smote")


def test_choose_variant_on_the_real_ablation(table):
    decision = AB.choose_variant(table, "augmented+balanced", tolerance=0.002)
    t = table.set_index("variant")
    delta = t.loc["augmented+balanced", "brier"] - t.loc["baseline", "brier"]
    assert decision["delta_brier"] == pytest.approx(delta)
    assert decision["kept"] == ("augmented+balanced" if delta <= 0.002 else "baseline")
    md = AB.ablation_markdown(table, decision)
    assert f"**Kept: {decision['kept']}**" in md and "augmented:smote" in md
