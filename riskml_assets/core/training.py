"""Training of the risk model (XGBoost P(lost)) and the JSON model artifact it lives in.

A model artifact is a plain JSON-able dict: the booster as XGBoost JSON, the feature list with the
categories seen in training, the pinned feature manifest and the parameters. Loading it never executes
code (no pickle).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, asdict
from typing import Callable

import numpy as np
import pandas as pd

from .features import LABEL


@dataclass
class XGBParams:
    max_depth: int = 4
    learning_rate: float = 0.05
    n_estimators: int = 800
    early_stopping_rounds: int = 50
    min_child_weight: float = 5.0
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    reg_lambda: float = 1.0
    n_threads: int = 2
    seed: int = 0
    extra: dict = field(default_factory=dict)


def model_features(df: pd.DataFrame, manifest: dict) -> tuple[list[str], dict[str, str]]:
    feats = [c for c in manifest if c in df.columns]
    return feats, {c: manifest[c]["kind"] for c in feats}


def design_matrix(df: pd.DataFrame, features: list[str], kinds: dict[str, str],
                  categories: dict[str, list[str]]) -> pd.DataFrame:
    """Feature frame with numeric columns as float and categoricals with the training categories
    (a category unseen in training becomes missing, never a new code)."""
    missing = [c for c in features if c not in df.columns]
    if missing:
        raise KeyError(f"input lacks model features: {missing}")
    X = pd.DataFrame(index=df.index)
    for c in features:
        if kinds[c] == "categorical":
            X[c] = pd.Categorical(df[c].astype("object").where(df[c].notna(), "__missing__").astype(str),
                                  categories=categories[c])
        else:
            X[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    return X


def category_levels(train: pd.DataFrame, features: list[str], kinds: dict[str, str]) -> dict[str, list[str]]:
    """The categories a model knows: every value seen in training plus ``__missing__``."""
    return {c: sorted(set(train[c].astype(str)) | {"__missing__"}) for c in features if kinds[c] == "categorical"}


def xgb_estimator_kwargs(params: XGBParams, has_validation: bool) -> dict:
    """Keyword arguments of the XGBoost sklearn estimator, shared by the single-machine and the Dask path
    (``core.distributed``) so both fit the same model."""
    return dict(
        tree_method="hist", enable_categorical=True, max_cat_to_onehot=8,
        n_estimators=params.n_estimators, max_depth=params.max_depth, learning_rate=params.learning_rate,
        min_child_weight=params.min_child_weight, subsample=params.subsample,
        colsample_bytree=params.colsample_bytree, reg_lambda=params.reg_lambda,
        early_stopping_rounds=params.early_stopping_rounds if has_validation else None,
        eval_metric="logloss", random_state=params.seed, **params.extra,
    )


def model_artifact(booster, best_iteration: int, features: list[str], kinds: dict[str, str],
                   categories: dict[str, list[str]], manifest: dict, params: XGBParams, train_rows: int,
                   train_lost_rate: float, seconds: float, **extra) -> dict:
    """The JSON model artifact (the one format calibration, evaluation, the registry and scoring read)."""
    gain = booster.get_score(importance_type="total_gain")
    total = sum(gain.values()) or 1.0
    importance = {f: float(gain.get(f, 0.0) / total) for f in features}
    return {
        "family": "risk",
        "algorithm": "xgboost",
        "booster_json": booster.save_raw(raw_format="json").decode(),
        "best_iteration": int(best_iteration),
        "features": features,
        "feature_kinds": kinds,
        "categories": categories,
        "manifest": manifest,
        "params": {k: v for k, v in asdict(params).items()},
        "train_rows": int(train_rows),
        "train_lost_rate": float(train_lost_rate),
        "train_seconds": seconds,
        "importance": dict(sorted(importance.items(), key=lambda kv: -kv[1])),
        **extra,
    }


def train_xgb_classifier(train: pd.DataFrame, valid: pd.DataFrame, manifest: dict, params: XGBParams | None = None,
                         log: Callable[[str], None] | None = None) -> dict:
    """Fit P(lost) with the ``hist`` tree method and early stopping on the validation rows."""
    import xgboost as xgb

    params = params or XGBParams()
    features, kinds = model_features(train, manifest)
    if not features:
        raise ValueError("no features available to train on")
    categories = category_levels(train, features, kinds)
    Xtr, ytr = design_matrix(train, features, kinds, categories), train[LABEL].to_numpy(dtype=int)
    Xva, yva = design_matrix(valid, features, kinds, categories), valid[LABEL].to_numpy(dtype=int)
    if len(np.unique(ytr)) < 2:
        raise ValueError("the train split has a single class: cannot fit a classifier")
    weights = train["sample_weight"].to_numpy(dtype=float) if "sample_weight" in train.columns else None
    t0 = time.perf_counter()
    clf = xgb.XGBClassifier(n_jobs=params.n_threads, **xgb_estimator_kwargs(params, bool(len(valid))))
    eval_set = [(Xva, yva)] if len(valid) else None
    clf.fit(Xtr, ytr, sample_weight=weights, eval_set=eval_set, verbose=False)
    seconds = time.perf_counter() - t0
    booster = clf.get_booster()
    best = int(getattr(clf, "best_iteration", params.n_estimators - 1) or 0)
    if log:
        log(f"trained xgboost on {len(train)} rows x {len(features)} features in {seconds:.1f}s, "
            f"best iteration {best}")
    return model_artifact(booster, best, features, kinds, categories, manifest, params, len(train),
                          float(ytr.mean()), seconds)


_BOOSTER_CACHE: dict[int, object] = {}


def load_booster(artifact: dict):
    import xgboost as xgb

    key = hash(artifact["booster_json"])
    if key not in _BOOSTER_CACHE:
        b = xgb.Booster()
        b.load_model(bytearray(artifact["booster_json"].encode()))
        _BOOSTER_CACHE.clear()
        _BOOSTER_CACHE[key] = b
    return _BOOSTER_CACHE[key]


def predict_raw(artifact: dict, df: pd.DataFrame) -> np.ndarray:
    """Uncalibrated P(lost) of a trained artifact on ``df``."""
    import xgboost as xgb

    X = design_matrix(df, artifact["features"], artifact["feature_kinds"], artifact["categories"])
    booster = load_booster(artifact)
    dm = xgb.DMatrix(X, enable_categorical=True)
    best = artifact.get("best_iteration")
    rng = (0, best + 1) if best is not None else (0, 0)
    return booster.predict(dm, iteration_range=rng).astype("float64")


def artifact_size(artifact: dict) -> int:
    return len(json.dumps(artifact))
