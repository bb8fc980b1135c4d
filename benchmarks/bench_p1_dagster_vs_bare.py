"""P1: the Dagster training run of one tenant-week ÷ the same pure core functions called in one process
(not a test).

    python benchmarks/bench_p1_dagster_vs_bare.py            # acme-sized tenant (40 weeks), 3 runs each
    python benchmarks/bench_p1_dagster_vs_bare.py --quick    # a small tenant, small model, 1 run each (smoke)
    python benchmarks/bench_p1_dagster_vs_bare.py --code-root <other checkout>

Set-up (untimed): a simulated tenant (acme's rate: 60 new opportunities a week, 40 weeks) written as contract
files into a temp data dir; every week ingested with ``ingest_job`` (one run each) on a DagsterInstance in a
temp DAGSTER_HOME, with the project's ``definitions.defs`` and its resources (parquet IO manager, MLflow SQLite).

* ``dagster``: ``train_job`` for the latest week (re-materialized each repetition), in process, configured to do
  the bare side's work where newer code offers more (algorithm selection off, the tenant's model the only
  champion candidate; printed);
* ``bare``: in one process, on the same simulated rows: ``build_manifest``, ``build_training_examples``,
  ``clean_examples``, ``split_examples``, ``augment_splits``/``balance`` (both pass through at this size),
  ``train_xgb_classifier`` (+ validation AUC interval), an MLflow run with the same params/metrics/model
  text/importance plot, ``fit_risk_calibrator``, ``evaluate_risk`` + report and plots logged to the run,
  the drift reference (``compute_features``) and ``registry.register_risk_candidate`` (own MLflow store); and,
  as the job does since issues 9-10, the champion-candidate evaluation (``promotion.evaluate_candidates``, the
  tenant's model the only candidate) and the registered version's model card (``core.model_card``: data
  summary, baselines with bootstrap intervals, markdown attached to the version), where the checked-out code
  has them (printed; an older ``--code-root`` without them is timed without them).

* ``dagster_floor``: the same asset graph with no-op steps, passing checks and an IO manager that keeps nothing
  (``_timing.DagsterFloor``), on the same instance: what Dagster itself costs for this graph.

Also prints the number of event records of the Dagster run and the orchestration's own seconds (the run minus the
bare calls, median of the back-to-back pairs), and the floor's figures: the lowest ratio this graph can reach
(1 + floor ÷ bare), the project's own seconds on top of the floor, and the seconds the goal leaves for them.
Goal (issue 11): Dagster ÷ bare <= 1.3.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing as T  # noqa: E402

TAG = "P1"


def run_config(quick: bool) -> dict:
    """Run config that makes the Dagster run do the bare side's work: the fixed XGBoost params (no algorithm
    selection) and the tenant's model as the only champion candidate, where the checked-out code has those
    options (newer code); with --quick also no augmentation, fewer trees and fewer bootstrap draws."""
    from riskml_assets.assets import risk as R

    ops: dict = {}

    def put(op: str, key: str, value) -> None:
        ops.setdefault(op, {"config": {}})["config"][key] = value

    if "selection" in getattr(R.RiskModelConfig, "model_fields", {}):
        put("risk_model", "selection", False)
    if "champion_candidates" in getattr(getattr(R, "RiskEvaluationConfig", None), "model_fields", {}):
        put("risk_evaluation", "champion_candidates", ["tenant_model"])
    if quick:
        put("augmented_examples", "methods", [])
        put("risk_model", "n_estimators", 60)
        put("registered_models", "n_boot", 100)
    return {"ops": ops} if ops else {}


class Bare:
    """The train_job's work as plain calls of the core functions (and MLflow / the registry) in one process."""

    def __init__(self, root: Path, tenant: str, week: str, snaps, outs, acts, quick: bool):
        import pandas as pd

        from riskml_assets.core.contract import week_bounds

        self.root, self.tenant, self.week, self.quick = root, tenant, week, quick
        self.snaps, self.outs, self.acts = snaps, outs, acts
        _, self.end = week_bounds(week)
        self.end = pd.Timestamp(self.end)
        root.mkdir(parents=True, exist_ok=True)
        self.tracking = f"sqlite:///{root / 'mlflow.db'}"
        self.extra = {}  # work newer code does in the job: done here too when the checked-out code has it
        try:
            from riskml_assets.core.promotion import evaluate_candidates

            self.extra["candidates"] = evaluate_candidates
        except ImportError:
            pass
        try:
            from riskml_assets.core import model_card
            from riskml_assets.registry import ModelRegistry

            if hasattr(ModelRegistry, "attach_model_card"):
                self.extra["card"] = model_card
        except ImportError:
            pass

    def __call__(self) -> dict:
        import mlflow
        import numpy as np
        import pandas as pd

        from riskml_assets.core import augmentation as A
        from riskml_assets.core import features as F
        from riskml_assets.core import metrics as M
        from riskml_assets.core import plots
        from riskml_assets.core.balancing import balance
        from riskml_assets.core.cleaning import clean_examples
        from riskml_assets.core.evaluation import apply_calibrator, evaluate_risk, fit_risk_calibrator, report_markdown
        from riskml_assets.core.scoring import compute_features
        from riskml_assets.core.splits import split_examples
        from riskml_assets.core.training import XGBParams, predict_raw, train_xgb_classifier
        from riskml_assets.registry import ModelRegistry, register_risk_candidate

        LABEL = F.LABEL
        lap = T.Laps()
        snaps, outs, acts = self.snaps, self.outs, self.acts
        hist = snaps[pd.to_datetime(snaps["snapshot_date"]) < self.end].reset_index(drop=True)
        # features
        manifest = F.build_manifest({}, (), snapshots=hist, tenant_config=F.parse_tenant_config({}))
        fingerprint = F.manifest_fingerprint(manifest)
        ex, _ = F.build_training_examples(snaps, outs, acts, manifest, partition_end=self.end.isoformat(),
                                          window_weeks=52)
        lap("features")
        # cleaning, splits, augmentation / balancing (pass through here)
        clean, _, _ = clean_examples(ex, manifest)
        splits = split_examples(clean, tenant=self.tenant)
        if self.quick:
            splits, _ = A.augment_splits(splits, manifest, methods=("smote",), target_rows=0, seed=0)
        else:
            splits, _ = A.augment_splits(splits, manifest, methods=tuple(A.DEFAULT_METHODS), target_rows=5000, seed=0)
        train = splits[splits["split"] == "train"].reset_index(drop=True)
        train, _ = balance(train, strategy="none", target_ratio=1.0, min_ratio=0.5, seed=0, features=manifest)
        valid = splits[splits["split"] == "validation"].reset_index(drop=True)
        test = splits[splits["split"] == "test"].reset_index(drop=True)
        lap("clean+splits+augment+balance")
        # model + its MLflow run
        params = XGBParams(n_estimators=60) if self.quick else XGBParams()
        art = train_xgb_classifier(train, valid, manifest, params)
        p_tr, p_va = predict_raw(art, train), predict_raw(art, valid)
        y_tr, y_va = train[LABEL].to_numpy(int), valid[LABEL].to_numpy(int)
        lo, hi = M.grouped_bootstrap_ci(y_va, p_va, M.roc_auc, valid["opportunity_id"].to_numpy())
        art["metrics"] = {"auc_train": M.roc_auc(y_tr, p_tr), "auc_validation": M.roc_auc(y_va, p_va),
                          "auc_validation_ci_low": lo, "auc_validation_ci_high": hi,
                          "brier_validation_raw": M.brier(y_va, p_va), "logloss_validation_raw": M.log_loss(y_va, p_va)}
        art["manifest_fingerprint"], art["tenant"], art["week"] = fingerprint, self.tenant, self.week
        lap("train")
        mlflow.set_tracking_uri(self.tracking)
        mlflow.set_experiment("bench-bare")
        with mlflow.start_run(run_name=f"risk/{self.tenant}/{self.week}") as run:
            mlflow.log_params({**{k: v for k, v in art["params"].items() if k != "extra"},
                               "features": ",".join(art["features"]), "best_iteration": art["best_iteration"],
                               "train_rows": art["train_rows"]})
            mlflow.log_metrics(art["metrics"])
            mlflow.log_dict({"features": manifest, "fingerprint": fingerprint}, "feature_manifest.json")
            mlflow.log_text(art["booster_json"], "model/xgboost_model.json")
            self._log_png(mlflow, plots.feature_importance_plot(art["importance"]), "plots", "feature_importance.png")
            art["mlflow_run_id"] = run_id = run.info.run_id
        lap("mlflow run")
        # calibration
        cal = fit_risk_calibrator(p_va, y_va, groups=valid["opportunity_id"].to_numpy())
        plots.reliability_diagram(y_va, {"raw": p_va, "calibrated": apply_calibrator(cal, p_va)})
        lap("calibrate")
        # champion candidates (the tenant's model the only one, as the Dagster run is configured)
        if self.extra.get("candidates"):
            self.extra["candidates"]({"tenant_model": {"available": True, "reason": "", "model": art,
                                                       "calibrator": cal}}, test, valid, seed=0)
        lap("candidates")
        # evaluation
        p_raw = predict_raw(art, test)
        p_cal = apply_calibrator(cal, p_raw)
        report = evaluate_risk(test, p_raw, p_cal, threshold=cal["threshold"],
                               train_base_rate=float(train[LABEL].mean()), importance=art["importance"], seed=0)
        y = test[LABEL].to_numpy(int)
        rel = plots.reliability_diagram(y, {"calibrated model": p_cal, "uncalibrated model": p_raw})
        imp = plots.feature_importance_plot(art["importance"])
        md = report_markdown(report, f"Risk model evaluation — {self.tenant} | {self.week}",
                             {"Reliability": plots.png_markdown(rel, "reliability"),
                              "Importance": plots.png_markdown(imp, "importance")})
        client = mlflow.MlflowClient()
        for k, v in report["calibrated"].items():
            if isinstance(v, (int, float)) and v == v:
                client.log_metric(run_id, f"test_{k}", float(v))
        client.log_text(run_id, md, "evaluation/report.md")
        self._log_png(mlflow, rel, "evaluation", "reliability_diagram.png", run_id)
        self._log_png(mlflow, imp, "evaluation", "feature_importance.png", run_id)
        lap("evaluate+log")
        # registration (drift reference, comparison with the champion, promotion)
        window = hist[pd.to_datetime(hist["snapshot_date"]) >= self.end - pd.Timedelta(weeks=52)]
        reference, _ = compute_features(window, acts, manifest)
        reference = reference.sample(n=min(len(reference), 5000), random_state=0).reset_index(drop=True)
        metrics = {k: report["calibrated"][k] for k in ("auc", "brier", "ece", "log_loss", "f1")}
        reg = ModelRegistry(self.tracking)
        trained = splits.loc[splits["split"].isin(["train", "validation"]), "opportunity_id"].astype(str).unique()
        out = register_risk_candidate(
            reg, self.tenant, artifact=art, calibrator=cal, manifest=manifest, test=test, metrics=metrics,
            report_md=f"Risk model {self.tenant}|{self.week}", gates_passed={"bench": True},
            floors={"min_auc": 0.55, "max_ece": 0.15}, snapshots_history=hist, activities=acts,
            reference_data=reference, n_boot=100 if self.quick else 1000, seed=0,
            context={"partition": f"{self.tenant}|{self.week}"}, trained_opportunities=trained, run_id=run_id)
        lap("register")
        if self.extra.get("card"):  # the version's model card, as registered_models attaches it
            MC = self.extra["card"]
            base = float(train[LABEL].mean())
            baselines = MC.baseline_metrics(test, base, level=float(report.get("ci_level") or MC.CI_LEVEL), n_boot=500)
            card = MC.build_model_card(
                tenant=self.tenant, week=self.week, model_name=reg.model_name(self.tenant, "risk"),
                version=out["version"], data=MC.data_summary(splits, manifest), manifest=manifest, artifact=art,
                evaluation=report, baselines=baselines, decision=out["decision"], run_id=run_id)
            reg.attach_model_card(self.tenant, "risk", out["version"], MC.model_card_markdown(card))
        lap("model card")
        return {"rows": len(ex), "version": out["version"], "auc": float(np.round(metrics["auc"], 4)),
                "laps": lap.text()}

    def _log_png(self, mlflow, png: bytes, folder: str, name: str, run_id: str | None = None) -> None:
        d = Path(tempfile.mkdtemp(dir=self.root))
        (d / name).write_bytes(png)
        if run_id:
            mlflow.MlflowClient().log_artifact(run_id, str(d / name), folder)
        else:
            mlflow.log_artifact(str(d / name), folder)
        shutil.rmtree(d, ignore_errors=True)


def main(argv=None) -> int:
    p = T.parser(__doc__, repeat=3, quick_repeat=1)
    T.add_instance_option(p)
    p.add_argument("--weeks", type=int, default=None, help="simulated weeks (default 40, 8 with --quick)")
    args = T.parse(p, argv)
    T.header(TAG, "train_job of one tenant-week through Dagster vs the same core functions in one process", args)
    weeks = args.weeks or (8 if args.quick else 40)
    root = Path(tempfile.mkdtemp(prefix="riskml-bench-p1-"))
    plat = None
    try:
        plat = T.Platform(root, instance=args.instance)
        T.note(TAG, f"Dagster instance: {args.instance}")
        if args.quick:
            plat.relax_gates()
        tenant = "benchp1"
        sim = T.simulate(opportunities=60 * (20 + weeks), weeks=weeks, name=tenant)
        T.write_incoming(sim, plat.incoming, root / "oracle")
        all_weeks = T.weeks_of(plat.incoming / tenant)
        week = T.LATEST_WEEK
        secs = plat.ingest(tenant, all_weeks)
        T.note(TAG, f"set-up: {len(all_weeks)} weeks ingested with ingest_job in {secs:.1f} s; training week {week}")
        cfg = run_config(args.quick)
        T.note(TAG, f"Dagster run config: {cfg or 'defaults'}")
        bare = Bare(root / "bare", tenant, week, sim.snapshots, sim.outcomes, sim.activities, args.quick)
        T.note(TAG, f"bare side also does: {', '.join(sorted(bare.extra)) or 'nothing more'} (candidates: champion "
                    f"candidate evaluation; card: the version's model card)")
        runs = []

        def dagster():
            res = plat.run("train_job", tenant, week, cfg)
            mats = {e.asset_key.to_user_string() for e in res.get_asset_materialization_events()}
            job = plat.defs.resolve_job_def("train_job")
            wanted = {k.to_user_string() for k in job.asset_layer.executable_asset_keys} \
                if hasattr(job.asset_layer, "executable_asset_keys") else mats
            if not res.success or not wanted <= mats:
                failed = [e.step_key for e in res.all_events if e.is_step_failure]
                raise RuntimeError(f"train_job {tenant}|{week} did not materialize every asset "
                                   f"(success={res.success}, failed steps {failed}, missing {sorted(wanted - mats)})")
            runs.append((res.run_id, len(mats)))

        info = {}

        def bare_side():
            info.update(bare())

        floor = T.DagsterFloor(plat, "train_job")
        floor.prepare(tenant, all_weeks)
        floor_ids = []
        times = T.interleave({"dagster": dagster, "bare": bare_side,
                              "dagster_floor": lambda: floor_ids.append(floor.run(tenant, week).run_id)}, args.repeat)
        T.note(TAG, f"{info.get('rows')} labelled examples; bare registered version {info.get('version')} "
                    f"(test AUC {info.get('auc')}); Dagster run materialized {runs[-1][1]} assets")
        T.note(TAG, f"bare, last run: {info.get('laps')}")
        T.note(TAG, f"dagster, last run: {plat.step_durations(runs[-1][0])}")
        T.report_times(TAG, times)
        T.report_ratio(TAG, times, "dagster", "bare", ("<=", 1.3))
        # the orchestration itself, in seconds: the run minus the same work as plain calls (median of the
        # back-to-back pairs); the ratio above falls as the compute gets slower and rises as it gets faster
        T.report_value(TAG, "orchestration_s_per_run", T.paired_difference(times, "dagster", "bare"), "s")
        T.report_value(TAG, "event_records_per_run", plat.event_records(runs[-1][0]))
        T.report_floor(TAG, times, 1.3)
        T.report_value(TAG, "floor_event_records_per_run", plat.event_records(floor_ids[-1]))
    finally:
        if plat:
            plat.close()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
