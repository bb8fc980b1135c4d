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
    # the AUC difference has its own paired interval, from the same opportunity resamples
    np.testing.assert_allclose(t["delta_auc"], t["auc"] - t.loc["baseline", "auc"])
    assert (others["delta_auc_ci_low"] <= others["delta_auc"]).all()
    assert (others["delta_auc"] <= others["delta_auc_ci_high"]).all()
    assert (others["delta_auc_ci_high"] > others["delta_auc_ci_low"]).all()


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


def _table(brier_candidate, quality=True, skipped=False, balance="", auc_candidate=0.800, auc_ci=(-0.01, 0.01),
           brier_ci_width=0.01):
    return pd.DataFrame({
        "variant": ["baseline", "augmented"], "brier": [0.200, brier_candidate], "auc": [0.800, auc_candidate],
        "quality_passed": [None, quality], "augmentation_skipped": [None, skipped], "balance": ["", balance],
        "delta_brier_ci_low": [0.0, brier_candidate - 0.2 - brier_ci_width],
        "delta_brier_ci_high": [0.0, brier_candidate - 0.2 + brier_ci_width],
        "delta_auc_ci_low": [0.0, auc_candidate - 0.8 + auc_ci[0]],
        "delta_auc_ci_high": [0.0, auc_candidate - 0.8 + auc_ci[1]]})


def test_choose_variant_point_and_ci_rules():
    """The older Brier-only rules, still selectable (require="point" / "ci")."""
    worse = AB.choose_variant(_table(0.2050), "augmented", tolerance=0.002, require="point")
    assert worse["kept"] == "baseline" and not worse["passed"] and "refused" in worse["reason"] and worse["harmful"]
    assert worse["delta_brier"] == pytest.approx(0.005)
    within = AB.choose_variant(_table(0.2015), "augmented", tolerance=0.002, require="point")
    assert within["kept"] == "augmented" and within["passed"] and "within tolerance" in within["reason"]
    better = AB.choose_variant(_table(0.1800), "augmented", require="point")
    assert better["kept"] == "augmented" and "significantly better" in better["reason"]
    # a looser tolerance lets the worse variant through; synthetic rows that failed the gates never do
    assert AB.choose_variant(_table(0.2050), "augmented", tolerance=0.01, require="point")["kept"] == "augmented"
    bad = AB.choose_variant(_table(0.1800, quality=False), "augmented", require="point")
    assert bad["kept"] == "baseline" and "quality gates" in bad["reason"]
    same = AB.choose_variant(_table(0.2000, skipped=True), "augmented", require="point")
    assert same["kept"] == "baseline" and "skipped" in same["reason"]
    assert AB.choose_variant(_table(0.2), "baseline")["kept"] == "baseline"
    # stricter: the pessimistic end of the interval must be within tolerance too
    strict = AB.choose_variant(_table(0.2015), "augmented", tolerance=0.002, require="ci")
    assert strict["kept"] == "baseline" and "upper end" in strict["reason"]
    assert AB.choose_variant(_table(0.1800), "augmented", require="ci")["kept"] == "augmented"
    with pytest.raises(ValueError, match="unknown candidate"):
        AB.choose_variant(_table(0.2), "smote")
    with pytest.raises(ValueError, match="require"):
        AB.choose_variant(_table(0.2), "augmented", require="maybe")


def test_choose_variant_default_keeps_a_variant_only_when_it_helps_on_brier_and_auc():
    """Issue 9 item 10: the default rule judges Brier AND AUC, interval-aware."""
    # Brier within tolerance but not significantly better: the old rule kept it, the default refuses
    within = AB.choose_variant(_table(0.2015), "augmented", tolerance=0.002)
    assert within["rule"] == "helps" and within["kept"] == "baseline" and not within["passed"]
    assert not within["harmful"] and "does not help on Brier" in within["reason"]
    assert within["criteria"]["brier_significantly_better"] is False
    # Brier significantly better (interval below 0), AUC unchanged: kept
    helps = AB.choose_variant(_table(0.1800), "augmented")
    assert helps["kept"] == "augmented" and helps["passed"] and "helps on both Brier and AUC" in helps["reason"]
    assert helps["criteria"] == {"brier_significantly_better": True, "auc_not_significantly_worse": True,
                                 "auc_loss_within_tolerance": True}
    assert helps["delta_brier_ci"] == pytest.approx([-0.03, -0.01]) and helps["delta_auc"] == pytest.approx(0.0)
    # Brier better, but AUC significantly worse (its whole interval below 0): refused
    auc_worse = AB.choose_variant(_table(0.1800, auc_candidate=0.790, auc_ci=(-0.006, -0.002)), "augmented")
    assert auc_worse["kept"] == "baseline" and "AUC is significantly worse" in auc_worse["reason"]
    # the cost that oversampling had on a real tenant (0.007-0.018 AUC) is refused even with a wide interval
    costly = AB.choose_variant(_table(0.1800, auc_candidate=0.790, auc_ci=(-0.03, 0.02)), "augmented")
    assert costly["criteria"]["auc_not_significantly_worse"] is True
    assert costly["kept"] == "baseline" and "costs AUC" in costly["reason"]
    assert AB.choose_variant(_table(0.1800, auc_candidate=0.790, auc_ci=(-0.03, 0.02)), "augmented",
                             auc_tolerance=0.02)["kept"] == "augmented"
    # harm beyond the tolerance and failed quality gates are refusals of the gate itself
    worse = AB.choose_variant(_table(0.2050), "augmented")
    assert worse["kept"] == "baseline" and worse["harmful"] and "tolerance" in worse["reason"]
    assert AB.choose_variant(_table(0.1800, quality=False), "augmented")["harmful"]
    # an interval that could not be computed never counts as help
    nan = _table(0.1800)
    nan.loc[1, "delta_brier_ci_high"] = float("nan")
    assert AB.choose_variant(nan, "augmented")["kept"] == "baseline"


def test_choose_variant_on_the_real_ablation(table):
    decision = AB.choose_variant(table, "augmented+balanced", tolerance=0.002)
    t = table.set_index("variant")
    row = t.loc["augmented+balanced"]
    delta = row["brier"] - t.loc["baseline", "brier"]
    assert decision["delta_brier"] == pytest.approx(delta)
    helps = (delta <= 0.002 and row["delta_brier_ci_high"] < 0 and row["delta_auc_ci_high"] >= 0
             and row["delta_auc"] >= -AB.DEFAULT_AUC_TOLERANCE)
    assert decision["kept"] == ("augmented+balanced" if helps else "baseline")
    md = AB.ablation_markdown(table, decision)
    assert f"**Kept: {decision['kept']}**" in md and "augmented:smote" in md
