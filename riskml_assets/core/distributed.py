"""Scale-out training of the risk model with ``xgboost.dask`` on a Dask cluster.

For tenants whose training set outgrows one machine. The result is the very same JSON model artifact as
``training.train_xgb_classifier`` (XGBoost JSON booster, features, training categories, pinned manifest,
parameters), built by the same helpers, so calibration, evaluation, the registry and scoring read it unchanged.

The inputs may be pandas frames (split into partitions here) or Dask DataFrames, e.g.
``dask.dataframe.read_parquet("abfs://...")`` so that no single process ever holds the whole train split.
The caller owns the ``distributed.Client`` (a ``LocalCluster`` in tests, ``Client(address)`` in production).
"""
from __future__ import annotations

import time
from typing import Callable, Literal

from .lazy import lazy_module

pd = lazy_module("pandas")


from .features import LABEL
from .training import (XGBParams, category_levels, design_matrix, model_artifact, model_features,
                       xgb_estimator_kwargs)

Execution = Literal["local", "dask", "azureml"]


def choose_execution(requested: str, rows: int, dask_min_rows: int) -> Execution:
    """Where ``risk_model`` trains: ``requested`` is local | dask | azureml | auto. ``auto`` picks dask when
    ``dask_min_rows`` > 0 and the train split has at least that many rows, else local."""
    if requested in ("local", "dask", "azureml"):
        return requested  # type: ignore[return-value]
    if requested != "auto":
        raise ValueError(f"unknown execution mode {requested!r}: expected auto, local, dask or azureml")
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    return "dask" if dask_min_rows > 0 and rows >= dask_min_rows else "local"


# xgboost.dask refuses a worker that holds train rows but no validation rows when a feature is categorical. The
# chunks of pandas input are placed round-robin (``_to_dask``), but the tasks derived from them may still run
# elsewhere (Dask moves small tasks between idle workers): the fit is tried again, the placement then differs.
EMPTY_WORKER_ATTEMPTS = 3


def _to_dask(df, npartitions: int, client=None, workers: list[str] | None = None):
    """A Dask DataFrame of ``df`` (a pandas frame: ``npartitions`` row chunks, at most one per row; a Dask one as
    it is). With ``client`` and ``workers``, chunk i is placed on ``workers[i % len(workers)]`` (scattered there):
    train and validation chunks then share their workers. xgboost.dask trains on every worker that holds a
    partition of either, and refuses one that holds train rows but no validation rows when a feature is
    categorical ("A worker cannot have empty input"); left to the scheduler, both validation chunks sometimes
    landed on one worker (the fit retries when a derived task moved anyway: ``EMPTY_WORKER_ATTEMPTS``)."""
    import dask.dataframe as dd

    if not isinstance(df, pd.DataFrame):
        return df
    df = df.reset_index(drop=True)
    n = max(1, min(npartitions, len(df) or 1))
    if client is None or not workers:
        return dd.from_pandas(df, npartitions=n)
    import numpy as np

    chunks = np.array_split(np.arange(len(df)), n)
    futures = [client.scatter(df.iloc[idx].reset_index(drop=True), workers=[workers[i % len(workers)]])
               for i, idx in enumerate(chunks)]
    return dd.from_delayed(futures, meta=df.iloc[:0], verify_meta=False)


def _dask_category_levels(train, features: list[str], kinds: dict[str, str]) -> dict[str, list[str]]:
    """``training.category_levels`` over a Dask DataFrame: the same per-value rule, applied per partition and
    united, so a categorical gets exactly the categories the single-machine path would give it."""
    cats = [c for c in features if kinds[c] == "categorical"]
    if not cats:
        return {}

    def seen(part: pd.DataFrame) -> pd.DataFrame:
        levels = category_levels(part, cats, {c: "categorical" for c in cats})
        return pd.DataFrame({"column": [c for c in cats for _ in levels[c]],
                             "value": [v for c in cats for v in levels[c]]})

    found = train[cats].map_partitions(seen, meta=pd.DataFrame({"column": pd.Series(dtype=object),
                                                                 "value": pd.Series(dtype=object)})).compute()
    return {c: sorted(set(found.loc[found["column"] == c, "value"]) | {"__missing__"}) for c in cats}


def train_xgb_classifier_dask(train, valid, manifest: dict, client, params: XGBParams | None = None,
                              npartitions: int | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Fit P(lost) with ``xgboost.dask.DaskXGBClassifier`` (hist, early stopping on the validation rows) on the
    workers of ``client``; returns the same artifact as ``training.train_xgb_classifier``.

    ``train``/``valid``: pandas or Dask DataFrames with the label, the manifest's features and optionally
    ``sample_weight``. ``npartitions`` (pandas input only): default one partition per worker thread."""
    import xgboost.dask as xgb_dask  # ``import xgboost.dask`` explicitly: ``xgb.dask`` may not be loaded

    params = params or XGBParams()
    threads = sum(client.nthreads().values()) or 1
    nparts = npartitions or threads
    # pandas input: train and validation chunks on the same workers, as many workers as both have rows for
    workers = sorted(client.nthreads())
    sizes = [len(f) for f in (train, valid) if isinstance(f, pd.DataFrame)]
    workers = workers[:max(1, min([len(workers), nparts, *sizes]))]
    dtrain, dvalid = _to_dask(train, nparts, client, workers), _to_dask(valid, nparts, client, workers)
    features, kinds = model_features(dtrain._meta, manifest)
    if not features:
        raise ValueError("no features available to train on")
    import dask

    labels = dtrain[LABEL].astype("int64")
    # one pass over the data for the counts and the classes (no shuffle, unlike ``unique``)
    n_train, n_valid, lo, hi, lost_rate = dask.compute(dtrain.shape[0], dvalid.shape[0], labels.min(),
                                                       labels.max(), labels.mean())
    n_train, n_valid = int(n_train), int(n_valid)
    if n_train == 0:
        raise ValueError("the train split is empty: cannot fit a classifier")
    if lo == hi:
        raise ValueError("the train split has a single class: cannot fit a classifier")
    categories = _dask_category_levels(dtrain, features, kinds)
    meta = design_matrix(dtrain._meta, features, kinds, categories)
    Xtr = dtrain.map_partitions(design_matrix, features, kinds, categories, meta=meta)
    Xva = dvalid.map_partitions(design_matrix, features, kinds, categories, meta=meta)
    yva = dvalid[LABEL].astype("int64")
    weights = dtrain["sample_weight"].astype("float64") if "sample_weight" in dtrain.columns else None
    t0 = time.perf_counter()
    for attempt in range(1, EMPTY_WORKER_ATTEMPTS + 1):
        clf = xgb_dask.DaskXGBClassifier(**xgb_estimator_kwargs(params, n_valid > 0))
        clf.client = client
        try:
            clf.fit(Xtr, labels, sample_weight=weights, eval_set=[(Xva, yva)] if n_valid else None, verbose=False)
            break
        except Exception as exc:  # noqa: BLE001 - xgboost's own error type, matched by its message
            if "cannot have empty input" not in str(exc) or attempt == EMPTY_WORKER_ATTEMPTS:
                raise
            if log:
                log(f"xgboost.dask: a worker held train rows but no validation rows (attempt {attempt}); the "
                    f"scheduler placed the partitions again")
    seconds = time.perf_counter() - t0
    booster = clf.get_booster()
    best = int(getattr(clf, "best_iteration", params.n_estimators - 1) or 0)
    workers = len(client.scheduler_info(n_workers=-1)["workers"]) if _has_n_workers_arg(client) \
        else len(client.scheduler_info()["workers"])
    if log:
        log(f"trained xgboost.dask on {n_train} rows x {len(features)} features in {seconds:.1f}s on "
            f"{workers} workers / {threads} threads ({Xtr.npartitions} partitions), best iteration {best}")
    return model_artifact(booster, best, features, kinds, categories, manifest, params, n_train, float(lost_rate), seconds,
                          engine={"name": "xgboost.dask", "workers": workers, "threads": threads,
                                  "partitions": int(Xtr.npartitions)})


def _has_n_workers_arg(client) -> bool:
    import inspect

    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):
        return False
