"""Revenue forecasting and action ranking: one factory builds `<family>_model` + `<family>_evaluation`
for every family; a family is its config and the pure functions in ``core.families``."""
import json
from typing import Any, Callable

import dagster as dg
from ..core.lazy import lazy_module

np = lazy_module("numpy")
pd = lazy_module("pandas")

from pydantic import Field

from ..checks import checks_after_materialization, check_spec
from ..core import families as FAM
from ..core import forecast as FC
from ..core import plots
from ..core import ranking as RK
from ..io_manager import _json_default as _json
from ..partitions import split_key, tenant_week, window_in
from ..resources import MlflowTracking, RiskmlSettings
from .common import OWNERS, concat, md_table



class FamilyConfig(dg.Config):
    algorithm: str = Field("auto", description="'auto' = Optuna selection among the candidates by grouped CV; "
                                               "or a fixed candidate (xgboost, lightgbm, random_forest).")
    sampler: str = Field("tpe", description="tpe (Bayesian), random or grid.")
    n_trials: int = Field(20, ge=1, description="Selection budget in trials ...")
    timeout_seconds: float = Field(300.0, gt=0, description="... and in seconds (whichever comes first).")
    n_folds: int = Field(3, ge=2)
    n_threads: int = Field(2, ge=1)
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict, description="Family options, e.g. forecast "
                                    "{'mode': 'two_head'} or ranker {'objective': 'rank:ndcg'}.")

    def family_config(self) -> dict:
        return {"algorithm": self.algorithm, "sampler": self.sampler, "n_trials": self.n_trials,
                "timeout_seconds": self.timeout_seconds, "n_folds": self.n_folds, "n_threads": self.n_threads,
                "seed": self.seed, "options": dict(self.options)}


def _forecast_rows(dataset_splits: "pd.DataFrame", feature_manifest: dict, **_) -> tuple["pd.DataFrame", dict]:
    real = dataset_splits
    if "is_synthetic" in real.columns:
        real = real[~real["is_synthetic"].fillna(False).astype(bool)]
    return FC.build_forecast_examples(real.reset_index(drop=True)), {"manifest": feature_manifest["features"]}


def _ranker_rows(recommendation_interactions, risk_snapshots, activity_events, feature_manifest: dict,
                 week: str = "", **_) -> tuple["pd.DataFrame", dict]:
    inter = concat(recommendation_interactions)
    if len(inter) == 0:
        raise dg.Failure(description="no recommendation feedback (interactions files) in the window: the action "
                                     "ranker needs interactions-<date> files in the tenant's incoming folder")
    acts = concat(activity_events)
    ex, info = RK.build_ranking_examples(inter, concat(risk_snapshots), acts if len(acts) else None,
                                         feature_manifest["features"])
    ex = RK.split_ranking_examples(ex)
    return ex, {"features": info["features"], "feature_kinds": info["feature_kinds"]}


FAMILY_INPUTS: dict[str, tuple[dict, Callable]] = {
    "revenue_forecast": ({"dataset_splits": dg.AssetIn(), "feature_manifest": dg.AssetIn()}, _forecast_rows),
    "action_ranker": ({"recommendation_interactions": window_in(),
                       "risk_snapshots": window_in(), "activity_events": window_in(),
                       "feature_manifest": dg.AssetIn()}, _ranker_rows),
}


def _selection_md(sel: dict | None) -> str:
    if not sel:
        return "_fixed algorithm: no selection_"
    trials = pd.DataFrame(sel.get("trials", []))
    keep = [c for c in ("number", "candidate", "value", "cv_mean", "cv_std", "state", "seconds") if c in trials.columns]
    head = (f"**chosen: {sel.get('best_candidate')}** — CV {sel.get('cv_mean', float('nan')):.4f} ± "
            f"{sel.get('cv_std', float('nan')):.4f}; stopped by {sel.get('stopped_by')} after "
            f"{len(trials)} trials ({sel.get('seconds', 0):.1f}s)\n\n")
    return head + md_table(trials[keep] if keep else trials, 40)


def build_family_assets(family: str) -> list[dg.AssetsDefinition]:
    spec = FAM.get_family(family)
    ins, rows_fn = FAMILY_INPUTS[family]
    gate_names = tuple(g.name for g in spec.gates)

    @dg.asset(name=f"{family}_model", partitions_def=tenant_week, group_name=family, owners=OWNERS,
              kinds={"xgboost", "optuna", "mlflow"}, tags={"domain": "risk", "family": family}, code_version="1",
              ins=ins, description=f"{spec.description} Algorithm and hyper-parameters chosen by Optuna with "
                                   f"cross-validation grouped by opportunity (budget in trials and seconds).")
    def _model(context: dg.AssetExecutionContext, config: FamilyConfig, mlflow: MlflowTracking, **inputs):
        tenant, week = split_key(context)
        rows, ctx = rows_fn(week=week, **inputs)
        train, valid = rows[rows["split"] == "train"], rows[rows["split"] == "validation"]
        context.log.info(f"{family}: selecting among {list((FAM.resolve_config(family)['candidates'] or {}))} on "
                         f"{len(train)} train rows (budget {config.n_trials} trials / {config.timeout_seconds:.0f}s)")
        art = FAM.train_family(family, train, valid, ctx, config.family_config())
        art["tenant"], art["week"] = tenant, week
        sel = art.get("selection") or {}
        with mlflow.start_run(context, run_name=f"{family}/{tenant}/{week}",
                              tags={"riskml.tenant": tenant, "riskml.week": week, "riskml.family": family}) as run:
            import mlflow as mlf

            mlf.log_params({"algorithm": sel.get("best_candidate", config.algorithm),
                            **{f"param.{k}": v for k, v in (sel.get("best_params") or {}).items()}})
            if sel:
                mlf.log_metrics({"cv_mean": sel.get("cv_mean"), "cv_std": sel.get("cv_std")})
                mlf.log_dict(sel, "selection.json")
            art["mlflow_run_id"] = run.info.run_id
        return dg.MaterializeResult(value=json.loads(json.dumps(art, default=_json)), metadata={
            "algorithm": str(sel.get("best_candidate", config.algorithm)),
            "cv_mean": float(sel.get("cv_mean", float("nan"))) if sel else -1.0,
            "cv_std": float(sel.get("cv_std", float("nan"))) if sel else -1.0,
            "best_params": dg.MetadataValue.json(sel.get("best_params") or {}),
            "selection": dg.MetadataValue.md(_selection_md(sel)),
            "fit_check": dg.MetadataValue.json(art.get("fit_check") or {}),
            "train_rows": int(len(train)), "mlflow_run_id": art["mlflow_run_id"],
        })

    eval_ins = {**ins, f"{family}_model": dg.AssetIn()}

    @dg.asset(name=f"{family}_evaluation", partitions_def=tenant_week, group_name=family, owners=OWNERS,
              kinds={"python"}, tags={"domain": "risk", "family": family}, code_version="1", ins=eval_ins,
              check_specs=[check_spec(g.name, f"{family}_evaluation", description=  # partitioned like the asset
                                      f"{g.description} (default {g.metric} {g.op} {g.threshold:g}, {g.action})")
                           for g in spec.gates],
              description=f"Evaluation of {family} on its real test split against its baseline, with its gates.")
    @checks_after_materialization
    def _evaluation(context: dg.AssetExecutionContext, riskml: RiskmlSettings, mlflow: MlflowTracking, **inputs):
        tenant, week = split_key(context)
        model = inputs.pop(f"{family}_model")
        rows, ctx = rows_fn(week=week, **inputs)
        test = rows[rows["split"] == "test"]
        overrides = {n: {k: getattr(g, k) for k in ("threshold", "action")}
                     for n, g in riskml.gates().items() if n in gate_names}
        rep = FAM.evaluate_family(family, test, model, ctx, gate_overrides=overrides)
        checks = []
        for name, g in rep["gates"].items():
            sev = dg.AssetCheckSeverity.ERROR if g["action"] == "fail" else dg.AssetCheckSeverity.WARN
            passed = True if g.get("skipped") else bool(g["passed"])
            checks.append(dg.AssetCheckResult(check_name=name, passed=passed, severity=sev,
                                              description=g.get("description") or "skipped: metric not available",
                                              metadata={"value": float(g["value"]) if g["value"] is not None else -1.0,
                                                        "threshold": float(g["threshold"])}))
        md, meta = _report(family, rep, test, model)
        if model.get("mlflow_run_id"):
            flat = {k: v for k, v in rep.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            mlflow.log_to_run(model["mlflow_run_id"], metrics={f"test_{k}": v for k, v in flat.items()},
                              texts={"evaluation_report.md": md})
        context.log.info(f"{family} {tenant}|{week}: primary {rep['primary_metric']}; blocking failures "
                         f"{rep['blocking_failures']}")
        value = json.loads(json.dumps({k: v for k, v in rep.items()}, default=_json))
        return dg.MaterializeResult(value=value, check_results=checks, metadata={"report": dg.MetadataValue.md(md),
                                                                                 **meta})

    return [_model, _evaluation]


def _report(family: str, rep: dict, test: "pd.DataFrame", model: dict) -> tuple[str, dict]:
    flat = {k: v for k, v in rep.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    lines = [f"# {family} evaluation", "", f"Test rows: {len(test)}", "", "## Metrics",
             pd.DataFrame(sorted(flat.items()), columns=["metric", "value"]).to_markdown(index=False, floatfmt=".4f")]
    for side in ("model", "baseline", "oracle"):
        if isinstance(rep.get(side), dict):
            sub = {k: v for k, v in rep[side].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            lines += ["", f"### {side}", pd.DataFrame(sorted(sub.items()), columns=["metric", "value"])
                      .to_markdown(index=False, floatfmt=".4f")]
    if family == "revenue_forecast" and len(test):
        Q = FC.predict_quantiles(model, test)
        order = np.argsort(Q[:, 1])
        png = plots.fan_chart(np.arange(len(order)), Q[order, 0], Q[order, 1], Q[order, 2],
                              actual=test[FC.TARGET].to_numpy(float)[order],
                              title="P10-P90 per opportunity-snapshot (sorted by P50)")
        lines += ["", "## Fan chart", plots.png_markdown(png, "forecast fan chart")]
    lines += ["", "## Gates", pd.DataFrame([{"gate": n, **{k: g.get(k) for k in ("metric", "value", "op", "threshold",
                                                                                   "action", "passed")}}
                                           for n, g in rep["gates"].items()]).to_markdown(index=False)]
    meta = {k: float(v) for k, v in flat.items()}
    return "\n".join(lines), meta


family_assets = [a for fam in ("revenue_forecast", "action_ranker") for a in build_family_assets(fam)]
