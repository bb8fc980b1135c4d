"""External process of ``risk_model`` execution ``azureml``: ``python -m riskml_assets.pipes_risk_model``.

Runs in an Azure ML command job (submitted by ``compute.train_on_azureml`` through ``PipesAzureMLClient``).
It reads the Dagster Pipes context from the blob container (``PipesAzureBlobStorageContextLoader``), loads the
train and validation rows named in the Pipes extras (parquet in the same container), trains with the same core
function as local training (``core.training.train_xgb_classifier``), writes the JSON model artifact to
``extras["model_blob"]`` and reports rows, validation AUC and the booster's sha256 back through Pipes messages
(``PipesAzureBlobStorageMessageWriter``).

Storage access: ``RISKML_PIPES_BLOB_CONNECTION_STRING`` when set (tests on Azurite, storage-key deployments),
otherwise ``RISKML_PIPES_BLOB_ACCOUNT_URL`` with ``DefaultAzureCredential`` (the compute cluster's managed
identity in Azure ML). No dagster import here: only ``dagster_pipes``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sys


def blob_service_client():
    from azure.storage.blob import BlobServiceClient

    conn = os.environ.get("RISKML_PIPES_BLOB_CONNECTION_STRING")
    if conn:
        return BlobServiceClient.from_connection_string(conn)
    url = os.environ.get("RISKML_PIPES_BLOB_ACCOUNT_URL")
    if not url:
        raise SystemExit("pipes_risk_model: set RISKML_PIPES_BLOB_CONNECTION_STRING or RISKML_PIPES_BLOB_ACCOUNT_URL")
    from azure.identity import DefaultAzureCredential

    return BlobServiceClient(url, credential=DefaultAzureCredential())


def read_parquet_blob(blob, container: str, name: str):
    import pandas as pd

    return pd.read_parquet(io.BytesIO(blob.get_blob_client(container, name).download_blob().readall()))


def train_and_report(pipes, blob) -> dict:
    """The job's work, given an open Pipes context and a blob client; returns the reported metadata."""
    from .core import metrics as M
    from .core.features import LABEL
    from .core.training import XGBParams, predict_raw, train_xgb_classifier

    extras = pipes.extras
    missing = [k for k in ("container", "train_blob", "valid_blob", "model_blob", "manifest", "params")
               if k not in extras]
    if missing:
        raise ValueError(f"pipes_risk_model: the Pipes extras lack {missing}")
    container = extras["container"]
    train = read_parquet_blob(blob, container, extras["train_blob"])
    valid = read_parquet_blob(blob, container, extras["valid_blob"])
    pipes.log.info(f"pipes_risk_model: {len(train)} train and {len(valid)} validation rows from "
                   f"{container}/{extras['train_blob'].rsplit('/', 1)[0]}")
    params = XGBParams(**extras["params"])
    art = train_xgb_classifier(train, valid, extras["manifest"], params, log=pipes.log.info)
    auc_va = (M.roc_auc(valid[LABEL].to_numpy(int), predict_raw(art, valid)) if len(valid) else float("nan"))
    blob.get_blob_client(container, extras["model_blob"]).upload_blob(json.dumps(art).encode(), overwrite=True)
    metadata = {
        "rows": int(len(train)),
        "validation_rows": int(len(valid)),
        "auc_validation": float(auc_va),
        "best_iteration": int(art["best_iteration"]),
        "booster_sha256": hashlib.sha256(art["booster_json"].encode()).hexdigest(),
        "model_blob": f"{container}/{extras['model_blob']}",
        "train_seconds": round(float(art["train_seconds"]), 3),
    }
    pipes.report_asset_materialization(metadata=metadata)
    return metadata


def main() -> int:
    from dagster_pipes import (PipesAzureBlobStorageContextLoader, PipesAzureBlobStorageMessageWriter,
                               open_dagster_pipes)

    blob = blob_service_client()
    interval = float(os.environ.get("RISKML_PIPES_MESSAGE_INTERVAL", "10"))
    with open_dagster_pipes(context_loader=PipesAzureBlobStorageContextLoader(client=blob),
                            message_writer=PipesAzureBlobStorageMessageWriter(client=blob, interval=interval)) as pipes:
        train_and_report(pipes, blob)
    return 0


if __name__ == "__main__":
    sys.exit(main())
