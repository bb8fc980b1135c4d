"""Per-family metrics on the simulator's tenants next to their baselines and the simulator's oracle.

For each tenant: the risk split -> revenue forecast examples, and the recommendation feedback -> ranking
examples; each family selected and trained exactly as its asset does (Optuna over the candidates,
grouped CV, ``--trials`` / ``--timeout``), then evaluated on its real test split with the oracle beside it.

    .venv/bin/python benchmarks/family_report.py                       # globex and initech, 20 trials
    .venv/bin/python benchmarks/family_report.py --tenants acme --trials 5
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from riskml_assets.core import families as FAM  # noqa: E402
from riskml_assets.core import features as F  # noqa: E402
from riskml_assets.core import forecast as FC  # noqa: E402
from riskml_assets.core import ranking as RK  # noqa: E402
from riskml_assets.core import simulator  # noqa: E402
from riskml_assets.core.cleaning import clean_examples  # noqa: E402
from riskml_assets.core.splits import split_examples  # noqa: E402


def parts(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {s: df[df["split"] == s].reset_index(drop=True) for s in ("train", "validation", "test")}


def run_tenant(spec, cfg: dict) -> tuple[dict, dict]:
    sim = simulator.simulate_tenant(spec)
    manifest = F.build_manifest()
    end = str(pd.Timestamp(sim.end).date() + pd.Timedelta(days=3).to_pytimedelta())  # the Monday after the last Friday
    ex, _ = F.build_training_examples(sim.snapshots, sim.outcomes, sim.activities, manifest,
                                      partition_end=end, window_weeks=78)
    clean, _, _ = clean_examples(ex, manifest)
    fp = parts(FC.build_forecast_examples(split_examples(clean, seed=0)))
    t0 = time.perf_counter()
    art = FAM.train_family("revenue_forecast", fp["train"], fp["validation"], {"manifest": manifest}, cfg)
    fsec = time.perf_counter() - t0
    frep = FAM.evaluate_family("revenue_forecast", fp["test"], art, {
        "oracle_quantiles": simulator.oracle_revenue_quantiles(sim.truth, fp["test"], art["alphas"])})
    rex, info = RK.build_ranking_examples(sim.interactions, sim.snapshots, sim.activities, manifest)
    rp = parts(RK.split_ranking_examples(rex))
    ctx = {"features": info["features"], "feature_kinds": info["feature_kinds"]}
    t0 = time.perf_counter()
    rart = FAM.train_family("action_ranker", rp["train"], rp["validation"], ctx, cfg)
    rsec = time.perf_counter() - t0
    rrep = FAM.evaluate_family("action_ranker", rp["test"], rart, {
        **ctx, "oracle_scores": simulator.oracle_action_utility(sim.interaction_truth, rp["test"])})
    fsel, rsel = art.get("selection") or {}, rart.get("selection") or {}
    return ({"tenant": spec.name, "train/test rows": f"{len(fp['train'])}/{len(fp['test'])}",
             "chosen": fsel.get("best_candidate"), "selection s": fsec, **flat(frep)},
            {"tenant": spec.name, "train/test rows": f"{len(rp['train'])}/{len(rp['test'])}",
             "chosen": rsel.get("best_candidate"), "selection s": rsec, **flat(rrep)})


def flat(rep: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in rep.items():
        if isinstance(v, dict) and k not in ("gates",):
            out.update(flat(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = v
    if "gates" in rep:
        failed = [n for n, g in rep["gates"].items() if g.get("passed") is False]
        out[f"{prefix}gates failed"] = ",".join(failed) or "none"
    return out


FORECAST_COLS = {
    "model.coverage": "P10-P90 coverage", "oracle.coverage": "oracle coverage",
    "model.mean_pinball": "pinball model", "naive_expected.mean_pinball": "pinball value x prob",
    "crm_distribution.mean_pinball": "pinball CRM distribution", "oracle.mean_pinball": "pinball oracle",
    "point.mae": "MAE", "naive_point.mae": "MAE naive", "point.rmse": "RMSE", "point.r2": "R2",
    "point.mape_won": "MAPE won", "tenant_sums.p50.ratio_to_actual": "sum P50 / actual",
    "tenant_sums.expected.ratio_to_actual": "sum expected / actual", "crossing_rate": "crossing",
}
RANKER_COLS = {
    "model.ndcg_at_10": "NDCG@10 model", "popularity.ndcg_at_10": "NDCG@10 popularity",
    "oracle.ndcg_at_10": "NDCG@10 oracle", "model.precision_at_5": "P@5", "popularity.precision_at_5": "P@5 pop.",
    "model.recall_at_5": "R@5", "model.map": "MAP model", "popularity.map": "MAP popularity", "oracle.map": "MAP oracle",
}


def show(rows: list[dict], cols: dict, title: str) -> None:
    df = pd.DataFrame(rows)
    keep = ["tenant", "train/test rows", "chosen", "selection s"] + [c for c in cols if c in df.columns]
    missing = [c for c in cols if c not in df.columns]
    print(f"\n## {title}\n")
    print(df[keep].rename(columns=cols).to_markdown(index=False, floatfmt=".4g"))
    if missing:
        print(f"\n(not reported: {', '.join(missing)}; available: {', '.join(sorted(df.columns))})")
    if "gates failed" in df.columns:
        print("\ngates failed: " + "; ".join(f"{t}: {g}" for t, g in zip(df["tenant"], df["gates failed"])))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tenants", default="globex,initech")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    specs = {s.name: s for s in simulator.DEFAULT_TENANTS}
    cfg = {"n_trials": a.trials, "timeout_seconds": a.timeout, "n_threads": a.threads, "seed": 0}
    fc, rk = [], []
    for name in a.tenants.split(","):
        f, r = run_tenant(specs[name], cfg)
        fc.append(f)
        rk.append(r)
    show(fc, FORECAST_COLS, "revenue_forecast (test split)")
    show(rk, RANKER_COLS, "action_ranker (test split)")


if __name__ == "__main__":
    main()
