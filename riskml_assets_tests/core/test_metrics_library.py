"""core.metrics computes with scikit-learn / scipy: equal to the library on random inputs (ties, one class,
quantile bins with duplicate edges), and the numpy path used only inside the bootstrap loops equals the
library too. Importing the metrics module does not import scikit-learn."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats
from sklearn import calibration as skc
from sklearn import metrics as skm

from riskml_assets.core import metrics as M


def _draws(n_cases=25, seed=7):
    """Random (y, p): few distinct scores (ties), rounded scores, extreme probabilities, small and large."""
    rng = np.random.default_rng(seed)
    for i in range(n_cases):
        n = int(rng.integers(2, 400))
        y = (rng.random(n) < rng.uniform(0.05, 0.95)).astype(int)
        if y.min() == y.max():
            y[0] = 1 - y[0]
        kind = i % 3
        if kind == 0:
            p = rng.random(n)
        elif kind == 1:
            p = rng.integers(0, 5, n) / 4.0  # heavy ties, includes 0 and 1
        else:
            p = np.round(np.clip(0.3 * y + rng.normal(0.35, 0.2, n), 0, 1), 2)
        yield y, p


def test_classification_metrics_equal_the_library_on_random_inputs():
    for y, p in _draws():
        assert M.roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
        assert M.brier(y, p) == pytest.approx(skm.brier_score_loss(y, p), abs=1e-12)
        pc = np.clip(p, 1e-15, 1 - 1e-15)
        assert M.log_loss(y, p) == pytest.approx(skm.log_loss(y, pc, labels=[0, 1]), rel=1e-12)
        for t in (0.25, 0.5, float(np.median(p))):
            pred = (p >= t).astype(int)
            r = M.threshold_metrics(y, p, t)
            assert r["precision"] == pytest.approx(skm.precision_score(y, pred, zero_division=0))
            assert r["recall"] == pytest.approx(skm.recall_score(y, pred, zero_division=0))
            assert r["f1"] == pytest.approx(skm.f1_score(y, pred, zero_division=0))
        # the best-F1 threshold is the highest of the thresholds with the largest F1 (brute force)
        tp = {float(t): int(((p >= t) & (y == 1)).sum()) for t in np.unique(p)}
        f1s = {t: 2 * c / ((p >= t).sum() + y.sum()) for t, c in tp.items()}
        best = max(f1s.values())
        assert M.best_f1_threshold(y, p) == max(t for t, f in f1s.items() if f >= best - 1e-12)


def test_one_class_inputs():
    assert math.isnan(M.roc_auc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert M.brier([0, 0, 0], [0.1, 0.2, 0.3]) == pytest.approx(skm.brier_score_loss([0, 0, 0], [0.1, 0.2, 0.3]))
    assert M.brier([1, 1], [0.5, 1.0]) == pytest.approx(0.125)
    assert M.log_loss([1, 1], [0.5, 0.5]) == pytest.approx(math.log(2))
    assert M.ece([1, 1, 1], [0.2, 0.5, 0.9]) == pytest.approx(1 - (0.2 + 0.5 + 0.9) / 3)
    assert M.best_f1_threshold([0, 0], [0.3, 0.7]) == 0.5


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_reliability_table_is_calibration_curve_with_counts(strategy):
    for y, p in _draws(15, seed=11):
        for n_bins in (2, 5, 10):
            t = M.reliability_table(y, p, n_bins=n_bins, strategy=strategy)
            frac, pred = skc.calibration_curve(y, p, n_bins=n_bins, strategy=strategy)
            ne = t[t["count"] > 0]
            np.testing.assert_allclose(ne["frac_pos"], frac, rtol=0, atol=1e-12)
            np.testing.assert_allclose(ne["mean_pred"], pred, rtol=0, atol=1e-12)
            assert t["count"].sum() == len(y)
            # ECE from the library's curve, weighted by the bin counts
            expected = float(np.sum(ne["count"] / len(y) * np.abs(frac - pred)))
            assert M.ece(y, p, n_bins=n_bins, strategy=strategy) == pytest.approx(expected, abs=1e-12)


def test_bin_edges_follow_calibration_curve():
    # (lower, upper]: 0.5 belongs to the first of two bins, 0.0 to the first, 1.0 to the last
    t = M.reliability_table([0, 1, 1], [0.0, 0.5, 1.0], n_bins=2)
    assert t["count"].tolist() == [2, 1]


def test_regression_and_quantile_metrics_equal_the_library():
    rng = np.random.default_rng(5)
    for _ in range(10):
        n = int(rng.integers(2, 300))
        y, yhat = rng.normal(size=n) * 10, rng.normal(size=n) * 10
        assert M.mse(y, yhat) == pytest.approx(skm.mean_squared_error(y, yhat), rel=1e-12)
        assert M.mae(y, yhat) == pytest.approx(skm.mean_absolute_error(y, yhat), rel=1e-12)
        assert M.r2(y, yhat) == pytest.approx(skm.r2_score(y, yhat), rel=1e-12)
        for a in (0.1, 0.5, 0.9):
            d = y - yhat
            assert M.pinball_loss(y, yhat, a) == pytest.approx(np.mean(np.maximum(a * d, (a - 1) * d)), rel=1e-12)
    assert math.isnan(M.r2([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]))


def test_ks_statistic_is_ks_2samp():
    rng = np.random.default_rng(2)
    for _ in range(10):
        a = np.round(rng.normal(size=int(rng.integers(1, 200))), 1)
        b = np.round(rng.normal(0.3, 1.2, size=int(rng.integers(1, 200))), 1)
        assert M.ks_statistic(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-15)
    assert M.ks_statistic([1.0, np.nan, 2.0], [1.0, 2.0]) == 0.0
    assert math.isnan(M.ks_statistic([np.nan], [1.0]))


def test_ndcg_equals_sklearn_with_ties_ragged_queries_and_empty_queries():
    rng = np.random.default_rng(9)
    rels, scores = [], []
    for _ in range(30):
        n = int(rng.integers(1, 12))
        rels.append(rng.integers(0, 4, n).astype(float))
        scores.append(rng.integers(0, 4, n) / 3.0)  # many ties
    for k in (1, 3, 5, 20):
        per_query = []
        for r, s in zip(rels, scores):
            if not (r > 0).any():
                per_query.append(None)
            elif len(r) == 1:
                per_query.append(1.0)
            else:
                per_query.append(skm.ndcg_score([2 ** r - 1], [s], k=k))
        counted = [v if v is not None else 0.0 for v in per_query]
        assert M.ndcg_at_k(rels, scores, k) == pytest.approx(np.mean(counted), abs=1e-12)
        kept = [v for v in per_query if v is not None]
        assert M.ndcg_at_k(rels, scores, k, skip_empty=True) == pytest.approx(np.mean(kept), abs=1e-12)
    # large scores: the padding stays below every real score
    assert M.ndcg_at_k([[1, 0, 2], [0, 3]], [[1e18, 1e18, -1e18], [5.0, 1.0]], 2) == pytest.approx(
        np.mean([skm.ndcg_score([[1, 0, 3]], [[1e18, 1e18, -1e18]], k=2), skm.ndcg_score([[0, 7]], [[5.0, 1.0]], k=2)]))


def test_the_bootstrap_path_equals_the_library():
    """Inside the resampling loops AUC, Brier, log loss and ECE use numpy code: the same numbers."""
    for y, p in _draws(15, seed=3):
        with M._resampling():
            fast = (M.roc_auc(y, p), M.brier(y, p), M.log_loss(y, p), M.ece(y, p), M.ece(y, p, 5, "quantile"))
        lib = (M.roc_auc(y, p), M.brier(y, p), M.log_loss(y, p), M.ece(y, p), M.ece(y, p, 5, "quantile"))
        np.testing.assert_allclose(fast, lib, rtol=1e-12, atol=1e-12)
        assert lib[0] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    with M._resampling():
        assert math.isnan(M.roc_auc([1, 1], [0.2, 0.3]))
    assert not M._RESAMPLING.get()  # reset after the block


def test_grouped_bootstrap_interval_equals_one_computed_with_sklearn():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(120), 3)
    y = np.repeat(rng.random(120) < 0.3, 3).astype(int)
    p = np.round(np.clip(0.3 + 0.3 * (y - 0.3) + rng.normal(0, 0.2, len(y)), 0, 1), 2)
    ours = M.grouped_bootstrap_cis(y, p, {"auc": M.roc_auc, "brier": M.brier}, groups, n_boot=200, seed=4)
    lib = M.grouped_bootstrap_cis(
        y, p, {"auc": lambda a, b: skm.roc_auc_score(a, b) if 0 < a.sum() < len(a) else float("nan"),
               "brier": lambda a, b: skm.brier_score_loss(a, b, labels=[0, 1])}, groups, n_boot=200, seed=4)
    for k in ours:
        np.testing.assert_allclose(ours[k], lib[k], rtol=0, atol=1e-12)


def test_importing_the_metrics_module_does_not_import_sklearn_or_scipy_stats():
    code = ("import sys; import riskml_assets.core.metrics as M; "
            "print(sorted(m for m in ('sklearn', 'scipy.stats') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_the_vectorized_bootstrap_equals_the_per_resample_loop(monkeypatch):
    """AUC, Brier and ECE are evaluated on all resamples at once (weighted rows); wrapping them in a lambda forces
    the per-resample loop: the same draws give the same intervals, with ties, scores outside [0, 1] for the AUC,
    one-class resamples (dropped for the AUC only) and the weight matrix split into blocks."""
    rng = np.random.default_rng(5)
    for n_groups, per, rate in ((300, 4, 0.3), (6, 2, 0.2), (40, 1, 0.5)):
        groups = np.repeat([f"g{i}" for i in range(n_groups)], per)
        y = np.repeat(rng.random(n_groups) < rate, per).astype(int)
        if y.sum() == 0:
            y[0:per] = 1
        p = np.round(np.clip(0.3 + 0.4 * (y - 0.3) + rng.normal(0, 0.25, len(y)), 0, 1), 2)
        fns = {"auc": M.roc_auc, "brier": M.brier, "ece": M.ece}
        loop = {k: (lambda fn: lambda a, b: fn(a, b))(fn) for k, fn in fns.items()}
        monkeypatch.setattr(M, "_BOOT_BLOCK_CELLS", 7 * len(y))  # blocks of 7 resamples
        fast = M.grouped_bootstrap_cis(y, p, fns, groups, n_boot=150, seed=2)
        slow = M.grouped_bootstrap_cis(y, p, loop, groups, n_boot=150, seed=2)
        for k in fns:
            np.testing.assert_allclose(fast[k], slow[k], rtol=0, atol=1e-12, err_msg=f"{k}, {n_groups} groups")
        scores = p * 7 - 3  # margins, not probabilities: fine for the AUC alone
        assert M.grouped_bootstrap_ci(y, scores, M.roc_auc, groups, n_boot=50, seed=1) == pytest.approx(
            M.grouped_bootstrap_ci(y, scores, lambda a, b: M.roc_auc(a, b), groups, n_boot=50, seed=1), abs=1e-12)
    with pytest.raises(ValueError, match="probabilities"):
        M.grouped_bootstrap_cis(y, scores, {"brier": M.brier}, groups, n_boot=5)
    with pytest.raises(ValueError, match="0 and 1"):
        M.grouped_bootstrap_cis(y * 2, p, {"auc": M.roc_auc}, groups, n_boot=5)
