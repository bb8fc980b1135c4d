"""Scale-out training (``core.distributed``): xgboost.dask on a real Dask LocalCluster gives the same model
format as single-machine training, and (slow) the same quality on the simulated acme tenant."""
from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from riskml_assets.core import evaluation, simulator, training
from riskml_assets.core import metrics as M
from riskml_assets.core.distributed import choose_execution, train_xgb_classifier_dask
from riskml_assets.core.features import LABEL

from .conftest import simulated_splits

FAST = training.XGBParams(n_estimators=60, early_stopping_rounds=10)


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    # 2 workers x 1 thread as threads of this process: starts in well under a second
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as c:
        yield c


def _parts(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {n: df[df["split"] == n].reset_index(drop=True) for n in ("train", "validation", "test")}


def test_choose_execution():
    assert choose_execution("auto", 10_000_000, 0) == "local"  # 0 = never automatically
    assert choose_execution("auto", 99_999, 100_000) == "local"
    assert choose_execution("auto", 100_000, 100_000) == "dask"
    assert choose_execution("local", 10**9, 1) == "local"
    assert choose_execution("dask", 10, 0) == "dask"
    assert choose_execution("azureml", 10, 0) == "azureml"
    with pytest.raises(ValueError, match="unknown execution mode 'spark'"):
        choose_execution("spark", 10, 0)


def test_dask_model_has_the_single_machine_format(client, initech_splits, manifest):
    parts = _parts(initech_splits)
    train, valid, test = parts["train"], parts["validation"], parts["test"]
    local = training.train_xgb_classifier(train, valid, manifest, FAST)
    dask_art = train_xgb_classifier_dask(train, valid, manifest, client, FAST)

    # same artifact: every key of the local one (plus where it was trained), same features, same categories
    assert set(dask_art) == set(local) | {"engine"}
    assert dask_art["engine"] == {"name": "xgboost.dask", "workers": 2, "threads": 2, "partitions": 2}
    for key in ("family", "algorithm", "features", "feature_kinds", "categories", "manifest", "params", "train_rows"):
        assert dask_art[key] == local[key], key
    assert dask_art["train_lost_rate"] == pytest.approx(local["train_lost_rate"])
    json.dumps(dask_art)  # JSON-able, as the IO manager stores it
    booster = json.loads(dask_art["booster_json"])
    assert booster["learner"]["feature_names"] == local["features"]

    # calibration and evaluation read it unchanged, and it learnt something
    p_val = training.predict_raw(dask_art, valid)
    cal = evaluation.fit_risk_calibrator(p_val, valid[LABEL].to_numpy(int))
    p_test = evaluation.apply_calibrator(cal, training.predict_raw(dask_art, test))
    assert p_test.shape == (len(test),) and np.isfinite(p_test).all()
    auc_dask = M.roc_auc(test[LABEL].to_numpy(int), p_test)
    auc_local = M.roc_auc(test[LABEL].to_numpy(int), training.predict_raw(local, test))
    assert auc_dask > 0.65 and abs(auc_dask - auc_local) < 0.03, (auc_dask, auc_local)


def test_categories_come_from_every_partition(client, initech_splits, manifest):
    """A category present in one partition only is still a training category (one per partition would
    give each worker different codes)."""
    import dask.dataframe as dd

    parts = _parts(initech_splits)
    train = parts["train"].copy()
    cat = next(c for c, k in training.model_features(train, manifest)[1].items() if k == "categorical")
    train.loc[len(train) - 1, cat] = "only_in_the_last_partition"
    dtrain = dd.from_pandas(train, npartitions=3)
    art = train_xgb_classifier_dask(dtrain, parts["validation"], manifest, client, FAST)
    assert "only_in_the_last_partition" in art["categories"][cat]
    assert art["categories"] == training.category_levels(train, art["features"], art["feature_kinds"])
    assert art["engine"]["partitions"] == 3


def test_single_class_and_sample_weights(client, initech_splits, manifest):
    parts = _parts(initech_splits)
    one_class = parts["train"][parts["train"][LABEL] == 1]
    with pytest.raises(ValueError, match="single class"):
        train_xgb_classifier_dask(one_class, parts["validation"], manifest, client, FAST)
    # sample weights are used: all weight on the lost deals pushes every prediction up
    w = parts["train"].assign(sample_weight=np.where(parts["train"][LABEL] == 1, 50.0, 1.0))
    heavy = train_xgb_classifier_dask(w, parts["validation"], manifest, client, FAST)
    plain = train_xgb_classifier_dask(parts["train"], parts["validation"], manifest, client, FAST)
    test = parts["test"]
    assert training.predict_raw(heavy, test).mean() > training.predict_raw(plain, test).mean() + 0.1


@pytest.mark.slow
def test_dask_parity_on_acme(manifest):
    """Parity on the simulated acme tenant (~18.5k train rows): the xgboost.dask model's test AUC is within
    0.005 of the single-machine model's, default parameters, worker processes (catches pickling problems)."""
    from distributed import Client, LocalCluster

    parts = _parts(simulated_splits(simulator.simulate_tenant(simulator.DEFAULT_TENANTS[0]), manifest))
    train, valid, test = parts["train"], parts["validation"], parts["test"]
    y = test[LABEL].to_numpy(int)
    t0 = time.perf_counter()
    local = training.train_xgb_classifier(train, valid, manifest)
    t_local = time.perf_counter() - t0
    t0 = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as c:
        t_cluster = time.perf_counter() - t0
        dask_art = train_xgb_classifier_dask(train, valid, manifest, c)
    t_dask = time.perf_counter() - t0 - t_cluster
    auc_local = M.roc_auc(y, training.predict_raw(local, test))
    auc_dask = M.roc_auc(y, training.predict_raw(dask_art, test))
    print(f"\nacme: {len(train)} train rows; local fit {local['train_seconds']:.1f}s ({t_local:.1f}s), AUC "
          f"{auc_local:.4f}, best it {local['best_iteration']}; dask fit {dask_art['train_seconds']:.1f}s "
          f"({t_dask:.1f}s + cluster {t_cluster:.1f}s), AUC {auc_dask:.4f}, best it {dask_art['best_iteration']}")
    assert len(train) > 15_000 and auc_local > 0.7
    assert abs(auc_dask - auc_local) <= 0.005, (auc_dask, auc_local)
    assert dask_art["categories"] == local["categories"] and dask_art["features"] == local["features"]


def test_pandas_chunks_of_train_and_validation_share_their_workers(client, initech_splits, manifest, monkeypatch):
    """xgboost.dask trains on every worker holding a partition of the train or the validation data, and with a
    categorical feature refuses a worker that holds train rows but no validation rows (a rare failure of this
    module's tests). ``_to_dask`` scatters the chunks of a pandas frame round-robin over the given workers, so
    train and validation chunks start on the same workers; tasks derived from them may still move, so a fit
    refused for that reason is tried again (here: refused once on purpose), any other error is raised at once."""
    import xgboost.dask as xgb_dask

    from riskml_assets.core import distributed as DIST
    from riskml_assets.core.distributed import _to_dask

    parts = _parts(initech_splits)
    workers = sorted(client.nthreads())
    assert len(workers) == 2

    def placed(df, on):
        before = {w: set(k) for w, k in client.has_what().items()}
        ddf = _to_dask(df, 2, client, on)
        after = client.has_what()
        return ddf, {w: len(set(after[w]) - before.get(w, set())) for w in after}

    dtrain, new_train = placed(parts["train"], workers)
    dvalid, new_valid = placed(parts["validation"], workers)
    assert new_train == new_valid == {w: 1 for w in workers}  # one chunk of each on each worker
    assert len(dtrain.compute()) == len(parts["train"]) and dtrain.npartitions == 2
    # the same rows and values (Dask stores text as pyarrow strings, as dd.from_pandas does)
    pd.testing.assert_frame_equal(dvalid.compute().reset_index(drop=True), parts["validation"], check_dtype=False)

    real_fit, calls, said = xgb_dask.DaskXGBClassifier.fit, [], []

    def refused_once(self, *a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("A worker cannot have empty input when a dataframe with categorical features is used.")
        return real_fit(self, *a, **k)

    monkeypatch.setattr(xgb_dask.DaskXGBClassifier, "fit", refused_once)
    art = train_xgb_classifier_dask(parts["train"], parts["validation"], manifest, client, FAST, log=said.append)
    assert len(calls) == 2 and json.loads(art["booster_json"]) and any("attempt 1" in s for s in said)
    calls.clear()
    monkeypatch.setattr(xgb_dask.DaskXGBClassifier, "fit", lambda self, *a, **k: calls.append(1) or (_ for _ in ()).throw(
        RuntimeError("A worker cannot have empty input")))
    with pytest.raises(RuntimeError, match="empty input"):
        train_xgb_classifier_dask(parts["train"], parts["validation"], manifest, client, FAST)
    assert len(calls) == DIST.EMPTY_WORKER_ATTEMPTS
    calls.clear()
    monkeypatch.setattr(xgb_dask.DaskXGBClassifier, "fit", lambda self, *a, **k: calls.append(1) or (_ for _ in ()).throw(
        RuntimeError("something else")))
    with pytest.raises(RuntimeError, match="something else"):
        train_xgb_classifier_dask(parts["train"], parts["validation"], manifest, client, FAST)
    assert len(calls) == 1
