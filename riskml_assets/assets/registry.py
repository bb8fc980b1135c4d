"""Registry assets: register + champion/challenger promotion, parity-checked batch scoring with drift gate,
and the rollback job. The decisions live in ``core.promotion``/``core.drift``/``core.scoring``; the MLflow
registry wrapper in ``riskml_assets.registry``."""
from typing import Optional

import dagster as dg
from ..core.lazy import lazy_module

pd = lazy_module("pandas")

from pydantic import Field

from ..checks import checks_after_materialization, gate_results, gate_specs
from ..core import drift as D
from ..core.contract import week_bounds
from ..core.features import LABEL
from ..io_manager import window_value
from ..core.scoring import concat_frames, rows_between, score_with_features
from ..partitions import split_key, tenant_week, window_in
from ..registry import ModelRegistry, mlflow_model_version_url, mlflow_run_url, register_risk_candidate
from ..resources import RiskmlSettings
from .common import OWNERS, Frame, concat, frame_metadata, md_table

REGISTRY_POOL = "mlflow_registry"  # SQLite registry: one writer at a time (`dagster instance concurrency set mlflow_registry 1`)


class RegistryResource(dg.ConfigurableResource):
    """The MLflow model registry (SQLite by default, next to the tracking store)."""

    tracking_uri: str = "sqlite:///data/mlflow.db"
    experiment_name: str = "riskml-registry"
    artifact_location: str | None = None  # e.g. wasbs://container@account.blob.core.windows.net/mlartifacts
    ui_url: Optional[str] = Field(None, description="Base URL of the MLflow UI for the links in metadata; default: "
                                                    "env MLFLOW_UI_URL, else an http(s) tracking URI, else the "
                                                    "local `mlflow ui` default http://127.0.0.1:5000.")

    def get(self) -> ModelRegistry:
        return ModelRegistry(self.tracking_uri, experiment_name=self.experiment_name,
                             artifact_location=self.artifact_location)


class RegisterConfig(dg.Config):
    alpha: float = Field(0.05, description="Significance level of the paired bootstrap against the champion.")
    n_boot: int = Field(1000, ge=100)
    min_auc: float = Field(0.55, description="Absolute floor: test AUC a champion must reach.")
    max_ece: float = Field(0.15, description="Absolute floor: raw test ECE a champion may not exceed (the evaluation "
                                             "gate already judges ECE net of sampling noise).")
    min_improvement: float = Field(0.0, ge=0, description="Brier improvement required on top of significance.")
    auto_promote: bool = True
    seed: int = 0




@dg.asset(
    partitions_def=tenant_week, group_name="registry", kinds={"mlflow"}, owners=OWNERS, code_version="1",
    tags={"domain": "risk", "family": "risk"}, pool=REGISTRY_POOL,
    # read only when the champion pins other feature versions than this run's examples (its features are
    # recomputed from the history then); otherwise the windows are never read (a LazyWindow from the IO manager)
    ins={"risk_snapshots": window_in(lazy=True), "activity_events": window_in(lazy=True)},
    check_specs=gate_specs("registered_models", ("registered_models_promotion",)),
    description="The risk model + calibrator registered in MLflow as riskml.<tenant>.risk (XGBoost JSON, "
                "checksummed), alias `challenger`; promoted to `champion` only when every gate passed and it is "
                "significantly better than the champion on the same real test rows.",
)
@checks_after_materialization
def registered_models(context: dg.AssetExecutionContext, config: RegisterConfig, riskml: RiskmlSettings,
                      model_registry: RegistryResource, risk_model: dict, risk_calibrator: dict,
                      risk_evaluation: dict, dataset_splits: Frame, feature_manifest: dict,
                      risk_snapshots, activity_events):
    tenant, week = split_key(context)
    reg = model_registry.get()
    test = dataset_splits[dataset_splits["split"] == "test"].reset_index(drop=True)
    # what this model was fitted and calibrated on: recorded with the version, excluded from comparisons
    fitted_on = dataset_splits["split"].isin(["train", "validation"])
    trained = dataset_splits.loc[fitted_on, "opportunity_id"].astype(str).unique()

    def history():  # read on demand (a lazy window input)
        return concat(window_value(risk_snapshots))

    def acts():
        a = concat(window_value(activity_events))
        return a if len(a) else None

    # the drift reference: the feature rows the model was trained on (the train split already carries them;
    # nothing is recomputed), at most 5,000 rows
    reference = D.reference_from_train(dataset_splits, feature_manifest["features"])
    metrics = {k: risk_evaluation["calibrated"][k] for k in ("auc", "brier", "ece", "log_loss", "f1")}
    metrics["brier_skill"] = risk_evaluation["brier_skill"]
    gates = dict(risk_evaluation.get("gates", {}))
    kept = risk_evaluation.get("kept_model")  # the baseline variant when the ablation refused augmentation
    artifact, calibrator = (kept["model"], kept["calibrator"]) if kept else (risk_model, risk_calibrator)
    if kept:
        context.log.info("registering the baseline variant kept by risk_evaluation (augmentation refused)")
    chosen = risk_evaluation.get("champion_model")  # the evaluation chose another candidate (crm_score, pooled)
    source = risk_evaluation.get("champion_source") or "tenant_model"
    if chosen:
        artifact, calibrator = chosen["model"], chosen["calibrator"]
        context.log.info(f"registering the evaluation's chosen candidate: {source} "
                         f"({(risk_evaluation.get('candidates') or {}).get('reason', '')})")
    out = register_risk_candidate(
        reg, tenant, artifact=artifact, calibrator=calibrator, manifest=feature_manifest["features"],
        test=test, metrics=metrics, report_md=f"Risk model {tenant}|{week}", gates_passed=gates,
        floors={"min_auc": config.min_auc, "max_ece": config.max_ece}, snapshots_history=history,
        activities=acts, reference_data=reference, alpha=config.alpha,
        n_boot=config.n_boot, seed=config.seed, min_improvement=config.min_improvement,
        auto_promote=config.auto_promote, context={"partition": f"{tenant}|{week}", "dagster_run": context.run.run_id},
        trained_opportunities=trained, run_id=artifact.get("mlflow_run_id"),  # the version links to its training run
        champion_source=source, candidates={k: v for k, v in (risk_evaluation.get("candidates") or {}).items()
                                            if k != "rule"},
    )
    d = out["decision"]
    context.log.info(f"registered {reg.model_name(tenant, 'risk')} v{out['version']}: should_deploy="
                     f"{d['should_deploy']} ({d['reason']}); champion {out['champion_before']} -> {out['champion_after']}")
    checks = gate_results(riskml.gates(), {"registered_models_promotion": int(bool(d["should_deploy"]))},
                          log=context.log, extra={"registered_models_promotion": {"reason": d["reason"]}})
    from .model_card import registration_card  # the version's model card: UI metadata + MLflow artifact/description

    card_md, card = registration_card(
        context, reg, tenant=tenant, week=week, version=out["version"], dataset_splits=dataset_splits,
        feature_manifest=feature_manifest, artifact=artifact, risk_evaluation=risk_evaluation, decision=d,
        promotion_passed=bool(checks[0].passed), promotion_action=riskml.gates()["registered_models_promotion"].action)
    value = {"tenant": tenant, "week": week, "model_name": reg.model_name(tenant, "risk"), "version": out["version"],
             "decision": d, "champion_before": out["champion_before"], "champion_after": out["champion_after"],
             "champion_source": source}
    return dg.MaterializeResult(value=value, check_results=checks, metadata={
        "model_name": value["model_name"], "version": str(out["version"]), "should_deploy": bool(d["should_deploy"]),
        "champion_source": source, "algorithm": str(artifact.get("algorithm", "xgboost")),
        "reason": d["reason"], "p_value": float(d["p_value"]) if d.get("p_value") is not None else -1.0,
        **({"comparison_opportunities": int(d["comparison"]["opportunities"]),
            "comparison_rows": int(d["comparison"]["rows"]),
            "comparison_excluded_opportunities": int(d["comparison"]["excluded_opportunities"])}
           if d.get("comparison") else {}),
        "champion_before": str(out["champion_before"]), "champion_after": str(out["champion_after"]),
        "decision": dg.MetadataValue.md(out.get("report_md", "")[-4000:]),
        "model_card": dg.MetadataValue.md(card_md), "model_card_attached": bool(card["attached"]),
        **_mlflow_links(reg, model_registry.ui_url, value["model_name"], out["version"]),
    })


def _mlflow_links(reg: ModelRegistry, ui_url: Optional[str], name: str, version) -> dict:
    """Links to the registered version and the run that holds its files, in the MLflow UI of the store."""
    base = reg.ui_url(ui_url)
    links = {"mlflow_model_version": dg.MetadataValue.url(mlflow_model_version_url(base, name, version))}
    try:
        mv = reg.client.get_model_version(name, str(version))
        run = reg.client.get_run(mv.run_id)
        links["mlflow_run_id"] = mv.run_id
        links["mlflow_run"] = dg.MetadataValue.url(mlflow_run_url(base, run.info.experiment_id, mv.run_id))
        links["model_uri"] = f"models:/{name}/{version}"
    except Exception:  # noqa: BLE001 - a link is never worth failing the step
        pass
    return links


class ScoreConfig(dg.Config):
    challenger_share: float = Field(0.0, ge=0, le=1, description="Share of opportunities scored by the challenger "
                                                                 "(stable hash of the opportunity id).")
    drift_min_rows: int = Field(100, description="Below this many rows PSI is reported but not judged.")


@dg.asset(
    partitions_def=tenant_week, group_name="scoring", kinds={"xgboost", "parquet"}, owners=OWNERS, code_version="1",
    tags={"domain": "risk", "family": "risk"}, deps=[registered_models],
    # read as polars frames (no pandas round trip): risk_scores stays in polars until the model needs numpy
    ins={"risk_snapshots": window_in(polars=True), "activity_events": window_in(polars=True)},
    check_specs=gate_specs("risk_scores", ("risk_scores_drift", "risk_scores_drift_warn")),
    description="Calibrated P(lost) for the week's open opportunities from the tenant's champion, computed with "
                "exactly the champion's pinned feature versions (a mismatch fails loudly); PSI drift vs the "
                "champion's training data.",
)
@checks_after_materialization
def risk_scores(context: dg.AssetExecutionContext, config: ScoreConfig, riskml: RiskmlSettings,
                model_registry: RegistryResource, risk_snapshots, activity_events):
    tenant, week = split_key(context)
    reg = model_registry.get()
    if reg.champion_version(tenant, "risk") is None:
        raise dg.Failure(description=f"no champion risk model for tenant {tenant!r}: train and register one first "
                                     f"(train_job + registered_models)")
    champ = reg.load(tenant, "risk", alias="champion")
    chall = None
    if config.challenger_share > 0 and reg.alias_version(tenant, "risk", "challenger") not in (None, champ["version"]):
        chall = reg.load(tenant, "risk", alias="challenger")
    history, acts = concat_frames(risk_snapshots), concat_frames(activity_events)
    start, end = week_bounds(week)
    latest = rows_between(history, start, end)
    if len(latest) == 0:
        raise dg.Failure(description=f"no snapshots of {tenant} in week {week} to score")
    # features computed once (from the scored opportunities' history): scored, and compared with the
    # champion's training data for drift
    scores, new = score_with_features(history, acts if len(acts) else None, latest, champ, chall,
                                      config.challenger_share)
    used = [f for f in champ["artifact"]["features"] if f in new.columns]
    kinds = {f: champ["artifact"]["feature_kinds"][f] for f in used}
    gates = riskml.gates()
    fail_at, warn_at = gates["risk_scores_drift"].threshold, gates["risk_scores_drift_warn"].threshold
    ref = champ.get("reference")
    if ref is not None and len(ref):
        report = D.drift_report(ref, new, used, kinds, warn=warn_at, fail=fail_at, min_rows=config.drift_min_rows)
        summary = D.drift_summary(report)
    else:
        report, summary = pd.DataFrame(columns=["feature", "psi", "status"]), {"max_psi": 0.0, "n_fail": 0}
    max_psi = float(summary.get("max_psi") or 0.0)
    # a week with fewer than drift_min_rows scored rows can warn but not fail (PSI is mostly noise there)
    judged = max_psi if summary.get("n_fail") else min(max_psi, fail_at)
    checks = gate_results(gates, {"risk_scores_drift": judged, "risk_scores_drift_warn": max_psi},
                          log=context.log, extra={"risk_scores_drift": {"psi": dg.MetadataValue.md(md_table(report, 40))}})
    context.log.info(f"scored {len(scores)} open opportunities of {tenant}|{week} with "
                     f"{champ['name']} v{champ['version']}; max PSI {max_psi:.3f}")
    return dg.MaterializeResult(value=scores, check_results=checks, metadata={
        **frame_metadata(scores), "champion_version": str(champ["version"]),
        "challenger_version": str(chall["version"]) if chall else "-",
        "mean_p_lost": float(scores["p_lost"].mean()), "max_psi": max_psi,
        "drift": dg.MetadataValue.md(md_table(report, 40)),
        "by_model": dg.MetadataValue.json(scores["model_alias"].value_counts().to_dict()),
    })


class RollbackConfig(dg.Config):
    tenant: str
    family: str = "risk"
    reason: str = Field(..., description="Why: recorded in the registry's promotion log.")
    further: bool = Field(False, description="Go back one more champion when the current one was already rolled back.")


@dg.op(pool=REGISTRY_POOL)
def rollback_champion(context: dg.OpExecutionContext, config: RollbackConfig, model_registry: RegistryResource) -> dict:
    from ..core.contract import validate_tenant

    res = model_registry.get().rollback(validate_tenant(config.tenant), config.family, config.reason,
                                        further=config.further)
    context.log.info(f"rollback {config.tenant}/{config.family}: {res}")
    return res


@dg.job(description="Move a tenant's `champion` back to its previous champion, with a reason (safe to run twice).")
def rollback_job():
    rollback_champion()


registry_assets = [registered_models, risk_scores]
