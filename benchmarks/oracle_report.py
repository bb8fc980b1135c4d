"""Per-tenant metrics of the main job's registered risk champions next to the simulator's oracle and the
CRM's own risk_score calibrated on the same validation rows (issue 12 goal: Brier within 10 % of the oracle,
never worse than the calibrated CRM score).

Run after `bash scripts/main.sh` (reads data/assets and data/oracle; `--data DIR` for another data folder):
    .venv/bin/python benchmarks/oracle_report.py

Columns: the evaluated champion's test AUC/Brier/ECE (the candidate risk_evaluation chose: tenant_model,
crm_score or pooled), the oracle's on the same test rows, "Brier CRM calibrated" (the CRM risk_score with the
calibrator fit on the validation rows, ``core.evaluation.crm_score_candidate``, recomputed here so runs from
before the candidates existed get it too), the ratios, the champion source and the chosen algorithm.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from riskml_assets.core import metrics as M  # noqa: E402
from riskml_assets.core.evaluation import CandidateUnavailable, apply_calibrator, crm_score_candidate  # noqa: E402

DATA = Path("data")


def calibrated_crm_brier(splits: pd.DataFrame, manifest: dict | None) -> float:
    """Test Brier of the CRM risk_score calibrated on the validation rows (NaN when there is no score)."""
    valid = splits[splits["split"] == "validation"].reset_index(drop=True)
    test = splits[splits["split"] == "test"].reset_index(drop=True)
    if manifest is None:
        manifest = {"heuristic_risk_score": {"version": 1, "hash": "-", "kind": "numeric"}}
    try:
        cand = crm_score_candidate(valid, manifest)
    except CandidateUnavailable:
        return float("nan")
    from riskml_assets.core.training import predict_raw

    p = apply_calibrator(cand["calibrator"], predict_raw(cand["model"], test))
    return M.brier(test["label"].to_numpy(int), p)


def main() -> None:
    global DATA
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA), help="the main job's data folder (default: data)")
    DATA = Path(ap.parse_args().data)
    rows = []
    for ev in sorted((DATA / "assets" / "risk_evaluation").glob("*/*.json")):
        tenant, week = ev.parent.name, ev.stem
        truth_path = DATA / "oracle" / tenant / "truth.parquet"
        if not truth_path.exists():
            continue
        report = json.loads(ev.read_text())
        splits = pd.read_parquet(DATA / "assets" / "dataset_splits" / tenant / f"{week}.parquet")
        test = splits[splits["split"] == "test"]
        truth = pd.read_parquet(truth_path).set_index("opportunity_id")["p_lost_true"]
        y, p_oracle = test["label"].to_numpy(int), test["opportunity_id"].map(truth).to_numpy(float)
        c = report["calibrated"]
        mpath = DATA / "assets" / "feature_manifest" / tenant / f"{week}.json"
        manifest = json.loads(mpath.read_text())["features"] if mpath.exists() else None
        rows.append({"tenant": tenant, "week": week, "test rows": len(test),
                     "champion source": report.get("champion_source", "tenant_model"),
                     "algorithm": report.get("champion_algorithm", "xgboost"),
                     "Brier CRM calibrated": calibrated_crm_brier(splits, manifest),
                     "AUC model": c["auc"], "AUC oracle": M.roc_auc(y, p_oracle),
                     "Brier model": c["brier"], "Brier oracle": M.brier(y, p_oracle),
                     "Brier base rate": report["baseline_base_rate"]["brier"],
                     "Brier CRM risk_score": (report["baseline_risk_score"] or {}).get("brier", np.nan),
                     "ECE model": c["ece"], "ECE noise floor": c.get("ece_noise_floor", np.nan),
                     "kept variant": (report.get("ablation") or {}).get("decision", {}).get("kept", "-")})
    df = pd.DataFrame(rows)
    if df.empty:
        print("no evaluated tenants with an oracle: run `bash scripts/main.sh` first")
        return
    df["Brier model/oracle"] = df["Brier model"] / df["Brier oracle"]
    df["Brier model/CRM calibrated"] = df["Brier model"] / df["Brier CRM calibrated"]
    df["Brier CRM calibrated/oracle"] = df["Brier CRM calibrated"] / df["Brier oracle"]
    df["AUC gap"] = df["AUC oracle"] - df["AUC model"]
    first = ["tenant", "week", "test rows", "champion source", "algorithm", "Brier model/oracle",
             "Brier model/CRM calibrated", "Brier model", "Brier oracle", "Brier CRM calibrated", "AUC model",
             "AUC oracle", "ECE model", "ECE noise floor"]
    df = df[first + [c for c in df.columns if c not in first]]
    print(df.to_markdown(index=False, floatfmt=".4f"))


if __name__ == "__main__":
    main()
