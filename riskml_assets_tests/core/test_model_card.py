"""The model card (issue 12 item 6): facts computed from the splits, the test rows and the reports, on values."""
import numpy as np
import pandas as pd
import pytest

from riskml_assets.core import metrics as M
from riskml_assets.core import model_card as MC
from riskml_assets.core.features import LABEL


def _splits(n_opp: int = 120, weeks: int = 6, seed: int = 0) -> pd.DataFrame:
    """Snapshots of ``n_opp`` opportunities over ``weeks`` weekly dates; split by opportunity; a CRM score that
    carries some signal; a feature column that is empty (unavailable) and two synthetic train rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_opp):
        split = ("train", "train", "train", "validation", "test")[i % 5]
        lost = int(rng.random() < 0.4)
        for w in range(weeks):
            rows.append({"opportunity_id": f"o{i}", "split": split, LABEL: lost,
                         "snapshot_date": pd.Timestamp("2026-01-05") + pd.Timedelta(weeks=w, days=2),
                         "baseline_risk_score": float(np.clip(0.4 + 0.3 * (lost - 0.4) + rng.normal(0, 0.2), 0, 1)),
                         "deal_value_log": rng.normal(), "activity_count_30d": np.nan, "is_synthetic": False})
    df = pd.DataFrame(rows)
    syn = df[df["split"] == "train"].head(2).assign(is_synthetic=True, opportunity_id=["syn-1", "syn-2"])
    return pd.concat([df, syn], ignore_index=True)


MANIFEST = {"deal_value_log": {"version": 1, "kind": "numeric"}, "activity_count_30d": {"version": 2, "kind": "numeric"},
            "risk_score": {"version": 1, "kind": "numeric"}}


def test_data_summary_counts_real_rows_per_split_the_window_and_unavailable_features():
    df = _splits()
    d = MC.data_summary(df, MANIFEST)
    real = df[~df["is_synthetic"]]
    assert d["rows"] == {s: int((real["split"] == s).sum()) for s in ("train", "validation", "test")}
    assert d["rows"]["test"] == 24 * 6 and d["opportunities"]["test"] == 24 and d["synthetic_rows"] == 2
    assert d["lost_rate"]["test"] == pytest.approx(real.loc[real["split"] == "test", LABEL].mean())
    assert (d["first_snapshot"], d["last_snapshot"], d["snapshot_weeks"]) == ("2026-01-07", "2026-02-11", 6)
    # an all-null column and a column the frame lacks are unavailable; a present one is not
    assert d["unavailable_features"] == ["activity_count_30d", "risk_score"]


def test_baseline_metrics_are_the_brier_and_auc_of_the_constant_and_of_the_crm_score_with_intervals():
    df = _splits()
    test = df[df["split"] == "test"]
    b = MC.baseline_metrics(test, 0.37, n_boot=200)
    y = test[LABEL].to_numpy(int)
    assert b["base_rate"]["value"] == 0.37
    assert b["base_rate"]["brier"] == pytest.approx(np.mean((y - 0.37) ** 2))
    assert b["base_rate"]["auc"] == pytest.approx(0.5)
    crm = test["baseline_risk_score"].to_numpy(float)
    assert b["crm_score"]["brier"] == pytest.approx(M.brier(y, crm))
    assert b["crm_score"]["auc"] == pytest.approx(M.roc_auc(y, crm))
    lo, hi = b["crm_score"]["brier_ci"]
    assert lo < b["crm_score"]["brier"] < hi and hi - lo > 0.005  # a real interval over 24 opportunities
    # a CRM score missing on one test row: no CRM baseline (never filled)
    test2 = test.copy()
    test2.iloc[0, test2.columns.get_loc("baseline_risk_score")] = np.nan
    assert MC.baseline_metrics(test2, 0.37, n_boot=50)["crm_score"] is None


def _card(df, evaluation, decision, artifact=None):
    return MC.build_model_card(
        tenant="acme", week="2026-02-09", model_name="riskml.acme.risk", version=3,
        data=MC.data_summary(df, MANIFEST), manifest=MANIFEST,
        artifact=artifact or {"algorithm": "random_forest", "features": ["deal_value_log"]},
        evaluation=evaluation, baselines=MC.baseline_metrics(df[df["split"] == "test"], 0.4, n_boot=100),
        decision=decision, promotion_gate={"gate": "registered_models_promotion", "passed": False, "action": "warn"})


EVALUATION = {"calibrated": {"auc": 0.71, "brier": 0.2301, "ece": 0.05}, "auc_ci": [0.6, 0.82],
              "brier_ci": [0.2, 0.26], "ci_level": 0.9, "gates": {"risk_evaluation_ece": True},
              "warnings": {"risk_evaluation_beats_crm_score": False}, "kept_variant": "baseline",
              "kept_variant_reason": "augmentation did not lower the test Brier"}


def test_card_facts_and_limits_follow_the_inputs():
    df = _splits()
    card = _card(df, EVALUATION, {"should_deploy": False, "reason": "not significantly better", "p_value": 0.31,
                                  "champion_version": "2", "champion_source": "crm_score"})
    assert card["algorithm"] == "random_forest" and card["source"] == "crm_score"
    assert card["metrics"]["model"]["brier_ci"] == [0.2, 0.26]
    assert card["features"]["used"] == [{"feature": "deal_value_log", "version": 1, "kind": "numeric"}]
    assert {g["gate"]: g["result"] for g in card["gates"]} == {
        "risk_evaluation_ece": "pass", "risk_evaluation_beats_crm_score": "warn", "registered_models_promotion": "warn"}
    limits = "\n".join(card["limits"])
    assert "Small test set: 144 rows of 24 opportunities" in limits
    assert "Wide intervals" in limits and "span 0.220" not in limits and "0.220" in limits
    assert "Unavailable features" in limits and "activity_count_30d, risk_score" in limits
    assert "Registered variant: baseline" in limits and "risk_evaluation_beats_crm_score" in limits
    assert "Champion source 'crm_score'" in limits
    assert card["promotion"] == {"should_deploy": False, "reason": "not significantly better", "p_value": 0.31,
                                 "champion_before": "2", "first_model": None}


def test_a_large_sharp_model_has_none_of_the_small_data_limits():
    df = _splits(n_opp=1200, weeks=7)  # 5,040 real train rows, 240 test opportunities
    ev = {**EVALUATION, "auc_ci": [0.76, 0.80], "brier_ci": [0.17, 0.18], "kept_variant": "as trained",
          "calibrated": {"auc": 0.78, "brier": 0.175, "ece": 0.02}, "warnings": {"risk_evaluation_beats_crm_score": True}}
    card = _card(df, ev, {"should_deploy": True, "reason": "first model", "champion_source": "tenant_model"},
                 artifact={"booster_json": "{}", "features": ["deal_value_log", "activity_count_30d"]})
    limits = "\n".join(card["limits"])
    assert card["algorithm"] == "xgboost"
    for absent in ("Small test set", "Wide intervals", "Few real train rows", "Registered variant", "Champion source"):
        assert absent not in limits, limits
    assert "Unavailable features" in limits  # still the empty column


def test_markdown_carries_the_numbers():
    df = _splits()
    card = _card(df, EVALUATION, {"should_deploy": True, "reason": "first model of the tenant", "first_model": True})
    md = MC.model_card_markdown(card)
    b = card["metrics"]["base_rate"]
    assert md.startswith("# Model card: riskml.acme.risk v3")
    assert "| test | 144 | 24 |" in md and "Snapshots from 2026-01-07 to 2026-02-11 (6 weeks)" in md
    assert f"| this model (calibrated) | 0.7100 | 0.6000–0.8200 | 0.2301 | 0.2000–0.2600 | 0.0500 |" in md
    assert f"| {b['brier']:.4f} | {b['brier_ci'][0]:.4f}–{b['brier_ci'][1]:.4f} |" in md
    assert "`deal_value_log` v1" in md and "**Promoted to champion**: first model of the tenant" in md
    assert "| risk_evaluation_beats_crm_score | warn | warn |" in md and "## Known limits" in md
