"""Every algorithm the risk selection may choose serves as the registered MLflow pyfunc.

LightGBM and random-forest risk models (with a calibrator) are registered in a real MLflow SQLite store and
promoted; ``mlflow.pyfunc.load_model("models:/riskml.<tenant>.risk@champion")`` must give the calibrated
P(lost) of ``core.scoring.predict_calibrated`` (what ``risk_scores`` uses) for the same rows, in this process
and in a fresh interpreter without the riskml package (the version's shipped code serves it). The XGBoost
case is covered by test_registry.py / test_serving.py.
"""
from __future__ import annotations


import mlflow
import numpy as np
import pytest

from riskml_assets import registry as R
from riskml_assets.core import evaluation, scoring, simulator, training
from riskml_assets.core import features as F
from riskml_assets_tests.conftest import predict_in_fresh_process
from riskml_assets_tests.core.conftest import simulated_splits

PARAMS = {"lightgbm": {"n_estimators": 60, "num_leaves": 15, "learning_rate": 0.1},
          "random_forest": {"n_estimators": 30, "max_depth": 6, "min_samples_leaf": 5, "max_features": 0.5}}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving_algorithms")
    manifest = F.build_manifest()
    df = simulated_splits(simulator.simulate_tenant(simulator.DEFAULT_TENANTS[2]), manifest)
    parts = {n: df[df["split"] == n].reset_index(drop=True) for n in ("train", "validation", "test")}
    reg = R.ModelRegistry(f"sqlite:///{root / 'mlflow.db'}")
    models = {}
    for algorithm, params in PARAMS.items():
        art = training.train_algorithm(parts["train"], parts["validation"], manifest, algorithm, params,
                                       seed=0, n_threads=1, early_stopping_rounds=10)
        va = parts["validation"]
        cal = evaluation.fit_risk_calibrator(training.predict_raw(art, va), va[F.LABEL].to_numpy(int))
        tenant = f"serve-{algorithm.replace('_', '-')}"
        v = reg.register(tenant, "risk", art, cal, manifest, {}, "", True)
        reg.promote(tenant, "risk", v)
        models[algorithm] = {"tenant": tenant, "artifact": art, "calibrator": cal,
                             "uri": f"models:/riskml.{tenant}.risk@champion"}
    return {"reg": reg, "parts": parts, "models": models, "root": root}


@pytest.mark.parametrize("algorithm", list(PARAMS))
def test_pyfunc_of_each_algorithm_predicts_the_batch_scores(served, algorithm):
    m = served["models"][algorithm]
    mlflow.set_tracking_uri(served["reg"].tracking_uri)
    model = mlflow.pyfunc.load_model(m["uri"])
    rows = served["parts"]["test"]
    expected, _ = scoring.predict_calibrated(m["artifact"], m["calibrator"], rows)
    got = model.predict(rows[m["artifact"]["features"]])["p_lost"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert got.std() > 0.01  # a real model, not a constant
    # the registered bundle loads back to the same algorithm and the same numbers
    bundle = served["reg"].load(m["tenant"], "risk")
    assert bundle["artifact"]["algorithm"] == algorithm and "booster_json" not in bundle["artifact"]
    np.testing.assert_allclose(scoring.predict_calibrated(bundle["artifact"], bundle["calibrator"], rows)[0],
                               expected, rtol=0, atol=1e-12)


@pytest.mark.slow
def test_lightgbm_and_forest_pyfuncs_serve_in_a_process_without_the_riskml_package(served, tmp_path):
    rows = served["parts"]["test"]
    models = served["models"]
    feats = models["lightgbm"]["artifact"]["features"]
    rows[feats].to_parquet(tmp_path / "rows.parquet")
    uris = {a: m["uri"] for a, m in models.items()}
    got = predict_in_fresh_process(served["reg"].tracking_uri, uris, tmp_path / "rows.parquet", tmp_path)
    assert got["dagster"] is False
    for algorithm, m in models.items():
        expected, _ = scoring.predict_calibrated(m["artifact"], m["calibrator"], rows)
        np.testing.assert_allclose(np.array(got["p"][algorithm]), expected, rtol=0, atol=1e-12)
