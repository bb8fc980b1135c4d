"""Values of riskml_assets.core.metrics: hand-computed examples and agreement with sklearn."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn import metrics as skm

from riskml_assets.core import metrics as m


@pytest.fixture(scope="module")
def scored():
    rng = np.random.default_rng(42)
    n = 600
    y = rng.integers(0, 2, n)
    p_good = np.clip(0.25 + 0.5 * y + rng.normal(0, 0.2, n), 0.001, 0.999)
    p_bad = rng.uniform(0.001, 0.999, n)
    return y, p_good, p_bad


# ------------------------------------------------------------------ classification, by hand

def test_auc_with_ties_by_hand():
    # positives score 0.5, 0.5; negatives 0.1, 0.5.
    # pairs (pos, neg): (0.5, 0.1)=1, (0.5, 0.5)=0.5, (0.5, 0.1)=1, (0.5, 0.5)=0.5 -> 3 / 4 = 0.75
    y = [0, 0, 1, 1]
    p = [0.1, 0.5, 0.5, 0.5]
    assert m.roc_auc(y, p) == pytest.approx(0.75)
    assert m.roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p))
    assert isinstance(m.roc_auc(y, p), float)


def test_auc_one_class_is_nan():
    assert math.isnan(m.roc_auc([1, 1, 1], [0.2, 0.5, 0.9]))


def test_brier_and_log_loss_by_hand():
    assert m.brier([0, 1], [0.1, 0.9]) == pytest.approx(0.01)  # (0.1^2 + 0.1^2) / 2
    assert m.log_loss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    # clipping keeps a confident wrong answer finite: -log(1e-15) / 1
    assert m.log_loss([1], [0.0]) == pytest.approx(-math.log(1e-15))


def test_ece_by_hand():
    y = [0, 1, 0, 1]
    p = [0.2, 0.4, 0.6, 0.8]
    # 2 uniform bins: [0, .5) holds .2, .4 -> mean_pred .3, frac_pos .5, |.2| * 2/4
    #                 [.5, 1] holds .6, .8 -> mean_pred .7, frac_pos .5, |.2| * 2/4  => 0.2
    assert m.ece(y, p, n_bins=2) == pytest.approx(0.2)
    assert m.ece(y, p, n_bins=2, strategy="quantile") == pytest.approx(0.2)
    # 10 bins: one row each: (.2 + .6 + .6 + .2) / 4 = 0.4
    assert m.ece(y, p, n_bins=10) == pytest.approx(0.4)
    assert m.ece([0, 1], [0.0, 1.0]) == 0.0


def test_reliability_table():
    y = [0, 1, 0, 1, 1]
    p = [0.05, 0.15, 0.15, 0.95, 1.0]
    t = m.reliability_table(y, p, n_bins=10)
    assert list(t.columns) == ["bin", "lower", "upper", "count", "mean_pred", "frac_pos"]
    assert len(t) == 10 and t["count"].sum() == 5
    assert t.loc[1, "count"] == 2 and t.loc[1, "mean_pred"] == pytest.approx(0.15) and t.loc[1, "frac_pos"] == 0.5
    assert t.loc[9, "count"] == 2  # 1.0 falls into the last, closed bin
    assert t.loc[5, "count"] == 0 and math.isnan(t.loc[5, "mean_pred"])
    q = m.reliability_table(y, p, n_bins=4, strategy="quantile")
    assert q["count"].sum() == 5
    assert q["lower"].iloc[0] == 0.05 and q["upper"].iloc[-1] == 1.0


def test_threshold_metrics_by_hand():
    y = [1, 1, 0, 0, 1]
    p = [0.9, 0.4, 0.6, 0.2, 0.5]
    # p >= 0.5 -> predicted [1, 0, 1, 0, 1]: tp 2 (0.9, 0.5), fp 1 (0.6), fn 1 (0.4), tn 1 (0.2)
    r = m.threshold_metrics(y, p, 0.5)
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (2, 1, 1, 1)
    assert r["precision"] == pytest.approx(2 / 3)
    assert r["recall"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(2 / 3)
    assert r["accuracy"] == pytest.approx(3 / 5)
    none = m.threshold_metrics(y, p, 0.95)
    assert none["precision"] == 0.0 and none["recall"] == 0.0 and none["f1"] == 0.0


def test_best_f1_threshold_by_hand():
    y = [1, 1, 0, 0, 1]
    p = [0.9, 0.4, 0.6, 0.2, 0.5]
    # thresholds 0.9, 0.6, 0.5, 0.4, 0.2 give F1 2/4, 2/5, 4/6, 6/7, 6/8 -> best 0.4
    t = m.best_f1_threshold(y, p)
    assert t == 0.4
    assert m.threshold_metrics(y, p, t)["f1"] == pytest.approx(6 / 7)


def test_classification_metrics_agree_with_sklearn(scored):
    y, p, _ = scored
    assert m.roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert m.log_loss(y, p) == pytest.approx(skm.log_loss(y, p), rel=1e-9)
    assert m.brier(y, p) == pytest.approx(skm.brier_score_loss(y, p), abs=1e-12)
    r = m.threshold_metrics(y, p, 0.5)
    pred = (p >= 0.5).astype(int)
    assert r["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert r["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert r["f1"] == pytest.approx(skm.f1_score(y, pred))


def test_classification_report(scored):
    y, p, _ = scored
    r = m.classification_report(y, p, threshold=0.5)
    for key in ("auc", "log_loss", "brier", "ece", "precision", "recall", "f1", "threshold",
                "mse", "mae", "rmse", "r2", "n", "positives", "base_rate"):
        assert key in r
    assert r["n"] == len(y) and r["positives"] == int(y.sum())
    assert r["base_rate"] == pytest.approx(y.mean())
    assert r["mse"] == pytest.approx(r["brier"])
    assert r["rmse"] == pytest.approx(math.sqrt(r["brier"]))
    assert r["r2"] == pytest.approx(skm.r2_score(y, p))
    assert r["mae"] == pytest.approx(skm.mean_absolute_error(y, p))
    assert all(isinstance(v, (int, float)) for v in r.values())


@pytest.mark.parametrize("call, message", [
    (lambda: m.roc_auc([0, 1], [0.5]), "same length"),
    (lambda: m.brier([0, 1], [0.5, float("nan")]), "non-finite"),
    (lambda: m.brier([0, 2], [0.5, 0.5]), "only 0 and 1"),
    (lambda: m.log_loss([0, 1], [0.5, 1.5]), r"\[0, 1\]"),
    (lambda: m.mse([], []), "empty"),
    (lambda: m.ece([0, 1], [0.1, 0.2], strategy="bogus"), "strategy"),
    (lambda: m.ndcg_at_k([[1]], [[0.1]], 0), "positive integer"),
    (lambda: m.pinball_loss([1.0], [1.0], 1.5), "alpha"),
])
def test_invalid_inputs_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ------------------------------------------------------------------ regression

def test_regression_metrics_agree_with_sklearn():
    rng = np.random.default_rng(1)
    y = rng.normal(10, 3, 200)
    yhat = y + rng.normal(0.5, 1, 200)
    assert m.mse(y, yhat) == pytest.approx(skm.mean_squared_error(y, yhat))
    assert m.mae(y, yhat) == pytest.approx(skm.mean_absolute_error(y, yhat))
    assert m.rmse(y, yhat) == pytest.approx(math.sqrt(skm.mean_squared_error(y, yhat)))
    assert m.r2(y, yhat) == pytest.approx(skm.r2_score(y, yhat))
    assert m.mape(y, yhat) == pytest.approx(skm.mean_absolute_percentage_error(y, yhat))
    r = m.regression_report(y, yhat)
    assert r["n"] == 200 and r["bias"] == pytest.approx(np.mean(yhat - y))


def test_mape_ignores_zero_targets_and_r2_constant():
    # row with y = 0 ignored: (|2-1|/2 + |4-5|/4) / 2 = (0.5 + 0.25) / 2
    assert m.mape([0.0, 2.0, 4.0], [1.0, 1.0, 5.0]) == pytest.approx(0.375)
    assert math.isnan(m.mape([0.0, 0.0], [1.0, 2.0]))
    assert math.isnan(m.r2([3.0, 3.0], [1.0, 2.0]))


# ------------------------------------------------------------------ quantiles

def test_pinball_loss_by_hand():
    # alpha 0.9, q = 2: y=1 -> 0.1 * 1, y=2 -> 0, y=3 -> 0.9 * 1 ; mean = 1.0 / 3
    assert m.pinball_loss([1, 2, 3], [2, 2, 2], 0.9) == pytest.approx(1.0 / 3)
    assert m.pinball_loss([1, 2, 3], [2, 2, 2], 0.9) == pytest.approx(
        skm.mean_pinball_loss([1, 2, 3], [2, 2, 2], alpha=0.9))
    # alpha 0.5 is half the MAE
    assert m.pinball_loss([1, 4], [2, 2], 0.5) == pytest.approx(0.5 * (1 + 2) / 2)


def test_interval_coverage_and_crossing_by_hand():
    # covered: 1 in [0,2] yes, 2 in [2.5,3] no, 3 in [3,3] yes (closed), 4 in [5,6] no
    assert m.interval_coverage([1, 2, 3, 4], [0, 2.5, 3, 5], [2, 3, 3, 6]) == 0.5
    Q = [[1, 2, 3], [2, 1, 3], [1, 1, 1], [3, 2, 1]]  # rows 2 and 4 not sorted; ties are fine
    assert m.quantile_crossing_rate(Q) == 0.5
    assert m.quantile_crossing_rate([[1.0], [2.0]]) == 0.0


def test_quantile_report():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    Q = np.array([[0, 1, 2], [1, 2, 3], [2, 2.5, 2.8], [3, 4, 5]], dtype=float)
    r = m.quantile_report(y, Q, [0.1, 0.5, 0.9])
    assert r["n"] == 4
    assert r["coverage"] == 0.75  # row 3: 3 > 2.8
    assert r["nominal_coverage"] == pytest.approx(0.8)
    assert r["pinball_p50"] == pytest.approx(m.pinball_loss(y, Q[:, 1], 0.5))
    assert r["below_p90"] == 0.75
    assert r["mean_pinball"] == pytest.approx(np.mean([r["pinball_p10"], r["pinball_p50"], r["pinball_p90"]]))
    assert r["crossing_rate"] == 0.0
    assert m.alpha_tag(0.025) == "p2.5"
    with pytest.raises(ValueError, match="increasing"):
        m.quantile_report(y, Q, [0.5, 0.1, 0.9])


# ------------------------------------------------------------------ ranking

def test_ndcg_by_hand_with_tie_and_empty_query():
    rel = [3, 2, 0, 1]
    score = [0.5, 0.9, 0.5, 0.1]
    # ranking: item1 (0.9, rel 2), then the 0.5 tie of item0 (rel 3) and item2 (rel 0) at ranks 2 and 3:
    # a tie shares its gains equally (sklearn's ndcg_score averages over the tied orderings)
    # DCG@3  = (2^2-1)/log2(2) + (7+0)/2/log2(3) + (7+0)/2/log2(4) = 3 + 3.5/log2(3) + 1.75
    # IDCG@3 = (2^3-1)/log2(2) + (2^2-1)/log2(3) + 1/log2(4)       = 7 + 3/log2(3) + 0.5
    expected = (3 + 3.5 / math.log2(3) + 1.75) / (7 + 3 / math.log2(3) + 0.5)
    assert expected == pytest.approx(0.7408081, abs=1e-6)
    assert m.ndcg_at_k([rel], [score], 3) == pytest.approx(expected)
    # second query with no relevant item: NDCG 0 and counted, or skipped on request
    assert m.ndcg_at_k([rel, [0, 0]], [score, [0.3, 0.2]], 3) == pytest.approx(expected / 2)
    assert m.ndcg_at_k([rel, [0, 0]], [score, [0.3, 0.2]], 3, skip_empty=True) == pytest.approx(expected)
    assert math.isnan(m.ndcg_at_k([[0, 0]], [[0.3, 0.2]], 3, skip_empty=True))
    # mappings work as well as sequences
    assert m.ndcg_at_k({"q": rel}, {"q": score}, 3) == pytest.approx(expected)


def test_ndcg_agrees_with_sklearn_single_query_without_ties():
    rng = np.random.default_rng(3)
    rel = rng.integers(0, 4, 12).astype(float)
    score = rng.permutation(12) / 12.0
    for k in (1, 3, 5, 12):
        # sklearn uses the relevance itself as gain, so give it our gains 2^rel - 1
        assert m.ndcg_at_k([rel], [score], k) == pytest.approx(
            skm.ndcg_score([2 ** rel - 1], [score], k=k))


def test_map_precision_recall_by_hand():
    rels = [[1, 0, 1, 0], [0, 1, 0], [0, 0]]
    scores = [[0.9, 0.8, 0.7, 0.6], [0.9, 0.8, 0.7], [0.5, 0.4]]
    # AP q1: hits at ranks 1, 3 -> (1/1 + 2/3) / 2 = 5/6 ; q2: hit at rank 2 -> (1/2) / 1 ; q3 skipped
    assert m.mean_average_precision(rels, scores) == pytest.approx((5 / 6 + 0.5) / 2)
    assert m.mean_average_precision(rels, scores, skip_empty=False) == pytest.approx((5 / 6 + 0.5) / 3)
    for r, s, ap in zip(rels[:2], scores[:2], (5 / 6, 0.5)):
        assert skm.average_precision_score(r, s) == pytest.approx(ap)
    # P@2: q1 1/2, q2 1/2, q3 0 (counted by default)
    assert m.precision_at_k(rels, scores, 2) == pytest.approx(1 / 3)
    assert m.precision_at_k(rels, scores, 2, skip_empty=True) == pytest.approx(0.5)
    # P@5 divides by 5 even for short queries, unless adaptive_k
    assert m.precision_at_k(rels[:1], scores[:1], 5) == pytest.approx(2 / 5)
    assert m.precision_at_k(rels[:1], scores[:1], 5, adaptive_k=True) == pytest.approx(2 / 4)
    # R@2: q1 1/2, q2 1/1, q3 skipped -> 0.75
    assert m.recall_at_k(rels, scores, 2) == pytest.approx(0.75)


def test_ranking_report_groups_flat_arrays():
    qid = ["a", "b", "a", "b", "a", "c"]
    rel = [1, 0, 0, 1, 1, 0]
    score = [0.9, 0.1, 0.8, 0.7, 0.6, 0.5]
    keys, rels, scores = m.group_by_query(qid, rel, score)
    assert keys == ["a", "b", "c"]
    assert rels[0].tolist() == [1, 0, 1] and scores[1].tolist() == [0.1, 0.7]
    r = m.ranking_report(qid, rel, score, ks=(1, 2))
    assert (r["n_queries"], r["n_items"], r["n_queries_with_relevant"]) == (3, 6, 2)
    # a: AP (1 + 2/3)/2 = 5/6 ; b: AP 1 ; c skipped
    assert r["map"] == pytest.approx((5 / 6 + 1) / 2)
    assert r["precision_at_1"] == pytest.approx(2 / 3)  # a hit, b hit, c none
    assert r["recall_at_1"] == pytest.approx((1 / 2 + 1) / 2)
    assert r["ndcg_at_2"] == pytest.approx(m.ndcg_at_k(rels, scores, 2))
    assert m.ranking_report(qid, rel, score, ks=(2,), skip_empty=True)["ndcg_at_2"] == pytest.approx(
        m.ndcg_at_k(rels, scores, 2, skip_empty=True))


# ------------------------------------------------------------------ significance

def _slow_delong(y, p_a, p_b):
    """DeLong from its definition with the pairwise kernel psi (O(m n))."""
    y = np.asarray(y)
    out = []
    v10s, v01s = [], []
    for p in (p_a, p_b):
        x, z = p[y == 1], p[y == 0]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        out.append(psi.mean())
        v10s.append(psi.mean(axis=1))
        v01s.append(psi.mean(axis=0))
    s10 = np.cov(np.vstack(v10s))
    s01 = np.cov(np.vstack(v01s))
    m_, n_ = (y == 1).sum(), (y == 0).sum()
    s = s10 / m_ + s01 / n_
    z = (out[1] - out[0]) / math.sqrt(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    return z, 2 * stats.norm.sf(abs(z))


def test_delong(scored):
    y, p_good, p_bad = scored
    better = m.delong_test(y, p_bad, p_good)
    assert better["auc_b"] == pytest.approx(skm.roc_auc_score(y, p_good))
    assert better["auc_a"] == pytest.approx(skm.roc_auc_score(y, p_bad))
    assert better["z"] > 0 and better["p_value"] < 1e-6
    same = m.delong_test(y, p_good, p_good)
    assert same["z"] == 0.0 and same["p_value"] == 1.0
    # a close pair, rounded to create ties, against the definition
    rng = np.random.default_rng(7)
    p2 = np.round(np.clip(p_good + rng.normal(0, 0.15, len(y)), 0, 1), 1)
    fast = m.delong_test(y, np.round(p_good, 1), p2)
    z, pv = _slow_delong(y, np.round(p_good, 1), p2)
    assert fast["z"] == pytest.approx(z) and fast["p_value"] == pytest.approx(pv)
    assert 0.0 < fast["p_value"] < 1.0
    swapped = m.delong_test(y, p2, np.round(p_good, 1))
    assert swapped["z"] == pytest.approx(-fast["z"]) and swapped["p_value"] == pytest.approx(fast["p_value"])


def test_paired_bootstrap(scored):
    y, p_good, p_bad = scored
    same = m.paired_bootstrap_delta(y, p_good, p_good, m.roc_auc, n_boot=200, seed=1)
    assert same["delta"] == 0.0
    assert same["ci_low"] <= 0.0 <= same["ci_high"]
    assert same["p_value"] == 1.0
    better = m.paired_bootstrap_delta(y, p_bad, p_good, m.roc_auc, n_boot=200, seed=1)
    assert better["delta"] == pytest.approx(m.roc_auc(y, p_good) - m.roc_auc(y, p_bad))
    assert 0.0 < better["ci_low"] <= better["delta"] <= better["ci_high"]
    assert better["p_value"] == 0.0 and better["n_boot"] == 200
    # lower-is-better metric: delta negative for the better model, same seed -> same result
    b1 = m.paired_bootstrap_delta(y, p_bad, p_good, m.brier, n_boot=100, seed=5)
    b2 = m.paired_bootstrap_delta(y, p_bad, p_good, m.brier, n_boot=100, seed=5)
    assert b1 == b2 and b1["delta"] < 0 and b1["ci_high"] < 0
