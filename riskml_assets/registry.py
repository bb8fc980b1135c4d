"""The MLflow model registry of riskml: registration, champion/challenger aliases, promotion and rollback.

No dagster here; the Dagster layer calls this from its assets (serialised through a concurrency pool of 1,
because SQLite serialises writers; every call here also retries briefly on "database is locked").

Naming: one registered model per tenant and family, ``riskml.<tenant>.<family>`` (e.g. ``riskml.acme.risk``).

A registered version's files (logged to its training run under ``registered_model/<family>-<fingerprint>``;
the version's ``source`` is that folder and its ``run_id`` the training run)::

    MLmodel, riskml_risk_model.py,           (risk family) the version root is an MLflow ``pyfunc`` model, so
    artifacts/, code/riskml_assets/core/,    ``mlflow.pyfunc.load_model("models:/riskml.<tenant>.risk@champion")``
    requirements.txt, python_env.yaml, ...   serves calibrated P(lost) from a frame of the pinned feature
                                             columns (see ``core.pyfunc``): models from code, no pickle; the
                                             ``core`` modules it needs are shipped under ``code/``
    model/MLmodel, model/model.json, ...     the XGBoost booster as XGBoost JSON in a standard MLflow model
                                             (xgboost flavor, input/output signature), loadable by
                                             ``mlflow.xgboost.load_model`` too
    riskml/artifact.json                     the training artifact without the booster (features, kinds,
                                             categories, best iteration, params, ...)
    riskml/feature_manifest.json             the pinned feature versions and definition hashes
    riskml/calibrator.json                   the calibrator (risk family), JSON parameters
    riskml/metrics.json, riskml/evaluation_report.md, riskml/signature.json
    riskml/reference_features.parquet        a sample of the training features (drift reference)
    extra/<name>                             caller-supplied files (bytes)

Nothing is stored in a format that executes code when parsed (no pickle): :meth:`ModelRegistry.load` reads
JSON and parquet only; the pyfunc's Python files (``riskml_risk_model.py``, ``code/``) run only when someone
loads the version with ``mlflow.pyfunc``, and are checksummed like the rest. The sha256 of **every** file is recorded at
registration in the version tag ``riskml.checksums`` (in the registry database, not next to the files);
:meth:`ModelRegistry.load` downloads the files, refuses any missing, extra or altered file, and only then
parses anything, so a pickled extra file is never unpickled before its checksum has matched.

Aliases: ``challenger`` (the latest registered version that is not champion), ``champion`` (what scoring
uses), ``previous_champion`` (where a rollback goes). Moving an alias is one atomic database update, so a
tenant that has a champion always keeps one.

Promotion log: every champion change is appended as its own registered-model tag
``riskml.log.<seq>.<id>`` = JSON ``{seq, action, from, to, reason, at, by, ...}``; keys are never reused,
so the log is append-only.

Rollback semantics (see :meth:`ModelRegistry.rollback`): a rollback undoes the promotion that made the
current champion: it marks the current champion ``riskml.rolled_back`` (with the reason) and moves
``champion`` to the champion before it (skipping versions that were rolled back). Calling it again in the
same state is a no-op that says so; only ``further=True`` walks one more step back. A rollback never moves
the champion forward and never leaves the tenant without a champion.
"""
from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import io
import json
import math
import os
import random
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .core.contract import validate_tenant
from .core.features import manifest_fingerprint

ALIAS_CHAMPION = "champion"
ALIAS_CHALLENGER = "challenger"
ALIAS_PREVIOUS = "previous_champion"
LOG_PREFIX = "riskml.log."
TAG_CHECKSUMS = "riskml.checksums"
TAG_ARTIFACT_PATH = "riskml.artifact_path"
TAG_FINGERPRINT = "riskml.fingerprint"
TAG_ROLLED_BACK = "riskml.rolled_back"
TAG_GATES = "riskml.gates_passed"
TAG_TRAINING_RUN = "riskml.training_run_id"
TAG_CHAMPION_SOURCE = "riskml.champion_source"  # tenant_model | crm_score | pooled (which evaluation candidate)
# MLflow 3 experiment tag read by the UI (mlflow/server/js: ExperimentKind): open the experiment in the
# classic ML ("model training") view instead of asking / guessing GenAI
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_ML = "custom_model_development"
LOCAL_MLFLOW_UI = "http://127.0.0.1:5000"  # where `mlflow ui` / `mlflow server` listen by default
# the packages the registered pyfunc imports; pinned to the installed versions (the lock's)
SERVING_PACKAGES = ("mlflow", "xgboost", "pandas", "numpy", "scipy", "scikit-learn", "polars")
FAMILY_OUTPUTS = {"risk": ["p_lost"], "ranking": ["score"]}
REFERENCE_MAX_ROWS = 20_000
TRAINED_FILE = "trained_opportunities.json"  # the opportunity ids of a version's train + validation splits
LOCK_RETRY_SECONDS = 30.0
_VOLATILE_ARTIFACT_KEYS = ("train_seconds", "mlflow_run_id", "registered_version")


class RegistryError(RuntimeError):
    """A registry operation cannot be done as asked."""


class ChecksumMismatchError(RegistryError):
    """A registered file is missing, unexpected or differs from the checksum recorded at registration."""


class NoSuchAliasError(RegistryError, LookupError):
    """The registered model has no version under that alias (e.g. a tenant without a champion yet)."""


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def _is_locked(exc: BaseException) -> bool:
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 10:
        if "database is locked" in str(e).lower():
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


def retry_locked(fn: Callable, *args, _timeout: float = LOCK_RETRY_SECONDS, **kwargs):
    """Call ``fn``; on SQLite "database is locked" retry with jittered exponential backoff up to ``_timeout`` s."""
    deadline = time.monotonic() + _timeout
    delay = 0.05
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is a lock
            if not _is_locked(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, (dt.date, dt.datetime)):
        return o.isoformat()
    return str(o)


def _dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, indent=1, default=_json_default)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _checksums(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): _sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _actor(actor: str | None) -> str:
    if actor:
        return actor
    if os.environ.get("RISKML_ACTOR"):
        return os.environ["RISKML_ACTOR"]
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown"


def _is_volatile(key: str) -> bool:
    k = str(key)
    return k in _VOLATILE_ARTIFACT_KEYS or k.endswith("seconds") or k.startswith("datetime")


def _stable(obj):
    """``obj`` without timing fields (any depth): what two runs of the same seeded training agree on."""
    if isinstance(obj, Mapping):
        return {str(k): _stable(v) for k, v in obj.items() if not _is_volatile(k)}
    if isinstance(obj, (list, tuple)):
        return [_stable(v) for v in obj]
    return obj


def model_fingerprint(artifact: Mapping, calibrator: Mapping | None, manifest: Mapping) -> str:
    """sha256 of the whole artifact (booster or model dict included), the calibrator and the manifest, with
    timing fields and run ids left out, so re-registering the same trained model is a no-op."""
    payload = {"artifact": _stable(artifact), "calibrator": _stable(calibrator) if calibrator is not None else None,
               "manifest": manifest_fingerprint(manifest)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=_json_default).encode()).hexdigest()


def _signature(artifact: Mapping, family: str):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    kinds = artifact.get("feature_kinds", {})
    inputs = Schema([ColSpec("string" if kinds.get(f) == "categorical" else "double", f)
                     for f in artifact.get("features", [])])
    outputs = artifact.get("outputs")
    if not outputs and artifact.get("alphas"):
        from .core.metrics import alpha_tag

        outputs = [alpha_tag(a) for a in artifact["alphas"]]
    outputs = outputs or FAMILY_OUTPUTS.get(family, ["prediction"])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double", str(o)) for o in outputs]))


def _flat_metrics(metrics: Mapping | None, prefix: str = "", depth: int = 0) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in (metrics or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)) and math.isfinite(float(v)):
            out[key] = float(v)
        elif isinstance(v, Mapping) and depth < 1:
            out.update(_flat_metrics(v, key + ".", depth + 1))
    return out


def mlflow_ui_url(tracking_uri: str | None, ui_url: str | None = None) -> str:
    """Base URL of the MLflow UI that shows ``tracking_uri``'s runs and models.

    In order: ``ui_url`` (configured), the environment variable ``MLFLOW_UI_URL``, the tracking URI itself
    when it is an MLflow server (``http(s)://``), else (a local ``sqlite:``/``file:`` store or a database
    URI such as ``postgresql://``, which a browser cannot open) the default address of ``mlflow ui`` /
    ``mlflow server`` started on that store, ``http://127.0.0.1:5000``.
    """
    for candidate in (ui_url, os.environ.get("MLFLOW_UI_URL")):
        if candidate and str(candidate).strip():
            return str(candidate).strip().rstrip("/")
    uri = str(tracking_uri or "")
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    return LOCAL_MLFLOW_UI


def mlflow_run_url(base: str, experiment_id: str, run_id: str) -> str:
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def mlflow_model_version_url(base: str, name: str, version: str | int) -> str:
    return f"{base.rstrip('/')}/#/models/{name}/versions/{version}"


def serving_requirements() -> list[str]:
    """``pip_requirements`` of the registered pyfunc: explicit and pinned (MLflow would otherwise infer them
    by loading the model in a subprocess, which is slow)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in SERVING_PACKAGES:
        try:
            out.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            out.append(pkg)
    return out


def _core_closure(start: str = "pyfunc") -> list[str]:
    """The ``riskml_assets.core`` modules ``start`` imports, directly or not (relative imports only)."""
    import ast

    core = Path(__file__).resolve().parent / "core"
    seen, todo = set(), [start]
    while todo:
        mod = todo.pop()
        if mod in seen or not (core / f"{mod}.py").is_file():
            continue
        seen.add(mod)
        for node in ast.walk(ast.parse((core / f"{mod}.py").read_text())):  # module level and inside functions
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                todo.extend([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
    return sorted(seen)


def _serving_code(dest: Path) -> Path:
    """A copy of the package skeleton and the core modules the pyfunc needs: ``dest/riskml_assets``."""
    pkg = Path(__file__).resolve().parent
    out = dest / "riskml_assets"
    (out / "core").mkdir(parents=True)
    shutil.copyfile(pkg / "__init__.py", out / "__init__.py")
    shutil.copyfile(pkg / "core" / "__init__.py", out / "core" / "__init__.py")
    for mod in _core_closure():
        shutil.copyfile(pkg / "core" / f"{mod}.py", out / "core" / f"{mod}.py")
    return out


# --------------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------------

class ModelRegistry:
    """The riskml view of an MLflow tracking/registry store (SQLite by default)."""

    def __init__(self, tracking_uri: str, experiment_name: str = "riskml-registry",
                 artifact_location: str | None = None, registry_uri: str | None = None):
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.experiment_name = experiment_name
        self.artifact_location = artifact_location
        self._client = None

    # -- plumbing ------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            from mlflow import MlflowClient

            if self.tracking_uri.startswith("sqlite:///"):
                Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        return self._client

    def _call(self, method: str, *args, **kwargs):
        return retry_locked(getattr(self.client, method), *args, **kwargs)

    def _default_artifact_location(self) -> str | None:
        if self.artifact_location:
            return self.artifact_location
        if self.tracking_uri.startswith("sqlite:///"):
            db = Path(self.tracking_uri.removeprefix("sqlite:///")).resolve()
            return (db.parent / "mlartifacts").as_uri()
        return None

    def _experiment_id(self) -> str:
        exp = self._call("get_experiment_by_name", self.experiment_name)
        if exp is not None:
            if (exp.tags or {}).get(TAG_EXPERIMENT_KIND) is None:
                self._call("set_experiment_tag", exp.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND_ML)
            return exp.experiment_id
        try:
            return self._call("create_experiment", self.experiment_name,
                              artifact_location=self._default_artifact_location(),
                              tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND_ML})
        except Exception:  # noqa: BLE001 - created concurrently
            exp = self._call("get_experiment_by_name", self.experiment_name)
            if exp is None:
                raise
            return exp.experiment_id

    def ui_url(self, ui_url: str | None = None) -> str:
        """Base URL of the MLflow UI for this store (see :func:`mlflow_ui_url`)."""
        return mlflow_ui_url(self.tracking_uri, ui_url)

    def _run_exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self._call("get_run", run_id)
            return True
        except MlflowException:
            return False

    @staticmethod
    def model_name(tenant: str, family: str) -> str:
        validate_tenant(tenant)
        if not family or not family.replace("_", "").isalnum() or not family[0].isalpha() or family != family.lower():
            raise ValueError(f"invalid model family {family!r}: lower-case letters, digits and '_'")
        return f"riskml.{tenant}.{family}"

    def _ensure_registered_model(self, name: str, tenant: str, family: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self._call("get_registered_model", name)
            return
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" not in str(exc.error_code):
                raise
        try:
            self._call("create_registered_model", name,
                       tags={"riskml.tenant": tenant, "riskml.family": family},
                       description=f"riskml {family} model of tenant {tenant}. Aliases: champion (scores), "
                                   f"challenger (latest candidate), previous_champion (rollback target).")
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise

    def _alias_version(self, name: str, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self._call("get_model_version_by_alias", name, alias).version)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "INVALID_PARAMETER_VALUE" in str(exc.error_code):
                return None
            raise

    def _versions(self, name: str) -> list:
        return list(self._call("search_model_versions", f"name='{name}'"))

    # -- queries ---------------------------------------------------------------------------
    def champion_version(self, tenant: str, family: str) -> str | None:
        return self._alias_version(self.model_name(tenant, family), ALIAS_CHAMPION)

    def alias_version(self, tenant: str, family: str, alias: str) -> str | None:
        return self._alias_version(self.model_name(tenant, family), alias)

    def aliases(self, tenant: str, family: str) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        try:
            rm = self._call("get_registered_model", self.model_name(tenant, family))
        except MlflowException:
            return {}
        return {k: str(v) for k, v in (rm.aliases or {}).items()}

    def version_tags(self, tenant: str, family: str, version: str | int) -> dict[str, str]:
        return dict(self._call("get_model_version", self.model_name(tenant, family), str(version)).tags)

    def promotion_log(self, tenant: str, family: str) -> list[dict]:
        """Every champion change of the tenant's family, oldest first."""
        from mlflow.exceptions import MlflowException

        try:
            rm = self._call("get_registered_model", self.model_name(tenant, family))
        except MlflowException:
            return []
        return self._log_of(rm)

    @staticmethod
    def _log_of(rm) -> list[dict]:
        events = []
        for k, v in (rm.tags or {}).items():
            if k.startswith(LOG_PREFIX):
                try:
                    events.append(json.loads(v))
                except ValueError:
                    events.append({"seq": -1, "action": "unreadable", "raw": v})
        return sorted(events, key=lambda e: (int(e.get("seq", -1)), str(e.get("at", ""))))

    def _append_log(self, name: str, event: dict) -> dict:
        rm = self._call("get_registered_model", name)
        seq = max([int(e.get("seq", 0)) for e in self._log_of(rm)] + [0]) + 1
        event = {"seq": seq, "at": _now(), **event}
        self._call("set_registered_model_tag", name, f"{LOG_PREFIX}{seq:06d}.{uuid.uuid4().hex[:8]}",
                   json.dumps(event, sort_keys=True, default=_json_default))
        return event

    # -- registration ----------------------------------------------------------------------
    def register(self, tenant: str, family: str, artifact: Mapping, calibrator: Mapping | None, manifest: Mapping,
                 metrics: Mapping | None, report_md: str, gates_passed: bool | Mapping[str, bool], run_id: str | None = None,
                 extra_files: Mapping[str, bytes] | None = None, reference_data=None, decision: Mapping | None = None,
                 tags: Mapping[str, str] | None = None, trained_opportunities=None) -> str:
        """Log and register one trained model; returns its version (a string) with alias ``challenger``.

        Registering the same model again (same booster, features, calibrator and manifest) returns the existing
        version instead of creating a new one (safe to re-run); unless it is the champion, its gate result,
        decision and ``challenger`` alias are refreshed. ``run_id`` (the training run) is where the files are logged
        and what the version's ``run_id``/``source`` point to; when this store does not know that run (or none is
        given) a run is created in ``experiment_name``, tagged ``riskml.training_run_id`` with the given id. The
        version is tagged ``riskml.training_run_id`` too. ``reference_data`` (a frame of the features
        of every snapshot in the training window, the drift reference) is stored as parquet, sampled to at most
        REFERENCE_MAX_ROWS rows. ``trained_opportunities`` (the opportunity ids of the model's train and
        validation splits) is stored as ``riskml/trained_opportunities.json`` so a later challenger is compared
        with this model only on opportunities neither trained on (``load()`` returns it; None when not given).
        """
        name = self.model_name(tenant, family)
        gates_ok = all(bool(v) for v in gates_passed.values()) if isinstance(gates_passed, Mapping) else bool(gates_passed)
        fingerprint = model_fingerprint(artifact, calibrator, manifest)
        self._ensure_registered_model(name, tenant, family)
        for mv in self._versions(name):
            if mv.tags.get(TAG_FINGERPRINT) == fingerprint:
                version = str(mv.version)
                if self._alias_version(name, ALIAS_CHAMPION) != version:  # (the champion keeps its own decision)
                    self._call("set_model_version_tag", name, version, TAG_GATES, str(gates_ok))
                    if isinstance(gates_passed, Mapping):
                        self._call("set_model_version_tag", name, version, "riskml.gates",
                                   json.dumps({str(k): bool(v) for k, v in gates_passed.items()}, sort_keys=True))
                    if decision is not None:
                        self.record_decision(tenant, family, version, decision)
                    self._call("set_registered_model_alias", name, ALIAS_CHALLENGER, version)
                return version

        tmp = Path(tempfile.mkdtemp(prefix="riskml-register-"))
        try:
            root = tmp / "bundle"
            self._write_bundle(root, family, artifact, calibrator, manifest, metrics, report_md, extra_files,
                               reference_data, trained_opportunities)
            sums = _checksums(root)
            training_run = run_id
            # the files go into the training run when this store has it (the version then links to it);
            # otherwise (no run given, or a run of another tracking store) into a run of its own that points to it
            own_run = run_id is None or not self._run_exists(run_id)
            if own_run:
                run_tags = {"riskml.tenant": tenant, "riskml.family": family}
                if training_run:
                    run_tags[TAG_TRAINING_RUN] = training_run
                run = self._call("create_run", self._experiment_id(), run_name=f"register/{tenant}/{family}",
                                 tags=run_tags)
                run_id = run.info.run_id
                flat = _flat_metrics(metrics)
                if flat:
                    from mlflow.entities import Metric

                    ts = int(time.time() * 1000)
                    items = [Metric(k, v, ts, 0) for k, v in flat.items()]
                    for i in range(0, len(items), 500):
                        self._call("log_batch", run_id, metrics=items[i:i + 500])
            artifact_path = f"registered_model/{family}-{fingerprint[:12]}"
            self._call("log_artifacts", run_id, str(root), artifact_path)
            if own_run:
                self._call("set_terminated", run_id)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

        vtags = {
            "riskml.tenant": tenant, "riskml.family": family, TAG_FINGERPRINT: fingerprint,
            "riskml.manifest_fingerprint": manifest_fingerprint(manifest), TAG_GATES: str(gates_ok),
            TAG_CHECKSUMS: json.dumps(sums, sort_keys=True), TAG_ARTIFACT_PATH: artifact_path,
            "riskml.registered_at": _now(), "riskml.registered_by": _actor(None),
            "riskml.features": ",".join(artifact.get("features", []))[:4000],
        }
        if training_run:
            vtags[TAG_TRAINING_RUN] = training_run
        if isinstance(gates_passed, Mapping):
            vtags["riskml.gates"] = json.dumps({str(k): bool(v) for k, v in gates_passed.items()}, sort_keys=True)
        if trained_opportunities is not None:
            vtags["riskml.trained_opportunities"] = str(len({str(x) for x in trained_opportunities}))
        for k in ("week", "algorithm", "best_iteration", "train_rows"):
            if artifact.get(k) is not None:
                vtags[f"riskml.{k}"] = str(artifact[k])
        for k, v in list(_flat_metrics(metrics).items())[:40]:
            vtags[f"riskml.metric.{k}"] = f"{v:.6g}"
        vtags.update({str(k): str(v) for k, v in (tags or {}).items()})
        if decision is not None:
            vtags.update(self._decision_tags(decision))
        mv = self._call("create_model_version", name, source=f"runs:/{run_id}/{artifact_path}", run_id=run_id,
                        tags=vtags, description=f"{family} model of {tenant}; gates passed: {gates_ok}")
        version = str(mv.version)
        self._call("set_registered_model_alias", name, ALIAS_CHALLENGER, version)
        return version

    def _write_bundle(self, root: Path, family: str, artifact: Mapping, calibrator: Mapping | None, manifest: Mapping,
                      metrics: Mapping | None, report_md: str, extra_files: Mapping[str, bytes] | None,
                      reference_data, trained_opportunities=None) -> None:
        signature = _signature(artifact, family)
        if family == "risk" and (artifact.get("booster_json") or artifact.get("model")  # lightgbm / random_forest
                                 or artifact.get("algorithm") == "crm_score"):
            self._save_pyfunc(root, artifact, calibrator, signature)
        rk = root / "riskml"
        rk.mkdir(parents=True)
        if artifact.get("booster_json"):
            import mlflow.xgboost
            import xgboost as xgb

            booster = xgb.Booster()
            booster.load_model(bytearray(str(artifact["booster_json"]).encode()))
            mlflow.xgboost.save_model(booster, str(root / "model"), model_format="json", signature=signature,
                                      pip_requirements=[f"xgboost=={xgb.__version__}"],
                                      metadata={"riskml_family": family})
        rest = {k: v for k, v in artifact.items() if k != "booster_json"}
        (rk / "artifact.json").write_text(_dumps(rest))
        (rk / "feature_manifest.json").write_text(_dumps(dict(manifest)))
        if calibrator is not None:
            (rk / "calibrator.json").write_text(_dumps(dict(calibrator)))
        (rk / "metrics.json").write_text(_dumps(dict(metrics or {})))
        (rk / "evaluation_report.md").write_text(report_md or "")
        (rk / "signature.json").write_text(_dumps(signature.to_dict()))
        if trained_opportunities is not None:
            ids = sorted({str(x) for x in trained_opportunities})
            (rk / TRAINED_FILE).write_text(_dumps({"opportunity_ids": ids, "count": len(ids),
                                                   "splits": ["train", "validation"]}))
        if reference_data is not None and len(reference_data):
            import pandas as pd

            ref = pd.DataFrame(reference_data)
            cols = [c for c in artifact.get("features", []) if c in ref.columns] or list(ref.columns)
            ref = ref[cols]
            if len(ref) > REFERENCE_MAX_ROWS:
                ref = ref.sample(REFERENCE_MAX_ROWS, random_state=0).sort_index()
            ref.reset_index(drop=True).to_parquet(rk / "reference_features.parquet", index=False)
        for fname, data in (extra_files or {}).items():
            p = Path(fname)
            if p.is_absolute() or ".." in p.parts or not p.parts:
                raise ValueError(f"extra file name {fname!r} must be a relative path without '..'")
            target = root / "extra" / p
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(bytes(data))

    @staticmethod
    def _save_pyfunc(root: Path, artifact: Mapping, calibrator: Mapping | None, signature) -> None:
        """Make ``root`` an MLflow pyfunc model directory (``core.pyfunc.RiskPyfunc``, models from code)."""
        import mlflow.pyfunc

        from .core import pyfunc as P

        stage = Path(tempfile.mkdtemp(prefix="riskml-pyfunc-"))
        try:
            files = {"artifact": stage / "artifact.json"}
            files["artifact"].write_text(_dumps({k: v for k, v in artifact.items() if k != "booster_json"}))
            if artifact.get("booster_json"):  # (a crm_score model has none: it reads the CRM score feature)
                files["booster"] = stage / "booster.json"
                files["booster"].write_text(str(artifact["booster_json"]))
            if calibrator is not None:
                files["calibrator"] = stage / "calibrator.json"
                files["calibrator"].write_text(_dumps(dict(calibrator)))
            code = stage / P.MODEL_CODE_FILE
            code.write_text(P.MODEL_CODE)
            with warnings.catch_warnings():  # no input example / type hints: the signature is given explicitly
                warnings.filterwarnings("ignore", message=r".*(input example was not provided|Add type hints)",
                                        category=UserWarning)
                mlflow.pyfunc.save_model(
                    str(root), python_model=str(code), artifacts={k: str(v) for k, v in files.items()},
                    code_paths=[str(_serving_code(stage / "code"))], signature=signature,
                    pip_requirements=serving_requirements(),
                    metadata={"riskml_family": "risk", "riskml_output": P.OUTPUT_COLUMN,
                              "riskml_input": "pinned feature columns (riskml_assets.core.scoring.feature_rows)"})
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    # -- loading ---------------------------------------------------------------------------
    def load(self, tenant: str, family: str, alias: str = ALIAS_CHAMPION, version: str | int | None = None) -> dict:
        """The bundle of a version (by alias, or by number with ``version=``), checksums verified first.

        Returns ``{"artifact", "calibrator", "manifest", "metrics", "report_md", "reference", "extra_files",
        "trained_opportunities" (list of ids or None),
        "signature", "name", "tenant", "family", "version", "alias", "fingerprint", "manifest_fingerprint",
        "run_id", "gates_passed", "tags"}``. Raises NoSuchAliasError when the alias is not set and
        ChecksumMismatchError when any file differs from what was registered.
        """
        name = self.model_name(tenant, family)
        if version is None:
            v = self._alias_version(name, alias)
            if v is None:
                raise NoSuchAliasError(f"{name} has no version with alias {alias!r}"
                                       + (" (the tenant has no champion yet)" if alias == ALIAS_CHAMPION else ""))
            version = v
        else:
            alias = next((a for a, ver in self.aliases(tenant, family).items() if ver == str(version)), None)
        mv = self._call("get_model_version", name, str(version))
        tags = dict(mv.tags)
        if TAG_CHECKSUMS not in tags or TAG_ARTIFACT_PATH not in tags:
            raise ChecksumMismatchError(f"{name} v{version} was not registered by riskml (no recorded checksums)")
        expected = json.loads(tags[TAG_CHECKSUMS])
        tmp = Path(tempfile.mkdtemp(prefix="riskml-load-"))
        try:
            local = Path(self._call("download_artifacts", mv.run_id, tags[TAG_ARTIFACT_PATH], str(tmp)))
            actual = _checksums(local)
            problems = []
            for f in sorted(set(expected) | set(actual)):
                if f not in actual:
                    problems.append(f"{f}: missing")
                elif f not in expected:
                    problems.append(f"{f}: not registered (unexpected file)")
                elif expected[f] != actual[f]:
                    problems.append(f"{f}: sha256 {actual[f]} != registered {expected[f]}")
            if problems:
                raise ChecksumMismatchError(f"{name} v{version}: files differ from what was registered: "
                                            + "; ".join(problems))
            # only now is anything parsed
            rk = local / "riskml"
            artifact = json.loads((rk / "artifact.json").read_text())
            if (local / "model" / "model.json").exists():
                artifact["booster_json"] = (local / "model" / "model.json").read_text()
            calibrator = json.loads((rk / "calibrator.json").read_text()) if (rk / "calibrator.json").exists() else None
            manifest = json.loads((rk / "feature_manifest.json").read_text())
            reference = None
            if (rk / "reference_features.parquet").exists():
                import pandas as pd

                reference = pd.read_parquet(io.BytesIO((rk / "reference_features.parquet").read_bytes()))
            extra_root = local / "extra"
            extra = ({p.relative_to(extra_root).as_posix(): p.read_bytes()
                      for p in sorted(extra_root.rglob("*")) if p.is_file()} if extra_root.exists() else {})
            bundle = {
                "artifact": artifact, "calibrator": calibrator, "manifest": manifest,
                "metrics": json.loads((rk / "metrics.json").read_text()),
                "report_md": (rk / "evaluation_report.md").read_text(),
                "signature": json.loads((rk / "signature.json").read_text()),
                "reference": reference, "extra_files": extra,
                "trained_opportunities": (json.loads((rk / TRAINED_FILE).read_text())["opportunity_ids"]
                                          if (rk / TRAINED_FILE).exists() else None),
            }
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        bundle.update(name=name, tenant=tenant, family=family, version=str(version), alias=alias,
                      fingerprint=tags.get(TAG_FINGERPRINT), manifest_fingerprint=tags.get("riskml.manifest_fingerprint"),
                      run_id=mv.run_id, gates_passed=tags.get(TAG_GATES) == "True", tags=tags)
        return bundle

    # -- decisions, promotion, rollback ------------------------------------------------------
    @staticmethod
    def _decision_tags(decision: Mapping) -> dict[str, str]:
        from .core.promotion import decision_tags

        tags = decision_tags(decision)
        tags["riskml.decision"] = json.dumps(dict(decision), sort_keys=True, default=_json_default)[:90_000]
        tags["riskml.should_deploy"] = str(bool(decision.get("should_deploy")))
        return tags

    def record_decision(self, tenant: str, family: str, version: str | int, decision: Mapping) -> None:
        """Write the champion/challenger decision (should_deploy, p-value, interval, reason) as version tags."""
        name = self.model_name(tenant, family)
        for k, v in self._decision_tags(decision).items():
            self._call("set_model_version_tag", name, str(version), k, v)

    MODEL_CARD_FILE = "model_card.md"
    DESCRIPTION_MAX = 4800  # the SQL stores keep a version description in 5,000 characters

    def attach_model_card(self, tenant: str, family: str, version: str | int, card_md: str) -> str:
        """Attach a version's model card (``core.model_card``): ``model_card.md`` on the version's run and the
        card as the version's description (cut to DESCRIPTION_MAX characters, pointing to the file). Returns the
        run id. Safe to repeat (the file and the description are replaced)."""
        name = self.model_name(tenant, family)
        mv = self._call("get_model_version", name, str(version))
        self._call("log_text", mv.run_id, card_md, self.MODEL_CARD_FILE)
        text = card_md
        if len(text) > self.DESCRIPTION_MAX:
            text = text[:self.DESCRIPTION_MAX].rsplit("\n", 1)[0] + (
                f"\n\n… (cut: the whole card is the run's artifact {self.MODEL_CARD_FILE})\n")
        self._call("update_model_version", name, str(version), description=text)
        return mv.run_id

    def _reconcile(self, name: str) -> list[dict]:
        """Repair the log after an interrupted promotion/rollback (alias moved, log entry not yet written)."""
        log = self._log_of(self._call("get_registered_model", name))
        cur = self._alias_version(name, ALIAS_CHAMPION)
        last_to = str(log[-1]["to"]) if log else None
        if cur is None or last_to == cur:
            return log
        if last_to is not None:
            rb = self._call("get_model_version", name, last_to).tags.get(TAG_ROLLED_BACK)
            if rb:
                info = json.loads(rb)
                self._append_log(name, {"action": "rollback", "from": last_to, "to": cur,
                                        "reason": info.get("reason", ""), "by": info.get("by", "unknown"),
                                        "note": "recorded after an interrupted rollback"})
                return self._log_of(self._call("get_registered_model", name))
        prev = self._alias_version(name, ALIAS_PREVIOUS)
        self._append_log(name, {"action": "promote", "from": last_to or prev, "to": cur, "by": "unknown",
                                "reason": "recorded after an interrupted or external champion change"})
        return self._log_of(self._call("get_registered_model", name))

    def promote(self, tenant: str, family: str, version: str | int, decision: Mapping | None = None, *,
                reason: str | None = None, actor: str | None = None, force: bool = False,
                context: Mapping[str, Any] | None = None) -> dict:
        """Make ``version`` the champion (the old champion becomes ``previous_champion``). Idempotent.

        Refused (RegistryError) when the version's gates did not pass or ``decision["should_deploy"]`` is false,
        unless ``force=True`` (an operator's explicit override, recorded in the log).
        Returns ``{"status": "promoted"|"already_champion", "from", "to", "event"}``.
        """
        name = self.model_name(tenant, family)
        version = str(version)
        mv = self._call("get_model_version", name, version)
        if not force:
            if mv.tags.get(TAG_GATES) != "True":
                raise RegistryError(f"{name} v{version}: blocking gates did not pass; refusing to promote "
                                    "(force=True overrides)")
            if decision is not None and not decision.get("should_deploy"):
                raise RegistryError(f"{name} v{version}: decision says do not deploy ({decision.get('reason')}); "
                                    "refusing to promote (force=True overrides)")
        if decision is not None:
            self.record_decision(tenant, family, version, decision)
        self._reconcile(name)
        cur = self._alias_version(name, ALIAS_CHAMPION)
        if cur == version:
            self._drop_challenger_alias(name, version)
            return {"status": "already_champion", "from": cur, "to": version, "event": None}
        why = reason or (decision or {}).get("reason") or ("forced by operator" if force else "promoted")
        if cur is not None:
            self._call("set_registered_model_alias", name, ALIAS_PREVIOUS, cur)
        self._call("set_registered_model_alias", name, ALIAS_CHAMPION, version)  # the atomic switch
        event = self._append_log(name, {
            "action": "promote", "from": cur, "to": version, "reason": why, "by": _actor(actor), "forced": bool(force),
            "first_champion": cur is None, **({"p_value": decision.get("p_value"), "delta": decision.get("delta"),
                                                "ci": [decision.get("ci_low"), decision.get("ci_high")]}
                                               if decision else {}),
            **({"context": dict(context)} if context else {}),
        })
        if mv.tags.get(TAG_ROLLED_BACK):
            self._call("delete_model_version_tag", name, version, TAG_ROLLED_BACK)
        self._call("set_model_version_tag", name, version, "riskml.promoted_at", event["at"])
        self._drop_challenger_alias(name, version)
        return {"status": "promoted", "from": cur, "to": version, "event": event}

    def _drop_challenger_alias(self, name: str, version: str) -> None:
        if self._alias_version(name, ALIAS_CHALLENGER) == version:
            self._call("delete_registered_model_alias", name, ALIAS_CHALLENGER)

    def _rollback_candidates(self, name: str, log: list[dict], cur: str) -> list[str]:
        """Earlier champions, most recent first, without the current one and without rolled-back versions."""
        from mlflow.exceptions import MlflowException

        seen, out = {cur}, []
        for e in reversed(log):
            for v in (e.get("to"), e.get("from")):
                if v is None or str(v) in seen:
                    continue
                v = str(v)
                seen.add(v)
                try:
                    tags = self._call("get_model_version", name, v).tags
                except MlflowException:  # deleted version
                    continue
                if not tags.get(TAG_ROLLED_BACK):
                    out.append(v)
        return out

    def rollback(self, tenant: str, family: str, reason: str, *, further: bool = False,
                 actor: str | None = None, context: Mapping[str, Any] | None = None) -> dict:
        """Move ``champion`` back to the champion before the current one, recording ``reason``.

        - The current champion is tagged ``riskml.rolled_back`` (reason, who, when) and is never a rollback
          target again (promoting it explicitly clears the mark).
        - Safe to run twice: when the current champion was itself installed by a rollback, a second call is a
          no-op with ``status="already_rolled_back"``; ``further=True`` rolls back one more step.
        - With no earlier champion to go to nothing changes (``status="no_previous_champion"``); a tenant
          never ends up without a champion.

        Returns ``{"status", "from", "to", "message", "event"}``.
        """
        if not reason or not str(reason).strip():
            raise ValueError("a rollback needs a reason")
        name = self.model_name(tenant, family)
        cur = self._alias_version(name, ALIAS_CHAMPION)
        if cur is None:
            return {"status": "no_champion", "from": None, "to": None, "event": None,
                    "message": f"{name} has no champion: nothing to roll back"}
        log = self._reconcile(name)
        last = log[-1] if log else None
        if last and last.get("action") == "rollback" and str(last.get("to")) == cur and not further:
            return {"status": "already_rolled_back", "from": str(last.get("from")), "to": cur, "event": None,
                    "message": f"{name}: champion was already rolled back from v{last.get('from')} to v{cur} at "
                               f"{last.get('at')} ({last.get('reason')}); nothing done. Pass further=True to roll "
                               f"back past v{cur}."}
        candidates = self._rollback_candidates(name, log, cur)
        if not candidates:
            return {"status": "no_previous_champion", "from": cur, "to": cur, "event": None,
                    "message": f"{name}: v{cur} is the only champion there has been; nothing to roll back to"}
        target = candidates[0]
        who = _actor(actor)
        self._call("set_model_version_tag", name, cur, TAG_ROLLED_BACK,
                   json.dumps({"reason": str(reason), "at": _now(), "by": who, "to": target}))
        self._call("set_registered_model_alias", name, ALIAS_CHAMPION, target)  # the atomic switch
        if len(candidates) > 1:
            self._call("set_registered_model_alias", name, ALIAS_PREVIOUS, candidates[1])
        elif self._alias_version(name, ALIAS_PREVIOUS) is not None:
            self._call("delete_registered_model_alias", name, ALIAS_PREVIOUS)
        event = self._append_log(name, {"action": "rollback", "from": cur, "to": target, "reason": str(reason),
                                        "by": who, "further": bool(further),
                                        **({"context": dict(context)} if context else {})})
        return {"status": "rolled_back", "from": cur, "to": target, "event": event,
                "message": f"{name}: champion rolled back from v{cur} to v{target}: {reason}"}


# --------------------------------------------------------------------------------------------
# the whole champion/challenger step of the risk family (what the registered_models asset calls)
# --------------------------------------------------------------------------------------------

def register_risk_candidate(registry: ModelRegistry, tenant: str, *, artifact: Mapping, calibrator: Mapping,
                            manifest: Mapping, test, metrics: Mapping | None, report_md: str,
                            gates_passed: bool | Mapping[str, bool], floors: Mapping[str, float] | None = None,
                            snapshots_history=None, activities=None, reference_data=None, run_id: str | None = None,
                            alpha: float = 0.05, n_boot: int = 1000, seed: int = 0, min_improvement: float = 0.0,
                            auc_policy: str = "not_worse", auto_promote: bool = True, actor: str | None = None,
                            context: Mapping[str, Any] | None = None,
                            before_promote: Callable[[str, dict], None] | None = None,
                            trained_opportunities=None, champion_source: str | None = None,
                            candidates: Mapping[str, Any] | None = None) -> dict:
    """Compare a trained risk model with the tenant's champion on the same real test rows, register it
    (alias ``challenger``, decision in its tags and report) and promote it when the decision says so.

    ``test`` is the run's test split (labelled examples extracted with ``manifest``); the champion is loaded
    from the registry (checksums verified) and scored on the same rows with its own pinned feature versions
    (recomputed from ``snapshots_history``/``activities`` when they differ; either may be a function returning
    the frame, called only then). ``before_promote`` is called
    between registration and promotion (a hook for the caller's own bookkeeping). Re-running with the same
    model is safe: the same version is returned and promotion is idempotent.

    ``trained_opportunities``: the opportunity ids of the challenger's train and validation splits; they are
    registered with it, and the champion/challenger comparison uses only the test opportunities that neither
    the challenger nor the champion (its own recorded ids) trained on (``decision["comparison"]`` gives the
    size of that set and what was excluded). The absolute floors are judged on the challenger's whole test
    split (it trained on none of it). When no test opportunity is left, the champion stays.

    ``champion_source`` (``tenant_model`` | ``crm_score`` | ``pooled``: which of the evaluation's candidates this
    model is) is tagged ``riskml.champion_source`` on the version and written into the decision and report;
    ``candidates`` (the evaluation's candidate summary) is stored with the decision.

    Returns ``{"version", "decision", "promotion", "champion_before", "champion_after", "report_md"}``.
    """
    import numpy as np

    from .core.evaluation import apply_calibrator
    from .core.features import LABEL
    from .core import metrics as M
    from .core.promotion import comparison_set, comparison_text, decide_promotion, decision_markdown
    from .core.scoring import predict_on_examples
    from .core.training import predict_raw

    family = "risk"
    if "is_synthetic" in test.columns:  # the comparison is on real rows only
        test = test[~test["is_synthetic"].fillna(False).astype(bool)]
    test = test.reset_index(drop=True)
    champion_before = registry.champion_version(tenant, family)
    y_all = test[LABEL].to_numpy(dtype=int)
    p_all = np.asarray(apply_calibrator(calibrator, predict_raw(dict(artifact), test)))
    # the floors are judged on the challenger's whole test split
    floor_values = {"auc": M.roc_auc(y_all, p_all), "brier": M.brier(y_all, p_all),
                    "log_loss": M.log_loss(y_all, p_all), "ece": M.ece(y_all, p_all)}
    p_old, comp, cmp = None, None, test
    if champion_before is not None:
        champ = registry.load(tenant, family, alias=ALIAS_CHAMPION)
        cmp, comp = comparison_set(test, champ.get("trained_opportunities"), trained_opportunities)
        if len(cmp):
            p_old, _ = predict_on_examples(champ, cmp, manifest, snapshots_history, activities)
    y = cmp[LABEL].to_numpy(dtype=int)
    p_new = p_all if cmp is test else np.asarray(apply_calibrator(calibrator, predict_raw(dict(artifact), cmp)))
    if champion_before is not None and not len(cmp):
        decision = decide_promotion(y_all, None, p_all, family=family, gates_passed=gates_passed, floors=floors,
                                    alpha=alpha, n_boot=n_boot, seed=seed, groups=test["opportunity_id"].to_numpy(),
                                    min_improvement=min_improvement, auc_policy=auc_policy, extra_metrics=floor_values)
        decision.update(first_model=False, should_deploy=False, significant=False,
                        reason="no test opportunity that neither model trained on: the challenger cannot be "
                               f"compared fairly with the champion, which stays ({comparison_text(comp)})")
    else:
        decision = decide_promotion(y, p_old, p_new, family=family, gates_passed=gates_passed,
                                    floors=floors, alpha=alpha, n_boot=n_boot, seed=seed,
                                    groups=cmp["opportunity_id"].to_numpy(), min_improvement=min_improvement,
                                    auc_policy=auc_policy, extra_metrics=floor_values)
    if comp is not None:
        decision["comparison"] = comp
        decision["reason"] += f" [{comparison_text(comp)}]"
    decision["champion_version"] = champion_before
    if champion_source:
        decision["champion_source"] = champion_source
    if candidates:
        decision["candidates"] = dict(candidates)
    report = (report_md or "") + "\n\n" + decision_markdown(decision, champion_before, "new")
    if champion_source:
        report += (f"\nChampion source of this version: **{champion_source}** (algorithm "
                   f"{artifact.get('algorithm', '?')}).\n")
    version = registry.register(tenant, family, artifact, calibrator, manifest, metrics, report, gates_passed,
                                run_id=run_id, reference_data=reference_data, decision=decision,
                                trained_opportunities=trained_opportunities,
                                tags={TAG_CHAMPION_SOURCE: champion_source} if champion_source else None)
    decision["challenger_version"] = version
    if before_promote is not None:
        before_promote(version, decision)
    promotion = None
    if auto_promote and decision["should_deploy"]:
        promotion = registry.promote(tenant, family, version, decision, actor=actor, context=context)
    return {"version": version, "decision": decision, "promotion": promotion, "champion_before": champion_before,
            "champion_after": registry.champion_version(tenant, family), "report_md": report}
