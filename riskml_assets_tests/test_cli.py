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
    proc = subprocess.run([BIN / "riskml", "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "$ riskml launch --job train_job --partition 'demo|" in out
    assert "$ riskml launch --job score_job --partition 'demo|" in out
    row = re.search(r"^demo\s+(\d{4}-\d{2}-\d{2})\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+evaluated"
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
    # state persisted in the instance: `riskml summary` in a new process reads the same numbers
    s = subprocess.run([BIN / "riskml", "summary", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       check=True)
    rows_json = json.loads(s.stdout)
    assert rows_json[0]["tenant"] == "demo" and abs(rows_json[0]["auc"] - auc) < 1e-4
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
        assert {r.job_name for r in runs} == {"ingest_job", "train_job", "score_job"}
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
