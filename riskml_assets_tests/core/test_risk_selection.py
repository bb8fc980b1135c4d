"""Risk model selection (core.training.select_and_train) and artifacts of every algorithm.

On the simulator's small tenant (initech): LightGBM and random-forest artifacts predict through
``predict_raw``'s dispatch, survive a JSON round trip, retrain identically with ``fit_like``; the selection
is deterministic by seed (fixed trial count, no timeout), keeps the fixed XGBoost default when the best trial
is within fold noise (pure-noise labels) and switches when the default is clearly worse (a crippled default).
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from riskml_assets.core import features as F
from riskml_assets.core import selection, training

LABEL = F.LABEL
SMALL = {"lightgbm": {"n_estimators": 60, "num_leaves": 15, "learning_rate": 0.1},
         "random_forest": {"n_estimators": 40, "max_depth": 6, "min_samples_leaf": 5, "max_features": 0.5},
         "xgboost": {"n_estimators": 60, "max_depth": 3, "learning_rate": 0.1}}
FAST_DEFAULT = training.XGBParams(n_estimators=120, learning_rate=0.1, early_stopping_rounds=20, n_threads=1)


@pytest.fixture(scope="module")
def parts(initech_splits):
    return {n: initech_splits[initech_splits["split"] == n].reset_index(drop=True)
            for n in ("train", "validation", "test")}


@pytest.mark.parametrize("algorithm", ["lightgbm", "random_forest"])
def test_artifact_of_each_algorithm_predicts_through_the_dispatch(parts, manifest, algorithm):
    art = training.train_algorithm(parts["train"], parts["validation"], manifest, algorithm, SMALL[algorithm],
                                   seed=3, n_threads=1, early_stopping_rounds=10)
    assert art["algorithm"] == algorithm and "booster_json" not in art and art["params"]["seed"] == 3
    test = parts["test"]
    p = training.predict_raw(art, test)
    # the same numbers as the fitted model object (the dispatch loads the JSON model, no pickle)
    X = training.design_matrix(test, art["features"], art["feature_kinds"], art["categories"])
    np.testing.assert_allclose(p, selection.model_from_dict(art["model"]).predict(X), rtol=0, atol=1e-12)
    assert p.dtype == np.float64 and ((p >= 0) & (p <= 1)).all() and p.std() > 0.01
    back = json.loads(json.dumps(art))  # JSON round trip (the registry stores it so)
    np.testing.assert_allclose(training.predict_raw(back, test), p, rtol=0, atol=1e-12)
    assert abs(sum(art["importance"].values()) - 1.0) < 1e-9 and set(art["importance"]) == set(art["features"])
    # retraining like the artifact gives the same model (the ablation's baseline uses this)
    again = training.fit_like(back, parts["train"], parts["validation"], manifest)
    assert again["algorithm"] == algorithm and again["params"] == art["params"]
    np.testing.assert_allclose(training.predict_raw(again, test), p, rtol=0, atol=1e-12)


def test_old_artifacts_without_algorithm_are_xgboost_and_unknown_algorithms_fail_clearly(parts, manifest):
    art = training.train_xgb_classifier(parts["train"], parts["validation"], manifest, FAST_DEFAULT)
    old = {k: v for k, v in art.items() if k != "algorithm"}
    np.testing.assert_array_equal(training.predict_raw(old, parts["test"]), training.predict_raw(art, parts["test"]))
    again = training.fit_like(old, parts["train"], parts["validation"], manifest)
    assert again["booster_json"] == art["booster_json"]
    with pytest.raises(ValueError, match="unknown risk model algorithm 'catboost'"):
        training.predict_raw({**art, "algorithm": "catboost"}, parts["test"])


def _settings(**kw):
    base = dict(n_trials=3, timeout_seconds=None, n_folds=3, n_threads=1, max_rows=None, min_opportunities=0,
                candidates=("xgboost", "lightgbm", "random_forest"))
    return training.SelectionSettings(**{**base, **kw})


def _small_spaces(monkeypatch):
    """Narrow the default spaces so a trial takes well under a second on the small tenant."""
    spaces = {a: dict(s) for a, s in selection.DEFAULT_SPACES.items()}
    for a in spaces:
        spaces[a]["n_estimators"] = {"type": "int", "low": 20, "high": 60, "default": 40}
    monkeypatch.setattr(selection, "DEFAULT_SPACES", spaces)


def test_selection_is_deterministic_by_seed(parts, manifest, monkeypatch):
    _small_spaces(monkeypatch)
    a = training.select_and_train(parts["train"], parts["validation"], manifest, FAST_DEFAULT, _settings())
    b = training.select_and_train(parts["train"], parts["validation"], manifest, FAST_DEFAULT, _settings())
    sa, sb = a["selection"], b["selection"]
    assert sa["stopped_by"] == "trials" and sa["n_complete"] + sa["n_pruned"] == 3
    for key in ("chosen", "switched", "best_trial_algorithm", "best_trial_params", "cv_difference_mean"):
        assert sa[key] == sb[key], key
    assert sa["default"]["fold_scores"] == sb["default"]["fold_scores"]
    assert sa["best_trial"]["fold_scores"] == sb["best_trial"]["fold_scores"]
    np.testing.assert_array_equal(training.predict_raw(a, parts["test"]), training.predict_raw(b, parts["test"]))
    # the report's numbers are there: default vs chosen on CV and validation
    assert sa["time_ordered"] and sa["n_folds"] == 3 and sa["cv_rows"] == len(parts["train"])
    assert 0.5 < sa["default"]["cv_auc_mean"] < 1 and 0.5 < sa["default"]["validation"]["auc"] < 1
    assert sa["chosen"] == a.get("algorithm", "xgboost")


def test_noise_never_switches_away_from_the_default(parts, manifest, monkeypatch):
    """Labels independent of the features: every candidate is as good as the default up to fold noise."""
    _small_spaces(monkeypatch)
    rng = np.random.default_rng(1)
    noisy = {}
    for n in ("train", "validation"):
        df = parts[n].copy()
        lab = pd.Series(rng.random(df["opportunity_id"].nunique()) < 0.4, index=df["opportunity_id"].unique())
        df[LABEL] = df["opportunity_id"].map(lab).astype(int)
        noisy[n] = df
    art = training.select_and_train(noisy["train"], noisy["validation"], manifest, FAST_DEFAULT, _settings(n_trials=3))
    s = art["selection"]
    assert not s["switched"] and s["chosen"] == "xgboost" and "booster_json" in art
    assert s["cv_difference_mean"] <= s["cv_difference_se"]
    assert "kept the fixed XGBoost default" in s["reason"]


def test_a_clearly_better_candidate_replaces_a_poor_default(parts, manifest, monkeypatch):
    """A useless default (no split can reach the minimum child weight: a constant, CV AUC 0.5) loses to a random
    forest by far more than the fold noise: the selection switches and the artifact is the forest."""
    _small_spaces(monkeypatch)
    poor = training.XGBParams(n_estimators=2, max_depth=1, learning_rate=0.01, early_stopping_rounds=1, n_threads=1,
                              min_child_weight=1e9)
    art = training.select_and_train(parts["train"], parts["validation"], manifest, poor,
                                    _settings(n_trials=2, candidates=("random_forest",)))
    s = art["selection"]
    assert s["switched"] and s["chosen"] == "random_forest" and art["algorithm"] == "random_forest", s["reason"]
    assert s["default"]["fold_scores"] == [0.5, 0.5, 0.5]
    assert s["cv_difference_mean"] > s["cv_difference_se"] > 0
    assert s["chosen_validation"]["auc"] > s["default"]["validation"]["auc"]


def test_an_overfit_winner_of_the_cv_does_not_replace_the_default(parts, manifest, monkeypatch):
    """A LightGBM that memorises the small tenant (63 leaves of 1 row, 400 trees, no subsampling) beats a useless
    default in CV, but its train-validation AUC gap is far beyond the limit: the selection keeps the default and
    says why (on a small test tenant the selection switched to such a model, whose calibrated ECE then failed
    the evaluation gate and blocked registration)."""
    spaces = {a: dict(s) for a, s in selection.DEFAULT_SPACES.items()}
    fixed = lambda v: {"type": "int", "low": v, "high": v, "default": v}  # noqa: E731
    spaces["lightgbm"] = {"n_estimators": fixed(400), "num_leaves": fixed(63), "min_child_samples": fixed(1),
                          "learning_rate": {"type": "float", "low": 0.3, "high": 0.3, "default": 0.3}}
    monkeypatch.setattr(selection, "DEFAULT_SPACES", spaces)
    poor = training.XGBParams(n_estimators=2, max_depth=1, learning_rate=0.01, early_stopping_rounds=1, n_threads=1,
                              min_child_weight=1e9)
    art = training.select_and_train(parts["train"], parts["validation"], manifest, poor,
                                    _settings(n_trials=1, candidates=("lightgbm",)))
    s = art["selection"]
    assert s["best_trial_algorithm"] == "lightgbm" and s["overfit"] and s["gap"] > 0.10
    assert s["cv_difference_mean"] > s["cv_difference_se"]  # the CV alone would have switched
    assert not s["switched"] and s["chosen"] == "xgboost" and "booster_json" in art
    assert "overfit" in s["reason"]


def test_small_tenants_skip_the_selection_and_keep_the_default(parts, manifest):
    n_opp = parts["train"]["opportunity_id"].nunique()
    art = training.select_and_train(parts["train"], parts["validation"], manifest, FAST_DEFAULT,
                                    _settings(min_opportunities=n_opp + 1))
    s = art["selection"]
    assert not s["enabled"] and s["chosen"] == "xgboost" and f"{n_opp} train opportunities" in s["reason"]
    plain = training.train_xgb_classifier(parts["train"], parts["validation"], manifest, FAST_DEFAULT)
    assert art["booster_json"] == plain["booster_json"]


def test_cross_validate_matches_the_trials_of_select_model(parts, manifest):
    """The default's CV uses the same folds and fits as the study's trials: one configuration scores the same."""
    tr = parts["train"]
    feats, kinds = training.model_features(tr, manifest)
    X = training.design_matrix(tr, feats, kinds, training.category_levels(tr, feats, kinds))
    y, g = tr[LABEL].to_numpy(int), tr["opportunity_id"].to_numpy()
    cand = selection.make_candidate("xgboost", "binary", {k: {"type": "fixed", "value": v}
                                                          for k, v in SMALL["xgboost"].items()})
    res = selection.select_model(X, y, g, task="binary", candidates=[cand], n_trials=1, seed=5, prune=False)
    folds = selection.make_folds(g, 3, seed=5)
    cv = selection.cross_validate(X, y, folds, "xgboost", "binary", SMALL["xgboost"], seed=5)
    assert cv == pytest.approx(res.fold_scores, abs=1e-12)


def test_the_ablation_retrains_the_chosen_algorithm(initech_splits, manifest, parts):
    """risk_evaluation's ablation passes ``like=risk_model``: every variant is the same algorithm and params."""
    from riskml_assets.core.ablation import run_ablation

    art = training.train_algorithm(parts["train"], parts["validation"], manifest, "random_forest",
                                   SMALL["random_forest"], seed=2, n_threads=1)
    table, models = run_ablation(initech_splits, manifest, seed=2, like=art, keep_models=True, n_boot=50,
                                 variants={"as trained": lambda train, man, seed: (train, {"augment": "as trained"})})
    assert set(table["variant"]) == {"baseline", "as trained"}
    for v in ("baseline", "as trained"):
        m = models[v]["model"]
        assert m["algorithm"] == "random_forest" and m["params"] == art["params"]
    # the baseline (real train rows) is the artifact itself, retrained
    np.testing.assert_allclose(training.predict_raw(models["baseline"]["model"], parts["test"]),
                               training.predict_raw(art, parts["test"]), rtol=0, atol=1e-12)
