"""The risk family: XGBoost P(lost) model, its calibrator and the evaluation report."""

import json
from dataclasses import replace
from typing import Literal, Optional

import dagster as dg
from ..core.lazy import lazy_module

np = lazy_module("numpy")
pd = lazy_module("pandas")

from pydantic import Field

from ..checks import checks_after_materialization, gate_results, gate_specs
from ..core import metrics as M
from ..core import plots
from ..core.evaluation import (CANDIDATE_SOURCES, CandidateUnavailable, apply_calibrator, candidates_markdown,
                               crm_score_candidate, evaluate_risk, fit_risk_calibrator, pooled_candidate,
                               report_markdown)
from ..core.promotion import candidate_summary, evaluate_candidates
from ..core.features import LABEL
from ..core.ablation import ablation_markdown, choose_variant, run_ablation
from ..core.training import (RISK_ALGORITHMS, SelectionSettings, XGBParams, predict_raw, select_and_train,
                             train_xgb_classifier)
from ..compute import AzureMLPipesResource, DaskResource, train_on_azureml
from ..core.distributed import choose_execution, train_xgb_classifier_dask
from ..partitions import split_key, tenant_week
from ..resources import MlflowTracking, RiskmlSettings
from .common import OWNERS, Frame, md_table

_common = dict(partitions_def=tenant_week, group_name="risk", owners=OWNERS, tags={"domain": "risk", "family": "risk"},
               code_version="1")


def _split(df: "pd.DataFrame", name: str) -> "pd.DataFrame":
    return df[df["split"] == name].reset_index(drop=True)


class RiskModelConfig(dg.Config):
    max_depth: int = Field(4, ge=1, le=12)
    learning_rate: float = Field(0.05, gt=0, le=1)
    n_estimators: int = Field(800, ge=1, description="Upper bound; early stopping on validation picks the number.")
    early_stopping_rounds: int = 50
    min_child_weight: float = 5.0
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    n_threads: int = Field(2, ge=1, description="XGBoost threads for this step (cores / concurrent steps).")
    seed: int = 0
    execution: Literal["auto", "local", "dask", "azureml"] = Field(
        "auto", description="Where to train: local = this process; dask = xgboost.dask on the `dask` resource's "
                            "cluster; azureml = an Azure ML job via Pipes (`azureml` resource); auto = dask when the "
                            "train split has at least `dask.min_rows` rows (0 = never), else local. Dask and Azure ML "
                            "train the fixed XGBoost params (no selection).")
    selection: bool = Field(
        True, description="Choose the algorithm (XGBoost, LightGBM, random forest) and its params by grouped, "
                          "time-ordered cross-validation (Optuna) against the fixed XGBoost params above; switch only "
                          "when the CV AUC gain exceeds its fold standard error. Off = the fixed XGBoost params.")
    selection_candidates: list[str] = Field(
        ["xgboost", "lightgbm", "random_forest"],
        description="Algorithms the selection may choose (some of xgboost, lightgbm, random_forest).")
    selection_trials: int = Field(5, ge=1, description="Optuna trials (the bound that makes the choice "
                                                       "deterministic by seed).")
    selection_timeout_seconds: float = Field(
        90.0, gt=0, description="Safety cap of the selection in CPU seconds of the step's process, all threads "
                                "(checked between trials and folds; CPU time, so other work on a shared machine does "
                                "not cut the trials short); when it stops the selection before selection_trials, the "
                                "choice depends on the machine's speed (metadata: selection_stopped_by).")
    selection_folds: int = Field(3, ge=2, description="Cross-validation folds (expanding windows in closing time).")
    selection_max_rows: int = Field(3000, ge=100, description="Cross-validate on at most this many train rows "
                                                              "(whole opportunities); the final fit uses all.")
    selection_min_opportunities: int = Field(
        200, ge=0, description="Skip the selection (fixed XGBoost params) below this many train opportunities: the "
                               "fold noise is then larger than any difference the selection could show.")


@dg.asset(**_common, kinds={"xgboost", "lightgbm", "mlflow"},
          check_specs=gate_specs("risk_model", ("risk_model_beats_base_rate", "risk_model_not_overfit")),
          description="Classifier of P(lost): the fixed XGBoost params, or the algorithm (XGBoost, LightGBM, random "
                      "forest) and params chosen by grouped time-ordered cross-validation when they beat it by more "
                      "than the fold noise; early stopping on validation; stored as JSON (XGBoost JSON, LightGBM "
                      "text, forest node arrays) with its pinned feature manifest; tracked as an MLflow run.")
@checks_after_materialization
def risk_model(context: dg.AssetExecutionContext, config: RiskModelConfig, riskml: RiskmlSettings,
               mlflow: MlflowTracking, balanced_train: Frame, dataset_splits: Frame,
               feature_manifest: dict, dask: DaskResource, azureml: AzureMLPipesResource):
    tenant, week = split_key(context)
    valid = _split(dataset_splits, "validation")
    train_real = _split(dataset_splits, "train")
    params = XGBParams(**config.model_dump(include=set(XGBParams.__dataclass_fields__)))
    execution, remote = choose_execution(config.execution, len(balanced_train), dask.min_rows), {}
    if execution == "dask":  # scale-out: same artifact format (core.distributed)
        with dask.get_client() as client:
            art = train_xgb_classifier_dask(balanced_train, valid, feature_manifest["features"], client, params,
                                            log=context.log.info)
    elif execution == "azureml":  # an Azure ML job via Pipes trains with the same core function (compute.py)
        art, remote = train_on_azureml(context, azureml, balanced_train, valid, feature_manifest["features"], params)
    elif config.selection:
        unknown = sorted(set(config.selection_candidates) - set(RISK_ALGORITHMS))
        if unknown or not config.selection_candidates:
            raise dg.Failure(description=f"risk_model config selection_candidates: unknown {unknown} or empty; "
                                         f"use some of {list(RISK_ALGORITHMS)}")
        art = select_and_train(balanced_train, valid, feature_manifest["features"], params, SelectionSettings(
            candidates=tuple(config.selection_candidates), n_trials=config.selection_trials,
            timeout_seconds=config.selection_timeout_seconds, n_folds=config.selection_folds,
            n_threads=config.n_threads, max_rows=config.selection_max_rows,
            min_opportunities=config.selection_min_opportunities), log=context.log.info)
    else:
        art = train_xgb_classifier(balanced_train, valid, feature_manifest["features"], params, log=context.log.info)
    if "selection" not in art:
        art["selection"] = {"enabled": False, "chosen": "xgboost", "switched": False,
                            "reason": (f"execution {execution}: XGBoost only, the selection is skipped"
                                       if execution != "local" else "selection is off in config: fixed XGBoost params")}
    sel = art["selection"]
    p_tr, p_va = predict_raw(art, train_real), predict_raw(art, valid)
    y_tr, y_va = train_real[LABEL].to_numpy(int), valid[LABEL].to_numpy(int)
    auc_tr, auc_va = M.roc_auc(y_tr, p_tr), M.roc_auc(y_va, p_va)
    auc_lo, auc_hi = M.grouped_bootstrap_ci(y_va, p_va, M.roc_auc, valid["opportunity_id"].to_numpy())
    art["metrics"] = {"auc_train": auc_tr, "auc_validation": auc_va, "auc_validation_ci_low": auc_lo,
                      "auc_validation_ci_high": auc_hi, "brier_validation_raw": M.brier(y_va, p_va),
                      "logloss_validation_raw": M.log_loss(y_va, p_va)}
    art["manifest_fingerprint"] = feature_manifest["fingerprint"]
    art["tenant"], art["week"] = tenant, week
    with mlflow.start_run(context, run_name=f"risk/{tenant}/{week}",
                          tags={"riskml.tenant": tenant, "riskml.week": week, "riskml.family": "risk",
                                "riskml.feature_fingerprint": feature_manifest["fingerprint"]}) as run:
        import mlflow as mlf

        algorithm = art.get("algorithm", "xgboost")
        mlf.log_params({**{k: v for k, v in art["params"].items() if k != "extra"}, "algorithm": algorithm,
                        "features": ",".join(art["features"]), "best_iteration": art["best_iteration"],
                        "train_rows": art["train_rows"], "selection": sel["enabled"]})
        mlf.log_metrics({**art["metrics"], **_selection_metrics(sel)})
        mlf.set_tags({"riskml.algorithm": algorithm, "riskml.selection": sel["reason"][:5000]})
        mlf.log_dict(feature_manifest, "feature_manifest.json")
        mlf.log_dict(sel, "selection.json")
        if "booster_json" in art:
            mlf.log_text(art["booster_json"], "model/xgboost_model.json")
        else:
            mlf.log_text(json.dumps(art["model"]), f"model/{algorithm}_model.json")
        art["mlflow_run_id"] = run.info.run_id
        importance_png = plots.feature_importance_plot(art["importance"])
        mlflow.log_images(run.info.run_id, {"plots/feature_importance.png": importance_png})
    checks = gate_results(riskml.gates(), {"risk_model_beats_base_rate": auc_lo,
                                           "risk_model_not_overfit": auc_tr - auc_va}, log=context.log)
    imp = pd.DataFrame(list(art["importance"].items()), columns=["feature", "share of gain"])
    return dg.MaterializeResult(value=art, check_results=checks, metadata={
        "auc_train": auc_tr, "auc_validation": auc_va, "auc_validation_ci_low": auc_lo, "best_iteration": art["best_iteration"],
        "train_rows": art["train_rows"], "features": len(art["features"]),
        "train_seconds": round(art["train_seconds"], 2), "execution": execution,
        "algorithm": art.get("algorithm", "xgboost"), "selection": dg.MetadataValue.md(_selection_markdown(sel)),
        **({"selection_stopped_by": sel["stopped_by"], "selection_seconds": round(sel["seconds"], 2)}
           if sel["enabled"] else {}),
        **{f"remote_{k}".replace(" ", "_").lower(): v for k, v in remote.items() if isinstance(v, (str, int, float))},
        "mlflow_run_id": art["mlflow_run_id"], "mlflow_run": dg.MetadataValue.url(mlflow.run_url(art["mlflow_run_id"])),
        "feature_importance": dg.MetadataValue.md(
            plots.png_markdown(importance_png, "feature importance") + "\n\n" + md_table(imp, 30, ".3f")),
    })


def _selection_metrics(sel: dict) -> dict:
    """MLflow metrics of the selection: CV AUC and validation AUC/Brier of the fixed default and the chosen model."""
    if not sel.get("enabled"):
        return {}
    out = {"selection_cv_auc_default": sel["default"]["cv_auc_mean"], "selection_cv_auc_best": sel["best_trial"]["cv_auc_mean"],
           "selection_cv_auc_difference": sel["cv_difference_mean"], "selection_cv_auc_difference_se": sel["cv_difference_se"],
           "selection_switched": float(sel["switched"]), "selection_seconds": sel["seconds"],
           "selection_trials_complete": sel["n_complete"], "selection_trials_pruned": sel["n_pruned"]}
    for who, v in (("default", sel["default"]["validation"]), ("chosen", sel["chosen_validation"])):
        out[f"selection_validation_auc_{who}"], out[f"selection_validation_brier_{who}"] = v["auc"], v["brier"]
    return {k: float(v) for k, v in out.items() if v is not None and np.isfinite(float(v))}


def _selection_markdown(sel: dict) -> str:
    """The chosen algorithm against the fixed default: CV AUC (mean ± std over the folds) and validation AUC/Brier."""
    if not sel.get("enabled"):
        return f"**Model selection skipped**: {sel['reason']}. Algorithm: xgboost (fixed params)."
    d, b = sel["default"], sel["best_trial"]
    rows = pd.DataFrame([
        {"model": "fixed default (xgboost)", "CV AUC": f"{d['cv_auc_mean']:.4f} ± {d['cv_auc_std']:.4f}",
         "validation AUC": f"{d['validation']['auc']:.4f}", "validation Brier": f"{d['validation']['brier']:.4f}"},
        {"model": f"best trial ({b['algorithm']})", "CV AUC": f"{b['cv_auc_mean']:.4f} ± {b['cv_auc_std']:.4f}",
         "validation AUC": f"{sel['chosen_validation']['auc']:.4f}" if sel["switched"] else "(not fitted)",
         "validation Brier": f"{sel['chosen_validation']['brier']:.4f}" if sel["switched"] else "(not fitted)"},
    ])
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sel["chosen_params"].items())
    return (f"**Chosen: {sel['chosen']}** — {sel['reason']}.\n\n" + md_table(rows) +
            f"\n\nParams: {params}\n\nBudget: {sel['n_trials']} trials (seed {sel['seed']}), cap "
            f"{sel['timeout_seconds']}s; {sel['n_complete']} complete / {sel['n_pruned']} pruned in "
            f"{sel['selection_seconds']:.1f}s, stopped by {sel['stopped_by']}; {sel['n_folds']} "
            f"{'time-ordered' if sel['time_ordered'] else 'grouped'} folds on {sel['cv_rows']} of "
            f"{sel['train_rows']} train rows.")


class RiskCalibratorConfig(dg.Config):
    method: Literal["auto", "platt", "isotonic", "none"] = Field(
        "auto", description="auto = the lower cross-validated Brier of Platt and isotonic on validation rows.")
    threshold: Optional[float] = Field(None, description="Fixed operating threshold; default: max F1 on validation.")
    seed: int = 0


@dg.asset(**_common, kinds={"scikitlearn"}, check_specs=gate_specs("risk_calibrator", ("risk_calibrator_ece",)),
          description="Platt or isotonic calibration of the risk model, fit on the real, unresampled validation rows.")
@checks_after_materialization
def risk_calibrator(context: dg.AssetExecutionContext, config: RiskCalibratorConfig, riskml: RiskmlSettings,
                    risk_model: dict, dataset_splits: Frame):
    valid = _split(dataset_splits, "validation")
    p_raw, y = predict_raw(risk_model, valid), valid[LABEL].to_numpy(int)
    cal = fit_risk_calibrator(p_raw, y, method=config.method, threshold=config.threshold, seed=config.seed,
                              groups=valid["opportunity_id"].to_numpy())
    v = cal["validation"]
    context.log.info(f"calibrator {cal['method']}: {cal['selection']['reason']}; validation ECE "
                     f"{v['ece_raw']:.4f} -> {v['ece_cv']:.4f} (cross-validated)")
    checks = gate_results(riskml.gates(), {"risk_calibrator_ece": max(0.0, v["ece_cv"] - v["ece_noise_floor"])},
                          log=context.log)
    return dg.MaterializeResult(value=cal, check_results=checks, metadata={
        "method": cal["method"], "threshold": cal["threshold"], **{k: float(x) for k, x in v.items()},
        "selection": dg.MetadataValue.json(cal["selection"]),
        "reliability_validation": dg.MetadataValue.md(plots.png_markdown(
            plots.reliability_diagram(y, {"raw": p_raw, "calibrated": apply_calibrator(cal, p_raw)}),
            "reliability on validation")),
    })


class RiskEvaluationConfig(dg.Config):
    refused_augmentation: Literal["keep_baseline", "block"] = Field(
        "keep_baseline",
        description="When the ablation refuses augmentation/balancing (see ablation_rule): keep_baseline = evaluate "
                    "and register the baseline variant (real train rows, no balancing) instead — a refusal because "
                    "the variant made Brier worse than the tolerance is reported as a WARN check; block = fail the "
                    "ablation gate at its configured severity, so nothing is registered for this partition.")
    ablation_rule: Literal["helps", "point", "ci"] = Field(
        "helps",
        description="helps = keep the augmented/balanced variant only when it helps on both Brier and AUC: the 90% "
                    "opportunity-bootstrap interval of its Brier difference to the baseline lies below 0, the AUC "
                    "difference is not significantly negative (its interval reaches 0) and the observed AUC loss is "
                    "at most auc_tolerance; point / ci = the older Brier-only rules (within the gate's tolerance).")
    auc_tolerance: float = Field(0.005, ge=0, description="Largest observed AUC loss the helps rule accepts.")
    champion_candidates: list[str] = Field(
        ["crm_score", "tenant_model", "pooled"],
        description="Which candidates compete for the champion (all scored on the same test opportunities): "
                    "crm_score = the CRM's own risk_score calibrated on the validation rows, tenant_model = the "
                    "tenant's trained model (always a candidate), pooled = the cross-tenant pooled model when "
                    "available. The simplest (crm_score < tenant_model < pooled) is chosen unless a more complex "
                    "one is significantly better on Brier (paired opportunity bootstrap at candidate_alpha).")
    choose_on: Literal["test", "validation"] = Field(
        "test", description="test = the pre-declared rule on the test rows (the held-out opportunities promotion "
                            "uses); validation = the same rule on out-of-fold calibrated validation predictions.")
    candidate_alpha: float = Field(0.05, gt=0, lt=1, description="Significance level of the candidate choice.")


def _kept_artifact(model: dict, risk_model: dict, feature_manifest: dict, tenant: str, week: str,
                   valid: "pd.DataFrame") -> dict:
    """The ablation's baseline model dressed like a ``risk_model`` artifact (same run, manifest, partition)."""
    art = dict(model)
    p_va = predict_raw(art, valid)
    y_va = valid[LABEL].to_numpy(int)
    art["metrics"] = {"auc_validation": M.roc_auc(y_va, p_va), "brier_validation_raw": M.brier(y_va, p_va)}
    art["manifest_fingerprint"] = feature_manifest["fingerprint"]
    art["tenant"], art["week"] = tenant, week
    art["mlflow_run_id"] = risk_model.get("mlflow_run_id")
    art["variant"] = "baseline (augmentation/balancing refused)"
    return art


@dg.asset(**_common, kinds={"python", "mlflow"},
          check_specs=gate_specs("risk_evaluation", ("risk_evaluation_ece", "risk_evaluation_beats_baselines",
                                                     "risk_evaluation_beats_crm_score",
                                                     "augmented_examples_ablation_brier")),
          description="Evaluation report on the test split: AUC, log-loss, Brier, ECE, precision/recall/F1 at the "
                      "operating threshold, MSE/MAE/RMSE/R2, baselines, feature importance, largest errors, "
                      "reliability diagram; the augmentation/balancing ablation and which variant was kept.")
@checks_after_materialization
def risk_evaluation(context: dg.AssetExecutionContext, config: RiskEvaluationConfig, riskml: RiskmlSettings,
                    mlflow: MlflowTracking, risk_model: dict, risk_calibrator: dict, dataset_splits: Frame,
                    balanced_train: Frame, feature_manifest: dict, pooled_risk_model: dict):
    tenant, week = split_key(context)
    test = _split(dataset_splits, "test")
    train = _split(dataset_splits, "train")
    gates = riskml.gates()
    ablation_gate = "augmented_examples_ablation_brier"
    # honest ablation first: whenever augmentation or balancing changed the train rows, the same model config
    # is trained on the real train rows alone and both are scored on the same real test rows
    changed = bool(balanced_train.get("is_synthetic", pd.Series(False)).fillna(False).astype(bool).any()
                   or balanced_train.get("resampled", pd.Series(False)).fillna(False).astype(bool).any())
    delta, decision, table, kept = 0.0, None, None, None
    model, calibrator = risk_model, risk_calibrator
    if changed:
        used = balanced_train.reset_index(drop=True)
        context.log.info("ablation: training the same model on the real train rows alone ...")
        table, models = run_ablation(
            dataset_splits, feature_manifest["features"], seed=risk_model["params"]["seed"],
            variants={"as trained": lambda train, manifest, seed: (used, {"augment": "as trained"})},
            like=risk_model, keep_models=True,  # retrains risk_model's algorithm and params (training.fit_like)
            log=context.log.info)
        decision = choose_variant(table, "as trained", tolerance=gates[ablation_gate].threshold,
                                  require=config.ablation_rule, auc_tolerance=config.auc_tolerance)
        delta = float(table.set_index("variant").loc["as trained", "brier"]
                      - table.set_index("variant").loc["baseline", "brier"])
        context.log.info(f"ablation: {decision['reason']}")
        if not decision["passed"] and config.refused_augmentation == "keep_baseline":
            base = models["baseline"]
            model = _kept_artifact(base["model"], risk_model, feature_manifest, tenant, week,
                                   _split(dataset_splits, "validation"))
            calibrator = base["calibrator"]
            kept = {"variant": "baseline", "model": model, "calibrator": calibrator}
            context.log.warning("augmentation/balancing refused: the baseline variant (real train rows, no "
                                "balancing) is evaluated and registered instead")
    # champion candidates on the same test opportunities: the simplest unless a more complex one is
    # significantly better (core.promotion.choose_candidate)
    valid = _split(dataset_splits, "validation")
    seed = int(risk_model["params"].get("seed", 0))
    unknown = sorted(set(config.champion_candidates) - set(CANDIDATE_SOURCES))
    if unknown:
        raise dg.Failure(description=f"risk_evaluation config champion_candidates: unknown {unknown}; "
                                     f"known: {list(CANDIDATE_SOURCES)}")
    candidates = {"tenant_model": {"available": True, "reason": "", "model": model, "calibrator": calibrator}}
    if "crm_score" in config.champion_candidates:
        try:
            crm = crm_score_candidate(valid, feature_manifest["features"], seed=seed, tenant=tenant, week=week,
                                      manifest_fingerprint=feature_manifest["fingerprint"],
                                      mlflow_run_id=risk_model.get("mlflow_run_id"))
            candidates["crm_score"] = {"available": True, "reason": "", **crm}
        except CandidateUnavailable as exc:
            candidates["crm_score"] = {"available": False, "reason": str(exc)}
    if "pooled" in config.champion_candidates:
        candidates["pooled"] = pooled_candidate(pooled_risk_model, tenant)
    candidates, choice, _ = evaluate_candidates(candidates, test, valid, choose_on=config.choose_on,
                                                alpha=config.candidate_alpha, seed=seed)
    source = choice["chosen"]
    context.log.info(f"champion candidates: chosen {source} ({choice['chosen_on']}): {choice['reason']}")
    if source != "tenant_model":
        model, calibrator = candidates[source]["model"], candidates[source]["calibrator"]
    p_raw = predict_raw(model, test)
    p_cal = apply_calibrator(calibrator, p_raw)
    report = evaluate_risk(test, p_raw, p_cal, threshold=calibrator["threshold"],
                           train_base_rate=float(train[LABEL].mean()), importance=model["importance"],
                           seed=int(risk_model["params"].get("seed", 0)))
    report["kept_variant"] = kept["variant"] if kept else "as trained"
    if decision is None:
        report["kept_variant_reason"] = ("no augmentation or balancing changed the train rows (balancing is off by "
                                         "default): the model is trained on the real train rows")
    else:
        report["kept_variant_reason"] = decision["reason"]
    report["kept_variant_rule"] = config.ablation_rule
    report["champion_source"] = source
    report["champion_algorithm"] = model.get("algorithm", "xgboost")
    report["candidates"] = candidate_summary(candidates, choice)
    if source != "tenant_model":
        report["champion_model"] = {"source": source, "model": model, "calibrator": calibrator}
    y = test[LABEL].to_numpy(int)
    curves = {"calibrated model": p_cal, "uncalibrated model": p_raw}
    if report["baseline_risk_score"]:
        curves["CRM risk_score"] = test["baseline_risk_score"].to_numpy(float).clip(0, 1)
    title = f"Risk model evaluation — {tenant} | {week}"
    if kept:
        title += " — baseline variant kept (augmentation refused)"
    title += f" — champion source: {source}"
    # the same PNGs go into the report and, as image files, into the training run (evaluation/*.png)
    images = {"evaluation/reliability_diagram.png": plots.reliability_diagram(y, curves),
              "evaluation/feature_importance.png": plots.feature_importance_plot(model["importance"])}
    md = report_markdown(report, title, {
        "Reliability diagram (test split)": plots.png_markdown(images["evaluation/reliability_diagram.png"],
                                                               "reliability diagram"),
        "Feature importance": plots.png_markdown(images["evaluation/feature_importance.png"],
                                                 "feature importance"),
    })
    if table is not None:
        report["ablation"] = {"table": table.to_dict(orient="records"), "decision": decision,
                              "mode": config.refused_augmentation, "rule": config.ablation_rule}
        md += "\n" + ablation_markdown(table, decision)
        if kept:
            md += ("\n**Registered variant: baseline.** The model and calibrator evaluated above are the "
                   "ablation's baseline (real train rows, no balancing); `risk_model` keeps the refused "
                   "candidate for inspection.\n")
    else:
        md += "\n## Augmentation ablation\nNo augmentation or balancing changed the train rows: nothing to ablate.\n"
    md += "\n" + candidates_markdown(candidates, choice)
    c = report["calibrated"]
    run_gates = dict(gates)
    if kept:  # the refusal is visible (WARN) but no longer blocks: the kept model is the baseline
        run_gates[ablation_gate] = replace(gates[ablation_gate], action="warn")
    crm_skill = report.get("brier_skill_vs_crm")
    values = {"risk_evaluation_ece": c["ece_excess"], "risk_evaluation_beats_baselines": report["brier_skill"],
              ablation_gate: delta}
    if crm_skill is not None:
        values["risk_evaluation_beats_crm_score"] = crm_skill
    checks = gate_results(run_gates, values, log=context.log,
                          extra={ablation_gate: {"kept_variant": kept["variant"] if kept else
                                                 (decision["kept"] if decision else "as trained"),
                                                 "reason": report["kept_variant_reason"]}})
    if decision is not None and not decision["passed"]:
        # any refusal (Brier worse than the tolerance, or simply not shown to help on Brier and AUC) is visible:
        # WARN when the baseline is kept instead, the gate's configured severity in block mode (stops registration)
        severity = (dg.AssetCheckSeverity.ERROR if run_gates[ablation_gate].action == "fail"
                    else dg.AssetCheckSeverity.WARN)
        checks = [r if r.check_name != ablation_gate else dg.AssetCheckResult(
            check_name=ablation_gate, passed=False, metadata=dict(r.metadata), severity=severity,
            description=f"{ablation_gate}: variant refused, {'baseline kept' if kept else 'blocked'} "
                        f"({decision['reason']})") for r in checks]
    if crm_skill is None:  # the tenant's CRM sends no risk_score: nothing to beat
        checks.append(dg.AssetCheckResult(check_name="risk_evaluation_beats_crm_score", passed=True,
                                          severity=dg.AssetCheckSeverity.WARN,
                                          description="skipped: the snapshots carry no CRM risk_score"))
    # blocking gates decide (promotion needs all of them); warnings are reported, never block
    report["gates"] = {r.check_name: bool(r.passed) for r in checks if r.severity == dg.AssetCheckSeverity.ERROR}
    report["warnings"] = {r.check_name: bool(r.passed) for r in checks if r.severity != dg.AssetCheckSeverity.ERROR}
    report["gates_passed"] = all(report["gates"].values())
    report["tenant"], report["week"] = tenant, week
    report["mlflow_run_id"] = risk_model.get("mlflow_run_id")
    if kept and source == "tenant_model":
        report["kept_model"] = {"model": kept["model"], "calibrator": kept["calibrator"]}
    if report["mlflow_run_id"]:
        mlflow.log_to_run(report["mlflow_run_id"],
                          metrics={f"test_{k}": c[k] for k in ("auc", "brier", "ece", "log_loss", "f1", "precision", "recall")}
                          | {"test_brier_skill": report["brier_skill"],
                             "test_auc_ci_low": report["auc_ci"][0], "test_auc_ci_high": report["auc_ci"][1],
                             "test_brier_ci_low": report["brier_ci"][0], "test_brier_ci_high": report["brier_ci"][1]},
                          tags={"riskml.gates_passed": report["gates_passed"], "riskml.kept_variant": report["kept_variant"],
                                "riskml.champion_source": source},
                          texts={"evaluation_report.md": md,
                                 "evaluation_report.json": json.dumps({k: v for k, v in report.items()
                                                                       if k not in ("kept_model", "champion_model")},
                                                                      default=str),
                                 **({f"kept_model/{kept['model'].get('algorithm', 'xgboost')}_model.json":
                                       kept["model"].get("booster_json") or json.dumps(kept["model"].get("model"))}
                                    if kept else {})},
                          images=images)
    context.log.info(f"risk_evaluation {tenant}|{week}: AUC {c['auc']:.4f} (90% CI {report['auc_ci'][0]:.4f}-"
                     f"{report['auc_ci'][1]:.4f}), Brier {c['brier']:.4f} ({report['brier_ci'][0]:.4f}-"
                     f"{report['brier_ci'][1]:.4f}), "
                     f"ECE {c['ece']:.4f}, kept {report['kept_variant']}, champion source {source}, "
                     f"gates passed: {report['gates_passed']}")
    return dg.MaterializeResult(value=report, check_results=checks, metadata={
        "report": dg.MetadataValue.md(md),
        "kept_variant": report["kept_variant"], "kept_variant_reason": report["kept_variant_reason"],
        "champion_source": source, "champion_algorithm": report["champion_algorithm"],
        "champion_choice": choice["reason"],
        "auc_ci_low": report["auc_ci"][0], "auc_ci_high": report["auc_ci"][1],
        "brier_ci_low": report["brier_ci"][0], "brier_ci_high": report["brier_ci"][1], "ci_level": report["ci_level"],
        "auc": c["auc"], "brier": c["brier"], "ece": c["ece"], "ece_noise_floor": c["ece_noise_floor"], "log_loss": c["log_loss"], "f1": c["f1"],
        "precision": c["precision"], "recall": c["recall"], "brier_skill": report["brier_skill"],
        "test_rows": report["rows"],
        **({"mlflow_run": dg.MetadataValue.url(mlflow.run_url(report["mlflow_run_id"]))} if report["mlflow_run_id"] else {}),
    })


risk_assets = [risk_model, risk_calibrator, risk_evaluation]
