"""Resources: where the platform's files live, the gate configuration, and MLflow tracking."""

import contextlib
import functools
import json
import os
from pathlib import Path
from typing import Iterator

import dagster as dg

from .core.gates import Gate, load_gates


class RiskmlSettings(dg.ConfigurableResource):
    """Locations of the incoming files, the quarantine table and the gate overrides."""

    incoming_dir: str = "data/incoming"
    quarantine_dir: str = "data/quarantine"
    gates_file: str = "config/gates.yaml"
    tenants_dir: str = "config/tenants"  # per-tenant config: <tenants_dir>/<tenant>.yaml (optional)

    def gates(self) -> dict[str, Gate]:
        """The gates (defaults overridden by the gates file). The file is parsed once per version of it: every
        asset of a run asks, so the result is kept for as long as the file's mtime and size stay the same."""
        path = os.environ.get("RISKML_GATES_FILE") or self.gates_file
        return dict(_gates_of(str(Path(path).resolve()), _file_stamp(path)))

    def tenant_config_path(self, tenant: str) -> Path:
        from .core.contract import validate_tenant

        return Path(os.environ.get("RISKML_TENANTS_DIR") or self.tenants_dir) / f"{validate_tenant(tenant)}.yaml"

    def tenant_config(self, tenant: str) -> dict:
        """The tenant's config file as a mapping ({} when it has none); a file that is not a YAML mapping
        raises ValueError naming the file. See config/tenants/_example.yaml for the keys."""
        import yaml

        path = self.tenant_config_path(tenant)
        if not path.is_file():
            return {}
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"tenant config {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"tenant config {path} must hold a mapping at the top level, got {type(data).__name__}")
        return data

    def tenant_dir(self, tenant: str) -> Path:
        from .core.contract import validate_tenant

        return Path(self.incoming_dir) / validate_tenant(tenant)


def _file_stamp(path) -> tuple[int, int] | None:
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=16)
def _gates_of(path: str, stamp: tuple[int, int] | None) -> dict[str, Gate]:
    return load_gates(path)  # Gate is frozen; callers get a copy of the dict


class MlflowTracking(dg.ConfigurableResource):
    """MLflow called directly (dagster-mlflow ends runs early); one MLflow run per trained partition."""

    tracking_uri: str = "sqlite:///data/mlflow.db"
    experiment_name: str = "riskml"
    # where a new experiment keeps its artifacts (e.g. wasbs://container@account.blob.core.windows.net/mlartifacts);
    # None: next to a SQLite store, or the tracking server's default
    artifact_location: str | None = None
    # base URL of the MLflow UI for the links in Dagster metadata; None: env MLFLOW_UI_URL, else the tracking URI
    # when it is an MLflow server (http/https), else the local `mlflow ui` default (registry.mlflow_ui_url)
    ui_url: str | None = None

    def _mlflow(self):
        import mlflow

        artifacts = self.artifact_location
        if artifacts is None and self.tracking_uri.startswith("sqlite:///"):
            db = Path(self.tracking_uri.removeprefix("sqlite:///")).resolve()
            db.parent.mkdir(parents=True, exist_ok=True)
            artifacts = (db.parent / "mlartifacts").as_uri()  # next to the store, never ./mlruns
        from .registry import EXPERIMENT_KIND_ML, TAG_EXPERIMENT_KIND

        mlflow.set_tracking_uri(self.tracking_uri)
        exp = mlflow.get_experiment_by_name(self.experiment_name)
        if exp is None:
            try:  # tagged so the MLflow UI opens it in its ML (model training) mode
                mlflow.create_experiment(self.experiment_name, artifact_location=artifacts,
                                         tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND_ML})
            except Exception:  # noqa: BLE001 - created concurrently
                pass
        elif (exp.tags or {}).get(TAG_EXPERIMENT_KIND) is None:
            mlflow.MlflowClient().set_experiment_tag(exp.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND_ML)
        mlflow.set_experiment(self.experiment_name)
        return mlflow

    @contextlib.contextmanager
    def start_run(self, context: dg.AssetExecutionContext, run_name: str, tags: dict | None = None) -> Iterator:
        mlflow = self._mlflow()
        all_tags = {
            "dagster.run_id": context.run.run_id,
            "dagster.asset_key": context.asset_key.to_user_string(),
            "dagster.partition_key": str(context.partition_key) if context.has_partition_key else "",
            **(tags or {}),
        }
        with mlflow.start_run(run_name=run_name, tags=all_tags) as run:
            yield run

    def log_to_run(self, run_id: str, metrics: dict | None = None, tags: dict | None = None,
                   texts: dict[str, str] | None = None, images: dict[str, bytes] | None = None) -> None:
        """Append metrics, tags, text artifacts and images (``{"plots/x.png": png bytes}``) to an existing run
        (e.g. the evaluation of a model)."""
        mlflow = self._mlflow()
        client = mlflow.MlflowClient()
        for k, v in (metrics or {}).items():
            if v is not None and v == v:
                client.log_metric(run_id, k, float(v))
        for k, v in (tags or {}).items():
            client.set_tag(run_id, k, str(v))
        for name, text in (texts or {}).items():
            client.log_text(run_id, text, name)
        if images:
            self.log_images(run_id, images)

    def log_images(self, run_id: str, images: dict[str, bytes]) -> None:
        """Log image files (``{"plots/reliability.png": png bytes}``) as artifacts of a run."""
        import tempfile

        mlflow = self._mlflow()
        client = mlflow.MlflowClient()
        with tempfile.TemporaryDirectory(prefix="riskml-images-") as tmp:
            for name, data in images.items():
                rel = Path(name)
                if rel.is_absolute() or ".." in rel.parts:
                    raise ValueError(f"image name {name!r} must be a relative path without '..'")
                local = Path(tmp) / rel.name
                local.write_bytes(bytes(data))
                client.log_artifact(run_id, str(local), rel.parent.as_posix() if rel.parent.parts else None)
                local.unlink()

    def ui_url_base(self) -> str:
        """Base URL of the MLflow UI (see ``ui_url``)."""
        from .registry import mlflow_ui_url

        return mlflow_ui_url(self.tracking_uri, self.ui_url)

    def run_url(self, run_id: str) -> str:
        """Link to a run in the MLflow UI that serves this tracking store (``ui_url``, env MLFLOW_UI_URL, an
        http(s) tracking URI, else the local `mlflow ui` default)."""
        from .registry import mlflow_run_url

        mlflow = self._mlflow()
        try:
            experiment_id = mlflow.MlflowClient().get_run(run_id).info.experiment_id
        except Exception:  # noqa: BLE001 - a link is never worth failing the step
            experiment_id = mlflow.get_experiment_by_name(self.experiment_name).experiment_id
        return mlflow_run_url(self.ui_url_base(), experiment_id, run_id)


def default_resources() -> dict:
    """Embedded defaults; every location can be moved with an environment variable."""
    from .assets.registry import RegistryResource
    from .azure import is_azure_url, mlflow_artifact_location, secret_env_vars
    from .io_manager import RiskmlIOManager, check_no_secrets

    data = os.environ.get("RISKML_DATA_DIR", "data")
    storage = os.environ.get("RISKML_STORAGE") or f"{data}/assets"
    tracking = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{data}/mlflow.db")
    # secrets only through dg.EnvVar (the UI shows the variable's name); RISKML_STORAGE_OPTIONS is non-secret only
    azure = {**secret_env_vars(), "azure_account_name": os.environ.get("AZURE_STORAGE_ACCOUNT_NAME") or None} \
        if is_azure_url(storage) else {}
    options = os.environ.get("RISKML_STORAGE_OPTIONS", "{}")
    check_no_secrets(storage, json.loads(options or "{}"))  # refused at load, before anything shows it
    artifacts = mlflow_artifact_location(storage, tracking)
    return {
        "io_manager": RiskmlIOManager(base_path=storage,
                                      storage_options_json=options, **azure),
        "riskml": RiskmlSettings(incoming_dir=f"{data}/incoming", quarantine_dir=f"{data}/quarantine",
                                 gates_file=os.environ.get("RISKML_GATES_FILE", "config/gates.yaml"),
                                 tenants_dir=os.environ.get("RISKML_TENANTS_DIR", "config/tenants")),
        "mlflow": MlflowTracking(tracking_uri=tracking, experiment_name=os.environ.get("RISKML_EXPERIMENT", "riskml"),
                                 artifact_location=artifacts),
        "model_registry": RegistryResource(tracking_uri=tracking, artifact_location=artifacts),
    }


def json_md(obj) -> str:
    return "```json\n" + json.dumps(obj, indent=2, default=str) + "\n```"
