"""Shared fixtures: a real Dagster instance, real parquet storage and a real MLflow SQLite store in a temp dir."""
import os
import warnings
from pathlib import Path

import dagster as dg
import pytest

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class Platform:
    """A riskml deployment in a temp folder: Definitions bound to temp resources, plus helpers to drive it."""

    def __init__(self, root: Path, instance: dg.DagsterInstance):
        from riskml_assets.assets.registry import RegistryResource, rollback_job
        from riskml_assets.definitions import all_assets
        from riskml_assets.io_manager import RiskmlIOManager
        from riskml_assets.jobs import jobs
        from riskml_assets.resources import MlflowTracking, RiskmlSettings
        from riskml_assets.compute import AzureMLPipesResource, DaskResource
        from riskml_assets.sensors import schedules, sensors

        self.root, self.instance = root, instance
        self.incoming, self.oracle = root / "incoming", root / "oracle"
        self.resources = {
            "io_manager": RiskmlIOManager(base_path=str(root / "assets")),
            "riskml": RiskmlSettings(incoming_dir=str(self.incoming), quarantine_dir=str(root / "quarantine"),
                                     gates_file=str(root / "gates.yaml")),
            "mlflow": MlflowTracking(tracking_uri=f"sqlite:///{root / 'mlflow.db'}", experiment_name="riskml-test"),
            "model_registry": RegistryResource(tracking_uri=f"sqlite:///{root / 'mlflow.db'}"),
            "dask": DaskResource(), "azureml": AzureMLPipesResource(),  # risk_model execution: local by default
        }
        self.defs = dg.Definitions(assets=all_assets, jobs=[*jobs, rollback_job], resources=self.resources, sensors=sensors,
                                   schedules=schedules, executor=dg.in_process_executor)

    def add_tenant(self, tenant: str) -> None:
        if tenant not in self.instance.get_dynamic_partitions("tenant"):
            self.instance.add_dynamic_partitions("tenant", [tenant])

    def weeks(self, tenant: str) -> list[str]:
        from riskml_assets.cli import tenant_weeks

        return tenant_weeks(self.incoming)[0].get(tenant, [])

    def run(self, job: str, tenant: str, week: str, run_config=None) -> dg.ExecuteInProcessResult:
        self.add_tenant(tenant)
        return self.defs.resolve_job_def(job).execute_in_process(
            partition_key=f"{tenant}|{week}", instance=self.instance, raise_on_error=False,
            run_config=run_config or {"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )

    def ingest_all(self, tenant: str) -> None:
        for w in self.weeks(tenant):
            res = self.run("ingest_job", tenant, w)
            assert res.success, f"ingest {tenant}|{w} failed"

    def load(self, asset: str, tenant: str, week: str):
        import json

        import pandas as pd

        base = self.root / "assets" / asset / tenant / week
        if base.with_name(week + ".parquet").exists():
            return pd.read_parquet(base.with_name(week + ".parquet"))
        return json.loads(base.with_name(week + ".json").read_text())

    def path(self, asset: str, tenant: str, week: str, ext: str = ".parquet") -> Path:
        return self.root / "assets" / asset / tenant / (week + ext)


@pytest.fixture(scope="session")
def platform(tmp_path_factory):
    root = tmp_path_factory.mktemp("riskml")
    (root / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
        yield Platform(root, instance)


def in_forked_child(fn) -> str:
    """Run ``fn()`` in a forked child (as a multiprocessing worker started with fork) and return the text it
    returned; the child's failure fails the caller."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.close(read)
            os.write(write, str(fn()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    answer = os.read(read, 1000).decode()
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0, f"the forked child failed ({status})"
    return answer


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


# ----------------------------------------------------------------- real services (marker `services`)
@pytest.fixture(scope="session")
def azurite():
    """Azurite's blob service on 127.0.0.1 and a free port, started and stopped by PID (tools/azurite)."""
    from .services import ServiceMissing, azurite_blob

    try:
        with azurite_blob() as az:
            yield az
    except ServiceMissing as exc:  # in CI a missing service is a failure, never a silent skip
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))


@pytest.fixture
def az_container(azurite):
    """A fresh blob container per test (deleted afterwards)."""
    import uuid

    from azure.storage.blob import BlobServiceClient

    name = f"t-{uuid.uuid4().hex[:12]}"
    bsc = BlobServiceClient.from_connection_string(azurite["connection_string"])
    bsc.create_container(name)
    yield name
    bsc.delete_container(name)


@pytest.fixture(scope="session")
def postgres():
    """A throw-away PostgreSQL server on 127.0.0.1 and a free port, started and stopped by PID."""
    from .services import ServiceMissing, postgres_server

    try:
        with postgres_server() as pg:
            yield pg
    except ServiceMissing as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A fresh working folder with its own instance, data folder and MLflow store (nothing of the repo):
    the relative data/ paths of the default resources resolve inside it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / ".dagster"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for k in ("RISKML_DATA_DIR", "RISKML_STORAGE"):
        monkeypatch.delenv(k, raising=False)
    (tmp_path / "data" / "incoming").mkdir(parents=True)
    return tmp_path


def predict_in_fresh_process(tracking_uri: str, model_uris: dict, rows_path, cwd) -> dict:
    """Load each ``models:/`` URI with ``mlflow.pyfunc`` in a fresh interpreter without riskml installed (``-S``:
    no site .pth files, so no editable install; the packages' folder is added by hand) and predict the rows of
    ``rows_path``. Returns ``{"p": {name: [p_lost, ...]}, "pkg": riskml_assets.__file__ after loading (the
    model's shipped code) or None, "dagster": whether dagster got imported}``."""
    import json
    import subprocess
    import sys
    import sysconfig

    script = f"""
import sys
sys.path.append({sysconfig.get_paths()["purelib"]!r})
try:
    import riskml_assets
    raise SystemExit("riskml_assets importable before loading the model")
except ImportError:
    pass
import json, mlflow, pandas as pd
mlflow.set_tracking_uri({tracking_uri!r})
rows = pd.read_parquet({str(rows_path)!r})
out = {{n: mlflow.pyfunc.load_model(u).predict(rows)["p_lost"].tolist() for n, u in {dict(model_uris)!r}.items()}}
try:
    import riskml_assets
    pkg = riskml_assets.__file__
except ImportError:
    pkg = None
print(json.dumps({{"p": out, "pkg": pkg, "dagster": "dagster" in sys.modules}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    proc = subprocess.run([sys.executable, "-S", "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
