"""Where ``risk_model`` trains: this process (default), a Dask cluster, or an Azure ML compute cluster via Pipes.

Two resources, both harmless when unused (nothing connects until a step asks for it):

* ``DaskResource`` (key ``dask``): ``get_client()`` yields a ``distributed.Client`` — a ``LocalCluster`` started
  for the step when ``address`` is empty (dev, CI), ``Client(address)`` of an existing scheduler otherwise
  (dask-kubernetes on AKS, dask-cloudprovider, Coiled, a ``dask scheduler`` on a VM). ``min_rows`` > 0 makes
  ``risk_model``'s ``execution: auto`` switch to Dask for train splits of at least that many rows.
* ``AzureMLPipesResource`` (key ``azureml``): submits ``python -m riskml_assets.pipes_risk_model`` as an Azure ML
  command job through ``dagster_azure.pipes.PipesAzureMLClient``. The Pipes context is injected and the messages
  are read through an Azure blob container (``PipesAzureBlobStorageContextInjector`` /
  ``PipesAzureBlobStorageMessageReader``); the train/validation rows go to the same container as parquet and the
  model comes back from it as the usual JSON artifact. Secrets (the storage connection string) come from
  ``dg.EnvVar``; in Azure ML the job authenticates to storage with the compute cluster's managed identity.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import uuid
from dataclasses import asdict
from typing import TYPE_CHECKING, Iterator, Optional

import dagster as dg
from .core.lazy import lazy_module

pd = lazy_module("pandas")

from pydantic import Field

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

    from .core.training import XGBParams

# env vars read by the external process (riskml_assets.pipes_risk_model) to reach the Pipes container
ENV_BLOB_CONNECTION_STRING = "RISKML_PIPES_BLOB_CONNECTION_STRING"  # tests / storage-key deployments
ENV_BLOB_ACCOUNT_URL = "RISKML_PIPES_BLOB_ACCOUNT_URL"  # Azure ML: with the cluster's managed identity
ENV_MESSAGE_INTERVAL = "RISKML_PIPES_MESSAGE_INTERVAL"


class DaskResource(dg.ConfigurableResource):
    """A Dask cluster for scale-out training: a LocalCluster when ``address`` is empty, else an existing one."""

    address: str = Field("", description="Scheduler address of an existing cluster, e.g. tcp://dask-scheduler:8786 "
                                         "(not the dashboard's :8787). Empty: a LocalCluster for the step.")
    n_workers: int = Field(2, ge=1, description="LocalCluster only: workers.")
    threads_per_worker: int = Field(1, ge=1, description="LocalCluster only: threads per worker.")
    processes: bool = Field(False, description="LocalCluster only: worker processes (True) or threads of this "
                                               "process (False, starts in well under a second).")
    min_rows: int = Field(0, ge=0, description="risk_model execution 'auto' trains on Dask when the train split has "
                                               "at least this many rows; 0 = never automatically.")
    timeout_seconds: float = Field(60.0, gt=0, description="Connecting to an existing scheduler.")

    @contextlib.contextmanager
    def get_client(self) -> Iterator["Client"]:
        from distributed import Client, LocalCluster

        if self.address:
            with Client(self.address, timeout=self.timeout_seconds) as client:
                yield client
            return
        kwargs = dict(n_workers=self.n_workers, threads_per_worker=self.threads_per_worker,
                      processes=self.processes, dashboard_address=None)
        if self.processes:  # inproc transport (processes=False) must not get a host
            kwargs["host"] = "127.0.0.1"
        with LocalCluster(**kwargs) as cluster, Client(cluster) as client:
            yield client


class AzureMLPipesResource(dg.ConfigurableResource):
    """Azure ML command jobs for ``risk_model`` (execution ``azureml``), through Dagster Pipes."""

    subscription_id: str = ""
    resource_group: str = ""
    workspace_name: str = ""
    compute: str = Field("cpu-cluster", description="Azure ML compute cluster that runs the job.")
    environment: str = Field("azureml:riskml-train@latest",
                             description="Azure ML environment with the project's requirements.lock installed.")
    code: str = Field(".", description="Folder uploaded as the job's code (the repository root: the job runs "
                                       "python -m riskml_assets.pipes_risk_model).")
    experiment_name: str = "riskml"
    storage_account_url: str = Field("", description="https://<account>.blob.core.windows.net of the Pipes "
                                                     "container (managed identity / DefaultAzureCredential).")
    storage_connection_string: Optional[str] = Field(
        None, description="Instead of the account URL: a connection string (secret: pass dg.EnvVar). Used by "
                          "Dagster only; the job itself gets the account URL, never the key.")
    container: str = Field("riskml-pipes", description="Blob container for the Pipes context, messages, the "
                                                       "train/validation parquet and the returned model.")
    poll_interval_seconds: float = Field(5.0, gt=0)
    message_interval_seconds: float = Field(10.0, gt=0, description="How often Pipes messages are uploaded/read.")

    def ml_client(self):
        """The Azure ML client. Overridden in tests only (Azure ML itself cannot run there)."""
        from azure.ai.ml import MLClient
        from azure.identity import DefaultAzureCredential

        missing = [k for k in ("subscription_id", "resource_group", "workspace_name") if not getattr(self, k)]
        if missing:
            raise ValueError(f"azureml resource: set {', '.join(missing)} to run risk_model on Azure ML "
                             "(or use execution 'local' / 'dask')")
        return MLClient(DefaultAzureCredential(), self.subscription_id, self.resource_group, self.workspace_name)

    def blob_service_client(self):
        from azure.storage.blob import BlobServiceClient

        if self.storage_connection_string:
            return BlobServiceClient.from_connection_string(self.storage_connection_string)
        if not self.storage_account_url:
            raise ValueError("azureml resource: set storage_account_url (or storage_connection_string) for the "
                             "Pipes container")
        from azure.identity import DefaultAzureCredential

        return BlobServiceClient(self.storage_account_url, credential=DefaultAzureCredential())

    def pipes_client(self, blob):
        from dagster_azure.pipes import (PipesAzureBlobStorageContextInjector, PipesAzureBlobStorageMessageReader,
                                         PipesAzureMLClient)

        return PipesAzureMLClient(
            client=self.ml_client(),
            context_injector=PipesAzureBlobStorageContextInjector(container=self.container, client=blob),
            message_reader=PipesAzureBlobStorageMessageReader(container=self.container, client=blob,
                                                              interval=self.message_interval_seconds),
            poll_interval_seconds=self.poll_interval_seconds,
        )

    def command(self, display_name: str, account_url: str):
        from azure.ai.ml import command

        return command(
            code=self.code, command="python -m riskml_assets.pipes_risk_model",
            environment=self.environment, compute=self.compute, experiment_name=self.experiment_name,
            display_name=display_name,
            environment_variables={ENV_BLOB_ACCOUNT_URL: account_url,
                                   ENV_MESSAGE_INTERVAL: str(self.message_interval_seconds)},
        )


def booster_sha256(artifact: dict) -> str:
    return hashlib.sha256(artifact["booster_json"].encode()).hexdigest()


def _upload_parquet(blob, container: str, name: str, df: "pd.DataFrame") -> None:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    blob.get_blob_client(container, name).upload_blob(buf.getvalue(), overwrite=True)


def train_on_azureml(context: dg.AssetExecutionContext, azureml: AzureMLPipesResource, train: "pd.DataFrame",
                     valid: "pd.DataFrame", manifest: dict, params: "XGBParams") -> tuple[dict, dict]:
    """Train the risk model in an Azure ML job (``riskml_assets.pipes_risk_model``) and return
    (the model artifact, metadata reported by the job). The job trains with the same core function on the
    same rows, so the booster is the one local training gives (same seed and threads)."""
    from .partitions import split_key

    tenant, week = split_key(context)
    blob = azureml.blob_service_client()
    container = blob.get_container_client(azureml.container)
    if not container.exists():
        container.create_container()
    prefix = f"risk_model/{tenant}/{week}/{context.run.run_id}-{uuid.uuid4().hex[:8]}"
    _upload_parquet(blob, azureml.container, f"{prefix}/train.parquet", train)
    _upload_parquet(blob, azureml.container, f"{prefix}/validation.parquet", valid)
    extras = {"container": azureml.container, "train_blob": f"{prefix}/train.parquet",
              "valid_blob": f"{prefix}/validation.parquet", "model_blob": f"{prefix}/model.json",
              "manifest": manifest, "params": asdict(params)}
    account_url = azureml.storage_account_url or blob.url
    cmd = azureml.command(display_name=f"riskml risk_model {tenant}|{week}", account_url=account_url)
    invocation = azureml.pipes_client(blob).run(context=context, extras=extras, command=cmd)
    reported: dict = {}
    for result in invocation.get_results():
        reported.update({k: getattr(v, "value", v) for k, v in (result.metadata or {}).items()})
    reported.update({k: getattr(v, "value", v) for k, v in (invocation.metadata or {}).items()})
    if "booster_sha256" not in reported:
        raise RuntimeError(f"Azure ML job {reported.get('AzureML Job Name', '?')} for {tenant}|{week} reported no "
                           f"model (no booster_sha256 in its Pipes messages); see its logs in Azure ML")
    raw = blob.get_blob_client(azureml.container, extras["model_blob"]).download_blob().readall()
    artifact = json.loads(raw)
    got = booster_sha256(artifact)
    if got != reported["booster_sha256"]:
        raise RuntimeError(f"model blob {azureml.container}/{extras['model_blob']} does not match the job's report: "
                           f"booster sha256 {got} != {reported['booster_sha256']}")
    for name in ("train.parquet", "validation.parquet"):  # the data copies are not kept; the model is
        blob.get_blob_client(azureml.container, f"{prefix}/{name}").delete_blob()
    return artifact, reported



def compute_resources() -> dict:
    """The ``dask`` and ``azureml`` resources from the environment (embedded defaults: a LocalCluster, never
    chosen automatically; Azure ML unconfigured). Secrets only through ``dg.EnvVar``."""
    env = os.environ.get
    azureml = dict(subscription_id=env("RISKML_AZUREML_SUBSCRIPTION_ID", ""),
                   resource_group=env("RISKML_AZUREML_RESOURCE_GROUP", ""),
                   workspace_name=env("RISKML_AZUREML_WORKSPACE", ""),
                   compute=env("RISKML_AZUREML_COMPUTE", "cpu-cluster"),
                   environment=env("RISKML_AZUREML_ENVIRONMENT", "azureml:riskml-train@latest"),
                   storage_account_url=env("RISKML_AZUREML_STORAGE_ACCOUNT_URL", ""),
                   container=env("RISKML_AZUREML_CONTAINER", "riskml-pipes"))
    if env("RISKML_AZUREML_STORAGE_CONNECTION_STRING"):
        azureml["storage_connection_string"] = dg.EnvVar("RISKML_AZUREML_STORAGE_CONNECTION_STRING")
    return {
        "dask": DaskResource(address=env("RISKML_DASK_ADDRESS", ""), min_rows=int(env("RISKML_DASK_MIN_ROWS", "0"))),
        "azureml": AzureMLPipesResource(**azureml),
    }
