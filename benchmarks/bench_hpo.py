"""HPO wall time: 20 Optuna trials of model selection at 10k and 100k rows, against one default fit.

Data: simulator rows through the real feature pipeline (a tenant sized by ``--opportunities`` so the
largest size is reached), subsampled by opportunity. For each family and size it measures, in the same
run and on the same rows:

- ``baseline``: one fit of the family's default XGBoost params on all the rows (what a run without
  selection costs);
- ``hpo``: ``select_model`` with the family's candidates, TPE, median pruning, 3 grouped folds,
  ``--trials`` trials, no timeout;

and prints the ratio hpo / baseline, trials completed / pruned, the chosen algorithm and its CV score
next to the score of the default params (the first trial). Threads: ``--threads`` per fit (default 1:
on a shared 2-vCPU VM, 2 threads were slower under contention); the 1-minute load average before and
after each measurement is printed because the VM is shared.

    .venv/bin/python benchmarks/bench_hpo.py                       # risk at 10k and 100k, forecast/ranker at 10k
    .venv/bin/python benchmarks/bench_hpo.py --families risk --sizes 10000
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

from riskml_assets.core import families as FAM  # noqa: E402
from riskml_assets.core import features as F  # noqa: E402
from riskml_assets.core import forecast as FC  # noqa: E402
from riskml_assets.core import ranking as RK  # noqa: E402
from riskml_assets.core import simulator  # noqa: E402
from riskml_assets.core.cleaning import clean_examples  # noqa: E402
from riskml_assets.core.selection import DEFAULT_SPACES, default_params, make_model  # noqa: E402


def load() -> float:
    return round(os.getloadavg()[0], 2)


def subsample(df: pd.DataFrame, rows: int, seed: int = 0, group: str = "opportunity_id") -> pd.DataFrame:
    """About ``rows`` rows, whole opportunities only."""
    ids = df[group].drop_duplicates().sample(frac=1.0, random_state=seed).to_numpy()
    sizes = df.groupby(group).size().reindex(ids).to_numpy()
    keep = ids[: int(np.searchsorted(np.cumsum(sizes), rows)) + 1]
    return df[df[group].isin(set(keep))].reset_index(drop=True)


def tabular_examples(opportunities: int, seed: int) -> tuple[pd.DataFrame, dict]:
    spec = simulator.TenantSpec("bench", 60.0, 0)
    sim = simulator.simulate_tenant(spec, weeks=60, seed=seed, opportunities=opportunities)
    manifest = F.build_manifest()
    ex, _ = F.build_training_examples(sim.snapshots, sim.outcomes, sim.activities, manifest,
                                      partition_end=str(sim.end + pd.Timedelta(days=3).to_pytimedelta()), window_weeks=60)
    clean, _, _ = clean_examples(ex, manifest)
    return FC.build_forecast_examples(clean), {"manifest": manifest, "sim": sim}


def ranking_examples(sim) -> tuple[pd.DataFrame, dict]:
    df, info = RK.build_ranking_examples(sim.interactions, sim.snapshots, sim.activities)
    return df, {"features": info["features"], "feature_kinds": info["feature_kinds"]}


def run_one(family: str, df: pd.DataFrame, ctx: dict, trials: int, threads: int, seed: int) -> dict:
    spec = FAM.get_family(family)
    cfg = FAM.resolve_config(family, {"n_trials": trials, "timeout_seconds": None, "n_threads": threads, "seed": seed})
    X, y, groups, extra = spec.prepare(df, ctx)
    task = spec.selection_task(cfg)
    opts = {"alphas": FC.ALPHAS} if task == "quantile" else ({"objective": "rank:pairwise"} if task == "ranking" else {})
    l0 = load()
    t0 = time.perf_counter()
    base = make_model("xgboost", task, default_params(DEFAULT_SPACES["xgboost"]), n_threads=threads, seed=seed, **opts)
    base.fit(X, y, **({"qid": extra["qid"]} if "qid" in extra else {}))
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    sel = FAM.select_family(family, df, ctx, cfg)
    t_hpo = time.perf_counter() - t0
    default_trial = next((t for t in sel.trials if t["number"] == 0), None)
    return {
        "family": family, "task": task, "rows": int(len(df)), "opportunities": int(df["opportunity_id"].nunique()),
        "threads": threads, "baseline_fit_s": round(t_base, 2), "hpo_s": round(t_hpo, 1),
        "ratio": round(t_hpo / t_base, 1), "trials": len(sel.trials), "complete": sel.n_complete, "pruned": sel.n_pruned,
        "per_trial_s": round(t_hpo / max(1, len(sel.trials)), 2), "best": sel.best_candidate, "scorer": sel.scorer,
        "cv_best": round(sel.cv_mean, 4), "cv_std": round(sel.cv_std, 4),
        "cv_default_xgboost": round(default_trial["value"], 4) if default_trial and default_trial["value"] is not None else None,
        "gap": round(sel.gap, 4), "overfit": sel.overfit, "per_candidate": sel.per_candidate,
        "load_before": l0, "load_after": load(),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default="risk,revenue_forecast,action_ranker")
    p.add_argument("--sizes", default="10000,100000", help="row counts (risk); other families: --other-sizes")
    p.add_argument("--other-sizes", default="10000", help="row counts for revenue_forecast and action_ranker")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--opportunities", type=int, default=17_000, help="simulated opportunities (>= 100k labelled rows)")
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")
    args = p.parse_args(argv)
    fams = [f.strip() for f in args.families.split(",") if f.strip()]
    t0 = time.perf_counter()
    tab, ctx = tabular_examples(args.opportunities, args.seed)
    sim = ctx.pop("sim")
    print(f"data: {len(tab)} labelled rows, {tab['opportunity_id'].nunique()} opportunities, "
          f"{len(sim.interactions)} interactions (built in {time.perf_counter() - t0:.1f}s); cpus {os.cpu_count()}, "
          f"load {load()}", flush=True)
    results = []
    for fam in fams:
        sizes = args.sizes if fam == "risk" else args.other_sizes
        if fam == "action_ranker":
            data, fctx = ranking_examples(sim)
        else:
            data, fctx = tab, ctx
        for n in (int(s) for s in sizes.split(",") if s.strip()):
            if n > len(data):
                print(f"skip {fam} at {n} rows: only {len(data)} available", flush=True)
                continue
            r = run_one(fam, subsample(data, n, args.seed), fctx, args.trials, args.threads, args.seed)
            results.append(r)
            print(f"{fam:<17}{r['rows']:>8} rows  baseline fit {r['baseline_fit_s']:>7.2f}s  HPO {r['trials']} trials "
                  f"({r['pruned']} pruned) {r['hpo_s']:>7.1f}s  = {r['ratio']:>6.1f}x  best {r['best']} "
                  f"{r['scorer']} {r['cv_best']}±{r['cv_std']} (default xgboost {r['cv_default_xgboost']})  "
                  f"load {r['load_before']}->{r['load_after']}", flush=True)
            print("    per algorithm: " + ", ".join(
                f"{a} {c['trials']} trials {c['seconds']:.1f}s best {c['best_value'] if c['best_value'] is None else round(c['best_value'], 4)}"
                for a, c in r["per_candidate"].items()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
