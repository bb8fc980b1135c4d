"""Model selection shared by every model family: candidate algorithms, search spaces as data, Optuna.

One mechanism for all families (risk classifier, revenue quantile forecaster, action ranker):

- A **task** says what a model predicts: ``binary`` (P(y=1)), ``regression`` (a number), ``quantile``
  (an (n, k) matrix of quantiles, always sorted per row) or ``ranking`` (a score per item of a query).
- A **candidate** is an algorithm (``xgboost``, ``lightgbm``, ``random_forest`` where it applies) with a
  search space written as data::

      {"max_depth": {"type": "int", "low": 2, "high": 8, "default": 4},
       "learning_rate": {"type": "float", "low": 0.02, "high": 0.3, "log": True, "default": 0.1},
       "booster": {"type": "categorical", "choices": ["gbtree", "dart"]},
       "subsample_freq": {"type": "fixed", "value": 1}}

  so a family's config (or an operator's YAML) can narrow or replace a space without code.
- :func:`select_model` runs an Optuna study over (algorithm, its params): TPE by default (random and
  grid selectable), median pruning on the running cross-validation mean reported after each fold,
  cross-validation grouped by opportunity (or expanding-window folds in time when the split is
  walk-forward), a budget in trials *and* seconds, fixed seeds. It returns the chosen algorithm, its
  params, CV mean ± std, the train-vs-validation gap (overfitting flag) and the whole trial history.
- Every fitted model is a :class:`TabularModel` with ``fit``/``predict`` and a JSON-able
  ``to_dict()``; :func:`model_from_dict` loads it back without executing code (XGBoost JSON, the
  LightGBM text model, random-forest node arrays as base64 ``.npy`` read with ``allow_pickle=False``).

Determinism: with the same data, candidates, seed and ``n_trials`` the same trials run in the same
order and the same choice comes out (samplers are seeded, ``n_jobs=1``, models are seeded and use a
fixed thread count). A run stopped by ``timeout_seconds`` depends on the machine's speed by nature.

Budget: Optuna checks the timeout before each trial; in addition a running trial is cut at the next fold
boundary once the deadline has passed (it is recorded as pruned with ``stopped="timeout"``), except while no
trial has completed yet, so a tiny budget still returns a best model (the first complete trial).

Cross-validation fits use the params as given (``n_estimators`` is part of the search space) and no
early stopping, so no fold's held-out rows steer its own fit and boosted trees get no advantage over
random forests. The family's final fit then uses early stopping on the validation split, capped at the
chosen ``n_estimators``.

Nothing here imports dagster.
"""
from __future__ import annotations

import base64
import io
import itertools
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .lazy import lazy_module

np = lazy_module("numpy")
pd = lazy_module("pandas")


from . import metrics as M

__all__ = [
    "TASKS", "ALGORITHMS", "DEFAULT_SPACES", "SAMPLERS", "Candidate", "Scorer", "SelectionResult",
    "TabularModel", "validate_space", "default_params", "space_grid", "make_candidate", "candidates_from_config",
    "get_scorer", "make_folds", "select_model", "make_model", "model_from_dict", "cross_validate",
]

TASKS = ("binary", "regression", "quantile", "ranking")
ALGORITHMS = ("xgboost", "lightgbm", "random_forest")
SAMPLERS = ("tpe", "random", "grid")
#: Which algorithm can serve which task (random forests have no quantile loss and no ranking objective here).
APPLIES = {"xgboost": set(TASKS), "lightgbm": set(TASKS), "random_forest": {"binary", "regression"}}

# --------------------------------------------------------------------------------------------
# search spaces as data

_TREES = {"type": "int", "low": 50, "high": 400, "log": True, "default": 200}
_LR = {"type": "float", "low": 0.02, "high": 0.3, "log": True, "default": 0.1}
_BOOSTING_REGULARISATION = {  # row/column subsampling and L2, the same ranges for both boosting libraries
    "subsample": {"type": "float", "low": 0.6, "high": 1.0, "default": 0.8},
    "colsample_bytree": {"type": "float", "low": 0.5, "high": 1.0, "default": 0.8},
    "reg_lambda": {"type": "float", "low": 1e-3, "high": 10.0, "log": True, "default": 1.0},
}
DEFAULT_SPACES: dict[str, dict[str, dict]] = {
    "xgboost": {
        "n_estimators": _TREES,
        "max_depth": {"type": "int", "low": 2, "high": 8, "default": 4},
        "learning_rate": _LR,
        "min_child_weight": {"type": "float", "low": 1.0, "high": 30.0, "log": True, "default": 5.0},
        **_BOOSTING_REGULARISATION,
    },
    "lightgbm": {
        "n_estimators": _TREES,
        "num_leaves": {"type": "int", "low": 7, "high": 63, "log": True, "default": 15},
        "learning_rate": _LR,
        "min_child_samples": {"type": "int", "low": 5, "high": 100, "log": True, "default": 20},
        **_BOOSTING_REGULARISATION,
    },
    "random_forest": {
        "n_estimators": {"type": "int", "low": 50, "high": 300, "log": True, "default": 100},
        "max_depth": {"type": "int", "low": 3, "high": 12, "default": 8},
        "min_samples_leaf": {"type": "int", "low": 1, "high": 50, "log": True, "default": 5},
        "max_features": {"type": "float", "low": 0.2, "high": 1.0, "default": 0.5},
    },
}

_SPEC_KEYS = {"type", "low", "high", "log", "step", "choices", "default", "grid", "value"}


def validate_space(space: Mapping[str, Mapping]) -> dict[str, dict]:
    """Check a search space written as data; return a plain-dict copy. Raises ValueError naming the problem."""
    out: dict[str, dict] = {}
    for name, spec in (space or {}).items():
        if not isinstance(spec, Mapping):
            raise ValueError(f"search space: {name}: expected a mapping, got {spec!r}")
        spec = dict(spec)
        unknown = set(spec) - _SPEC_KEYS
        if unknown:
            raise ValueError(f"search space: {name}: unknown keys {sorted(unknown)}")
        kind = spec.get("type")
        if kind in ("int", "float"):
            if "low" not in spec or "high" not in spec:
                raise ValueError(f"search space: {name}: {kind} needs low and high")
            lo, hi = spec["low"], spec["high"]
            if not (float(lo) <= float(hi)):
                raise ValueError(f"search space: {name}: low {lo} > high {hi}")
            if spec.get("log") and float(lo) <= 0:
                raise ValueError(f"search space: {name}: log scale needs low > 0")
            if "default" in spec and not (float(lo) <= float(spec["default"]) <= float(hi)):
                raise ValueError(f"search space: {name}: default {spec['default']} outside [{lo}, {hi}]")
        elif kind == "categorical":
            if not spec.get("choices"):
                raise ValueError(f"search space: {name}: categorical needs non-empty choices")
            if "default" in spec and spec["default"] not in spec["choices"]:
                raise ValueError(f"search space: {name}: default {spec['default']!r} not among the choices")
        elif kind == "fixed":
            if "value" not in spec:
                raise ValueError(f"search space: {name}: fixed needs a value")
        else:
            raise ValueError(f"search space: {name}: type must be int, float, categorical or fixed, got {kind!r}")
        out[str(name)] = spec
    return out


def _default_of(spec: Mapping) -> Any:
    kind = spec["type"]
    if kind == "fixed":
        return spec["value"]
    if "default" in spec:
        return spec["default"]
    if kind == "categorical":
        return spec["choices"][0]
    lo, hi = float(spec["low"]), float(spec["high"])
    mid = math.sqrt(lo * hi) if spec.get("log") else (lo + hi) / 2
    return int(round(mid)) if kind == "int" else mid


def default_params(space: Mapping[str, Mapping]) -> dict:
    """The default value of every parameter of a space (``default``, else the (geometric) midpoint)."""
    return {k: _default_of(v) for k, v in space.items()}


def _spec_grid(spec: Mapping) -> list:
    if "grid" in spec:
        return list(spec["grid"])
    kind = spec["type"]
    if kind == "fixed":
        return [spec["value"]]
    if kind == "categorical":
        return list(spec["choices"])
    lo, hi, d = float(spec["low"]), float(spec["high"]), _default_of(spec)
    vals = [lo, float(d), hi]
    if kind == "int":
        vals = [int(round(v)) for v in vals]
    return list(dict.fromkeys(vals))  # unique, in order


def space_grid(space: Mapping[str, Mapping]) -> list[dict]:
    """The grid of a space: per parameter its ``grid`` list, or (low, default, high); all combinations."""
    names = list(space)
    return [dict(zip(names, combo)) for combo in itertools.product(*(_spec_grid(space[n]) for n in names))]


def _suggest(trial, key: str, spec: Mapping) -> Any:
    kind = spec["type"]
    if kind == "fixed":
        return spec["value"]
    if kind == "categorical":
        return trial.suggest_categorical(key, list(spec["choices"]))
    if kind == "int":
        step = int(spec.get("step", 1))
        return trial.suggest_int(key, int(spec["low"]), int(spec["high"]), step=step, log=bool(spec.get("log")))
    kw = {"log": True} if spec.get("log") else ({"step": float(spec["step"])} if spec.get("step") else {})
    return trial.suggest_float(key, float(spec["low"]), float(spec["high"]), **kw)


# --------------------------------------------------------------------------------------------
# models: one small adapter per algorithm, the same interface for every task


def _as_frame(X) -> pd.DataFrame:
    return X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X))


def _qid_order(qid) -> np.ndarray:
    q = np.asarray(qid)
    return np.argsort(q, kind="stable")


class TabularModel:
    """A fitted (or to-be-fitted) model of one algorithm for one task.

    ``fit(X, y, qid=None, sample_weight=None, eval_set=None, early_stopping_rounds=None)`` where
    ``eval_set = (X_val, y_val)`` or ``(X_val, y_val, qid_val)``; ``predict(X)`` returns P(y=1) for
    ``binary``, values for ``regression``, an (n, k) row-sorted matrix for ``quantile`` and scores for
    ``ranking``. ``to_dict()`` is JSON-able; :func:`model_from_dict` reverses it.
    """

    algorithm = ""

    def __init__(self, task: str, params: Mapping | None = None, *, n_threads: int = 1, seed: int = 0,
                 alphas: Sequence[float] | None = None, objective: str | None = None, eval_k: int = 10):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}: use one of {TASKS}")
        if task not in APPLIES[self.algorithm]:
            raise ValueError(f"{self.algorithm} does not apply to task {task!r}")
        if task == "quantile":
            if not alphas:
                raise ValueError("task 'quantile' needs alphas")
            alphas = [float(a) for a in alphas]
            if any(b <= a for a, b in zip(alphas, alphas[1:])):
                raise ValueError(f"alphas must be strictly increasing, got {alphas}")
        self.task, self.params = task, dict(params or {})
        self.n_threads, self.seed = int(n_threads), int(seed)
        self.alphas = list(alphas) if alphas else None
        self.objective, self.eval_k = objective, int(eval_k)
        self.best_iteration: int | None = None
        self.columns: list[str] | None = None

    # the sorted output of a quantile model never crosses (monotone rearrangement never raises pinball loss)
    def _finish(self, pred: np.ndarray) -> np.ndarray:
        pred = np.asarray(pred, dtype=float)
        if self.task == "quantile":
            return np.sort(pred.reshape(len(pred), -1), axis=1)
        return pred.reshape(-1)

    def _meta(self) -> dict:
        return {"algorithm": self.algorithm, "task": self.task, "params": self.params, "n_threads": self.n_threads,
                "seed": self.seed, "alphas": self.alphas, "objective": self.objective, "eval_k": self.eval_k,
                "best_iteration": self.best_iteration, "columns": self.columns}

    def fit(self, X, y, *, qid=None, sample_weight=None, eval_set=None, early_stopping_rounds=None):  # pragma: no cover
        raise NotImplementedError

    def predict_unsorted(self, X) -> np.ndarray:
        """Quantile output before the monotone rearrangement (to measure crossing); else ``predict``."""
        return self.predict(X)

    def predict(self, X) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def to_dict(self) -> dict:  # pragma: no cover
        raise NotImplementedError


class XGBModel(TabularModel):
    algorithm = "xgboost"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._est = None
        self._booster = None

    def _estimator(self, early_stopping_rounds):
        import xgboost as xgb

        common = dict(tree_method="hist", enable_categorical=True, max_cat_to_onehot=8, n_jobs=self.n_threads,
                      random_state=self.seed, early_stopping_rounds=early_stopping_rounds, **self.params)
        if self.task == "binary":
            return xgb.XGBClassifier(eval_metric="logloss", **common)
        if self.task == "regression":
            return xgb.XGBRegressor(objective=self.objective or "reg:squarederror", **common)
        if self.task == "quantile":
            return xgb.XGBRegressor(objective="reg:quantileerror", quantile_alpha=np.asarray(self.alphas), **common)
        return xgb.XGBRanker(objective=self.objective or "rank:pairwise", eval_metric=f"ndcg@{self.eval_k}", **common)

    def fit(self, X, y, *, qid=None, sample_weight=None, eval_set=None, early_stopping_rounds=None):
        X = _as_frame(X)
        self.columns = [str(c) for c in X.columns]
        y = np.asarray(y)
        es = early_stopping_rounds if eval_set is not None else None
        est = self._estimator(es)
        kw: dict = {"verbose": False}
        if sample_weight is not None:
            kw["sample_weight"] = np.asarray(sample_weight, float)
        if self.task == "ranking":
            if qid is None:
                raise ValueError("task 'ranking' needs qid")
            o = _qid_order(qid)
            X, y, kw["qid"] = X.iloc[o], y[o], np.asarray(qid)[o]
            if "sample_weight" in kw:
                raise ValueError("sample weights are not supported for ranking")
            if eval_set is not None:
                Xv, yv, qv = eval_set
                ov = _qid_order(qv)
                kw["eval_set"], kw["eval_qid"] = [(_as_frame(Xv).iloc[ov], np.asarray(yv)[ov])], [np.asarray(qv)[ov]]
        elif eval_set is not None:
            kw["eval_set"] = [(_as_frame(eval_set[0]), np.asarray(eval_set[1]))]
        est.fit(X, y, **kw)
        self._est, self._booster = est, est.get_booster()
        bi = getattr(est, "best_iteration", None) if es else None
        self.best_iteration = int(bi) if bi is not None else int(self._booster.num_boosted_rounds()) - 1
        return self

    def predict(self, X) -> np.ndarray:
        import xgboost as xgb

        X = _as_frame(X)
        if self._est is not None and hasattr(self._est, "predict_proba") and self.task == "binary":
            return self._finish(self._est.predict_proba(X)[:, 1])
        if self._est is not None:
            return self._finish(self._est.predict(X))
        dm = xgb.DMatrix(X, enable_categorical=True)
        return self._finish(self._booster.predict(dm, iteration_range=(0, int(self.best_iteration) + 1)))

    def predict_unsorted(self, X) -> np.ndarray:
        import xgboost as xgb

        if self.task != "quantile":
            return self.predict(X)
        X = _as_frame(X)
        out = (self._est.predict(X) if self._est is not None else
               self._booster.predict(xgb.DMatrix(X, enable_categorical=True), iteration_range=(0, int(self.best_iteration) + 1)))
        return np.asarray(out, float).reshape(len(X), -1)

    def to_dict(self) -> dict:
        return {**self._meta(), "booster_json": self._booster.save_raw(raw_format="json").decode()}

    def feature_importance(self) -> dict[str, float]:
        """Total gain per feature (0 for unused features)."""
        gain = self._booster.get_score(importance_type="total_gain")
        return {c: float(gain.get(c, 0.0)) for c in (self.columns or [])}

    @classmethod
    def _from_dict(cls, d: dict) -> "XGBModel":
        import xgboost as xgb

        m = cls(d["task"], d["params"], n_threads=d["n_threads"], seed=d["seed"], alphas=d["alphas"],
                objective=d["objective"], eval_k=d.get("eval_k", 10))
        m._booster = xgb.Booster()
        m._booster.load_model(bytearray(d["booster_json"].encode()))
        m._booster.set_param({"nthread": m.n_threads})
        m.best_iteration, m.columns = d["best_iteration"], d["columns"]
        return m


class LGBMModel(TabularModel):
    """LightGBM: classifier, regressor, one regressor per alpha for quantiles, lambdarank ranker."""

    algorithm = "lightgbm"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._boosters: list = []
        self._best: list[int] = []

    def _kwargs(self) -> dict:
        p = dict(self.params)
        p.setdefault("subsample_freq", 1 if p.get("subsample", 1.0) < 1.0 else 0)
        return dict(n_jobs=self.n_threads, random_state=self.seed, verbose=-1, deterministic=True,
                    force_row_wise=True, **p)

    def fit(self, X, y, *, qid=None, sample_weight=None, eval_set=None, early_stopping_rounds=None):
        import lightgbm as lgb

        X = _as_frame(X)
        self.columns = [str(c) for c in X.columns]
        y = np.asarray(y)
        cb = [lgb.early_stopping(int(early_stopping_rounds), verbose=False)] if (eval_set is not None and early_stopping_rounds) else None
        kw: dict = {"callbacks": cb}
        if sample_weight is not None:
            kw["sample_weight"] = np.asarray(sample_weight, float)
        ests = []
        if self.task == "ranking":
            if qid is None:
                raise ValueError("task 'ranking' needs qid")
            o = _qid_order(qid)
            X, y, q = X.iloc[o], y[o].astype(int), np.asarray(qid)[o]
            kw["group"] = pd.Series(q).value_counts(sort=False).reindex(pd.unique(q)).to_numpy()
            if eval_set is not None:
                Xv, yv, qv = eval_set
                ov = _qid_order(qv)
                qv = np.asarray(qv)[ov]
                kw.update(eval_X=(_as_frame(Xv).iloc[ov],), eval_y=(np.asarray(yv)[ov].astype(int),),
                          eval_group=[pd.Series(qv).value_counts(sort=False).reindex(pd.unique(qv)).to_numpy()],
                          eval_at=[self.eval_k])
            est = lgb.LGBMRanker(objective="lambdarank", **self._kwargs())
            est.fit(X, y, **kw)
            ests = [est]
        else:
            if eval_set is not None:
                kw.update(eval_X=(_as_frame(eval_set[0]),), eval_y=(np.asarray(eval_set[1]),))
            if self.task == "binary":
                makers = [lambda: lgb.LGBMClassifier(objective="binary", **self._kwargs())]
            elif self.task == "regression":
                makers = [lambda: lgb.LGBMRegressor(objective=self.objective or "regression", **self._kwargs())]
            else:
                makers = [lambda a=a: lgb.LGBMRegressor(objective="quantile", alpha=a, **self._kwargs()) for a in self.alphas]
            for make in makers:
                est = make()
                est.fit(X, y, **kw)
                ests.append(est)
        self._boosters = [e.booster_ for e in ests]
        self._best = [int(e.best_iteration_) if (cb and e.best_iteration_) else int(e.booster_.current_iteration())
                      for e in ests]
        self.best_iteration = int(max(self._best))
        return self

    def predict(self, X) -> np.ndarray:
        X = _as_frame(X)
        cols = [b.predict(X, num_iteration=n, num_threads=self.n_threads) for b, n in zip(self._boosters, self._best)]
        return self._finish(np.column_stack(cols) if self.task == "quantile" else cols[0])

    def predict_unsorted(self, X) -> np.ndarray:
        if self.task != "quantile":
            return self.predict(X)
        X = _as_frame(X)
        return np.column_stack([b.predict(X, num_iteration=n, num_threads=self.n_threads)
                                for b, n in zip(self._boosters, self._best)]).astype(float)

    def to_dict(self) -> dict:
        return {**self._meta(), "models": [b.model_to_string(num_iteration=n) for b, n in zip(self._boosters, self._best)],
                "best_iterations": self._best}

    def feature_importance(self) -> dict[str, float]:
        """Total gain per feature up to the best iteration (summed over the models of a quantile fit)."""
        tot = np.zeros(len(self.columns or []))
        for b, n in zip(self._boosters, self._best):
            tot += np.asarray(b.feature_importance(importance_type="gain", iteration=n), float)
        return {c: float(v) for c, v in zip(self.columns or [], tot)}

    @classmethod
    def _from_dict(cls, d: dict) -> "LGBMModel":
        import lightgbm as lgb

        m = cls(d["task"], d["params"], n_threads=d["n_threads"], seed=d["seed"], alphas=d["alphas"],
                objective=d["objective"], eval_k=d.get("eval_k", 10))
        m._boosters = [lgb.Booster(model_str=s) for s in d["models"]]
        m._best = [int(b) for b in d["best_iterations"]]
        m.best_iteration, m.columns = d["best_iteration"], d["columns"]
        return m


def _npy_b64(a: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _b64_npy(s: str) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(s)), allow_pickle=False)


class RFModel(TabularModel):
    """scikit-learn random forest (binary, regression). Categoricals become their codes (missing -> NaN,
    which sklearn >= 1.4 forests route natively). Stored as node arrays, predicted by a numpy traversal."""

    algorithm = "random_forest"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._est = None
        self._trees: list[dict] | None = None

    @staticmethod
    def _numeric(X) -> np.ndarray:
        X = _as_frame(X)
        cols = []
        for c in X.columns:
            s = X[c]
            if isinstance(s.dtype, pd.CategoricalDtype):
                codes = s.cat.codes.to_numpy().astype(float)
                codes[codes < 0] = np.nan
                cols.append(codes)
            else:
                cols.append(pd.to_numeric(s, errors="coerce").to_numpy(dtype=float))
        return np.column_stack(cols).astype(np.float32) if cols else np.zeros((len(X), 0), np.float32)

    def fit(self, X, y, *, qid=None, sample_weight=None, eval_set=None, early_stopping_rounds=None):
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        self.columns = [str(c) for c in _as_frame(X).columns]
        Xn, y = self._numeric(X), np.asarray(y)
        cls = RandomForestClassifier if self.task == "binary" else RandomForestRegressor
        self._est = cls(n_jobs=self.n_threads, random_state=self.seed, **self.params)
        self._est.fit(Xn, y, sample_weight=None if sample_weight is None else np.asarray(sample_weight, float))
        self.best_iteration = len(self._est.estimators_) - 1
        self._trees = None
        return self

    def _export(self) -> list[dict]:
        trees = []
        pos = list(self._est.classes_).index(1) if self.task == "binary" else None
        for est in self._est.estimators_:
            t = est.tree_
            v = t.value[:, 0, :]
            if self.task == "binary":
                tot = v.sum(axis=1)
                leaf = v[:, pos] / np.where(tot > 0, tot, 1.0) if pos is not None and v.shape[1] > pos else np.zeros(len(v))
            else:
                leaf = v[:, 0]
            trees.append({"left": t.children_left.astype(np.int32), "right": t.children_right.astype(np.int32),
                          "feature": t.feature.astype(np.int32), "threshold": t.threshold.astype(np.float64),
                          "missing_left": np.asarray(t.missing_go_to_left).astype(np.uint8),
                          "value": leaf.astype(np.float64)})
        return trees

    def predict(self, X) -> np.ndarray:
        Xn = self._numeric(X)
        if self._est is not None:
            if self.task == "binary":
                proba = self._est.predict_proba(Xn)
                classes = list(self._est.classes_)
                return self._finish(proba[:, classes.index(1)] if 1 in classes else np.zeros(len(Xn)))
            return self._finish(self._est.predict(Xn))
        out = np.zeros(len(Xn))
        rows = np.arange(len(Xn))
        for t in self._trees:
            node = np.zeros(len(Xn), dtype=np.int64)
            active = t["left"][node] >= 0
            while active.any():
                idx = rows[active]
                nd = node[idx]
                x = Xn[idx, t["feature"][nd]]
                go_left = np.where(np.isnan(x), t["missing_left"][nd] == 1, x <= t["threshold"][nd])
                node[idx] = np.where(go_left, t["left"][nd], t["right"][nd])
                active = t["left"][node] >= 0
            out += t["value"][node]
        return self._finish(out / len(self._trees))

    def feature_importance(self) -> dict[str, float]:
        """Impurity decrease per feature (scikit-learn's ``feature_importances_``; needs the fitted forest)."""
        if self._est is None:
            raise ValueError("feature importance needs the fitted forest (not a loaded one)")
        return {c: float(v) for c, v in zip(self.columns or [], self._est.feature_importances_)}

    def to_dict(self) -> dict:
        trees = self._trees if self._trees is not None else self._export()
        return {**self._meta(), "trees": [{k: _npy_b64(v) for k, v in t.items()} for t in trees]}

    @classmethod
    def _from_dict(cls, d: dict) -> "RFModel":
        m = cls(d["task"], d["params"], n_threads=d["n_threads"], seed=d["seed"], alphas=d["alphas"],
                objective=d["objective"], eval_k=d.get("eval_k", 10))
        m._trees = [{k: _b64_npy(v) for k, v in t.items()} for t in d["trees"]]
        m.best_iteration, m.columns = d["best_iteration"], d["columns"]
        return m


_MODELS: dict[str, type[TabularModel]] = {"xgboost": XGBModel, "lightgbm": LGBMModel, "random_forest": RFModel}


def make_model(algorithm: str, task: str, params: Mapping | None = None, *, n_threads: int = 1, seed: int = 0,
               **task_opts) -> TabularModel:
    """An unfitted :class:`TabularModel` (task_opts: ``alphas`` for quantile, ``objective``, ``eval_k``)."""
    if algorithm not in _MODELS:
        raise ValueError(f"unknown algorithm {algorithm!r}: use one of {ALGORITHMS}")
    return _MODELS[algorithm](task, params, n_threads=n_threads, seed=seed, **task_opts)


def model_from_dict(d: Mapping) -> TabularModel:
    """Load a model saved by ``TabularModel.to_dict`` (no code is executed: JSON, text and plain arrays)."""
    algo = d.get("algorithm")
    if algo not in _MODELS:
        raise ValueError(f"unknown algorithm {algo!r} in model dict")
    return _MODELS[algo]._from_dict(dict(d))


# --------------------------------------------------------------------------------------------
# candidates


@dataclass(frozen=True)
class Candidate:
    """An algorithm with its search space. ``build(params, n_threads, seed)`` returns an unfitted model
    with ``fit(X, y, qid=..., sample_weight=...)`` and ``predict(X)`` (a :class:`TabularModel` or any
    object with that interface)."""

    name: str
    build: Callable[[dict, int, int], Any]
    space: Mapping[str, Mapping]

    def __post_init__(self):
        object.__setattr__(self, "space", validate_space(self.space))


def make_candidate(algorithm: str, task: str, space: Mapping[str, Mapping] | None = None, *, name: str | None = None,
                   **task_opts) -> Candidate:
    """A candidate for one of :data:`ALGORITHMS` with its default space (or ``space``)."""
    if algorithm not in _MODELS:
        raise ValueError(f"unknown algorithm {algorithm!r}: use one of {ALGORITHMS}")
    if task not in APPLIES[algorithm]:
        raise ValueError(f"{algorithm} does not apply to task {task!r}")
    sp = DEFAULT_SPACES[algorithm] if space is None else space

    def build(params, n_threads, seed, _a=algorithm, _t=task, _o=dict(task_opts)):
        return make_model(_a, _t, params, n_threads=n_threads, seed=seed, **_o)

    return Candidate(name or algorithm, build, sp)


def candidates_from_config(config: Mapping[str, Any] | Sequence[str], task: str, **task_opts) -> list[Candidate]:
    """Candidates from config: a list of algorithm names (default spaces), or ``{name: space | None}``
    where a space may also be ``{"algorithm": "xgboost", "space": {...}}`` for a second variant of one
    algorithm. Algorithms that do not apply to ``task`` raise (say what you mean in config)."""
    if isinstance(config, Mapping):
        out = []
        for name, spec in config.items():
            if isinstance(spec, Mapping) and "algorithm" in spec:
                out.append(make_candidate(spec["algorithm"], task, spec.get("space"), name=name, **task_opts))
            else:
                out.append(make_candidate(name, task, spec, **task_opts))
        return out
    return [make_candidate(name, task, **task_opts) for name in config]


# --------------------------------------------------------------------------------------------
# scorers (all from the metrics module)


@dataclass(frozen=True)
class Scorer:
    """``fn(y, pred, qid) -> float``; ``gap`` says how the train-validation gap is measured:
    ``absolute`` for bounded scores (AUC, NDCG), ``relative`` (to the validation value) for losses."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray, np.ndarray | None], float]
    greater_is_better: bool
    gap: str = "absolute"


def _ndcg(k):
    def f(y, p, q):
        _, rels, scs = M.group_by_query(q, y, p)
        return M.ndcg_at_k(rels, scs, k)
    return f


def get_scorer(scorer: str | Scorer | None, task: str, alphas: Sequence[float] | None = None) -> Scorer:
    """A :class:`Scorer` by name (``auc``, ``log_loss``, ``brier``, ``rmse``, ``mae``, ``mean_pinball``,
    ``ndcg@k``) or the task default: auc / rmse / mean_pinball / ndcg@10."""
    if isinstance(scorer, Scorer):
        return scorer
    name = scorer or {"binary": "auc", "regression": "rmse", "quantile": "mean_pinball", "ranking": "ndcg@10"}[task]
    if name == "auc":
        return Scorer("auc", lambda y, p, q: M.roc_auc(y, p), True)
    if name == "log_loss":
        return Scorer("log_loss", lambda y, p, q: M.log_loss(y, p), False, "relative")
    if name == "brier":
        return Scorer("brier", lambda y, p, q: M.brier(y, p), False, "relative")
    if name == "rmse":
        return Scorer("rmse", lambda y, p, q: M.rmse(y, p), False, "relative")
    if name == "mae":
        return Scorer("mae", lambda y, p, q: M.mae(y, p), False, "relative")
    if name == "mean_pinball":
        if not alphas:
            raise ValueError("scorer mean_pinball needs alphas")
        al = [float(a) for a in alphas]
        return Scorer("mean_pinball", lambda y, p, q: float(np.mean([M.pinball_loss(y, p[:, j], a) for j, a in enumerate(al)])),
                      False, "relative")
    if name.startswith("ndcg@"):
        k = int(name.split("@", 1)[1])
        return Scorer(name, _ndcg(k), True)
    raise ValueError(f"unknown scorer {name!r}")


# --------------------------------------------------------------------------------------------
# folds


def make_folds(groups, n_folds: int = 3, *, seed: int = 0, time_ordered: bool = False,
               order_key=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Row-index (train, validation) pairs; all rows of a group (an opportunity) stay on one side.

    - grouped (default): groups are shuffled with ``seed`` and dealt round-robin into ``n_folds``
      folds (GroupKFold with a seeded shuffle); each fold is validation once.
    - ``time_ordered``: groups are ordered by the latest ``order_key`` of their rows (e.g. ``closed_at``,
      when the label became known; ties by group id) and cut into ``n_folds + 1`` consecutive blocks;
      fold k trains on blocks 0..k and validates on block k+1 (expanding window, always the future).
    """
    g = np.asarray(groups)
    if g.ndim != 1 or len(g) == 0:
        raise ValueError("groups must be a non-empty one-dimensional array")
    codes, uniq = pd.factorize(pd.Series(g).astype(str), sort=True)
    n_groups = len(uniq)
    n_folds = int(n_folds)
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    if time_ordered:
        if order_key is None:
            raise ValueError("time-ordered folds need order_key")
        if n_groups < n_folds + 1:
            raise ValueError(f"{n_groups} groups cannot make {n_folds} expanding-window folds")
        ok = np.asarray(order_key)
        if np.issubdtype(ok.dtype, np.number):
            t = pd.Series(ok.astype(float))
        else:  # datetimes (numpy, pandas or objects); NaT sorts first
            ns = pd.to_datetime(pd.Series(ok)).to_numpy().astype("datetime64[ns]")
            t = pd.Series(np.where(np.isnat(ns), np.nan, ns.astype("int64").astype(float)))
        gt = np.nan_to_num(t.groupby(codes).max().reindex(range(n_groups)).to_numpy(), nan=-np.inf)
        order = np.lexsort((np.arange(n_groups), gt))
        blocks = np.array_split(order, n_folds + 1)
        folds = []
        for k in range(n_folds):
            tr_groups = np.concatenate(blocks[: k + 1])
            folds.append((np.flatnonzero(np.isin(codes, tr_groups)), np.flatnonzero(np.isin(codes, blocks[k + 1]))))
        return folds
    if n_groups < n_folds:
        raise ValueError(f"{n_groups} groups cannot make {n_folds} folds")
    perm = np.random.default_rng(seed).permutation(n_groups)
    fold_of_group = np.empty(n_groups, dtype=int)
    fold_of_group[perm] = np.arange(n_groups) % n_folds
    fold = fold_of_group[codes]
    return [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(n_folds)]


# --------------------------------------------------------------------------------------------
# selection


def cross_validate(X, y, folds: Sequence[tuple[np.ndarray, np.ndarray]], algorithm: str, task: str, params: Mapping,
                   *, scorer: str | Scorer | None = None, seed: int = 0, n_threads: int = 1, sample_weight=None,
                   qid=None, alphas: Sequence[float] | None = None, **task_opts) -> list[float]:
    """Validation score of one configuration on each of ``folds`` (from :func:`make_folds`), fitted as in
    :func:`select_model` (params as given, no early stopping): e.g. a fixed default on the folds of a selection."""
    sc = get_scorer(scorer, task, alphas)
    y = np.asarray(y)
    w = np.asarray(sample_weight, float) if sample_weight is not None else None
    q = np.asarray(qid) if qid is not None else None
    if task == "quantile":
        task_opts["alphas"] = list(alphas or ())
    out = []
    for tr, va in folds:
        m = make_model(algorithm, task, dict(params), n_threads=int(n_threads), seed=int(seed), **task_opts)
        kw = {}
        if q is not None:
            kw["qid"] = q[tr]
        if w is not None:
            kw["sample_weight"] = w[tr]
        m.fit(_take(X, tr), y[tr], **kw)
        out.append(float(sc.fn(y[va], m.predict(_take(X, va)), q[va] if q is not None else None)))
    return out


@dataclass
class SelectionResult:
    best_candidate: str
    best_params: dict
    cv_mean: float
    cv_std: float
    trials: list[dict]
    stopped_by: str  # "trials" | "timeout"
    seconds: float
    scorer: str = ""
    greater_is_better: bool = True
    fold_scores: list[float] = field(default_factory=list)
    train_mean: float = float("nan")
    gap: float = float("nan")  # how much better the train folds score than the validation folds (absolute or relative)
    gap_kind: str = "absolute"
    max_gap: float = float("nan")
    overfit: bool = False
    n_trials_requested: int = 0
    n_complete: int = 0
    n_pruned: int = 0
    sampler: str = "tpe"
    seed: int = 0
    n_folds: int = 3
    time_ordered: bool = False
    timeout_seconds: float | None = None
    best_trial: int = -1
    per_candidate: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))

    def summary(self) -> str:
        sign = "+" if self.greater_is_better else "-"
        return (f"{self.best_candidate} {self.scorer}={self.cv_mean:.4g}±{self.cv_std:.3g} ({sign} better) after "
                f"{self.n_complete} complete / {self.n_pruned} pruned trials in {self.seconds:.1f}s "
                f"(stopped by {self.stopped_by}); train-validation gap {self.gap:.3g} ({self.gap_kind})"
                + (" OVERFIT" if self.overfit else ""))


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        f = float(x)
        return f if math.isfinite(f) else None
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _take(X, idx):
    return X.iloc[idx] if isinstance(X, pd.DataFrame) else np.asarray(X)[idx]


def select_model(
    X, y, groups, *,
    task: str,
    candidates: Sequence[Candidate | str] | Mapping[str, Any],
    qid=None,
    alphas: Sequence[float] | None = None,
    sample_weight=None,
    sampler: str = "tpe",
    n_trials: int = 20,
    timeout_seconds: float | None = None,
    n_folds: int = 3,
    time_ordered: bool = False,
    order_key=None,
    seed: int = 0,
    n_threads: int = 1,
    scorer: str | Scorer | None = None,
    prune: bool = True,
    max_gap: float | None = None,
    try_defaults_first: bool = True,
    objective: str | None = None,
    eval_k: int = 10,
    timeout_clock: str = "wall",
) -> SelectionResult:
    """Choose an algorithm and its hyper-parameters by grouped cross-validation within a budget.

    ``groups`` (one per row, e.g. opportunity_id) keep an opportunity's rows in one fold; for ranking
    ``qid`` names the query of each row (queries must nest in groups). ``candidates``: Candidate objects,
    algorithm names or a config mapping (see :func:`candidates_from_config`). ``sampler``: ``tpe``
    (seeded, multivariate, grouped for the conditional per-algorithm spaces), ``random`` or ``grid``
    (each candidate's :func:`space_grid`, interleaved across candidates, at most ``n_trials``). With
    ``try_defaults_first`` the first trials are each candidate's default params (TPE/random), so
    every algorithm is tried at least once when the budget allows. ``max_gap`` is the largest accepted
    train-validation gap (default 0.10 absolute for bounded scores, 0.30 relative for losses).
    ``timeout_clock``: ``wall`` (elapsed seconds) or ``cpu`` (CPU seconds of this process, all threads: on a
    machine shared with other work the cap then binds on the work done, not on the waiting).
    """
    import optuna

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: use one of {TASKS}")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}: use one of {SAMPLERS}")
    n_trials = int(n_trials)
    if n_trials < 1:
        raise ValueError("n_trials must be >= 1")
    task_opts: dict = {}
    if task == "quantile":
        task_opts["alphas"] = list(alphas or ())
    if objective:
        task_opts["objective"] = objective
    if task == "ranking":
        task_opts["eval_k"] = eval_k
        if qid is None:
            raise ValueError("task 'ranking' needs qid")
    if isinstance(candidates, Mapping) or (candidates and all(isinstance(c, str) for c in candidates)):
        cands = candidates_from_config(candidates, task, **task_opts)
    else:
        cands = list(candidates)
    if not cands:
        raise ValueError("no candidates to select from")
    by_name = {c.name: c for c in cands}
    if len(by_name) != len(cands):
        raise ValueError(f"candidate names must be unique, got {[c.name for c in cands]}")
    names = [c.name for c in cands]
    sc = get_scorer(scorer, task, alphas)
    if max_gap is None:
        max_gap = 0.10 if sc.gap == "absolute" else 0.30
    y = np.asarray(y)
    q = np.asarray(qid) if qid is not None else None
    w = np.asarray(sample_weight, float) if sample_weight is not None else None
    folds = make_folds(groups, n_folds, seed=seed, time_ordered=time_ordered, order_key=order_key)
    if q is not None:  # a query must not straddle folds (it would be split into two partial queries)
        for tr, va in folds:
            if np.intersect1d(q[tr], q[va]).size:
                raise ValueError("a query id appears on both sides of a fold: queries must nest in groups")

    t0 = time.perf_counter()
    if timeout_clock not in ("wall", "cpu"):
        raise ValueError(f"timeout_clock must be 'wall' or 'cpu', got {timeout_clock!r}")
    clock = time.perf_counter if timeout_clock == "wall" else time.process_time
    deadline = clock() + float(timeout_seconds) if timeout_seconds is not None else None
    state = {"complete": 0}

    def _fit_score(cand: Candidate, params: dict, tr, va):
        model = cand.build(params, int(n_threads), int(seed))
        kw = {}
        if q is not None:
            kw["qid"] = q[tr]
        if w is not None:
            kw["sample_weight"] = w[tr]
        model.fit(_take(X, tr), y[tr], **kw)
        s_va = sc.fn(y[va], model.predict(_take(X, va)), q[va] if q is not None else None)
        s_tr = sc.fn(y[tr], model.predict(_take(X, tr)), q[tr] if q is not None else None)
        return float(s_va), float(s_tr)

    def objective_fn(trial):
        name = trial.suggest_categorical("algorithm", names) if len(names) > 1 else names[0]
        cand = by_name[name]
        params = {p: _suggest(trial, f"{name}.{p}", spec) for p, spec in cand.space.items()}
        trial.set_user_attr("algorithm", name)
        trial.set_user_attr("params", _jsonable(params))
        if timeout_clock == "cpu" and deadline is not None and state["complete"] > 0 and clock() > deadline:
            trial.set_user_attr("stopped", "timeout")  # Optuna's own timeout is wall time: stop the study here
            trial.study.stop()
            raise optuna.TrialPruned()
        scores, train_scores = [], []
        for k, (tr, va) in enumerate(folds):
            if deadline is not None and k > 0 and state["complete"] > 0 and clock() > deadline:
                trial.set_user_attr("stopped", "timeout")
                raise optuna.TrialPruned()
            s_va, s_tr = _fit_score(cand, params, tr, va)
            scores.append(s_va)
            train_scores.append(s_tr)
            trial.set_user_attr("fold_scores", scores)
            trial.set_user_attr("train_scores", train_scores)
            trial.report(float(np.mean(scores)), step=k)
            if prune and k < len(folds) - 1 and trial.should_prune():
                raise optuna.TrialPruned()
        state["complete"] += 1
        return float(np.mean(scores))

    pruner = (optuna.pruners.MedianPruner(n_startup_trials=max(3, len(names)), n_warmup_steps=0)
              if prune else optuna.pruners.NopPruner())
    direction = "maximize" if sc.greater_is_better else "minimize"
    old_verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if sampler == "tpe":
                smp = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                                 n_startup_trials=max(len(names), min(10, n_trials // 3)))
            else:
                smp = optuna.samplers.RandomSampler(seed=seed)
            study = optuna.create_study(direction=direction, sampler=smp, pruner=pruner)

            def _enqueue(name, params):
                fixed = {f"{name}.{p}": v for p, v in params.items() if by_name[name].space[p]["type"] != "fixed"}
                study.enqueue_trial({"algorithm": name, **fixed} if len(names) > 1 else fixed)

            if sampler == "grid":
                grids = [[(c.name, g) for g in space_grid(c.space)] for c in cands]
                order = [x for tup in itertools.zip_longest(*grids) for x in tup if x is not None]
                n_trials = min(n_trials, len(order))
                for name, params in order[:n_trials]:
                    _enqueue(name, params)
            elif try_defaults_first:
                for c in cands[:n_trials]:
                    _enqueue(c.name, default_params(c.space))
            study.optimize(objective_fn, n_trials=n_trials,
                           timeout=timeout_seconds if timeout_clock == "wall" else None, n_jobs=1,
                           gc_after_trial=False, show_progress_bar=False)
    finally:
        optuna.logging.set_verbosity(old_verbosity)
    seconds = time.perf_counter() - t0

    TS = optuna.trial.TrialState
    trials = []
    for t in study.trials:
        if t.state not in (TS.COMPLETE, TS.PRUNED, TS.FAIL):
            continue
        ua = t.user_attrs
        trials.append({
            "number": t.number, "algorithm": ua.get("algorithm"), "params": ua.get("params", {}),
            "state": t.state.name.lower(), "value": t.value, "fold_scores": ua.get("fold_scores", []),
            "train_scores": ua.get("train_scores", []), "stopped": ua.get("stopped"),
            "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start else None,
        })
    complete = [t for t in study.trials if t.state == TS.COMPLETE]
    if not complete:
        raise RuntimeError("model selection finished without a complete trial")
    n_done = sum(t.state in (TS.COMPLETE, TS.PRUNED, TS.FAIL) for t in study.trials)
    timed_out = any(t.get("stopped") == "timeout" for t in trials) or n_done < n_trials
    best = study.best_trial
    ua = best.user_attrs
    fs, ts_ = np.asarray(ua["fold_scores"], float), np.asarray(ua["train_scores"], float)
    v_mean, t_mean = float(fs.mean()), float(ts_.mean())
    raw_gap = (t_mean - v_mean) if sc.greater_is_better else (v_mean - t_mean)
    gap = raw_gap if sc.gap == "absolute" else raw_gap / max(abs(v_mean), 1e-12)
    per_cand: dict = {}
    for t in trials:
        if t["state"] == "complete":
            cur = per_cand.get(t["algorithm"])
            better = cur is None or ((t["value"] > cur["best_value"]) if sc.greater_is_better else (t["value"] < cur["best_value"]))
            if better:
                per_cand[t["algorithm"]] = {"best_value": t["value"], "trial": t["number"]}
    for name in names:
        per_cand.setdefault(name, {"best_value": None, "trial": None})
        per_cand[name]["trials"] = sum(t["algorithm"] == name for t in trials)
        per_cand[name]["seconds"] = float(sum(t["seconds"] or 0.0 for t in trials if t["algorithm"] == name))
    return SelectionResult(
        best_candidate=ua["algorithm"], best_params=dict(ua["params"]), cv_mean=v_mean,
        cv_std=float(fs.std(ddof=1)) if len(fs) > 1 else 0.0, trials=trials,
        stopped_by="timeout" if timed_out else "trials", seconds=seconds, scorer=sc.name,
        greater_is_better=sc.greater_is_better, fold_scores=[float(x) for x in fs], train_mean=t_mean,
        gap=float(gap), gap_kind=sc.gap, max_gap=float(max_gap), overfit=bool(gap > max_gap),
        n_trials_requested=n_trials, n_complete=len(complete),
        n_pruned=sum(t.state == TS.PRUNED for t in study.trials), sampler=sampler, seed=int(seed),
        n_folds=len(folds), time_ordered=bool(time_ordered), timeout_seconds=timeout_seconds,
        best_trial=best.number, per_candidate=per_cand,
    )
