"""``risk_model`` on Azure ML through Dagster Pipes (``execution: azureml``).

Real parts: the Dagster asset and instance, ``dagster_azure.pipes.PipesAzureMLClient``, the Pipes context
injector and message reader on Azure blob storage (Azurite, started by the ``azurite`` fixture), the external
process ``python -m riskml_assets.pipes_risk_model`` (a real subprocess with ``dagster_pipes``' blob context
loader and message writer), parquet data and the returned model in the blob container.

THE ONE FAKE: ``LocalProcessMLClient`` stands in for ``azure.ai.ml.MLClient``, because Azure ML itself cannot
run here. Its ``create_or_update`` runs the submitted command job's command as a local subprocess (the "compute
node"), and ``jobs.get`` reports Running / Completed / Failed from that process's state.
"""
from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import numpy as np
import pytest

from riskml_assets.compute import (ENV_BLOB_ACCOUNT_URL, ENV_BLOB_CONNECTION_STRING, AzureMLPipesResource,
                                   DaskResource, compute_resources)
from riskml_assets.core import features as F
from riskml_assets.core import simulator, training

REPO = Path(__file__).resolve().parents[1]
TENANT, WEEK = "initech", "2026-11-16"


class LocalProcessMLClient:
    """Fake ``MLClient`` (the one fake, see the module docstring): command jobs run as local processes."""

    def __init__(self, node_env: dict[str, str]):
        self.node_env = node_env  # what the compute node has (in Azure ML: its managed identity)
        self.submitted: list = []
        self.procs: dict[str, subprocess.Popen] = {}
        self.jobs = SimpleNamespace(create_or_update=self.create_or_update, get=self._get, begin_cancel=self._cancel)

    def create_or_update(self, job):
        import os

        name = f"riskml-job-{uuid.uuid4().hex[:8]}"
        argv = shlex.split(job.command)
        if argv[0] == "python":  # the node's python: this environment's interpreter
            argv[0] = sys.executable
        self.submitted.append(job)
        self.procs[name] = subprocess.Popen(argv, cwd=job.code, env={**os.environ, **self.node_env,
                                                                     **job.environment_variables})
        return SimpleNamespace(name=name, status="Running")

    def _get(self, name: str):
        rc = self.procs[name].poll()
        return SimpleNamespace(name=name, status="Running" if rc is None else "Completed" if rc == 0 else "Failed")

    def _cancel(self, name: str):
        self.procs[name].terminate()


class LocalAzureMLPipes(AzureMLPipesResource):
    """The real resource with only ``ml_client`` replaced by the fake."""

    def ml_client(self):
        client = LocalProcessMLClient({ENV_BLOB_CONNECTION_STRING: self.storage_connection_string or ""})
        _CLIENTS.append(client)
        return client


_CLIENTS: list[LocalProcessMLClient] = []


@pytest.fixture(scope="module")
def inputs():
    """risk_model's inputs for the small simulated tenant: feature manifest, splits, balanced train (= train)."""
    from riskml_assets.core.cleaning import clean_examples
    from riskml_assets.core.splits import split_examples

    manifest = F.build_manifest()
    sim = simulator.simulate_tenant(simulator.DEFAULT_TENANTS[2])
    ex, _ = F.build_training_examples(sim.snapshots, sim.outcomes, sim.activities, manifest,
                                      partition_end="2026-11-23", window_weeks=52)
    clean, _, _ = clean_examples(ex, manifest)
    splits = split_examples(clean, seed=0)
    return {"feature_manifest": {"features": manifest, "fingerprint": F.manifest_fingerprint(manifest)},
            "dataset_splits": splits, "balanced_train": splits[splits["split"] == "train"].reset_index(drop=True)}


def _store_inputs(base: Path, inputs: dict) -> None:
    """The upstream assets as the riskml IO manager stores them (``<asset>/<tenant>/<week>.parquet|json``)."""
    for name, value in inputs.items():
        d = base / name / TENANT
        d.mkdir(parents=True, exist_ok=True)
        if isinstance(value, dict):
            (d / f"{WEEK}.json").write_text(json.dumps(value))
        else:
            value.to_parquet(d / f"{WEEK}.parquet", index=False)


def _materialize_risk_model(tmp_path: Path, inputs: dict, azureml: AzureMLPipesResource, execution: str,
                            mlflow_db: Path | None = None, dask: DaskResource | None = None):
    from riskml_assets.assets.registry import RegistryResource
    from riskml_assets.definitions import all_assets
    from riskml_assets.io_manager import RiskmlIOManager
    from riskml_assets.resources import MlflowTracking, RiskmlSettings

    _store_inputs(tmp_path / "assets", inputs)
    (tmp_path / "dagster").mkdir(parents=True, exist_ok=True)
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        instance.add_dynamic_partitions("tenant", [TENANT])
        res = dg.materialize(
            all_assets, selection=["risk_model"], partition_key=f"{TENANT}|{WEEK}", instance=instance,
            raise_on_error=False,
            resources={"io_manager": RiskmlIOManager(base_path=str(tmp_path / "assets")),
                       "riskml": RiskmlSettings(incoming_dir=str(tmp_path / "incoming"),
                                                quarantine_dir=str(tmp_path / "quarantine")),
                       "mlflow": MlflowTracking(tracking_uri=f"sqlite:///{mlflow_db or tmp_path / 'mlflow.db'}"),
                       "model_registry": RegistryResource(tracking_uri=f"sqlite:///{mlflow_db or tmp_path / 'mlflow.db'}"),
                       "dask": dask or DaskResource(), "azureml": azureml},
            run_config={"ops": {"risk_model": {"config": {"execution": execution}}}})
        logs = [e.user_message for e in instance.all_logs(res.run_id) if not e.is_dagster_event]
        # an exception in the external process comes back as an engine event with its error
        logs += [f"{e.user_message}: {e.dagster_event.engine_event_data.error.message}"
                 for e in instance.all_logs(res.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
                 if e.dagster_event.engine_event_data and e.dagster_event.engine_event_data.error]
        mats = res.asset_materializations_for_node("risk_model")
        metadata = {k: v.value for k, v in mats[0].metadata.items()} if mats else {}
        err = None if res.success else "\n".join(
            str(e.event_specific_data.error) for e in res.all_events if e.is_step_failure)
        model = json.loads((tmp_path / "assets" / "risk_model" / TENANT / f"{WEEK}.json").read_text()) \
            if res.success else None
        return res.success, model, metadata, logs, err


@pytest.mark.services
def test_risk_model_on_azureml_via_pipes_equals_local(azurite, az_container, tmp_path, inputs):
    azureml = LocalAzureMLPipes(storage_connection_string=azurite["connection_string"], container=az_container,
                                code=str(REPO), compute="cpu-cluster", environment="azureml:riskml-train@3",
                                poll_interval_seconds=0.5, message_interval_seconds=0.5)
    _CLIENTS.clear()
    ok, model, meta, logs, err = _materialize_risk_model(tmp_path / "aml", inputs, azureml, "azureml",
                                                         tmp_path / "mlflow.db")
    assert ok, err

    # the job really went through the Azure ML client: one command job, Pipes env merged in, no secret in it
    (client,) = _CLIENTS
    (job,) = client.submitted
    assert (job.compute, job.environment, job.command) == ("cpu-cluster", "azureml:riskml-train@3",
                                                           "python -m riskml_assets.pipes_risk_model")
    env = job.environment_variables
    assert {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES", ENV_BLOB_ACCOUNT_URL} <= set(env)
    assert azurite["account_key"] not in json.dumps(env)  # the job spec never carries the storage key
    (proc,) = client.procs.values()
    assert proc.returncode == 0

    # the same model local training gives with the same seed and threads: byte-identical booster
    ok_l, local, meta_l, _, err_l = _materialize_risk_model(tmp_path / "local", inputs, azureml, "local",
                                                          tmp_path / "mlflow.db")
    assert ok_l, err_l
    assert model["booster_json"] == local["booster_json"]
    for key in ("features", "categories", "feature_kinds", "best_iteration", "train_rows", "params", "metrics"):
        assert model[key] == local[key], key
    valid = inputs["dataset_splits"][inputs["dataset_splits"]["split"] == "validation"]
    np.testing.assert_array_equal(training.predict_raw(model, valid), training.predict_raw(local, valid))

    # metadata reported by the external process through Pipes messages (blob) came back, and agrees
    sha = hashlib.sha256(local["booster_json"].encode()).hexdigest()
    assert meta["execution"] == "azureml" and meta_l["execution"] == "local"
    assert meta["remote_booster_sha256"] == sha
    assert meta["remote_rows"] == meta_l["train_rows"] == len(inputs["balanced_train"])
    assert meta["remote_validation_rows"] == len(valid)
    assert meta["remote_auc_validation"] == pytest.approx(meta_l["auc_validation"], abs=1e-12)
    assert meta["remote_azureml_job_name"] == next(iter(client.procs))
    for key in ("auc_train", "auc_validation", "best_iteration", "train_rows", "features"):
        assert meta[key] == meta_l[key], key
    assert any("pipes_risk_model:" in m and "train and" in m for m in logs), logs[-20:]

    # the model stays in the container, the data copies are deleted
    from azure.storage.blob import BlobServiceClient

    names = [b.name for b in BlobServiceClient.from_connection_string(azurite["connection_string"])
             .get_container_client(az_container).list_blobs(name_starts_with="risk_model/")]
    assert [n.rsplit("/", 1)[1] for n in names] == ["model.json"], names
    assert meta["remote_model_blob"] == f"{az_container}/{names[0]}"


@pytest.mark.services
def test_failed_azureml_job_fails_the_step_with_the_reason(azurite, az_container, tmp_path, inputs):
    """A job that fails (here: a train split of one class) fails risk_model; nothing is materialized and the
    external process's error reaches the Dagster logs."""
    bad = dict(inputs)
    bt = inputs["balanced_train"]
    bad["balanced_train"] = bt[bt[F.LABEL] == 1].reset_index(drop=True)
    azureml = LocalAzureMLPipes(storage_connection_string=azurite["connection_string"], container=az_container,
                                code=str(REPO), poll_interval_seconds=0.5, message_interval_seconds=0.5)
    _CLIENTS.clear()
    ok, model, meta, logs, err = _materialize_risk_model(tmp_path, bad, azureml, "azureml")
    assert not ok and model is None and meta == {}
    assert "Azure ML job: Failed" in err, err
    assert any("closed with exception" in m and "single class" in m for m in logs), logs
    (client,) = _CLIENTS
    assert next(iter(client.procs.values())).returncode != 0


# ------------------------------------------------------------------ fast: no services needed
def test_azureml_resource_without_a_workspace_says_what_is_missing():
    with pytest.raises(ValueError, match="set subscription_id, resource_group, workspace_name"):
        AzureMLPipesResource().ml_client()
    with pytest.raises(ValueError, match="set storage_account_url"):
        AzureMLPipesResource().blob_service_client()


def test_command_job_carries_no_secret_and_the_connection_string_is_an_env_var(monkeypatch):
    secret = "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=c2VjcmV0LWtleQ==;BlobEndpoint=http://x/a;"
    monkeypatch.setenv("RISKML_AZUREML_STORAGE_CONNECTION_STRING", secret)
    monkeypatch.setenv("RISKML_DASK_ADDRESS", "tcp://10.0.0.5:8786")
    monkeypatch.setenv("RISKML_DASK_MIN_ROWS", "2000000")
    res = compute_resources()
    assert res["dask"].address == "tcp://10.0.0.5:8786" and res["dask"].min_rows == 2_000_000
    # the secret is an EnvVar (the UI shows its name), never the value in the resource config
    assert isinstance(res["azureml"].storage_connection_string, dg.EnvVar)
    defs = dg.Definitions(resources=res)
    shown = json.dumps({k: v for k, v in defs.resources["azureml"].__dict__.items()}, default=str)
    assert "c2VjcmV0LWtleQ" not in shown
    cmd = AzureMLPipesResource(compute="gpu", environment="azureml:e@1").command("riskml x", "https://a.blob/")
    assert cmd.environment_variables[ENV_BLOB_ACCOUNT_URL] == "https://a.blob/"
    assert ENV_BLOB_CONNECTION_STRING not in cmd.environment_variables


@pytest.mark.slow  # a Dagster run with a fresh MLflow store and a LocalCluster: ~40 s on the busy 2-core box
def test_risk_model_auto_execution_trains_on_dask_above_the_row_threshold(tmp_path, inputs):
    """``execution: auto`` with ``dask.min_rows`` below the train rows trains with xgboost.dask on a LocalCluster;
    the artifact keeps the single-machine format, so the asset's metrics and checks are computed as usual."""
    rows = len(inputs["balanced_train"])
    ok, model, meta, logs, err = _materialize_risk_model(tmp_path, inputs, AzureMLPipesResource(), "auto",
                                                         dask=DaskResource(min_rows=rows))
    assert ok, err
    assert meta["execution"] == "dask" and model["engine"]["name"] == "xgboost.dask"
    assert meta["train_rows"] == rows and meta["auc_validation"] > 0.6
    assert any("trained xgboost.dask on" in m for m in logs)
    local = training.train_xgb_classifier(inputs["balanced_train"],
                                          inputs["dataset_splits"].query("split == 'validation'"),
                                          inputs["feature_manifest"]["features"], training.XGBParams())
    assert {k: v for k, v in model.items() if k in local and k not in ("booster_json", "importance", "train_seconds",
                                                                       "best_iteration", "train_lost_rate")} == \
        {k: v for k, v in local.items() if k not in ("booster_json", "importance", "train_seconds", "best_iteration",
                                                     "train_lost_rate")}
