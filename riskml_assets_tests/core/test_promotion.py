"""Champion/challenger decisions on simulator data with planted effects (pure module, no dagster).

``risk_models()`` (cached, shared with the scoring and registry tests) trains real models on a simulated
tenant: a *weak* one on four features and a *strong* one on every feature, plus a retrain of the strong one
with another seed (different only by noise).
"""
from __future__ import annotations

import functools
import json

import numpy as np
import pandas as pd
import pytest

from riskml_assets.core import evaluation, promotion, simulator, training
from riskml_assets.core import features as F
from riskml_assets.core import metrics as M
from riskml_assets.core.cleaning import clean_examples
from riskml_assets.core.splits import split_examples

LABEL = F.LABEL
WEAK_FEATURES = ("log_deal_value", "crm_probability", "days_to_close", "stage")
PARTITION_END = "2026-11-23"


@functools.lru_cache(maxsize=1)
def risk_models() -> dict:
    """A simulated tenant, its splits and three trained risk models with calibrators and test predictions."""
    # 30 opportunities a week: with the stable hash splits the test split is a draw (not exactly 15 %), and at
    # 18 a week its ~130 opportunities left the planted effects at the edge of significance on some draws;
    # a retrain with another XGBoost seed is a genuinely different model, which a test-set bootstrap cannot
    # tell from an improvement on small splits (seen on 2 of 10 draws at 18 a week, 0 of 6 at 30).
    sim = simulator.simulate_tenant(simulator.TenantSpec("globex", 30.0, 1))
    manifest = F.build_manifest()
    examples, _ = F.build_training_examples(sim.snapshots, sim.outcomes, sim.activities, manifest,
                                            partition_end=PARTITION_END, window_weeks=52)
    clean, _, _ = clean_examples(examples, manifest)
    df = split_examples(clean, method="stratified", seed=0)
    parts = {n: df[df["split"] == n].reset_index(drop=True) for n in ("train", "validation", "test")}

    def fit(man, params=None):
        art = training.train_xgb_classifier(parts["train"], parts["validation"], man, params)
        p_val = training.predict_raw(art, parts["validation"])
        cal = evaluation.fit_risk_calibrator(p_val, parts["validation"][LABEL].to_numpy(int))
        p_test = evaluation.apply_calibrator(cal, training.predict_raw(art, parts["test"]))
        return {"artifact": art, "calibrator": cal, "manifest": man, "p_test": p_test}

    weak_manifest = {k: manifest[k] for k in WEAK_FEATURES}
    return {
        "sim": sim, "manifest": manifest, "parts": parts,
        "weak": fit(weak_manifest),
        "strong": fit(manifest),
        "strong_seed1": fit(manifest, training.XGBParams(seed=1)),
    }


@pytest.fixture(scope="module")
def models():
    return risk_models()


@pytest.fixture(scope="module")
def test_rows(models):
    test = models["parts"]["test"]
    return test[LABEL].to_numpy(int), test["opportunity_id"].to_numpy()


def _decide(y, champ, chal, groups, **kw):
    kw.setdefault("gates_passed", True)
    kw.setdefault("floors", {"min_auc": 0.5})
    return promotion.decide_promotion(y, champ, chal, family="risk", groups=groups, **kw)


# --------------------------------------------------------------------------------------------
# planted effects on real models
# --------------------------------------------------------------------------------------------

def test_the_planted_effect_is_real(models, test_rows):
    y, _ = test_rows
    weak, strong = models["weak"]["p_test"], models["strong"]["p_test"]
    assert M.brier(y, strong) < M.brier(y, weak) - 0.03
    assert M.roc_auc(y, strong) > M.roc_auc(y, weak) + 0.1


def test_clearly_better_challenger_is_promoted(models, test_rows):
    y, groups = test_rows
    d = _decide(y, models["weak"]["p_test"], models["strong"]["p_test"], groups)
    assert d["should_deploy"], d["reason"]
    assert d["primary_metric"] == "brier" and d["significant"]
    assert d["delta"] < 0 and d["ci_high"] < 0 and d["p_value"] < 0.05
    assert d["champion_metric"] == pytest.approx(M.brier(y, models["weak"]["p_test"]))
    assert d["challenger_metric"] == pytest.approx(M.brier(y, models["strong"]["p_test"]))
    assert d["delong"]["p_value"] < 0.05 and d["delong"]["delta"] > 0
    assert "significantly better" in d["reason"] and "DeLong" in d["reason"]
    assert d["n_groups"] == len(set(groups)) < d["n_rows"]
    json.dumps(d)  # JSON-able for the report and MLflow tags


def test_challenger_identical_but_for_tiny_noise_is_not_promoted(models, test_rows):
    y, groups = test_rows
    strong = models["strong"]["p_test"]
    noisy = np.clip(strong + np.random.default_rng(0).normal(0, 0.005, len(strong)), 0, 1)
    d = _decide(y, strong, noisy, groups)
    assert not d["should_deploy"]
    assert not d["significant"] and d["ci_low"] < 0 < d["ci_high"]
    assert "not significantly better" in d["reason"]
    # the identical model is not promoted either
    same = _decide(y, strong, strong.copy(), groups)
    assert not same["should_deploy"] and same["delta"] == 0.0


def test_retrain_with_another_seed_is_better_only_by_noise(models, test_rows):
    """Same data, same features, another seed: any difference is noise. Snapshots of one opportunity share
    its outcome, so the bootstrap resamples opportunities; the retrain must not replace the champion."""
    y, groups = test_rows
    d = _decide(y, models["strong"]["p_test"], models["strong_seed1"]["p_test"], groups)
    assert not d["should_deploy"], d["reason"]
    assert d["ci_low"] < 0 < d["ci_high"]


def test_worse_challenger_is_not_promoted(models, test_rows):
    y, groups = test_rows
    d = _decide(y, models["strong"]["p_test"], models["weak"]["p_test"], groups)
    assert not d["should_deploy"] and d["delta"] > 0


def test_challenger_whose_gate_failed_is_never_promoted(models, test_rows):
    y, groups = test_rows
    weak, strong = models["weak"]["p_test"], models["strong"]["p_test"]
    d = _decide(y, weak, strong, groups, gates_passed=False)
    assert not d["should_deploy"] and "blocking gates failed" in d["reason"]
    d = _decide(y, weak, strong, groups,
                gates_passed={"risk_evaluation_ece": True, "risk_model_beats_base_rate": False})
    assert not d["should_deploy"]
    assert d["failed_gates"] == ["risk_model_beats_base_rate"] and "risk_model_beats_base_rate" in d["reason"]
    # not even as the tenant's first model
    assert not _decide(y, None, strong, groups, gates_passed=False)["should_deploy"]


def test_absolute_floors_block_even_a_significant_improvement(models, test_rows):
    y, groups = test_rows
    d = _decide(y, models["weak"]["p_test"], models["strong"]["p_test"], groups, floors={"min_auc": 0.95})
    assert not d["should_deploy"]
    assert "floors not met" in d["reason"] and "auc" in d["reason"]
    assert d["floors"]["min_auc"]["passed"] is False
    ok = _decide(y, models["weak"]["p_test"], models["strong"]["p_test"], groups,
                 floors={"min_auc": 0.7, "max_brier": 0.22, "max_ece": 0.2}, extra_metrics={"brier_skill": 0.1})
    assert ok["should_deploy"] and all(f["passed"] for f in ok["floors"].values())


def test_first_model_becomes_champion_iff_gates_and_floors_pass(models, test_rows):
    y, groups = test_rows
    strong = models["strong"]["p_test"]
    d = _decide(y, None, strong, groups)
    assert d["should_deploy"] and d["first_model"] and "first model" in d["reason"]
    assert d["challenger_metric"] == pytest.approx(M.brier(y, strong))
    assert not _decide(y, None, strong, groups, floors={"min_auc": 0.99})["should_deploy"]


def test_a_floor_naming_an_unknown_metric_is_a_config_error(models, test_rows):
    y, groups = test_rows
    with pytest.raises(promotion.PromotionConfigError, match="min_acu"):
        _decide(y, None, models["strong"]["p_test"], groups, floors={"min_acu": 0.6})
    with pytest.raises(promotion.PromotionConfigError, match="min_<metric>"):
        _decide(y, None, models["strong"]["p_test"], groups, floors={"auc": 0.6})
    with pytest.raises(promotion.PromotionConfigError, match="family"):
        promotion.decide_promotion(y, None, models["strong"]["p_test"], family="churn", gates_passed=True)


def test_decision_is_deterministic(models, test_rows):
    y, groups = test_rows
    a = _decide(y, models["weak"]["p_test"], models["strong"]["p_test"], groups, seed=3)
    b = _decide(y, models["weak"]["p_test"], models["strong"]["p_test"], groups, seed=3)
    assert a == b


def test_decision_tags_and_markdown(models, test_rows):
    y, groups = test_rows
    d = _decide(y, models["weak"]["p_test"], models["strong"]["p_test"], groups)
    tags = promotion.decision_tags(d)
    assert tags["riskml.decision.should_deploy"] == "True"
    assert float(tags["riskml.decision.p_value"]) == d["p_value"]
    assert "riskml.decision.delong_p_value" in tags and tags["riskml.decision.reason"] == d["reason"]
    md = promotion.decision_markdown(d, champion_version=1, challenger_version=2)
    assert "deploy" in md and "DeLong" in md and "v1" in md and "v2" in md


# --------------------------------------------------------------------------------------------
# the AUC guard and the other families (synthetic data with known answers)
# --------------------------------------------------------------------------------------------

def test_better_brier_but_significantly_worse_auc_is_refused():
    rng = np.random.default_rng(0)
    n = 4000
    y = (rng.random(n) < 0.3).astype(int)
    signal = y + rng.normal(0, 0.6, n)
    champion = 1 / (1 + np.exp(-(3 * signal + 1.5)))            # ranks well, badly calibrated (too high)
    challenger = np.clip(0.3 + 0.05 * (y + rng.normal(0, 2.0, n)), 0.01, 0.99)  # calibrated, ranks poorly
    assert M.brier(y, challenger) < M.brier(y, champion)
    d = promotion.decide_promotion(y, champion, challenger, family="risk", gates_passed=True, floors={})
    assert not d["should_deploy"] and "AUC is significantly worse" in d["reason"]
    ignore = promotion.decide_promotion(y, champion, challenger, family="risk", gates_passed=True, floors={},
                                        auc_policy="ignore")
    assert ignore["should_deploy"]


def test_auc_policy_better_requires_a_significant_auc_gain():
    rng = np.random.default_rng(1)
    n = 3000
    y = (rng.random(n) < 0.3).astype(int)
    champion = np.clip(0.3 + 0.1 * (y - 0.3) + rng.normal(0, 0.1, n), 0.01, 0.99)
    challenger = np.clip(0.3 + 0.3 * (y - 0.3) + rng.normal(0, 0.1, n), 0.01, 0.99)
    d = promotion.decide_promotion(y, champion, challenger, family="risk", gates_passed=True, auc_policy="better")
    assert d["should_deploy"], d["reason"]
    recal = np.clip(champion * 0.9 + 0.03, 0, 1)  # a monotone transform: same AUC
    same_auc = promotion.decide_promotion(y, recal, champion, family="risk", gates_passed=True, floors={},
                                          auc_policy="better")
    assert not same_auc["should_deploy"]


def _quantiles(center, spread):
    return np.column_stack([center - 1.2816 * spread, center, center + 1.2816 * spread])


def test_forecast_uses_pinball_loss():
    rng = np.random.default_rng(0)
    n = 2000
    mu = rng.uniform(50, 150, n)
    y = mu + rng.normal(0, 10, n)
    truth = _quantiles(mu, 10)
    biased = _quantiles(mu + 8, 10)
    d = promotion.decide_promotion(y, biased, truth, family="forecast", gates_passed=True,
                                   floors={"min_coverage": 0.7, "max_pinball": 5})
    assert d["should_deploy"] and d["primary_metric"] == "pinball" and d["delta"] < 0
    noisy = truth + rng.normal(0, 0.01, truth.shape)
    assert not promotion.decide_promotion(y, truth, noisy, family="forecast", gates_passed=True)["should_deploy"]
    with pytest.raises(ValueError, match="quantile matrix"):
        promotion.decide_promotion(y, None, truth[:, :2], family="forecast", gates_passed=True)


def test_ranking_uses_ndcg_over_queries():
    rng = np.random.default_rng(0)
    n_q, per = 300, 8
    qid = np.repeat(np.arange(n_q), per)
    rel = rng.integers(0, 3, n_q * per).astype(float)
    good = rel + rng.normal(0, 0.5, len(rel))
    poor = rel + rng.normal(0, 3.0, len(rel))
    d = promotion.decide_promotion(rel, poor, good, family="ranking", gates_passed=True, groups=qid, k=5,
                                   floors={"min_ndcg": 0.5})
    assert d["should_deploy"] and d["primary_metric"] == "ndcg" and d["delta"] > 0 and d["n_queries"] == n_q
    assert d["challenger_metric"] == pytest.approx(M.ndcg_at_k(*M.group_by_query(qid, rel, good)[1:], k=5))
    same = promotion.decide_promotion(rel, good, good + 1e-9 * rng.normal(size=len(rel)), family="ranking",
                                      gates_passed=True, groups=qid, k=5)
    assert not same["should_deploy"]
    with pytest.raises(ValueError, match="query id"):
        promotion.decide_promotion(rel, poor, good, family="ranking", gates_passed=True)


def test_unit_values_variant_on_per_row_losses():
    rng = np.random.default_rng(0)
    base = rng.exponential(1.0, 1500)
    better = base * 0.8
    d = promotion.decide_from_unit_values(base, better, primary_metric="pinball", higher_is_better=False,
                                          gates_passed=True)
    assert d["should_deploy"] and d["delta"] == pytest.approx(better.mean() - base.mean())
    d = promotion.decide_from_unit_values(base, base + rng.normal(0, 1e-3, 1500), primary_metric="pinball",
                                          higher_is_better=False, gates_passed=True)
    assert not d["should_deploy"]
    first = promotion.decide_from_unit_values(None, better, primary_metric="pinball", higher_is_better=False,
                                              gates_passed=True, floors={"max_pinball": 0.5})
    assert not first["should_deploy"] and "floors" in first["reason"]


# --------------------------------------------------------------------------------------------
# the comparison set: only opportunities neither model trained on
# --------------------------------------------------------------------------------------------

def test_comparison_set_drops_every_opportunity_either_model_trained_on():
    test = pd.DataFrame({"opportunity_id": ["a", "a", "b", "c", "c", "d", 7], "label": [1, 1, 0, 0, 0, 1, 0]})
    rows, info = promotion.comparison_set(test, champion_trained={"a", "x", 7}, challenger_trained=["c", "y"])
    assert rows["opportunity_id"].tolist() == ["b", "d"]  # ids compared as text: 7 == "7"
    assert info == {"test_rows": 7, "test_opportunities": 5, "rows": 2, "opportunities": 2, "excluded_rows": 5,
                    "excluded_opportunities": 3, "excluded_champion": 2, "excluded_challenger": 1,
                    "champion_trained_known": True, "challenger_trained_known": True}
    text = promotion.comparison_text(info)
    assert "2 opportunities (2 rows) of the 5 test opportunities" in text and "3 excluded" in text
    # an unknown champion history excludes nothing for it, and says so
    rows, info = promotion.comparison_set(test, None, ["c"])
    assert rows["opportunity_id"].astype(str).tolist() == ["a", "a", "b", "d", "7"]
    assert not info["champion_trained_known"] and "not recorded" in promotion.comparison_text(info)
    md = promotion.decision_markdown({"should_deploy": False, "reason": "r", "first_model": False,
                                      "delta": float("nan"), "comparison": info})
    assert "Compared on the comparison set: 4 opportunities (5 rows)" in md
