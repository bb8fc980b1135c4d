"""The real CLI, end to end, as a user runs it: `riskml run` on the committed sample data in a fresh folder."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_cli_help_lists_commands():
    out = subprocess.run([BIN / "riskml", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("generate", "register-tenants", "ingest-history", "run", "summary"):
        assert cmd in out


@pytest.mark.slow
def test_main_job_end_to_end_on_sample_data(tmp_path):
    shutil.copytree(REPO / "data" / "sample" / "incoming", tmp_path / "data" / "incoming")
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_HOME", "RISKML_", "MLFLOW_"))}
    proc = subprocess.run([BIN / "riskml", "run"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1500)  # the risk model, then the forecast (the sample tenant has no interactions)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "$ riskml launch --job train_job --partition 'demo|" in out
    assert "$ riskml launch --job score_job --partition 'demo|" in out
    # the champion column (source/algorithm) between ECE and status: not captured (group numbers unchanged)
    row = re.search(r"^demo\s+(\d{4}-\d{2}-\d{2})\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+"
                    r"(?:tenant_model/\w+|crm_score)\s+evaluated"
                    r"( \(baseline kept\))?\s+(\d+)/(\d+)(.*)$", out, re.M)
    assert row, out
    week, rows, auc, brier, ece = row.group(1), int(row.group(2)), *map(float, row.group(3, 4, 5))
    assert week == "2026-11-16" and rows > 1000 and auc > 0.7 and brier < 0.22
    assert "failed:" not in row.group(9)  # no blocking gate failed; warnings (overfit, refused augmentation) may
    if row.group(6):  # the small sample tenant: augmentation refused by the ablation, the baseline is registered
        assert "augmented_examples_ablation_brier" in row.group(9)
    warned = re.search(r"\(warn: ([^)]*)\)", row.group(9))
    warned = [w.strip() for w in warned.group(1).split(",")] if warned else []
    assert int(row.group(7)) + len(warned) == int(row.group(8))  # every gate either passed or only warned
    from riskml_assets.core.gates import default_gates
    gate_defs = default_gates()  # warnings only from warn gates (or the refused augmentation, kept as baseline)
    assert all(gate_defs[w].action == "warn" or w == "augmented_examples_ablation_brier" for w in warned), warned
    assert "dagster dev" in out and "mlflow ui" in out
    # issue 12 item 3: the forecast ran in the main job with the main job's budget, the ranker was skipped with a
    # reason, and the summary shows the forecast's headline metrics and every gate with its result
    assert re.search(r"^\$ riskml launch --job forecast_job --partition 'demo\|2026-11-16' --config-json "
                     r"'\{\"ops\":\{\"revenue_forecast_model\":\{\"config\":\{\"n_trials\":6,", out, re.M), out
    assert "action_ranker demo|2026-11-16: skipped (no recommendation feedback" in out
    fc_eval = json.loads((tmp_path / "data" / "assets" / "revenue_forecast_evaluation" / "demo" / f"{week}.json")
                         .read_text())
    fc_row = re.search(r"^revenue_forecast\s+demo\s+2026-11-16\s+evaluated: P50 MAE ([\d,]+), P10-P90 coverage "
                       r"([\d.]+) \(nominal 0.80\)\n\s+gates: (.*)$", out, re.M)
    assert fc_row, out
    assert int(fc_row.group(1).replace(",", "")) == round(fc_eval["point"]["mae"])
    assert float(fc_row.group(2)) == pytest.approx(fc_eval["coverage"], abs=5e-4)
    shown = dict(g.rsplit(" ", 1) for g in fc_row.group(3).split(", "))
    expected = {n.removeprefix("revenue_forecast_"): ("pass" if g["passed"] or g.get("skipped") else
                                                      ("FAIL" if g["action"] == "fail" else "warn"))
                for n, g in fc_eval["gates"].items()}
    assert shown == expected and len(shown) == 5
    assert re.search(r"^action_ranker\s+demo\s+2026-11-16\s+skipped: no recommendation feedback", out, re.M)
    assert re.search(r"main job took \d+s \(forecast and ranker: \d+s, CPU \d+s\)", out)
    # state persisted in the instance: `riskml summary` in a new process reads the same numbers
    s = subprocess.run([BIN / "riskml", "summary", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       check=True)
    rows_json = json.loads(s.stdout)
    assert rows_json[0]["tenant"] == "demo" and abs(rows_json[0]["auc"] - auc) < 1e-4
    fams = {f["family"]: f for f in rows_json[0]["families"]}
    assert fams["revenue_forecast"]["metrics"]["coverage"] == pytest.approx(fc_eval["coverage"])
    assert fams["revenue_forecast"]["metrics"]["p50_mae"] == pytest.approx(fc_eval["point"]["mae"])
    assert fams["action_ranker"]["status"] == "not run"  # `riskml summary` knows no skip reason: nothing ran
    # issue 12 item 6: the registered version's model card, in the UI metadata and in MLflow, with the right numbers
    splits = pd.read_parquet(tmp_path / "data" / "assets" / "dataset_splits" / "demo" / f"{week}.parquet")
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'data' / 'mlflow.db'}")
    mv = client.get_model_version_by_alias("riskml.demo.risk", "champion")
    n_test = int((splits["split"] == "test").sum())
    assert mv.description.startswith(f"# Model card: riskml.demo.risk v{mv.version}")
    assert f"| test | {n_test} | {splits.loc[splits['split'] == 'test', 'opportunity_id'].nunique()} |" in mv.description
    assert f"| this model (calibrated) | {auc:.4f} |" in mv.description
    card_file = client.download_artifacts(mv.run_id, "model_card.md", str(tmp_path))
    assert Path(card_file).read_text() == mv.description
    assert (tmp_path / "data" / "mlflow.db").exists()
    assert (tmp_path / "data" / "assets" / "risk_evaluation" / "demo" / f"{week}.json").exists()
    # only the gates of the tenant-week, from the instance
    c = subprocess.run([BIN / "riskml", "checks", "--tenant", "demo", "--json"], cwd=tmp_path, env=env,
                       capture_output=True, text=True)
    assert c.returncode == 0, c.stderr
    gates = {(r["asset"], r["check"]): r for r in json.loads(c.stdout)}
    assert len(gates) >= int(row.group(8))  # the main run's gates and the ingestion gates
    assert gates[("risk_evaluation", "risk_evaluation_ece")]["passed"] is True
    assert all(r["passed"] or r["severity"] == "WARN" for r in gates.values())
    scores = pd.read_parquet(tmp_path / "data" / "assets" / "risk_scores" / "demo" / f"{week}.parquet")
    assert len(scores) > 0 and scores["p_lost"].between(0, 1).all()  # a champion was registered and scored
    # issue 10 items 5 and 8: every run is a run of its job in the code location `riskml` (the UI's Runs tab of
    # the job lists it); the history is one backfill; missing lookback partitions are said once per input
    import dagster as dg

    with dg.DagsterInstance.from_config(str(tmp_path / ".dagster")) as instance:
        runs = instance.get_runs()
        # the forecast runs as its own job; the sample tenant sends no interactions, so the ranker is skipped
        assert {r.job_name for r in runs} == {"ingest_job", "train_job", "score_job", "forecast_job"}
        assert all(r.remote_job_origin is not None and r.remote_job_origin.location_name == "riskml" for r in runs)
        labelled = instance.get_runs(dg.RunsFilter(tags={".dagster/repository": "__repository__@riskml"}))
        assert len(labelled) == len(runs)
        ingest = [r for r in runs if r.job_name == "ingest_job"]
        [backfill] = instance.get_backfills()
        assert {r.tags.get("dagster/backfill") for r in ingest} == {backfill.backfill_id}
        assert backfill.status.value == "COMPLETED_SUCCESS"
        # issue 11: the tenant's history is one run over its range of weeks (single-run backfill policy)
        assert len(ingest) == 1 and len(backfill.partition_names) > 1
        assert ingest[0].tags["dagster/asset_partition_range_end"] == backfill.partition_names[-1]
        [train] = [r for r in runs if r.job_name == "train_job"]
        logs = [(e.step_key, e.user_message) for e in instance.all_logs(train.run_id) if e.user_message]
        assert not [m for _, m in logs if "Couldn't load partition" in m]
        said = [(step, m.split(":")[0]) for step, m in logs if "partitions of the window are not materialized" in m]
        assert said and len(said) == len(set(said)), said  # at most one line per (step, input)
