"""Small tenants against the simulator's ground truth (issue 12 item 2, slow): the simulator's two small default
tenants (globex, initech) get the tenant's model, the calibrated CRM score and the pooled model (both tenants
opted in) as candidates; the champion is chosen by the pre-declared rule on the test opportunities and judged
against the oracle (``p_lost_true``) and the calibrated CRM score.

Two ratios per tenant:

- the **test ratio** ``Brier(champion) / Brier(oracle)`` on the test rows (what the main job's
  ``benchmarks/oracle_report.py`` prints): noisy, a few hundred opportunities;
- the **ground-truth ratio** ``1 + mean((p - p_true)^2) / mean(p_true (1 - p_true))``: the expected Brier of the
  champion over the expected Brier of the oracle on the same rows (Brier(p) = Brier(p_true) + mean((p - p_true)^2)
  + a zero-mean term), which needs the truth and no label draw.
"""
from __future__ import annotations

import numpy as np
import pytest

from riskml_assets.core import evaluation as E
from riskml_assets.core import features as F
from riskml_assets.core import metrics as M
from riskml_assets.core import simulator, training
from riskml_assets.core.cleaning import clean_examples
from riskml_assets.core.features import LABEL
from riskml_assets.core.pooled import train_pooled_model
from riskml_assets.core.promotion import evaluate_candidates
from riskml_assets.core.splits import split_examples

pytestmark = pytest.mark.slow

GOAL = 1.10  # issue 12: every tenant's test Brier within 10 % of the oracle
TENANTS = [s for s in simulator.DEFAULT_TENANTS if s.name in ("globex", "initech")]


def _truth_ratio(p, p_true):
    return 1.0 + float(np.mean((p - p_true) ** 2)) / float(np.mean(p_true * (1 - p_true)))


@pytest.fixture(scope="module")
def outcome():
    manifest = F.build_manifest()
    frames, truths = {}, {}
    for spec in TENANTS:
        sim = simulator.simulate_tenant(spec)
        ex, _ = F.build_training_examples(sim.snapshots, sim.outcomes, sim.activities, manifest,
                                          partition_end="2026-11-23", window_weeks=52)
        clean, _, _ = clean_examples(ex, manifest)
        frames[spec.name] = split_examples(clean, seed=0, tenant=spec.name)
        truths[spec.name] = sim.truth.set_index("opportunity_id")["p_lost_true"]
    out = {}
    for t, df in frames.items():
        tr, va, te = (df[df["split"] == n].reset_index(drop=True) for n in ("train", "validation", "test"))
        art = training.train_xgb_classifier(tr, va, manifest)
        cal = E.fit_risk_calibrator(training.predict_raw(art, va), va[LABEL].to_numpy(int),
                                    groups=va["opportunity_id"].to_numpy())
        cands = {"tenant_model": {"available": True, "model": art, "calibrator": cal},
                 "crm_score": {"available": True, **E.crm_score_candidate(va, manifest)},
                 "pooled": E.pooled_candidate(train_pooled_model(frames, t, manifest, list(frames)), t)}
        cands, choice, p_test = evaluate_candidates(cands, te, va, n_boot=500)
        out[t] = {"choice": choice, "cands": cands, "p": p_test, "y": te[LABEL].to_numpy(int),
                  "p_true": te["opportunity_id"].map(truths[t]).to_numpy(float)}
    return out


@pytest.mark.parametrize("tenant", [s.name for s in TENANTS])
def test_champion_is_within_ten_percent_of_the_oracle_and_never_worse_than_the_calibrated_crm(outcome, tenant):
    o = outcome[tenant]
    chosen, y, p_true = o["choice"]["chosen"], o["y"], o["p_true"]
    assert o["cands"]["pooled"]["available"], o["cands"]["pooled"]["reason"]
    p, p_crm = o["p"][chosen], o["p"]["crm_score"]
    test_ratio = M.brier(y, p) / M.brier(y, p_true)
    truth_ratio, truth_ratio_crm = _truth_ratio(p, p_true), _truth_ratio(p_crm, p_true)
    print(f"{tenant}: champion {chosen}; test Brier ratio to the oracle {test_ratio:.3f} (CRM calibrated "
          f"{M.brier(y, p_crm) / M.brier(y, p_true):.3f}); ground-truth ratio {truth_ratio:.3f} "
          f"(CRM calibrated {truth_ratio_crm:.3f}); " + "; ".join(
              f"{k} {_truth_ratio(v, p_true):.3f}" for k, v in o["p"].items()))
    # never worse than the calibrated CRM score on the test opportunities: it is the champion, or a candidate
    # whose Brier is significantly lower on those same opportunities
    assert M.brier(y, p) <= M.brier(y, p_crm)
    if chosen != "crm_score":
        assert any(s["candidate"] == chosen and s["significant"] and s["ci_high"] < 0 for s in o["choice"]["steps"])
    # ... and in expectation, against the truth (tolerance: the CRM score itself when it is the champion)
    assert truth_ratio <= truth_ratio_crm + 1e-12 or chosen != "crm_score"
    assert truth_ratio <= truth_ratio_crm * 1.02


@pytest.mark.parametrize("tenant", [
    "globex",
    pytest.param("initech", marks=pytest.mark.xfail(strict=True, reason=(
        "initech has about 40 test opportunities: the pooled model is much closer to the truth (ground-truth ratio "
        "about 1.05 against 1.18 for the calibrated CRM score) but not significantly better on them, so the rule "
        "keeps the CRM score; its test ratio (about 1.05) is within the goal only by the label draw"))),
])
def test_goal_champion_within_ten_percent_of_the_oracle_against_the_truth(outcome, tenant):
    """The issue's goal, judged without the label draw's noise (the ground-truth ratio); strict xfail where the
    pre-declared rule cannot reach it, so a change that does reach it shows up."""
    o = outcome[tenant]
    assert _truth_ratio(o["p"][o["choice"]["chosen"]], o["p_true"]) <= GOAL
