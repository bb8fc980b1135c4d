"""The model card of a registered risk version, as the ``registered_models`` asset attaches it: gathers the run's
gate results and the frames' summaries, calls the pure ``core.model_card``, and attaches the markdown in MLflow
(``model_card.md`` on the version's run + the version's description)."""
from __future__ import annotations

import dagster as dg
import pandas as pd

from ..core import model_card as MC
from ..core.features import LABEL


def run_gates(context: dg.AssetExecutionContext, partition: str) -> list[dict]:
    """Every gate evaluated so far in this run for this partition (the training run: features to evaluation)."""
    out = {}
    for e in context.instance.all_logs(context.run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        ev = e.dagster_event.event_specific_data
        if ev.partition not in (None, partition):
            continue
        error = ev.severity == dg.AssetCheckSeverity.ERROR
        out[(ev.asset_key.to_user_string(), ev.check_name)] = {
            "asset": ev.asset_key.to_user_string(), "gate": ev.check_name, "action": "fail" if error else "warn",
            "result": "pass" if ev.passed else ("FAIL" if error else "warn")}
    return list(out.values())


def registration_card(context: dg.AssetExecutionContext, registry, *, tenant: str, week: str, version,
                      dataset_splits: pd.DataFrame, feature_manifest: dict, artifact: dict, risk_evaluation: dict,
                      decision: dict, promotion_passed: bool, promotion_action: str) -> tuple[str, dict]:
    """Build, render and attach the card of one registered version; returns (markdown, facts)."""
    manifest = feature_manifest["features"]
    real = dataset_splits
    if "is_synthetic" in real.columns:
        real = real[~real["is_synthetic"].fillna(False).astype(bool)]
    train = real[real["split"] == "train"]
    data = MC.data_summary(dataset_splits, manifest)
    baselines = MC.baseline_metrics(real[real["split"] == "test"], float(train[LABEL].mean()) if len(train) else 0.5,
                                    level=float(risk_evaluation.get("ci_level") or MC.CI_LEVEL), n_boot=500)
    gates = run_gates(context, f"{tenant}|{week}")
    name = registry.model_name(tenant, "risk")
    card = MC.build_model_card(
        tenant=tenant, week=week, model_name=name, version=version, data=data, manifest=manifest,
        artifact=artifact, evaluation=risk_evaluation, baselines=baselines, decision=decision,
        gates=gates or None, run_id=artifact.get("mlflow_run_id"),
        promotion_gate={"gate": "registered_models_promotion", "passed": promotion_passed,
                        "action": promotion_action, "asset": "registered_models"})
    md = MC.model_card_markdown(card)
    try:
        card["mlflow_run_id"] = registry.attach_model_card(tenant, "risk", version, md)
        card["attached"] = True
    except Exception as exc:  # noqa: BLE001 - the version is registered; say so loudly rather than fail after it
        context.log.warning(f"model card of {name} v{version} not attached in MLflow: {exc}")
        card["attached"] = False
    return md, card
