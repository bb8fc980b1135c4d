"""The MLflow ``pyfunc`` of a registered risk model: ``mlflow.pyfunc.load_model("models:/riskml.<tenant>.risk@champion")``.

No dagster here (the registered model's code is this package's ``core`` modules only).

Input: a pandas DataFrame with one row per scored snapshot and the model's feature columns, as feature
extraction produces them with the model's pinned feature versions (``core.scoring.feature_rows`` or
``core.scoring.compute_features`` with the version's ``feature_manifest.json``). The registered input
signature lists them: categorical features as ``string``, the others as ``double``; other columns (e.g.
``opportunity_id``, ``snapshot_date``) are ignored. Missing values are allowed (NaN / None), as at training.

Feature handling is the training's (``core.training.design_matrix``): numbers as float64, categoricals with
the categories seen in training (an unseen category is missing, never a new code). Then the model -- whichever
algorithm the selection chose: the XGBoost booster (up to its best iteration), the LightGBM text model or the
random forest's node arrays, all through ``core.training.predict_raw``'s dispatch -- and the calibrator,
through the same function ``risk_scores`` uses (``core.scoring.predict_calibrated``), so the output equals
``risk_scores``' ``p_lost`` for the same rows.

Output: a DataFrame with one column ``p_lost`` (calibrated P(lost)), in the input's row order and index.

Nothing is unpickled: the model is "models from code" (:data:`MODEL_CODE`, a three-line file that
instantiates :class:`RiskPyfunc`) and reads its parameters from JSON artifacts (:data:`ARTIFACT_FILES`).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

try:  # mlflow is a dependency of the platform; the class still imports without it (for tests of the logic)
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover
    PythonModel = object  # type: ignore[assignment,misc]

OUTPUT_COLUMN = "p_lost"
# pyfunc artifact name -> what it holds (files written by riskml_assets.registry at registration)
ARTIFACT_FILES = {
    "artifact": "the training artifact without the booster (features, kinds, categories, best iteration; the "
                "LightGBM / random-forest model itself for those algorithms)",
    "booster": "the XGBoost booster as XGBoost JSON (xgboost artifacts only)",
    "calibrator": "the calibrator (JSON parameters); absent for an uncalibrated model",
}
MODEL_CODE_FILE = "riskml_risk_model.py"
MODEL_CODE = '''"""riskml risk model (MLflow models-from-code): see riskml_assets.core.pyfunc."""
import mlflow
from riskml_assets.core.pyfunc import RiskPyfunc

mlflow.models.set_model(RiskPyfunc())
'''


def load_parts(paths: dict[str, str]) -> tuple[dict, dict | None]:
    """(artifact with its booster JSON, calibrator or None) from the pyfunc artifact files."""
    artifact = json.loads(Path(paths["artifact"]).read_text())
    if paths.get("booster"):  # absent for a model without a booster (algorithm crm_score: the CRM's own score)
        artifact["booster_json"] = Path(paths["booster"]).read_text()
    cal = paths.get("calibrator")
    calibrator = json.loads(Path(cal).read_text()) if cal else None
    return artifact, calibrator


def predict_frame(artifact: dict, calibrator: dict | None, frame: pd.DataFrame) -> pd.DataFrame:
    """``p_lost`` of ``frame``'s rows (see the module docstring); raises KeyError naming missing features."""
    from .scoring import predict_calibrated

    frame = pd.DataFrame(frame)
    missing = [f for f in artifact["features"] if f not in frame.columns]
    if missing:
        raise KeyError(f"the input lacks the model's feature columns {missing} (expected the columns of the "
                       f"input signature: {artifact['features']})")
    p, _ = predict_calibrated(artifact, calibrator, frame)
    return pd.DataFrame({OUTPUT_COLUMN: p}, index=frame.index)


class RiskPyfunc(PythonModel):
    """Calibrated P(lost) of a registered riskml risk model (see the module docstring for input and output)."""

    def load_context(self, context) -> None:
        self.artifact, self.calibrator = load_parts(dict(context.artifacts))

    # the pd.DataFrame hint is one MLflow infers no schema from: the registered signature stays the contract
    # (and MLflow does not warn about a predict without type hints)
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:  # noqa: ARG002
        return predict_frame(self.artifact, self.calibrator, model_input)
