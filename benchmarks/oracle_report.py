"""Per-tenant metrics of the main job's calibrated risk models next to the simulator's oracle.

Run after `bash scripts/main.sh` (reads data/assets and data/oracle):
    .venv/bin/python benchmarks/oracle_report.py
"""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from riskml_assets.core import metrics as M  # noqa: E402

DATA = Path("data")


def main() -> None:
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
        rows.append({"tenant": tenant, "week": week, "test rows": len(test),
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
    df["AUC gap"] = df["AUC oracle"] - df["AUC model"]
    print(df.to_markdown(index=False, floatfmt=".4f"))


if __name__ == "__main__":
    main()
