"""The CLI and scripts as a user meets them: the week `riskml` picks, exit codes, one-line errors instead of
tracebacks, `source scripts/env.sh` in an interactive shell, and markdown tables that CRM strings cannot break."""
from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from riskml_assets import cli
from riskml_assets.assets.common import md_table
from riskml_assets.core.contract import latest_complete_week as cutoff_week

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _monday(weeks_back: int, today: dt.date | None = None) -> dt.date:
    """The Monday ``weeks_back`` weeks before the latest complete week."""
    return dt.date.fromisoformat(cutoff_week(today or dt.date.today())) - dt.timedelta(weeks=weeks_back)


def _touch(incoming: Path, tenant: str, kind: str, day: dt.date) -> None:
    (incoming / tenant).mkdir(parents=True, exist_ok=True)
    (incoming / tenant / f"{kind}-{day.isoformat()}.csv").write_text("opportunity_id\n")


# ------------------------------------------------------------------------------------------------
# item 5: the latest complete week is the last one with snapshots
# ------------------------------------------------------------------------------------------------

def test_latest_complete_week_is_the_last_with_snapshots_not_an_outcomes_only_week(user_dir, capsys):
    incoming = user_dir / "data" / "incoming"
    with_snaps, outcomes_only = _monday(2), _monday(0)
    for kind in ("snapshots", "outcomes"):
        _touch(incoming, "acme", kind, with_snaps + dt.timedelta(days=4))
    _touch(incoming, "acme", "outcomes", outcomes_only + dt.timedelta(days=1))   # a Tuesday export of closes
    _touch(incoming, "acme", "snapshots", dt.date.today())                       # the current, incomplete week
    _touch(incoming, "lonely", "outcomes", outcomes_only)                         # never had a snapshot
    assert cli.target_weeks(incoming) == {"acme": with_snaps.isoformat(), "lonely": None}
    # the commands that pick a week use it
    assert cli.main(["checks", "--tenant", "acme"]) == 0
    assert f"gates of acme|{with_snaps.isoformat()}" in capsys.readouterr().out
    assert cli.main(["checks", "--tenant", "lonely"]) == 2
    assert "no complete week with snapshots" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# item 6: `riskml run` exits non-zero when a tenant failed or was blocked
# ------------------------------------------------------------------------------------------------

def test_run_exit_code_is_non_zero_for_any_blocked_or_failed_tenant(capsys):
    ok = {"tenant": "acme", "status": "evaluated"}
    kept = {"tenant": "initech", "status": "evaluated (baseline kept)"}
    blocked = {"tenant": "globex", "status": "blocked by a gate"}
    assert cli.run_exit_code([ok, kept], [], 0) == 0
    assert cli.run_exit_code([ok, blocked], [], 0) == 1
    assert "globex: blocked by a gate" in capsys.readouterr().err
    assert cli.run_exit_code([blocked, {**blocked, "tenant": "b2"}], ["globex", "b2"], 0) == 1
    assert cli.run_exit_code([ok, {"tenant": "x", "status": "failed (see run)"}], ["x"], 0) == 1
    assert cli.run_exit_code([ok, {"tenant": "x", "status": "not trained"}], [], 0) == 1
    assert cli.run_exit_code([ok], ["acme"], 0) == 1   # the materialize command failed after evaluation
    assert cli.run_exit_code([ok], [], 2) == 1         # an ingestion run failed
    assert cli.run_exit_code([], [], 0) == 1           # nothing to train is not a success


def _family(family, tenant, status, gates=()):
    return {"family": family, "tenant": tenant, "week": "2026-11-16", "status": status, "metrics": {},
            "gates": list(gates), "run_id": None}


def test_a_blocked_or_failed_family_counts_like_a_failed_tenant_a_skipped_one_does_not(capsys):
    """Issue 12 item 3 (decision): the forecast and ranker gates block like the risk model's; a family skipped
    for want of its data (no interactions files) is reported, not an error."""
    skipped = _family("action_ranker", "acme", "skipped: no recommendation feedback: no interactions-<date> file")
    ok = {"tenant": "acme", "status": "evaluated", "families": [_family("revenue_forecast", "acme", "evaluated"),
                                                                 skipped]}
    assert cli.run_exit_code([ok], [], 0) == 0
    blocked = {**ok, "families": [_family("revenue_forecast", "acme", "blocked by a gate (revenue_forecast_no_crossing)"),
                                  skipped]}
    assert cli.run_exit_code([blocked], [], 0) == 1
    assert "acme revenue_forecast: blocked by a gate (revenue_forecast_no_crossing)" in capsys.readouterr().err
    failed = {**ok, "families": [_family("action_ranker", "acme", "failed (see run)")]}
    assert cli.run_exit_code([failed], [], 0) == 1
    assert "acme action_ranker: failed (see run)" in capsys.readouterr().err


def test_family_summary_prints_headline_metrics_and_every_gate_with_its_result(capsys):
    fc = {**_family("revenue_forecast", "acme", "evaluated"),
          "metrics": {"p50_mae": 12345.6, "coverage": 0.861, "nominal_coverage": 0.8, "pinball_skill": 0.2},
          "gates": [{"check": "revenue_forecast_coverage_low", "result": "pass"},
                    {"check": "revenue_forecast_not_overfit", "result": "warn"}]}
    rk = {**_family("action_ranker", "acme", "blocked by a gate (action_ranker_beats_popularity)"),
          "metrics": {"ndcg_at_10": 0.5123, "ndcg_at_10_lift": 0.0112, "queries": 300.0},
          "gates": [{"check": "action_ranker_beats_popularity", "result": "FAIL"}]}
    sk = _family("action_ranker", "initech", "skipped: no recommendation feedback")
    cli.print_family_summary([{"families": [fc, rk]}, {"families": [sk]}])
    out = capsys.readouterr().out
    assert re.search(r"^revenue_forecast\s+acme\s+2026-11-16\s+evaluated: P50 MAE 12,346, P10-P90 coverage 0.861 "
                     r"\(nominal 0.80\)$", out, re.M), out
    assert "gates: coverage_low pass, not_overfit warn" in out
    assert "NDCG@10 0.5123 (+0.0112 vs popularity)" in out and "gates: beats_popularity FAIL" in out
    assert re.search(r"^action_ranker\s+initech\s+2026-11-16\s+skipped: no recommendation feedback$", out, re.M)


def test_ranker_runs_only_for_tenants_with_interactions_up_to_the_week(tmp_path):
    incoming = tmp_path / "incoming"
    _touch(incoming, "acme", "snapshots", _monday(3))
    _touch(incoming, "acme", "interactions", _monday(1))
    _touch(incoming, "initech", "snapshots", _monday(3))
    assert cli.interaction_weeks(incoming, "acme", _monday(3).isoformat()) == []  # only a later file
    assert cli.interaction_weeks(incoming, "acme", _monday(1).isoformat()) == [_monday(1).isoformat()]
    assert cli.interaction_weeks(incoming, "initech", _monday(1).isoformat()) == []
    assert cli.family_run_config("action_ranker", 3, 20) == {
        "ops": {"action_ranker_model": {"config": {"n_trials": 3, "timeout_seconds": 20.0}}}}


@pytest.mark.slow
def test_riskml_run_with_every_tenant_blocked_prints_the_summary_and_exits_1(tmp_path):
    """The real CLI (about 30 s): one tenant whose only week has no valid row is blocked by its gates."""
    day = _monday(1) + dt.timedelta(days=4)
    for kind in ("snapshots", "outcomes"):
        _touch(tmp_path / "data" / "incoming", "blocked", kind, day)
        (tmp_path / "data" / "incoming" / "blocked" / f"{kind}-{day}.csv").write_text("foo,bar\n1,2\n")
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_HOME", "RISKML_", "MLFLOW_"))}
    proc = subprocess.run([BIN / "riskml", "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"^blocked\s+\d{4}-\d{2}-\d{2}\s.*(blocked by a gate|failed)", proc.stdout, re.M), proc.stdout
    assert "exit 1: blocked:" in proc.stderr


# ------------------------------------------------------------------------------------------------
# item 7: sourcing scripts/env.sh leaves the user's shell alone
# ------------------------------------------------------------------------------------------------

def _bash(script: str, tmp_path: Path, **env) -> subprocess.CompletedProcess:
    e = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), **env}
    return subprocess.run(["bash", "-c", script], cwd=REPO, env=e, capture_output=True, text=True, timeout=120)


def test_sourcing_env_sh_does_not_leak_strict_mode_into_the_callers_shell(tmp_path):
    p = _bash("source scripts/env.sh; false; echo alive; unset NOPE_UNSET; echo \"${NOPE_UNSET}x\"; "
              "false | true; set -o | grep -E '^(errexit|nounset|pipefail)\\s'; command -v python", tmp_path)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "alive" and lines[1] == "x"
    assert {ln.split()[0]: ln.split()[1] for ln in lines[2:5]} == {"errexit": "off", "nounset": "off",
                                                                   "pipefail": "off"}
    assert lines[5] == str(REPO / ".venv" / "bin" / "python")   # the environment itself is set up
    assert (tmp_path / "home" / "dagster.yaml").exists()


def test_env_sh_failure_returns_to_the_caller_instead_of_exiting_it(tmp_path):
    p = _bash("source scripts/env.sh; echo rc=$? alive", tmp_path, PYTHON=str(tmp_path / "no-python"))
    assert "rc=1 alive" in p.stdout and "riskml needs Python >= 3.11" in p.stderr


def test_scripts_keep_strict_mode_for_themselves():
    for script in ("main.sh", "test.sh"):
        text = (REPO / "scripts" / script).read_text()
        assert text.index("set -euo pipefail") > text.index('source "$(dirname "$0")/env.sh"')


# ------------------------------------------------------------------------------------------------
# item 19: one-line errors, non-zero exit, no traceback
# ------------------------------------------------------------------------------------------------

ARG_ERRORS = [
    (["rollback", "--tenant", "../evil", "--reason", "bad week"], "invalid tenant id '../evil'"),
    (["rollback", "--tenant", "acme", "--reason", "   "], "the reason must not be blank"),
    (["summary", "--week", "2026-11-17"], "2026-11-17 is a Tuesday, not a Monday"),
    (["checks", "--tenant", "acme", "--week", "2026-11-22"], "(that week is 2026-11-16)"),
    (["checks", "--tenant", "acme", "--week", "last week"], "'last week' is not a date YYYY-MM-DD"),
    (["backfill", "--tenant", "acme", "--from", "2026-02-30"], "'2026-02-30' is not a date"),
    (["ingest-history", "--tenant", "Bad Tenant"], "invalid tenant id 'Bad Tenant'"),
    (["run", "--family-trials", "0"], "argument --family-trials: 0 must be at least 1"),
    (["run", "--family-seconds", "-5"], "argument --family-seconds: -5 must be a finite number above 0"),
    (["run", "--family-seconds", "soon"], "'soon' is not a number"),
]


@pytest.mark.parametrize("argv,message", ARG_ERRORS, ids=[" ".join(a[:3]) for a, _ in ARG_ERRORS])
def test_bad_arguments_give_one_line_errors(user_dir, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith(f"riskml {argv[0]}: error: "), err


UNKNOWN = [
    (["summary", "--tenant", "nope"], "unknown tenant 'nope': no files under data/incoming (known: acme)"),
    (["checks", "--tenant", "nope"], "unknown tenant 'nope'"),
    (["ingest-history", "--tenant", "acme", "--tenant", "nope"], "unknown tenant 'nope'"),
    (["rollback", "--tenant", "nope", "--reason", "bad week"], "unknown tenant 'nope': there is no model registry"),
    (["rollback", "--tenant", "acme", "--family", "Risk!", "--reason", "x"], "invalid model family 'Risk!'"),
]


@pytest.mark.parametrize("argv,message", UNKNOWN, ids=[a[0] + ("-family" if "--family" in a else "") for a, _ in UNKNOWN])
def test_unknown_tenants_give_one_line_errors(user_dir, capsys, argv, message):
    _touch(user_dir / "data" / "incoming", "acme", "snapshots", _monday(1))
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith(f"riskml {argv[0]}: error: "), err
    assert captured.out == ""


def test_rollback_of_a_tenant_the_registry_does_not_know(user_dir, capsys):
    from riskml_assets.registry import ModelRegistry

    ModelRegistry(os.environ["MLFLOW_TRACKING_URI"]).client.search_registered_models()  # tables, no model
    assert (user_dir / "mlflow.db").exists()
    capsys.readouterr()
    assert cli.main(["rollback", "--tenant", "nope", "--reason", "bad week"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip() == (
        f"riskml rollback: error: unknown tenant 'nope': no registered model riskml.nope.risk in "
        f"{os.environ['MLFLOW_TRACKING_URI']}")


def test_real_command_line_errors_have_no_traceback(tmp_path):
    (tmp_path / "data" / "incoming" / "acme").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_HOME", "RISKML_", "MLFLOW_"))}
    for argv, message in ((["rollback", "--tenant", "../evil", "--reason", "x"], "invalid tenant id"),
                          (["summary", "--tenant", "nope"], "unknown tenant 'nope'")):
        p = subprocess.run([BIN / "riskml", *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and "Traceback" not in p.stderr
        assert p.stderr.strip().count("\n") == 0 and message in p.stderr, p.stderr


# ------------------------------------------------------------------------------------------------
# item 20: CRM strings cannot break the markdown tables of the UI
# ------------------------------------------------------------------------------------------------

def _cells(line: str) -> list[str]:
    """Split a markdown table row on the unescaped pipes (as a GFM renderer does)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def test_md_table_escapes_pipes_newlines_html_and_formula_cells():
    hostile = ["Acme | Holdings", '=HYPERLINK("http://evil.example","click")', "+33 1 2", "-cmd|' /C calc'!A0",
               "@SUM(A1:A9)", "line one\nline two\r\nthree", "<img src=x onerror=alert(1)>", "back\\slash|", "-12.5"]
    df = pd.DataFrame({"account": hostile, "amount": range(len(hostile)),
                       "owner|team": pd.Series(["a"] * len(hostile), dtype="category"),
                       "p": [0.123456] * len(hostile)})
    md = md_table(df)
    lines = md.splitlines()
    assert len(lines) == 2 + len(hostile)                      # one line per row: no newline leaked
    assert all(len(_cells(ln)) == 4 for ln in lines)           # every row has exactly the 4 columns
    header = _cells(lines[0])
    assert header[1] == "amount" and header[2] == "owner\\|team"
    accounts = [_cells(ln)[0] for ln in lines[2:]]
    assert accounts[0] == "Acme \\| Holdings"
    assert accounts[1].startswith("'=HYPERLINK(")              # shown as text, not a formula
    assert accounts[2].startswith("'+") and accounts[3].startswith("'-") and accounts[4].startswith("'@")
    assert accounts[5] == "line one line two three"
    assert "<" not in md and accounts[6].startswith("&lt;img")
    assert accounts[7] == "back\\\\slash\\|"
    assert accounts[8] == "-12.5"                              # a number written as text stays as it is
    assert [_cells(ln)[1] for ln in lines[2:]] == [str(i) for i in range(len(hostile))]
    assert _cells(lines[2])[3] == "0.1235"                     # numbers keep their format
    assert df["account"].tolist() == hostile                   # the caller's frame is untouched


def test_md_table_leaves_plain_tables_as_they_were():
    df = pd.DataFrame({"reason": ["missing_column", "bad_probability"], "rows": [3, 1]})
    assert md_table(df) == df.to_markdown(index=False, floatfmt=".4g")
    assert md_table(df.iloc[0:0]) == "_(empty)_"


def test_family_rows_read_the_partitions_own_gate_results_from_a_real_instance():
    """What the summary prints comes from the instance: the evaluation's metadata and each gate's stored result for
    that tenant-week (an ERROR failure blocks, a WARN failure warns), and this invocation's own outcome wins over an
    older evaluation (a skip, or a run that evaluated nothing)."""
    import dagster as dg

    from riskml_assets.checks import check_spec
    from riskml_assets.core.families import get_family
    from riskml_assets.partitions import tenant_week

    gates = get_family("revenue_forecast").gates
    failing = {"revenue_forecast_no_crossing": dg.AssetCheckSeverity.ERROR,
               "revenue_forecast_coverage_high": dg.AssetCheckSeverity.WARN}

    @dg.asset(name="revenue_forecast_evaluation", partitions_def=tenant_week,
              check_specs=[check_spec(g.name, "revenue_forecast_evaluation", "") for g in gates])
    def evaluation(context):
        return dg.MaterializeResult(
            metadata={"p50_mae": 1234.5, "coverage": 0.95, "nominal_coverage": 0.8, "pinball_skill": 0.2},
            check_results=[dg.AssetCheckResult(check_name=g.name, passed=g.name not in failing,
                                               severity=failing.get(g.name, dg.AssetCheckSeverity.ERROR),
                                               metadata={"value": 0.5}) for g in gates])

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme"])
        res = dg.materialize([evaluation], instance=instance, partition_key="acme|2026-11-16", raise_on_error=False)
        fc, rk = cli.family_rows(instance, "acme", "2026-11-16")
        assert fc["status"] == "blocked by a gate (revenue_forecast_no_crossing)" and fc["run_id"] == res.run_id
        assert fc["metrics"] == {"p50_mae": 1234.5, "coverage": 0.95, "nominal_coverage": 0.8, "pinball_skill": 0.2}
        assert {g["check"]: g["result"] for g in fc["gates"]} == {
            "revenue_forecast_coverage_low": "pass", "revenue_forecast_coverage_high": "warn",
            "revenue_forecast_no_crossing": "FAIL", "revenue_forecast_beats_naive": "pass",
            "revenue_forecast_not_overfit": "pass"}
        assert rk["status"] == "not run" and rk["gates"] == []
        assert cli.family_rows(instance, "acme", "2026-11-09")[0]["status"] == "not run"  # another week: nothing
        # this invocation's outcome: a skip reason, or a newer run that evaluated nothing
        fc2, _ = cli.family_rows(instance, "acme", "2026-11-16", {"revenue_forecast": {"skipped": "why"}})
        assert fc2["status"] == "skipped: why" and fc2["gates"] == []
        fc3, _ = cli.family_rows(instance, "acme", "2026-11-16",
                                 {"revenue_forecast": {"run_id": "other", "success": False, "seconds": 1.0}})
        assert fc3["status"] == "failed (see run)" and fc3["run_id"] == "other"
