"""Azure plumbing: which secrets the environment holds (bound with ``dg.EnvVar``), where MLflow puts its
artifacts when the asset store is on Azure, and a blob compute-log manager that also takes a connection string.

The scheme (see README, "Moving to Azure"):

* ``RISKML_STORAGE=abfs://<container>/<prefix>`` (or ``abfs://<container>@<account>.dfs.core.windows.net/<prefix>``
  or ``az://...``): every asset value, through the one IO manager (adlfs).
* Credentials, from the environment only, never plain config: ``AZURE_STORAGE_CONNECTION_STRING``, or
  ``AZURE_STORAGE_ACCOUNT_NAME`` with ``AZURE_STORAGE_ACCOUNT_KEY`` (``AZURE_STORAGE_ACCESS_KEY``, MLflow's name, is
  accepted too) or ``AZURE_STORAGE_SAS_TOKEN``. They are bound to the IO manager with ``dg.EnvVar``, so the UI shows
  the variable's name. With none of them, adlfs and MLflow use ``DefaultAzureCredential`` (managed identity).
* MLflow artifacts: ``RISKML_MLFLOW_ARTIFACTS`` (``wasbs://<container>@<account>.blob.core.windows.net/<path>``), by
  default derived from ``RISKML_STORAGE``: the same container, ``mlartifacts`` next to the asset prefix (as
  ``data/mlartifacts`` sits next to ``data/assets`` locally). The tracking store stays ``MLFLOW_TRACKING_URI``
  (SQLite by default). An MLflow *server* with its own artifact store is left alone unless the variable is set.

Importing this module does not import dagster-azure (about a second); ``ConnStrAzureBlobComputeLogManager`` is
built on first access (``dagster.yaml`` names it as ``module: riskml_assets.azure``).
"""
from __future__ import annotations

import os
from typing import Mapping

AZURE_PROTOCOLS = ("abfs", "abfss", "az")
#: IO-manager field -> environment variables that may hold it (first one set wins)
SECRET_ENV = {
    "azure_connection_string": ("AZURE_STORAGE_CONNECTION_STRING",),
    "azure_account_key": ("AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCESS_KEY"),
    "azure_sas_token": ("AZURE_STORAGE_SAS_TOKEN",),
}


def parse_connection_string(conn: str) -> dict[str, str]:
    """``Key=Value;...`` pairs of an Azure storage connection string."""
    return dict(p.split("=", 1) for p in conn.split(";") if "=" in p)


def is_azure_url(url: str | None) -> bool:
    return bool(url) and "://" in url and url.split("://", 1)[0].lower() in AZURE_PROTOCOLS


def secret_env_vars(env: Mapping[str, str] | None = None) -> dict:
    """``{field: dg.EnvVar(name)}`` for each Azure secret the environment holds (nothing for unset variables,
    so adlfs falls back to its own environment reading and DefaultAzureCredential)."""
    import dagster as dg

    env = os.environ if env is None else env
    out = {}
    for field, names in SECRET_ENV.items():
        for name in names:
            if env.get(name):
                out[field] = dg.EnvVar(name)
                break
    return out


def split_azure_url(url: str, env: Mapping[str, str] | None = None) -> tuple[str, str | None, str, str]:
    """``(container, account, path, blob_suffix)`` of ``abfs://container[@account.dfs.<suffix>]/path``; the account
    falls back to ``AZURE_STORAGE_ACCOUNT_NAME``, then the connection string's ``AccountName``."""
    env = os.environ if env is None else env
    rest = url.split("://", 1)[1]
    netloc, _, path = rest.partition("/")
    container, account, suffix = netloc, None, "core.windows.net"
    if "@" in netloc:
        container, host = netloc.split("@", 1)
        account, _, domain = host.partition(".")
        if domain.split(".", 1)[0] in ("dfs", "blob") and "." in domain:
            suffix = domain.split(".", 1)[1]
    conn = parse_connection_string(env.get("AZURE_STORAGE_CONNECTION_STRING", ""))
    account = account or env.get("AZURE_STORAGE_ACCOUNT_NAME") or conn.get("AccountName")
    suffix = conn.get("EndpointSuffix", suffix) if "@" not in netloc else suffix
    return container, account, path.strip("/"), f"blob.{suffix}"


def mlflow_artifact_location(storage: str | None, tracking_uri: str,
                             env: Mapping[str, str] | None = None) -> str | None:
    """Where a new MLflow experiment keeps its artifacts: ``RISKML_MLFLOW_ARTIFACTS`` when set; else, when the asset
    store is on Azure and the tracking store is local (SQLite), the same container's ``mlartifacts`` next to the
    asset prefix as a ``wasbs://`` URL; else None (the resources' local default, or the tracking server's own)."""
    env = os.environ if env is None else env
    explicit = env.get("RISKML_MLFLOW_ARTIFACTS")
    if explicit:
        return explicit
    if not is_azure_url(storage) or not tracking_uri.startswith("sqlite:"):
        return None
    container, account, path, blob_suffix = split_azure_url(storage, env)
    if not account:
        raise ValueError(f"RISKML_STORAGE={storage} names no storage account: write it as "
                         f"abfs://{container}@<account>.dfs.core.windows.net/{path} or set AZURE_STORAGE_ACCOUNT_NAME "
                         f"(or RISKML_MLFLOW_ARTIFACTS=wasbs://<container>@<account>.blob.core.windows.net/<path>)")
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    return f"wasbs://{container}@{account}.{blob_suffix}/{parent + '/' if parent else ''}mlartifacts"


def _build_conn_str_compute_log_manager():
    from azure.storage.blob import BlobServiceClient
    from dagster import Field, Noneable, StringSource
    from dagster_azure.blob import AzureBlobComputeLogManager

    class ConnStrAzureBlobComputeLogManager(AzureBlobComputeLogManager):
        """``AzureBlobComputeLogManager`` that also accepts ``connection_string`` (an ``{env: ...}`` in
        dagster.yaml). The stock class always builds ``https://<account>.blob.<suffix>/``, which cannot reach
        Azurite or a private endpoint; with a connection string its ``BlobEndpoint`` is used. Without one it is the
        stock class. (The UI's display path still reads ``https://<account>.blob.core.windows.net/...``.)"""

        def __init__(self, connection_string=None, **kwargs):
            if connection_string:
                parts = parse_connection_string(connection_string)
                kwargs.setdefault("storage_account", parts.get("AccountName", "devstoreaccount1"))
                # a key or SAS stops the parent from building a DefaultAzureCredential; its client is replaced below
                kwargs["access_key_or_sas_token"] = (parts.get("AccountKey") or parts.get("SharedAccessSignature")
                                                     or kwargs.get("access_key_or_sas_token"))
            super().__init__(**kwargs)
            self._connection_string = connection_string
            if connection_string:
                self._blob_client = BlobServiceClient.from_connection_string(connection_string)
                self._container_client = self._blob_client.get_container_client(self._container)

        @classmethod
        def config_type(cls):
            return {**super().config_type(),
                    "storage_account": Field(StringSource, is_required=False),
                    "connection_string": Field(Noneable(StringSource), is_required=False, default_value=None)}

    ConnStrAzureBlobComputeLogManager.__module__ = __name__
    ConnStrAzureBlobComputeLogManager.__qualname__ = "ConnStrAzureBlobComputeLogManager"
    return ConnStrAzureBlobComputeLogManager


_LAZY: dict = {}


def __getattr__(name: str):  # PEP 562: dagster-azure is imported only when the class is asked for
    if name == "ConnStrAzureBlobComputeLogManager":
        if name not in _LAZY:
            _LAZY[name] = _build_conn_str_compute_log_manager()
        return _LAZY[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
