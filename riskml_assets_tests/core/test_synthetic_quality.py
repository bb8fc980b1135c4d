"""Quality checks of synthetic rows: distances, impossible combinations and the gates (pure module)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from riskml_assets.core import features as F
from riskml_assets.core import simulator
from riskml_assets.core import synthetic_quality as Q
from riskml_assets.core.cleaning import clean_examples
from riskml_assets.core.gates import Gate

LABEL = F.LABEL


@pytest.fixture(scope="module")
def real(manifest):
    sim = simulator.simulate_tenant(simulator.DEFAULT_TENANTS[2])  # initech, the small tenant
    ex, _ = F.build_training_examples(sim.snapshots, sim.outcomes, sim.activities, manifest,
                                      partition_end="2026-11-23", window_weeks=52)
    clean, _, _ = clean_examples(ex, manifest)
    return clean.reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# distances


def test_ks_statistic_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=300), rng.normal(0.3, 1.2, size=500)
    assert Q.ks_statistic(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)
    assert Q.ks_statistic(a, a) == 0.0
    assert Q.ks_statistic([1, 2, 3], [10, 11]) == 1.0
    # missing values are left out (their rate is compared separately)
    assert Q.ks_statistic([1.0, 2.0, np.nan], [1.0, 2.0]) == 0.0
    assert np.isnan(Q.ks_statistic([np.nan], [1.0]))


def test_tv_distance():
    assert Q.tv_distance(["a", "a", "b", "b"], ["a", "b"]) == 0.0
    assert Q.tv_distance(["a"] * 4, ["b"] * 4) == 1.0
    assert Q.tv_distance(["a", "a", "a", "b"], ["a", "b", "b", "b"]) == pytest.approx(0.5)
    assert Q.tv_distance(["a", None], ["a", "a"]) == pytest.approx(0.5)  # missing is its own category


def test_corr_distance_normalisation():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2000, 2))
    real = pd.DataFrame({"x": z[:, 0], "y": z[:, 0] + 0.1 * z[:, 1], "c": 1.0})
    indep = pd.DataFrame({"x": z[:, 0], "y": rng.permutation(real["y"].to_numpy()), "c": 1.0})
    same = Q.corr_distance(real, real, ["x", "y", "c"])
    assert same["corr_distance"] == 0.0 and same["columns"] == ["x", "y"]  # constant column left out
    rho = stats.spearmanr(real["x"], real["y"]).statistic
    out = Q.corr_distance(real, indep, ["x", "y"])
    # two features: one off-diagonal pair, so the RMS difference is the lost correlation itself
    assert out["corr_distance"] == pytest.approx(rho, abs=0.05)
    assert sorted(out["worst_pair"]) == ["x", "y"]


# --------------------------------------------------------------------------------------------
# impossible combinations


def test_real_examples_have_no_impossible_combination(real, manifest):
    assert Q.impossible_combinations(real, manifest) == []
    masks = Q.impossible_masks(real, manifest)
    # every rule applies to the simulator's examples (all columns present, latest feature versions)
    assert set(masks) == {r.name for r in Q.IMPOSSIBLE}


BREAKS = {
    "probability_out_of_range": {"crm_probability": 120.0, "raw_probability": 120.0},
    "raw_probability_out_of_range": {"raw_probability": -5.0, "crm_probability": -5.0},
    "probability_feature_differs_from_raw": {"crm_probability": 11.0, "raw_probability": 12.0},
    "stage_index_out_of_range": {"stage_index": 7.0},
    "stage_index_contradicts_stage": {"stage": "commit", "stage_index": 1.0},
    "closed_stage_contradicts_label": {"stage": "closed_won", LABEL: 1},
    "label_not_binary": {LABEL: 2},
    "label_contradicts_outcome": {LABEL: 1, "outcome": "won"},
    "negative_activity_count_30d": {"activity_count_30d": -1.0},
    "negative_activity_count_90d": {"activity_count_90d": 2.5, "activity_count_30d": 0.0},
    "activity_30d_exceeds_90d": {"activity_count_30d": 9.0, "activity_count_90d": 3.0},
    "negative_engagement": {"engagement": -0.5},
    "negative_days_since_last_activity": {"days_since_last_activity": -2.0},
    "activity_recency_contradicts_count_30d": {"days_since_last_activity": 45.0, "activity_count_30d": 2.0,
                                               "activity_count_90d": 4.0},
    "activity_recency_contradicts_count_90d": {"days_since_last_activity": 3.0, "activity_count_30d": 0.0,
                                               "activity_count_90d": 0.0},
    "engagement_without_activity": {"days_since_last_activity": np.nan, "activity_count_30d": 0.0,
                                    "activity_count_90d": 0.0, "engagement": 1.5},
    "negative_opportunity_age": {"opportunity_age_days": -7.0, "stage_age_days": -14.0},
    "negative_stage_age": {"stage_age_days": -1.0},
    "stage_older_than_opportunity": {"stage_age_days": 70.0, "opportunity_age_days": 14.0},
    "invalid_slip_count": {"close_date_slips": 1.5},
    "negative_slip_days": {"close_date_slip_days": -3.0},
    "slip_count_contradicts_slip_days": {"close_date_slips": 2.0, "close_date_slip_days": 0.0},
    "deal_value_not_positive": {"deal_value_change": -1.0},
    "deal_value_not_positive_raw": {"deal_value": 0.0},
    "risk_score_out_of_range": {"risk_timeline": 1.3},
}


def test_every_rule_is_exercised():
    assert set(BREAKS) == {r.name for r in Q.IMPOSSIBLE}


@pytest.mark.parametrize("rule", sorted(BREAKS))
def test_each_impossible_combination_is_caught(real, manifest, rule):
    # start from a real row with recent activity, some slips and a stage that changed before
    base = real[(real["close_date_slips"] == 1) & (real["days_since_last_activity"] < 5)
                & (real["stage_age_days"] > 0)].iloc[[0]].copy()
    assert Q.impossible_combinations(base, manifest) == []
    row = base.copy()
    for col, val in BREAKS[rule].items():
        if isinstance(val, str):
            row[col] = row[col].astype("object")
        row[col] = val
    found = {v["rule"]: v["rows"] for v in Q.impossible_combinations(row, manifest)}
    assert found.get(rule) == 1, found
    assert Q.impossible_mask(row, manifest).tolist() == [True]


def test_version_dependent_rules_follow_the_manifest(real, manifest):
    row = real[real["days_since_last_activity"] < 5].iloc[[0]].copy()
    row["days_since_last_activity"] = 45.0  # fine for the CRM field (v1), impossible for logged events (v2)
    assert "activity_recency_contradicts_count_30d" in {v["rule"] for v in Q.impossible_combinations(row, manifest)}
    v1 = F.build_manifest({"days_since_last_activity": 1})
    assert "activity_recency_contradicts_count_30d" not in {v["rule"] for v in Q.impossible_combinations(row, v1)}
    # without a manifest the version is unknown: version-dependent rules are not applied
    assert "activity_recency_contradicts_count_30d" not in Q.impossible_masks(row, None)
    # a rule whose columns are absent does not apply
    assert "stage_older_than_opportunity" not in Q.impossible_masks(row.drop(columns=["stage_age_days"]), manifest)


# --------------------------------------------------------------------------------------------
# the report and the gates


def test_report_of_real_against_itself_is_clean(real, manifest):
    rep = Q.quality_report(real, real, manifest)
    assert rep["classes_compared"] == ["0", "1"]
    table = Q.feature_table(rep)
    num = [c for c in manifest if c in real.columns and manifest[c]["kind"] == "numeric"]
    cat = [c for c in manifest if c in real.columns and manifest[c]["kind"] == "categorical"]
    assert list(table["feature"]) == num + cat and len(cat) == 5
    assert (table["value"] == 0).all() and (table["null_rate_diff"] == 0).all()
    assert set(table["metric"]) == {"ks", "tvd"}
    ev = Q.evaluate_quality(rep)
    assert ev["passed"] and ev["max_ks"] == 0 and ev["corr_distance"] == 0 and ev["impossible_rows"] == 0
    assert set(ev["gates"]) == {g.name for g in Q.QUALITY_GATES}


def test_class_conditional_comparison_catches_a_lost_label_link(real, manifest):
    """Same marginals, features independent of the label: the overall KS is ~0, the class-wise one is not."""
    broken = real.copy()
    broken[LABEL] = np.random.default_rng(0).permutation(broken[LABEL].to_numpy())
    rep = Q.quality_report(real, broken, manifest)
    table = Q.feature_table(rep).set_index("feature")
    assert table.loc["engagement", "value_overall"] == 0.0
    assert table.loc["engagement", "value"] > 0.15
    ev = Q.evaluate_quality(rep)
    assert not ev["passed"] and ev["max_ks"] > Q.DEFAULT_KS_MAX
    # unconditional comparison does not see it
    assert Q.quality_metrics(Q.quality_report(real, broken, manifest, by_label=False))["max_ks"] == 0.0


def test_shuffled_columns_fail_correlation_and_impossible_gates(real, manifest):
    rng = np.random.default_rng(3)
    broken = real.copy()
    for c in [c for c in manifest if c in real.columns]:
        broken[c] = rng.permutation(broken[c].to_numpy())
    ev = Q.evaluate_quality(Q.quality_report(real, broken, manifest))
    assert not ev["passed"]
    assert ev["corr_distance"] > 2 * Q.DEFAULT_CORR_MAX
    assert ev["impossible_rows"] > len(real) // 2
    assert not ev["gates"]["augmented_examples_corr_distance"] and not ev["gates"]["augmented_examples_impossible"]


def test_thresholds_and_gate_overrides(real, manifest):
    sample = real.sample(400, random_state=0)
    rep = Q.quality_report(real, sample, manifest)
    m = Q.quality_metrics(rep)
    assert 0 < m["max_ks"] < 1
    assert Q.evaluate_quality(rep, ks_max=1.0, corr_max=1.0, cat_max=1.0)["passed"]
    strict = Q.evaluate_quality(rep, ks_max=m["max_ks"] / 2, corr_max=1.0, cat_max=1.0)
    assert not strict["passed"] and strict["failures"][0].startswith("augmented_examples_ks")
    # gates as data: an operator's warn-only KS gate does not block
    gates = [Gate("augmented_examples_ks", "max_ks", "<=", m["max_ks"] / 2, "warn")]
    warn_only = Q.evaluate_quality(rep, gates=gates)
    assert warn_only["passed"] and warn_only["warnings"] and not warn_only["failures"]


def test_null_rate_difference_is_reported(real, manifest):
    syn = real.copy()
    syn["days_since_last_activity"] = np.nan
    rep = Q.quality_report(real, syn, manifest)
    row = next(r for r in rep["features"] if r["feature"] == "days_since_last_activity")
    assert row["null_rate_synthetic"] == 1.0
    assert row["null_rate_diff"] == pytest.approx(1.0 - real["days_since_last_activity"].isna().mean())
    ev = Q.evaluate_quality(rep)
    assert ev["max_null_rate_diff_feature"] == "days_since_last_activity"
    assert any(w.startswith("augmented_examples_null_rate") for w in ev["warnings"])
    assert "days_since_last_activity" in Q.report_markdown(rep)
