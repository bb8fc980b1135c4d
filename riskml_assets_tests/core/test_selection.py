"""Model selection (pure): determinism, time budget, picking the better candidate, folds, gap check,
model persistence, and the family registry's config and gates."""
from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from riskml_assets.core import families as FAM
from riskml_assets.core import selection as S

SMALL = {"type": "int", "low": 10, "high": 40, "default": 20}


def _space(**over):
    base = {"n_estimators": SMALL, "max_depth": {"type": "int", "low": 2, "high": 5, "default": 3},
            "learning_rate": {"type": "float", "low": 0.05, "high": 0.4, "log": True, "default": 0.2}}
    base.update(over)
    return base


def _xor(n=1200, seed=0, noise=0.05):
    """Label = sign(x0 * x1), flipped with P=noise: no single split (depth-1 tree) carries signal."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 5)), columns=[f"x{i}" for i in range(5)])
    X["cat"] = pd.Categorical(rng.choice(["a", "b", "c"], n), categories=["a", "b", "c", "__missing__"])
    y = ((X["x0"] * X["x1"] > 0) ^ (rng.random(n) < noise)).astype(int).to_numpy()
    groups = np.repeat(np.arange(n // 3), 3)  # three rows per "opportunity"
    return X, y, groups


@pytest.fixture(scope="module")
def xor():
    return _xor()


def _xgb_candidates():
    return [
        S.make_candidate("xgboost", "binary", _space(max_depth={"type": "fixed", "value": 1}), name="stump"),
        S.make_candidate("xgboost", "binary", _space(max_depth={"type": "int", "low": 3, "high": 6}), name="trees"),
    ]


# ------------------------------------------------------------------ selection


def test_same_seed_gives_same_choice_params_and_history(xor):
    X, y, g = xor
    cands = {"xgboost": _space(), "lightgbm": {"n_estimators": SMALL, "num_leaves": {"type": "int", "low": 4, "high": 16}}}
    runs = [S.select_model(X, y, g, task="binary", candidates=cands, n_trials=6, seed=3) for _ in range(2)]
    a, b = runs
    assert a.best_candidate == b.best_candidate
    assert a.best_params == b.best_params
    assert a.cv_mean == b.cv_mean and a.cv_std == b.cv_std
    assert [(t["algorithm"], t["params"], t["state"], t["value"]) for t in a.trials] == \
           [(t["algorithm"], t["params"], t["state"], t["value"]) for t in b.trials]
    assert a.stopped_by == "trials" and len(a.trials) == 6
    assert {t["algorithm"] for t in a.trials[:2]} == {"xgboost", "lightgbm"}  # defaults of each tried first
    c = S.select_model(X, y, g, task="binary", candidates=cands, n_trials=6, seed=4)
    assert [t["params"] for t in c.trials[2:]] != [t["params"] for t in a.trials[2:]]  # the seed matters
    json.dumps(a.to_dict())  # JSON-able for metadata / MLflow


def test_tiny_time_budget_stops_early_and_still_returns_the_best(xor):
    X, y, g = xor
    slow = {"n_estimators": {"type": "int", "low": 150, "high": 200}, "max_depth": {"type": "int", "low": 4, "high": 6}}
    t0 = time.perf_counter()
    r = S.select_model(X, y, g, task="binary", candidates={"xgboost": slow}, n_trials=200, timeout_seconds=0.3,
                       seed=0, prune=False)
    elapsed = time.perf_counter() - t0
    assert r.stopped_by == "timeout"
    assert r.n_complete >= 1 and len(r.trials) < 200
    assert r.best_candidate == "xgboost" and r.best_params and np.isfinite(r.cv_mean) and r.cv_mean > 0.8
    one_trial = max(t["seconds"] for t in r.trials)
    assert elapsed < 0.3 + 2 * one_trial + 1.0, (elapsed, one_trial)  # at most the first trial and one more fold


def test_cpu_time_budget_counts_the_work_not_the_waiting(xor):
    """timeout_clock='cpu': the cap is CPU seconds of this process. Sleeping (what a busy machine does to a
    step) spends none; the trials' work does, and a tiny CPU budget stops after the first complete trial."""
    X, y, g = xor
    slow = {"n_estimators": {"type": "int", "low": 150, "high": 200}, "max_depth": {"type": "int", "low": 4, "high": 6}}
    r = S.select_model(X, y, g, task="binary", candidates={"xgboost": slow}, n_trials=50, timeout_seconds=0.05,
                       seed=0, prune=False, timeout_clock="cpu")
    assert r.stopped_by == "timeout" and r.n_complete == 1 and len(r.trials) <= 2
    assert any(t["stopped"] == "timeout" for t in r.trials) or len(r.trials) == 1
    # a wall-clock budget that has passed only by waiting does not stop a CPU-clock selection
    calls = {"n": 0}
    real_fit = S.XGBModel.fit

    def sleepy_fit(self, *a, **kw):
        calls["n"] += 1
        time.sleep(0.3)  # waiting, not working
        return real_fit(self, *a, **kw)

    S.XGBModel.fit = sleepy_fit
    try:
        small = {"n_estimators": {"type": "fixed", "value": 5}, "max_depth": {"type": "fixed", "value": 2}}
        c0 = time.process_time()
        r = S.select_model(X, y, g, task="binary", candidates={"xgboost": small}, n_trials=3, timeout_seconds=1.5,
                           seed=0, prune=False, timeout_clock="cpu")
        cpu = time.process_time() - c0
    finally:
        S.XGBModel.fit = real_fit
    assert r.seconds > 2.7 > 1.5 > cpu  # a wall clock would have stopped it; the CPU clock did not
    assert r.stopped_by == "trials" and r.n_complete == 3 and calls["n"] == 9
    with pytest.raises(ValueError, match="timeout_clock"):
        S.select_model(X, y, g, task="binary", candidates={"xgboost": small}, n_trials=1, timeout_clock="gpu")


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid"])
def test_finds_the_clearly_better_candidate(xor, sampler):
    X, y, g = xor
    r = S.select_model(X, y, g, task="binary", candidates=_xgb_candidates(), sampler=sampler, n_trials=6, seed=1)
    assert r.best_candidate == "trees"
    assert r.cv_mean > 0.85
    stump = r.per_candidate["stump"]["best_value"]
    assert stump is None or stump < 0.65  # a single split cannot see an interaction
    assert r.sampler == sampler


def test_random_forest_wins_where_built_to(xor):
    """Few rows and heavy label noise: bagged deep trees beat 10-40 boosting rounds of stumps."""
    X, y, g = xor
    r = S.select_model(X, y, g, task="binary", n_trials=4, seed=0, candidates={
        "xgboost": _space(max_depth={"type": "fixed", "value": 1}),
        "random_forest": {"n_estimators": {"type": "int", "low": 50, "high": 80}, "max_depth": {"type": "int", "low": 6, "high": 10}},
    })
    assert r.best_candidate == "random_forest" and r.cv_mean > 0.85


def test_overfitting_is_flagged():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(600, 8)))
    y = rng.integers(0, 2, 600)  # pure noise: deep trees memorise the train folds
    g = np.arange(600)
    deep = {"n_estimators": {"type": "fixed", "value": 150}, "max_depth": {"type": "fixed", "value": 8},
            "min_child_weight": {"type": "fixed", "value": 0.1}}
    r = S.select_model(X, y, g, task="binary", candidates={"xgboost": deep}, n_trials=1, seed=0)
    assert r.train_mean > 0.95 and abs(r.cv_mean - 0.5) < 0.1
    assert r.gap > 0.3 and r.overfit
    X2, y2, g2 = _xor(600)
    r2 = S.select_model(X2, y2, g2, task="binary", n_trials=1, seed=0, candidates={
        "xgboost": {"n_estimators": {"type": "fixed", "value": 20}, "max_depth": {"type": "fixed", "value": 2}}})
    assert r2.gap < 0.1 and not r2.overfit


def test_regression_quantile_and_ranking_tasks():
    rng = np.random.default_rng(0)
    n = 900
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=list("abcd"))
    y = 3 * X["a"].to_numpy() + np.abs(X["b"].to_numpy()) * rng.normal(size=n)
    g = np.repeat(np.arange(n // 3), 3)
    small = {"xgboost": _space(), "lightgbm": {"n_estimators": SMALL}}
    r = S.select_model(X, y, g, task="quantile", alphas=[0.1, 0.5, 0.9], candidates=small, n_trials=3, seed=0)
    assert r.scorer == "mean_pinball" and not r.greater_is_better and r.cv_mean < 1.0
    m = S.make_model(r.best_candidate, "quantile", r.best_params, alphas=[0.1, 0.5, 0.9]).fit(X, y)
    Q = m.predict(X)
    assert Q.shape == (n, 3) and (np.diff(Q, axis=1) >= 0).all()
    r = S.select_model(X, y, g, task="regression", candidates={"random_forest": {"n_estimators": SMALL}}, n_trials=2)
    assert r.scorer == "rmse" and r.cv_mean < 1.5
    # ranking: 300 queries of 5 items, one query per group, relevance driven by column a
    qid = np.repeat(np.arange(n // 5), 5)
    rel = np.clip(np.round(X["a"].to_numpy() + 1), 0, 2).astype(int)
    r = S.select_model(X, rel, qid, qid=qid, task="ranking", candidates=small, n_trials=2, seed=0)
    assert r.scorer == "ndcg@10" and r.cv_mean > 0.9
    with pytest.raises(ValueError, match="queries must nest"):
        S.select_model(X, rel, np.arange(n), qid=qid, task="ranking", candidates=small, n_trials=1)


# ------------------------------------------------------------------ folds


def test_grouped_folds_keep_groups_together_and_cover_every_row():
    g = np.repeat([f"opp-{i}" for i in range(50)], np.arange(50) % 4 + 1)
    folds = S.make_folds(g, 3, seed=0)
    assert len(folds) == 3
    seen = np.concatenate([va for _, va in folds])
    assert sorted(seen) == list(range(len(g)))
    for tr, va in folds:
        assert not set(g[tr]) & set(g[va])
    assert [list(v) for _, v in folds] == [list(v) for _, v in S.make_folds(g, 3, seed=0)]
    assert [list(v) for _, v in folds] != [list(v) for _, v in S.make_folds(g, 3, seed=1)]


def test_time_ordered_folds_validate_on_the_future():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(40), 3)
    closed = np.repeat(pd.date_range("2025-01-01", periods=40, freq="7D").to_numpy()[rng.permutation(40)], 3)
    folds = S.make_folds(g, 3, time_ordered=True, order_key=closed)
    assert len(folds) == 3
    sizes = [len(tr) for tr, _ in folds]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]  # expanding window
    for tr, va in folds:
        assert closed[tr].max() < closed[va].min()
        assert not set(g[tr]) & set(g[va])
    with pytest.raises(ValueError, match="order_key"):
        S.make_folds(g, 3, time_ordered=True)


# ------------------------------------------------------------------ models and spaces


@pytest.mark.parametrize("algorithm", S.ALGORITHMS)
def test_models_round_trip_through_json(xor, algorithm):
    X, y, _ = xor
    X = X.copy()
    X.loc[::7, "x2"] = np.nan
    params = {"n_estimators": 30}
    m = S.make_model(algorithm, "binary", params, seed=0).fit(X, y)
    d = json.loads(json.dumps(m.to_dict()))
    back = S.model_from_dict(d)
    np.testing.assert_allclose(back.predict(X), m.predict(X), rtol=0, atol=1e-6)
    assert back.columns == list(X.columns)
    assert "pickle" not in json.dumps(d)[:200]


def test_early_stopping_final_fit(xor):
    X, y, g = xor
    tr, va = np.arange(800), np.arange(800, 1200)
    m = S.make_model("xgboost", "binary", {"n_estimators": 500, "learning_rate": 0.3}).fit(
        X.iloc[tr], y[tr], eval_set=(X.iloc[va], y[va]), early_stopping_rounds=10)
    assert m.best_iteration < 499
    back = S.model_from_dict(json.loads(json.dumps(m.to_dict())))
    np.testing.assert_allclose(back.predict(X), m.predict(X), atol=1e-6)


def test_custom_candidate_with_its_own_estimator(xor):
    X, y, g = xor

    class Product:  # an "estimator-like": fit + predict, scores x0 * x1 (the true signal)
        def __init__(self, sign):
            self.sign = sign

        def fit(self, X, y, **kw):
            return self

        def predict(self, X):
            return self.sign * X["x0"].to_numpy() * X["x1"].to_numpy()

    cand = S.Candidate("product", lambda p, n_threads, seed: Product(p["sign"]),
                       {"sign": {"type": "categorical", "choices": [-1.0, 1.0]}})
    r = S.select_model(X, y, g, task="binary", candidates=[cand], sampler="grid", n_trials=10)
    assert r.best_params == {"sign": 1.0} and r.cv_mean > 0.9 and len(r.trials) == 2


def test_spaces_are_validated_and_gridded():
    with pytest.raises(ValueError, match="low"):
        S.validate_space({"x": {"type": "int", "low": 5, "high": 1}})
    with pytest.raises(ValueError, match="type"):
        S.validate_space({"x": {"type": "bool"}})
    with pytest.raises(ValueError, match="log"):
        S.validate_space({"x": {"type": "float", "low": 0, "high": 1, "log": True}})
    with pytest.raises(ValueError, match="unknown keys"):
        S.validate_space({"x": {"type": "int", "low": 1, "high": 2, "hihg": 3}})
    grid = S.space_grid({"a": {"type": "int", "low": 1, "high": 9, "default": 4}, "b": {"type": "categorical", "choices": ["u", "v"]},
                         "c": {"type": "fixed", "value": 7}})
    assert len(grid) == 6 and {"a": 4, "b": "v", "c": 7} in grid
    for name, space in S.DEFAULT_SPACES.items():
        assert S.validate_space(space) and set(S.default_params(space)) == set(space)
    with pytest.raises(ValueError, match="does not apply"):
        S.make_candidate("random_forest", "ranking")


# ------------------------------------------------------------------ families


def test_family_registry_configs_and_gates():
    assert set(FAM.FAMILIES) == {"risk", "revenue_forecast", "action_ranker"}
    cfg = FAM.resolve_config("revenue_forecast", {"n_trials": 5, "options": {"mode": "two_head"}})
    assert cfg["n_trials"] == 5 and cfg["options"]["mode"] == "two_head" and cfg["options"]["alphas"] == [0.1, 0.5, 0.9]
    assert set(FAM.resolve_config("risk")["candidates"]) == {"xgboost", "lightgbm", "random_forest"}
    with pytest.raises(ValueError, match="unknown config key"):
        FAM.resolve_config("risk", {"n_trails": 5})
    with pytest.raises(ValueError, match="not a candidate"):
        FAM.resolve_config("action_ranker", {"algorithm": "random_forest"})
    gates = FAM.family_gates("action_ranker", {"action_ranker_beats_popularity": {"threshold": 0.05, "action": "warn"}})
    g = gates["action_ranker_beats_popularity"]
    assert g.threshold == 0.05 and g.action == "warn" and g.op == ">="
    names = [g.name for g in FAM.all_family_gates()]
    assert len(names) == len(set(names))


def test_family_selection_on_risk_rows(xor):
    """The shared mechanism end to end on a family (risk) with a tiny budget: select, fit, gap, gates."""
    X, y, g = xor
    df = X.assign(label=y, opportunity_id=[f"o{i}" for i in g],
                  closed_at=pd.Timestamp("2025-01-01") + pd.to_timedelta(g, unit="D"))
    manifest = {c: {"kind": "categorical" if c == "cat" else "numeric"} for c in X.columns}
    tr, va, te = df.iloc[:800], df.iloc[800:1000], df.iloc[1000:]
    cfg = {"n_trials": 3, "candidates": {"xgboost": _space(), "random_forest": {"n_estimators": SMALL}}}
    art = FAM.train_family("risk", tr, va, {"manifest": manifest, "split_method": "walk_forward"}, cfg)
    assert art["selection"]["time_ordered"] is True and art["selection"]["n_complete"] >= 1
    assert art["algorithm"] == art["selection"]["best_candidate"]
    assert art["fit_check"]["scorer"] == "auc" and art["fit_check"]["validation"] > 0.8
    json.dumps(art)
    rep = FAM.evaluate_family("risk", te, art, {"manifest": manifest})
    assert rep["auc"] > 0.8 and rep["primary_metric"]["name"] == "auc"
    assert set(rep["gates"]) == {"risk_model_selection_not_overfit"}
    p = FAM.predict_risk(json.loads(json.dumps(art)), te)
    assert p.shape == (len(te),) and ((p >= 0) & (p <= 1)).all()
