"""Champion candidates of one tenant-week (issue 12 item 2): the CRM's own risk_score as a calibrated model
(algorithm ``crm_score``, served through ``predict_raw`` like any champion), and the pre-declared choice
rule: the simplest candidate unless a more complex one is significantly better on Brier (paired
opportunity bootstrap)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from riskml_assets.core import evaluation as E
from riskml_assets.core import metrics as M
from riskml_assets.core import pyfunc, training
from riskml_assets.core.features import LABEL
from riskml_assets.core.promotion import (PromotionConfigError, candidate_summary, choose_candidate,
                                          evaluate_candidates)

ORDER = ("crm_score", "tenant_model", "pooled")


def _parts(splits):
    return {n: splits[splits["split"] == n].reset_index(drop=True) for n in ("train", "validation", "test")}


# --------------------------------------------------------------------------------------------
# the calibrated CRM score as a model
# --------------------------------------------------------------------------------------------

def test_crm_score_model_predicts_the_calibrated_crm_score_through_every_prediction_path(initech_splits, manifest):
    parts = _parts(initech_splits)
    valid, test = parts["validation"], parts["test"]
    cand = E.crm_score_candidate(valid, manifest)
    art, cal = cand["model"], cand["calibrator"]
    assert art["algorithm"] == "crm_score" and art["features"] == ["heuristic_risk_score"]
    assert "booster_json" not in art
    raw = training.predict_raw(art, test)  # the dispatch every consumer (scoring, pyfunc, promotion) uses
    np.testing.assert_array_equal(raw, test["heuristic_risk_score"].to_numpy(float).clip(0, 1))
    # the calibrator is fit on the validation rows' score (Platt/isotonic chosen by cross-validation)
    assert cal["method"] in ("platt", "isotonic") and cal["validation"]["rows"] == len(valid)
    assert "cv_brier" in cal["selection"]
    y = test[LABEL].to_numpy(int)
    p = E.apply_calibrator(cal, raw)
    # fitted on the validation rows: there the calibrated mean matches the lost rate (Platt/isotonic both do),
    # and the order of the scores is kept (AUC unchanged up to isotonic ties)
    y_va, raw_va = valid[LABEL].to_numpy(int), training.predict_raw(art, valid)
    assert E.apply_calibrator(cal, raw_va).mean() == pytest.approx(y_va.mean(), abs=0.01)
    assert M.roc_auc(y, p) == pytest.approx(M.roc_auc(y, raw), abs=0.02)
    # served through the pyfunc's prediction path, on feature rows, without any booster file
    out = pyfunc.predict_frame(art, cal, test[["opportunity_id", "heuristic_risk_score"]])
    np.testing.assert_allclose(out["p_lost"].to_numpy(), p, rtol=0, atol=1e-12)


def test_crm_score_missing_values_get_the_validation_median_and_missing_column_is_named(initech_splits, manifest):
    valid = _parts(initech_splits)["validation"]
    art = E.crm_score_artifact(valid, manifest)
    assert art["fill_value"] == pytest.approx(float(valid["heuristic_risk_score"].median()))
    rows = pd.DataFrame({"heuristic_risk_score": [0.2, np.nan, None, 1.7, -0.1]})
    np.testing.assert_allclose(training.predict_raw(art, rows), [0.2, art["fill_value"], art["fill_value"], 1.0, 0.0])
    with pytest.raises(KeyError, match="heuristic_risk_score"):
        training.predict_raw(art, pd.DataFrame({"stage": ["x"]}))


def test_crm_score_is_unavailable_without_the_feature_or_with_too_few_scores(initech_splits, manifest):
    valid = _parts(initech_splits)["validation"]
    without = {k: v for k, v in manifest.items() if k != "heuristic_risk_score"}
    with pytest.raises(E.CandidateUnavailable, match="no CRM risk_score"):
        E.crm_score_artifact(valid, without)
    sparse = valid.copy()
    sparse.loc[sparse.index[: int(0.8 * len(sparse))], "heuristic_risk_score"] = np.nan
    with pytest.raises(E.CandidateUnavailable, match="carry a CRM risk_score"):
        E.crm_score_artifact(sparse, manifest)


# --------------------------------------------------------------------------------------------
# the choice rule
# --------------------------------------------------------------------------------------------

def _world(n_opps=1500, rows_per_opp=3, seed=0):
    rng = np.random.default_rng(seed)
    logit = rng.normal(-0.3, 1.4, n_opps)
    p_true = 1 / (1 + np.exp(-logit))
    y_opp = (rng.random(n_opps) < p_true).astype(int)
    rep = np.repeat(np.arange(n_opps), rows_per_opp)
    noisy = 1 / (1 + np.exp(-(logit + rng.normal(0, 1.2, n_opps))))  # a weaker score of the same truth
    return y_opp[rep], rep, {"truth": p_true[rep], "noisy": noisy[rep]}


def test_the_simplest_candidate_stays_when_the_others_are_not_significantly_better():
    y, groups, p = _world()
    tiny = np.clip(p["noisy"] + np.random.default_rng(1).normal(0, 0.002, len(y)), 0.001, 0.999)
    choice = choose_candidate(y, {"crm_score": p["noisy"], "tenant_model": tiny}, groups, order=ORDER, n_boot=300)
    assert choice["chosen"] == "crm_score"
    step = choice["steps"][0]
    assert step["candidate"] == "tenant_model" and step["against"] == "crm_score" and not step["significant"]
    assert step["ci_low"] < 0 < step["ci_high"] or step["ci_high"] >= 0
    assert "simplest" in choice["reason"]


def test_a_more_complex_candidate_wins_only_when_significantly_better():
    y, groups, p = _world()
    choice = choose_candidate(y, {"crm_score": p["noisy"], "tenant_model": p["truth"]}, groups, order=ORDER,
                              n_boot=300)
    assert choice["chosen"] == "tenant_model"
    s = choice["steps"][0]
    assert s["significant"] and s["ci_high"] < 0
    assert s["delta"] == pytest.approx(M.brier(y, p["truth"]) - M.brier(y, p["noisy"]))
    # the margin is part of the rule: an improvement smaller than min_improvement keeps the simpler one
    strict = choose_candidate(y, {"crm_score": p["noisy"], "tenant_model": p["truth"]}, groups, order=ORDER,
                              n_boot=300, min_improvement=0.5)
    assert strict["chosen"] == "crm_score"


def test_the_rule_walks_the_order_and_compares_with_the_current_choice():
    y, groups, p = _world()
    # pooled is better than the CRM score but identical to the tenant model: the tenant model (simpler) stays
    preds = {"crm_score": p["noisy"], "tenant_model": p["truth"], "pooled": p["truth"].copy()}
    choice = choose_candidate(y, preds, groups, order=ORDER, n_boot=300)
    assert choice["chosen"] == "tenant_model"
    assert [(s["candidate"], s["against"]) for s in choice["steps"]] == [("tenant_model", "crm_score"),
                                                                          ("pooled", "tenant_model")]
    # without a CRM score the tenant model is the simplest available one
    assert choose_candidate(y, {"tenant_model": p["noisy"]}, groups, order=ORDER)["chosen"] == "tenant_model"
    with pytest.raises(PromotionConfigError, match="not in the declared order"):
        choose_candidate(y, {"mystery": p["noisy"]}, groups, order=ORDER)
    with pytest.raises(ValueError, match="no champion candidate"):
        choose_candidate(y, {}, groups, order=ORDER)


def test_evaluate_candidates_scores_every_candidate_on_the_same_rows(initech_splits, manifest):
    parts = _parts(initech_splits)
    valid, test = parts["validation"], parts["test"]
    crm = E.crm_score_candidate(valid, manifest)
    # a "tenant model" stand-in that is the CRM score itself: never significantly better, so the CRM stays
    same = {"model": dict(crm["model"], algorithm="crm_score"), "calibrator": crm["calibrator"]}
    broken = {"model": dict(crm["model"], features=["no_such_column"]), "calibrator": crm["calibrator"]}
    cands = {"crm_score": {"available": True, "reason": "", **crm},
             "tenant_model": {"available": True, "reason": "", **same},
             "pooled": {"available": True, "reason": "", **broken}}
    out, choice, p_test = evaluate_candidates(cands, test, valid, n_boot=200)
    assert choice["chosen"] == "crm_score" and choice["chosen_on"].startswith("test")
    assert not out["pooled"]["available"] and "no_such_column" in out["pooled"]["reason"]
    y = test[LABEL].to_numpy(int)
    t = out["crm_score"]["test"]
    assert t["brier"] == pytest.approx(M.brier(y, p_test["crm_score"]))
    assert t["brier_ci"][0] <= t["brier"] <= t["brier_ci"][1] and t["ci_level"] == 0.9
    assert t["auc_ci"][0] <= t["auc"] <= t["auc_ci"][1] and t["ece_ci"][0] <= t["ece_ci"][1]
    summary = candidate_summary(out, choice)
    assert summary["chosen"] == "crm_score" and "model" not in summary["candidates"]["crm_score"]
    table = E.candidates_table(out, choice["chosen"])
    assert list(table["candidate"]) == ["crm_score (champion)", "tenant_model", "pooled"]
    assert table.loc[2, "status"].startswith("unavailable")
    md = E.candidates_markdown(out, choice)
    assert "Champion source: crm_score" in md and "90% opportunity-bootstrap" in md
    # the validation variant chooses on out-of-fold calibrated validation predictions (test only reports)
    _, vchoice, _ = evaluate_candidates(cands, test, valid, choose_on="validation", n_boot=200)
    assert vchoice["chosen"] == "crm_score" and vchoice["chosen_on"].startswith("validation")
    with pytest.raises(PromotionConfigError):
        evaluate_candidates(cands, test, valid, choose_on="peek")
