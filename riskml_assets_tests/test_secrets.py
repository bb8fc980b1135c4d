"""Secrets through dg.EnvVar (issue 10 item 2): the storage key is never in the resource config the UI serves.

The code location is loaded the way dagster-webserver loads it (a code-server subprocess from a workspace file)
and the UI's own GraphQL query for Deployment -> Resources is run against it. No Azure service is needed: resource
config is served without the resources being initialised.
"""
import json
import os
import secrets
import sys
from pathlib import Path

import dagster as dg
import pytest

from riskml_assets.azure import mlflow_artifact_location, secret_env_vars, split_azure_url
from riskml_assets.io_manager import RiskmlIOManager, check_no_secrets

REPO = Path(__file__).resolve().parents[1]

RESOURCES_QUERY = """
query Resources($sel: RepositorySelector!) {
  allTopLevelResourceDetailsOrError(repositorySelector: $sel) {
    __typename
    ... on ResourceDetailsList { results { name resourceType
        configuredValues { key value type }
        configFields { name description } } }
    ... on PythonError { message }
  }
}
"""


def _clean_env(monkeypatch):
    for k in list(os.environ):
        if k.startswith(("RISKML_", "AZURE_STORAGE_", "MLFLOW_")):
            monkeypatch.delenv(k)


@pytest.fixture
def ui_resources(tmp_path, monkeypatch):
    """Load the code location out of process with Azure secrets in the environment; return (served JSON, secrets)."""
    from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

    _clean_env(monkeypatch)
    key, sas_sig = secrets.token_urlsafe(48), secrets.token_hex(16)
    conn = (f"DefaultEndpointsProtocol=https;AccountName=riskmlprod;AccountKey={key}Cc==;"
            f"EndpointSuffix=core.windows.net")
    monkeypatch.setenv("RISKML_STORAGE", "abfs://riskml@riskmlprod.dfs.core.windows.net/assets")
    monkeypatch.setenv("RISKML_STORAGE_OPTIONS", json.dumps({"max_concurrency": 4}))
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", key)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", conn)
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", f"sv=2024-11-04&sig={sas_sig}")
    monkeypatch.setenv("RISKML_AZUREML_STORAGE_CONNECTION_STRING", conn)  # any other resource's secret, too
    monkeypatch.setenv("RISKML_DATA_DIR", str(tmp_path / "data"))
    ws = tmp_path / "workspace.yaml"
    ws.write_text(json.dumps({"load_from": [{"python_module": {
        "module_name": "riskml_assets.definitions", "location_name": "riskml",
        "working_directory": str(REPO), "executable_path": sys.executable}}]}))
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        with define_out_of_process_context(str(ws), None, instance) as ctx:
            [loc] = [e for e in ctx.get_code_location_entries().values()]
            assert loc.load_error is None, loc.load_error
            res = execute_dagster_graphql(ctx, RESOURCES_QUERY, {"sel": {
                "repositoryLocationName": "riskml", "repositoryName": "__repository__"}})
    return res.data, {"key": key, "sas_sig": sas_sig}


def test_the_ui_shows_the_env_var_names_never_the_storage_secrets(ui_resources):
    data, secret = ui_resources
    out = data["allTopLevelResourceDetailsOrError"]
    assert out["__typename"] == "ResourceDetailsList", out
    served = json.dumps(data)
    assert secret["key"] not in served and secret["sas_sig"] not in served
    io = {v["key"]: v for r in out["results"] if r["name"] == "io_manager" for v in r["configuredValues"]}
    # every secret is an EnvVar: the UI shows the variable's name
    assert io["azure_account_key"] == {"key": "azure_account_key", "value": "AZURE_STORAGE_ACCOUNT_KEY",
                                       "type": "ENV_VAR"}
    assert io["azure_connection_string"]["type"] == "ENV_VAR"
    assert io["azure_connection_string"]["value"] == "AZURE_STORAGE_CONNECTION_STRING"
    assert io["azure_sas_token"] == {"key": "azure_sas_token", "value": "AZURE_STORAGE_SAS_TOKEN", "type": "ENV_VAR"}
    # the non-secret parts stay readable
    assert io["base_path"]["value"] == '"abfs://riskml@riskmlprod.dfs.core.windows.net/assets"'
    assert json.loads(json.loads(io["storage_options_json"]["value"])) == {"max_concurrency": 4}
    # MLflow artifacts go to the same blob store, derived from RISKML_STORAGE
    mlflow = {v["key"]: v for r in out["results"] if r["name"] == "mlflow" for v in r["configuredValues"]}
    assert json.loads(mlflow["artifact_location"]["value"]) == \
        "wasbs://riskml@riskmlprod.blob.core.windows.net/mlartifacts"


def test_a_literal_secret_is_masked_and_a_secret_storage_option_is_refused(monkeypatch):
    # a literal value in a secret field (someone bypassing EnvVar) is masked by the UI: the fields are is_secret
    fields = RiskmlIOManager.to_config_schema().as_field().config_type.fields
    assert fields["azure_account_key"].is_secret and fields["azure_sas_token"].is_secret
    assert fields["azure_connection_string"].is_secret and not fields["base_path"].is_secret
    # before: RISKML_STORAGE_OPTIONS='{"account_key": ...}' went into plain config and the UI showed the key
    _clean_env(monkeypatch)
    for opts in ({"account_key": "k"}, {"sas_token": "t"}, {"connection_string": "c"}, {"client_secret": "s"}):
        monkeypatch.setenv("RISKML_STORAGE", "abfs://riskml/assets")
        monkeypatch.setenv("RISKML_STORAGE_OPTIONS", json.dumps(opts))
        from riskml_assets.resources import default_resources

        with pytest.raises(ValueError, match="look like secrets.*AZURE_STORAGE_"):
            default_resources()
    with pytest.raises(ValueError, match="SAS signature"):
        check_no_secrets("abfs://riskml/assets?sv=1&sig=abc", {})
    check_no_secrets("abfs://riskml/assets", {"max_concurrency": 4, "account_name": "a"})  # fine


def test_embedded_defaults_unchanged_and_azure_only_binds_what_is_set(monkeypatch, tmp_path):
    from riskml_assets.resources import default_resources

    _clean_env(monkeypatch)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", "unused-when-local")
    r = default_resources()
    io = r["io_manager"]
    assert io.base_path == "data/assets" and io.azure_account_key is None and io.azure_connection_string is None
    assert r["mlflow"].artifact_location is None and r["model_registry"].artifact_location is None
    assert r["mlflow"].tracking_uri == "sqlite:///data/mlflow.db"
    # on Azure: only the variables that are set become EnvVars (unset ones fall to adlfs / DefaultAzureCredential)
    monkeypatch.setenv("RISKML_STORAGE", "abfs://riskml/assets")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "acct")
    io = default_resources()["io_manager"]
    assert io.azure_account_key == dg.EnvVar("AZURE_STORAGE_ACCOUNT_KEY")
    assert io.azure_account_name == "acct" and io.azure_connection_string is None and io.azure_sas_token is None
    assert secret_env_vars({"AZURE_STORAGE_ACCESS_KEY": "x"}) == {"azure_account_key": dg.EnvVar(
        "AZURE_STORAGE_ACCESS_KEY")}  # MLflow's name for the key is accepted too
    assert secret_env_vars({}) == {}


def test_mlflow_artifacts_follow_the_asset_store():
    sqlite = "sqlite:///data/mlflow.db"
    assert mlflow_artifact_location("data/assets", sqlite, {}) is None
    assert mlflow_artifact_location("abfs://riskml@acct.dfs.core.windows.net/prod/assets", sqlite, {}) == \
        "wasbs://riskml@acct.blob.core.windows.net/prod/mlartifacts"
    assert mlflow_artifact_location("az://riskml", sqlite, {"AZURE_STORAGE_ACCOUNT_NAME": "acct"}) == \
        "wasbs://riskml@acct.blob.core.windows.net/mlartifacts"
    conn = "DefaultEndpointsProtocol=https;AccountName=cn1;AccountKey=k;EndpointSuffix=core.chinacloudapi.cn"
    assert mlflow_artifact_location("abfs://c1/assets", sqlite, {"AZURE_STORAGE_CONNECTION_STRING": conn}) == \
        "wasbs://c1@cn1.blob.core.chinacloudapi.cn/mlartifacts"
    assert split_azure_url("abfss://c1@a1.dfs.core.usgovcloudapi.net/x/y", {}) == \
        ("c1", "a1", "x/y", "blob.core.usgovcloudapi.net")
    # explicit wins; an MLflow server keeps its own artifact store unless told
    assert mlflow_artifact_location("abfs://c1/assets", "http://mlflow:5000",
                                    {"RISKML_MLFLOW_ARTIFACTS": "wasbs://m@a.blob.core.windows.net/x"}) == \
        "wasbs://m@a.blob.core.windows.net/x"
    assert mlflow_artifact_location("abfs://c1@a.dfs.core.windows.net/assets", "http://mlflow:5000", {}) is None
    with pytest.raises(ValueError, match="names no storage account"):
        mlflow_artifact_location("abfs://c1/assets", sqlite, {})
