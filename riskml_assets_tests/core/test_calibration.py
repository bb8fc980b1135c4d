"""Calibrators: they fix miscalibrated scores on held-out rows and survive a JSON round trip."""
from __future__ import annotations

import json

import numpy as np
import pytest

from riskml_assets.core import metrics as m
from riskml_assets.core.calibration import (
    ISOTONIC_MIN_ROWS,
    IdentityCalibrator,
    IsotonicCalibrator,
    PlattCalibrator,
    calibrator_from_dict,
    fit_calibrator,
)


def _data(kind: str, n: int, seed: int):
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, n)
    true_p = 1.0 / (1.0 + np.exp(-z))
    y = (rng.random(n) < true_p).astype(int)
    if kind == "cubed":
        p_raw = true_p ** 3                           # far too low
    else:
        p_raw = 1.0 / (1.0 + np.exp(-(2.0 * z + 1.0)))  # overconfident and shifted
    return p_raw, y


@pytest.mark.parametrize("kind", ["cubed", "shifted_sigmoid"])
@pytest.mark.parametrize("cls", [PlattCalibrator, IsotonicCalibrator])
def test_calibrators_improve_held_out_ece_and_brier(kind, cls):
    p_fit, y_fit = _data(kind, 3000, seed=1)
    p_test, y_test = _data(kind, 3000, seed=2)
    cal = cls().fit(p_fit, y_fit)
    p_cal = cal.predict(p_test)
    raw_ece, cal_ece = m.ece(y_test, p_test), m.ece(y_test, p_cal)
    assert cal_ece < raw_ece
    assert cal_ece < 0.05
    assert m.brier(y_test, p_cal) < m.brier(y_test, p_test)
    # ranking is kept (up to ties created by isotonic steps)
    assert m.roc_auc(y_test, p_cal) >= m.roc_auc(y_test, p_test) - 0.01


def test_platt_recovers_the_shift():
    # p_raw = sigmoid(2 z + 1) while the truth is sigmoid(z): logit(true) = 0.5 * logit(p_raw) - 0.5
    p_raw, y = _data("shifted_sigmoid", 20000, seed=3)
    cal = PlattCalibrator().fit(p_raw, y)
    assert cal.a == pytest.approx(0.5, abs=0.05)
    assert cal.b == pytest.approx(-0.5, abs=0.08)


@pytest.mark.parametrize("cls", [PlattCalibrator, IsotonicCalibrator, IdentityCalibrator])
def test_round_trip_range_and_monotone(cls):
    p_fit, y_fit = _data("cubed", 1500, seed=4)
    cal = cls().fit(p_fit, y_fit)
    d = cal.to_dict()
    assert d["method"] == cal.method
    back = calibrator_from_dict(json.loads(json.dumps(d)))
    assert type(back) is cls
    grid = np.linspace(0.0, 1.0, 1001)
    probe = np.concatenate([grid, p_fit[:200]])
    assert np.array_equal(back.predict(probe), cal.predict(probe))
    out = cal.predict(grid)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.all(np.diff(out) >= 0.0)


def test_isotonic_matches_sklearn():
    from sklearn.isotonic import IsotonicRegression

    p, y = _data("cubed", 1000, seed=5)
    ours = IsotonicCalibrator().fit(p, y)
    ref = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(p, y)
    grid = np.linspace(0, 1, 501)
    np.testing.assert_allclose(ours.predict(grid), ref.predict(grid), atol=1e-12)


def test_fit_calibrator_auto_uses_cv_brier():
    p, y = _data("cubed", 2000, seed=6)
    cal, info = fit_calibrator(p, y, method="auto", n_folds=5, seed=0)
    assert info["method"] in ("platt", "isotonic") and info["method"] == cal.method
    assert set(info["cv_brier"]) == {"platt", "isotonic"}
    assert info["method"] == min(info["cv_brier"], key=info["cv_brier"].get)
    assert all(v < info["raw_brier"] for v in info["cv_brier"].values())
    assert info["n_rows"] == 2000 and info["n_folds"] == 5 and info["reason"]
    json.dumps(info)  # selection info is JSON-able too


def test_fit_calibrator_small_sample_and_explicit_methods():
    p, y = _data("shifted_sigmoid", ISOTONIC_MIN_ROWS - 1, seed=7)
    cal, info = fit_calibrator(p, y, method="auto")
    assert cal.method == "platt" and info["cv_brier"] == {} and "isotonic not considered" in info["reason"]
    for method, cls in (("platt", PlattCalibrator), ("isotonic", IsotonicCalibrator), ("none", IdentityCalibrator)):
        cal, info = fit_calibrator(p, y, method=method)
        assert isinstance(cal, cls) and info["method"] == method
    cal, info = fit_calibrator(p, np.zeros_like(y), method="auto")
    assert cal.method == "none" and "single class" in info["reason"]


def test_invalid_calibration_inputs():
    with pytest.raises(ValueError, match="method"):
        fit_calibrator([0.1, 0.9], [0, 1], method="beta")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        PlattCalibrator().fit([0.1, 1.5], [0, 1])
    with pytest.raises(RuntimeError, match="not fitted"):
        IsotonicCalibrator().predict([0.5])
    with pytest.raises(ValueError, match="unknown calibration method"):
        calibrator_from_dict({"method": "pickle"})
    with pytest.raises(ValueError, match="non-decreasing"):
        calibrator_from_dict({"method": "isotonic", "x": [0.0, 1.0], "y": [0.9, 0.1]})
    with pytest.raises(ValueError, match="missing"):
        calibrator_from_dict({"method": "platt", "a": 1.0})


def test_evaluation_compares_with_both_baselines_and_skips_a_missing_crm_score():
    import pandas as pd

    from riskml_assets.core.evaluation import evaluate_risk

    rng = np.random.default_rng(0)
    n = 2000
    p_true = rng.uniform(0.05, 0.95, n)
    y = (rng.random(n) < p_true).astype(int)
    test = pd.DataFrame({"opportunity_id": [f"o{i // 2}" for i in range(n)], "snapshot_date": pd.Timestamp("2026-01-05"),
                         "label": y, "baseline_risk_score": np.clip(p_true + rng.normal(0, 0.25, n), 0, 1)})
    rep = evaluate_risk(test, p_true, p_true, threshold=0.5, train_base_rate=y.mean(), importance={})
    b_model, b_crm = m.brier(y, p_true), m.brier(y, test["baseline_risk_score"].to_numpy())
    assert rep["brier_skill_vs_crm"] == pytest.approx(1 - b_model / b_crm) and rep["brier_skill_vs_crm"] > 0.1
    worse = evaluate_risk(test, p_true, np.full(n, y.mean()), threshold=0.5, train_base_rate=y.mean(), importance={})
    assert worse["brier_skill_vs_crm"] < 0  # a model no better than the base rate loses to a useful CRM score
    none = evaluate_risk(test.assign(baseline_risk_score=np.nan), p_true, p_true, threshold=0.5,
                         train_base_rate=y.mean(), importance={})
    assert none["baseline_risk_score"] is None and none["brier_skill_vs_crm"] is None
