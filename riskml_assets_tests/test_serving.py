"""The registered champion serves: ``mlflow.pyfunc.load_model("models:/riskml.<tenant>.risk@champion")``.

A small simulated tenant is ingested, trained, registered and scored on a real Dagster instance with a real
MLflow SQLite store; the pyfunc loaded from the registry must give ``risk_scores``' P(lost) for the same
feature rows (1e-9), list the feature columns in its signature, link to its training run, live in an
experiment the MLflow UI opens in ML mode, next to the evaluation plots as PNG files; the Dagster metadata
links follow the configured MLflow UI URL.

The Dagster end-to-end tests share one module fixture (20 ingest runs, a train run, a score run: about a minute
on an idle 2-core machine, several under load) and are marked slow; the fast suite covers the pyfunc on the
registry itself (test_registry.py) and the URL/resource logic here.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import pytest

from riskml_assets import registry as R
from riskml_assets.core import scoring, simulator
from riskml_assets.core.gates import default_gates
from riskml_assets.core.plots import PNG_SIGNATURE

from .conftest import Platform, materialized, predict_in_fresh_process

TENANT = "servco"
UI = "https://mlflow.riskml.example.test"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# no augmentation (nothing to ablate) and no absolute AUC/ECE floor for the first champion of a small tenant;
# the tenant's own XGBoost model is the champion (this module checks its booster file and feature signature; the
# calibrated CRM score and the other algorithms serve in test_registry.py and test_serving_algorithms.py)
TRAIN_CONFIG = {"ops": {"augmented_examples": {"config": {"methods": []}},
                        "risk_model": {"config": {"selection": False}},
                        "risk_evaluation": {"config": {"champion_candidates": ["tenant_model"]}},
                        "registered_models": {"config": {"min_auc": 0.0, "max_ece": 1.0, "n_boot": 200}}}, **QUIET}
MODEL_URI = f"models:/riskml.{TENANT}.risk@champion"


def _frames(platform: Platform, asset: str) -> pd.DataFrame:
    files = sorted((platform.root / "assets" / asset / TENANT).glob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Ingest, train (register + promote) and score one tenant-week; the MLflow UI URL is configured by env."""
    root = tmp_path_factory.mktemp("serving")
    (root / "dagster").mkdir()
    # every gate warns: this module is about serving the registered model, not about this draw's gates
    (root / "gates.yaml").write_text("\n".join(f"{g}: {{action: warn}}" for g in default_gates()) + "\n")
    times = {}
    with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance, pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_UI_URL", UI + "/")
        platform = Platform(root, instance)
        sim = simulator.simulate_tenant(simulator.TenantSpec(TENANT, 20.0, 2), weeks=20)
        simulator.write_tenant(sim, platform.incoming, platform.oracle)
        t0 = time.perf_counter()
        platform.ingest_all(TENANT)
        times["ingest"] = time.perf_counter() - t0
        week = platform.weeks(TENANT)[-1]
        t0 = time.perf_counter()
        train = platform.run("train_job", TENANT, week, TRAIN_CONFIG)
        times["train"] = time.perf_counter() - t0
        assert train.success and {"risk_model", "risk_evaluation", "registered_models"} <= materialized(train)
        t0 = time.perf_counter()
        score = platform.run("score_job", TENANT, week, QUIET)
        times["score"] = time.perf_counter() - t0
        assert score.success, platform.load("registered_models", TENANT, week)["decision"]["reason"]
        print(f"\nserving fixture seconds: {times}")
        yield {"platform": platform, "week": week, "train": train, "score": score,
               "reg": platform.resources["model_registry"].get(), "tracking_uri": f"sqlite:///{root / 'mlflow.db'}"}


@pytest.fixture(scope="module")
def champion(served):
    reg = served["reg"]
    mlflow.set_tracking_uri(served["tracking_uri"])
    bundle = reg.load(TENANT, "risk", alias="champion")
    mv = reg.client.get_model_version_by_alias(f"riskml.{TENANT}.risk", "champion")
    return {"bundle": bundle, "mv": mv, "pyfunc": mlflow.pyfunc.load_model(MODEL_URI)}


def _feature_rows(served, bundle) -> pd.DataFrame:
    """The rows risk_scores scored, rebuilt from the ingested partitions with the champion's pinned features."""
    platform, week = served["platform"], served["week"]
    snaps, acts = _frames(platform, "risk_snapshots"), _frames(platform, "activity_events")
    ts = pd.to_datetime(snaps["snapshot_date"])
    latest = snaps[ts.dt.strftime("%Y-%m-%d").isin(_week_days(week))]
    return scoring.feature_rows(snaps, acts if len(acts) else None, latest, bundle)


def _week_days(week: str) -> list[str]:
    from riskml_assets.core.contract import week_bounds

    start, end = week_bounds(week)
    return [d.strftime("%Y-%m-%d") for d in pd.date_range(start, end, inclusive="left")]


@pytest.mark.slow
def test_champion_pyfunc_predicts_the_risk_scores(served, champion):
    scores = served["platform"].load("risk_scores", TENANT, served["week"])
    rows = _feature_rows(served, champion["bundle"])
    assert len(rows) == len(scores) > 20
    assert rows["opportunity_id"].tolist() == scores["opportunity_id"].astype(str).tolist()
    out = champion["pyfunc"].predict(rows)
    assert list(out.columns) == ["p_lost"] and len(out) == len(rows)
    np.testing.assert_allclose(out["p_lost"].to_numpy(), scores["p_lost"].to_numpy(), rtol=0, atol=1e-9)
    assert out["p_lost"].std() > 0.01  # real, varying predictions, not a constant
    # only the signature's columns, in another order, give the same answer
    features = champion["bundle"]["artifact"]["features"]
    shuffled = rows[features[::-1]].copy()
    np.testing.assert_allclose(champion["pyfunc"].predict(shuffled)["p_lost"].to_numpy(),
                               scores["p_lost"].to_numpy(), rtol=0, atol=1e-9)
    # numbers are doubles: MLflow's schema enforcement refuses int64 (not exactly representable), naming the column
    numeric = next(f for f in features if champion["bundle"]["artifact"]["feature_kinds"][f] != "categorical"
                   and rows[f].notna().all())
    as_int = rows.copy()
    as_int[numeric] = as_int[numeric].round().astype("int64")
    with pytest.raises(Exception, match=numeric):
        champion["pyfunc"].predict(as_int)
    # a frame without a feature column is refused, naming it
    with pytest.raises(Exception, match=features[0]):
        champion["pyfunc"].predict(rows.drop(columns=[features[0]]))


@pytest.mark.slow
def test_signature_lists_the_pinned_feature_columns_and_their_types(champion):
    art = champion["bundle"]["artifact"]
    schema = champion["pyfunc"].metadata.get_input_schema()
    assert schema.input_names() == art["features"]
    types = {c.name: c.type.name for c in schema.inputs}
    assert types == {f: ("string" if art["feature_kinds"][f] == "categorical" else "double") for f in art["features"]}
    assert "stage" in types and types["stage"] == "string"
    assert champion["pyfunc"].metadata.get_output_schema().input_names() == ["p_lost"]
    assert set(art["features"]) == set(champion["bundle"]["manifest"])  # every pinned feature is an input


@pytest.mark.slow
def test_version_is_the_training_run_and_the_mlmodel_sits_at_its_root(served, champion, tmp_path):
    mv, platform, week = champion["mv"], served["platform"], served["week"]
    training_run = platform.load("risk_model", TENANT, week)["mlflow_run_id"]
    assert mv.run_id == training_run
    assert mv.tags[R.TAG_TRAINING_RUN] == training_run
    assert mv.source == f"runs:/{training_run}/{mv.tags[R.TAG_ARTIFACT_PATH]}"
    run = served["reg"].client.get_run(training_run)
    assert run.data.tags["riskml.family"] == "risk" and run.data.tags["dagster.asset_key"] == "risk_model"
    # the version root is an MLflow model (pyfunc, models from code: nothing pickled), its files checksummed
    sums = json.loads(mv.tags[R.TAG_CHECKSUMS])
    assert {"MLmodel", "riskml_risk_model.py", "requirements.txt", "code/riskml_assets/core/pyfunc.py",
            "riskml/artifact.json", "model/model.json"} <= set(sums)
    assert not any(k.endswith(".pkl") for k in sums)
    assert not any(k.startswith("code/") and "dagster" in Path(k).name for k in sums)
    meta = champion["pyfunc"].metadata
    assert meta.flavors["python_function"]["loader_module"] == "mlflow.pyfunc.loaders.code_model"  # from code
    assert meta.metadata["riskml_family"] == "risk"
    reqs = Path(served["reg"].client.download_artifacts(
        mv.run_id, f"{mv.tags[R.TAG_ARTIFACT_PATH]}/requirements.txt", str(tmp_path))).read_text().split()
    assert any(r.startswith("xgboost==") for r in reqs) and any(r.startswith("mlflow==") for r in reqs)


@pytest.mark.slow
def test_experiment_opens_in_ml_mode(served, champion):
    client = served["reg"].client
    exp = client.get_experiment(client.get_run(champion["mv"].run_id).info.experiment_id)
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"


@pytest.mark.slow
def test_evaluation_plots_are_png_artifacts_of_the_training_run(served, champion, tmp_path):
    client, run_id = served["reg"].client, champion["mv"].run_id
    for path in ("plots/feature_importance.png", "evaluation/reliability_diagram.png",
                 "evaluation/feature_importance.png"):
        local = Path(client.download_artifacts(run_id, path, str(tmp_path)))
        data = local.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 2000, path


@pytest.mark.slow
def test_dagster_metadata_links_follow_the_configured_mlflow_ui(served, champion):
    exp_id = served["reg"].client.get_run(champion["mv"].run_id).info.experiment_id
    run_id = champion["mv"].run_id
    md = {e.asset_key.to_user_string(): e.materialization.metadata
          for e in served["train"].get_asset_materialization_events()}
    assert md["risk_model"]["mlflow_run"].value == f"{UI}/#/experiments/{exp_id}/runs/{run_id}"
    assert md["risk_evaluation"]["mlflow_run"].value == f"{UI}/#/experiments/{exp_id}/runs/{run_id}"
    reg_md = md["registered_models"]
    assert reg_md["mlflow_model_version"].value == f"{UI}/#/models/riskml.{TENANT}.risk/versions/{champion['mv'].version}"
    assert reg_md["mlflow_run"].value == f"{UI}/#/experiments/{exp_id}/runs/{run_id}"
    assert not any("127.0.0.1:5000" in str(getattr(v, "value", v)) for m in md.values() for v in m.values())


@pytest.mark.slow
def test_pyfunc_serves_in_a_process_without_the_riskml_package(served, champion, tmp_path):
    """A fresh interpreter without riskml installed (no site .pth files): the model's shipped code serves it,
    without importing dagster."""
    frame = _feature_rows(served, champion["bundle"])[champion["bundle"]["artifact"]["features"]]
    frame.to_parquet(tmp_path / "rows.parquet")
    got = predict_in_fresh_process(served["tracking_uri"], {"champion": MODEL_URI}, tmp_path / "rows.parquet",
                                   tmp_path)
    assert "/code/riskml_assets/" in got["pkg"].replace(os.sep, "/") and got["dagster"] is False
    expected = champion["pyfunc"].predict(frame)["p_lost"].to_numpy()
    np.testing.assert_allclose(np.array(got["p"]["champion"]), expected, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------ fast unit tests
def test_mlflow_ui_url_precedence(monkeypatch):
    monkeypatch.delenv("MLFLOW_UI_URL", raising=False)
    assert R.mlflow_ui_url("sqlite:///data/mlflow.db") == "http://127.0.0.1:5000"
    assert R.mlflow_ui_url("postgresql://u@db:5432/mlflow") == "http://127.0.0.1:5000"
    assert R.mlflow_ui_url("https://mlflow.corp.example/") == "https://mlflow.corp.example"
    monkeypatch.setenv("MLFLOW_UI_URL", "https://ui.example/mlflow/")
    assert R.mlflow_ui_url("https://mlflow.corp.example") == "https://ui.example/mlflow"
    assert R.mlflow_ui_url("sqlite:///x.db", "http://configured:8080") == "http://configured:8080"
    assert R.mlflow_run_url("http://h:1/", "3", "abc") == "http://h:1/#/experiments/3/runs/abc"
    assert R.mlflow_model_version_url("http://h:1", "riskml.a.risk", 2) == "http://h:1/#/models/riskml.a.risk/versions/2"


def test_tracking_resource_run_url_uses_its_configured_ui(tmp_path, monkeypatch):
    from riskml_assets.resources import MlflowTracking

    monkeypatch.delenv("MLFLOW_UI_URL", raising=False)
    res = MlflowTracking(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", experiment_name="e", ui_url="http://ui.test:9/")
    client = res._mlflow().MlflowClient()
    exp = client.get_experiment_by_name("e")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    run = client.create_run(exp.experiment_id)
    assert res.run_url(run.info.run_id) == f"http://ui.test:9/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}"
    res.log_images(run.info.run_id, {"plots/a.png": PNG_SIGNATURE + b"x"})
    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/a.png"]
    with pytest.raises(ValueError, match="relative"):
        res.log_images(run.info.run_id, {"../evil.png": PNG_SIGNATURE})
