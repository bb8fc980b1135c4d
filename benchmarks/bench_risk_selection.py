"""Risk model selection on the simulator's default tenants: chosen algorithm vs the fixed XGBoost default.

For each tenant (default: acme, globex, initech) the pipeline's core steps run on the simulated data
(point-in-time examples over 52 weeks ending at the simulation's end, cleaning, the stable stratified
split by tenant + opportunity): the fixed default (``XGBParams()``, early stopping on validation) and
``training.select_and_train`` (its defaults: fixed trial count, seconds cap as a safety net), each calibrated
on the validation rows (``evaluation.fit_risk_calibrator``) and scored on the test rows. Prints per tenant:
rows, chosen algorithm, whether the selection switched and why, which bound stopped it (trials or timeout),
selection wall and CPU seconds (the machine may be shared: the 1-minute load average is printed), and
calibrated test AUC / Brier of default and chosen.

    .venv/bin/python benchmarks/bench_risk_selection.py
    .venv/bin/python benchmarks/bench_risk_selection.py --tenants initech --trials 8 --timeout 60 --seed 0
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from riskml_assets.core import evaluation, simulator, training  # noqa: E402
from riskml_assets.core import features as F  # noqa: E402
from riskml_assets.core import metrics as M  # noqa: E402
from riskml_assets.core.cleaning import clean_examples  # noqa: E402
from riskml_assets.core.splits import split_examples  # noqa: E402

LABEL = F.LABEL


def tenant_splits(spec: simulator.TenantSpec) -> tuple[dict, dict, pd.DataFrame]:
    sim = simulator.simulate_tenant(spec)
    manifest = F.build_manifest()
    end = str(pd.Timestamp(sim.end) + pd.Timedelta(days=3))
    ex, _ = F.build_training_examples(sim.snapshots, sim.outcomes, sim.activities, manifest, partition_end=end,
                                      window_weeks=52)
    clean, _, _ = clean_examples(ex, manifest)
    df = split_examples(clean, method="stratified", seed=0, tenant=spec.name)
    parts = {n: df[df["split"] == n].reset_index(drop=True) for n in ("train", "validation", "test")}
    return parts, manifest, sim.truth


def calibrated_test(art: dict, parts: dict) -> dict:
    va, te = parts["validation"], parts["test"]
    cal = evaluation.fit_risk_calibrator(training.predict_raw(art, va), va[LABEL].to_numpy(int),
                                         groups=va["opportunity_id"].to_numpy())
    p = evaluation.apply_calibrator(cal, training.predict_raw(art, te))
    y = te[LABEL].to_numpy(int)
    return {"auc": M.roc_auc(y, p), "brier": M.brier(y, p)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants", default="acme,globex,initech")
    ap.add_argument("--trials", type=int, default=training.SelectionSettings.n_trials)
    ap.add_argument("--timeout", type=float, default=training.SelectionSettings.timeout_seconds,
                    help="seconds cap of the selection; <= 0: none (the trial count alone bounds it)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = []
    for spec in simulator.parse_tenants(args.tenants):
        parts, manifest, truth = tenant_splits(spec)
        default = training.XGBParams(n_threads=args.threads, seed=args.seed)
        t0, c0 = time.perf_counter(), time.process_time()
        base = training.train_xgb_classifier(parts["train"], parts["validation"], manifest, default)
        t_base, cpu_base = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        art = training.select_and_train(parts["train"], parts["validation"], manifest, default,
                                        training.SelectionSettings(n_trials=args.trials,
                                                                   timeout_seconds=args.timeout if args.timeout > 0 else None,
                                                                   n_threads=args.threads))
        t_sel, cpu_sel = time.perf_counter() - t0, time.process_time() - c0
        s = art["selection"]
        d, c = calibrated_test(base, parts), calibrated_test(art, parts)
        te = parts["test"]
        on = s["enabled"]
        row = {"tenant": spec.name, "train_rows": len(parts["train"]),
               "train_opportunities": parts["train"]["opportunity_id"].nunique(), "test_rows": len(te),
               "chosen": s["chosen"], "best_trial": s["best_trial_algorithm"] if on else "(skipped)",
               "switched": s["switched"],
               "cv_default": round(s["default"]["cv_auc_mean"], 4) if on else None,
               "cv_best": round(s["best_trial"]["cv_auc_mean"], 4) if on else None,
               "cv_diff": round(s["cv_difference_mean"], 4) if on else None,
               "cv_diff_se": round(s["cv_difference_se"], 4) if on else None,
               "stopped_by": s["stopped_by"] if on else s["reason"], "complete": s.get("n_complete"),
               "pruned": s.get("n_pruned"), "cv_rows": s.get("cv_rows"),
               "trial_wall_s_per_candidate": ({a: round(v["seconds"], 1) for a, v in s["per_candidate"].items()} if on else None),
               "default_fit_s": round(t_base, 1), "default_fit_cpu_s": round(cpu_base, 1),
               "select_and_train_s": round(t_sel, 1),
               "select_and_train_cpu_s": round(cpu_sel, 1), "load1": round(os.getloadavg()[0], 1),
               "test_auc_default": round(d["auc"], 4), "test_auc_chosen": round(c["auc"], 4),
               "test_brier_default": round(d["brier"], 4), "test_brier_chosen": round(c["brier"], 4)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
