"""risk_model in Dagster with the model selection: the chosen algorithm against the fixed default in the
asset's metadata and in its MLflow run; selection off (config) keeps the fixed XGBoost params and says so.

A real Dagster instance, the riskml IO manager on parquet/JSON files and an MLflow SQLite store; inputs are the
small simulated tenant's splits (the same as test_pipes.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import mlflow
import pytest

from riskml_assets.compute import AzureMLPipesResource, DaskResource
from riskml_assets.core import training
from riskml_assets_tests.test_pipes import TENANT, WEEK, _store_inputs, inputs  # noqa: F401 (fixture)


def _materialize(tmp_path: Path, inputs: dict, config: dict):
    from riskml_assets.assets.registry import RegistryResource
    from riskml_assets.definitions import all_assets
    from riskml_assets.io_manager import RiskmlIOManager
    from riskml_assets.resources import MlflowTracking, RiskmlSettings

    _store_inputs(tmp_path / "assets", inputs)
    (tmp_path / "dagster").mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        instance.add_dynamic_partitions("tenant", [TENANT])
        res = dg.materialize(
            all_assets, selection=["risk_model"], partition_key=f"{TENANT}|{WEEK}", instance=instance,
            resources={"io_manager": RiskmlIOManager(base_path=str(tmp_path / "assets")),
                       "riskml": RiskmlSettings(incoming_dir=str(tmp_path / "incoming"),
                                                quarantine_dir=str(tmp_path / "quarantine")),
                       "mlflow": MlflowTracking(tracking_uri=uri), "model_registry": RegistryResource(tracking_uri=uri),
                       "dask": DaskResource(), "azureml": AzureMLPipesResource()},
            run_config={"ops": {"risk_model": {"config": {"execution": "local", "n_threads": 1, **config}}}})
        meta = {k: v.value for k, v in res.asset_materializations_for_node("risk_model")[0].metadata.items()}
    model = json.loads((tmp_path / "assets" / "risk_model" / TENANT / f"{WEEK}.json").read_text())
    return model, meta, uri


@pytest.mark.slow  # a minute under load (three trials of three folds in a Dagster run)
def test_risk_model_reports_the_chosen_algorithm_against_the_fixed_default(tmp_path, inputs):  # noqa: F811
    model, meta, uri = _materialize(tmp_path, inputs, {"selection_trials": 3, "n_estimators": 200,
                                                       "selection_min_opportunities": 0})
    sel = model["selection"]
    assert sel["enabled"] and sel["n_trials"] == 3 and sel["stopped_by"] == "trials"
    assert meta["algorithm"] == model.get("algorithm", "xgboost") == sel["chosen"]
    md = meta["selection"]
    assert f"Chosen: {sel['chosen']}" in md and "fixed default (xgboost)" in md and "stopped by trials" in md
    assert f"{sel['default']['cv_auc_mean']:.4f}" in md and f"{sel['default']['validation']['brier']:.4f}" in md
    assert meta["selection_stopped_by"] == "trials"
    # the MLflow run: algorithm param and tag, the selection record, both models' CV and validation numbers
    run = mlflow.tracking.MlflowClient(uri).get_run(model["mlflow_run_id"])
    assert run.data.params["algorithm"] == sel["chosen"] and run.data.tags["riskml.algorithm"] == sel["chosen"]
    m = run.data.metrics
    assert m["selection_cv_auc_default"] == pytest.approx(sel["default"]["cv_auc_mean"])
    assert m["selection_validation_auc_default"] == pytest.approx(sel["default"]["validation"]["auc"])
    assert m["selection_validation_brier_chosen"] == pytest.approx(sel["chosen_validation"]["brier"])
    arts = {a.path for a in mlflow.tracking.MlflowClient(uri).list_artifacts(model["mlflow_run_id"])}
    assert "selection.json" in arts
    # the artifact serves whatever was chosen
    p = training.predict_raw(model, inputs["dataset_splits"])
    assert len(p) == len(inputs["dataset_splits"]) and 0 <= p.min() and p.max() <= 1


def test_selection_off_keeps_the_fixed_xgboost_params_and_says_so(tmp_path, inputs):  # noqa: F811
    model, meta, _ = _materialize(tmp_path, inputs, {"selection": False, "n_estimators": 200})
    assert model["algorithm"] == "xgboost" and "booster_json" in model and model["params"]["n_estimators"] == 200
    assert model["selection"] == {"enabled": False, "chosen": "xgboost", "switched": False,
                                  "reason": "selection is off in config: fixed XGBoost params"}
    assert "Model selection skipped" in meta["selection"] and "selection_stopped_by" not in meta
