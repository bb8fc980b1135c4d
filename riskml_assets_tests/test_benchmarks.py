"""The speed benchmarks (benchmarks/bench_p*.py, bench_memory.py) run with --quick, print figures that parse,
and their parity checks hold. Not timing tests: no figure is compared with a goal here."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))

import _timing as T  # noqa: E402


def run_quick(script: str, *extra: str, timeout: float = 900) -> tuple[str, dict]:
    res = subprocess.run([sys.executable, str(BENCH / script), "--quick", *extra], capture_output=True, text=True,
                         timeout=timeout, cwd=REPO)
    assert res.returncode == 0, f"{script} --quick failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout, T.parse_output(res.stdout)


def assert_times(figs: dict, sides: list[str]) -> None:
    for side in sides:
        t = figs["time"][side]
        assert 0 < t["min"] <= t["median"], (side, t)
        assert int(t["n"]) >= 1


# ----------------------------------------------------------------------------------------- the helper
def test_printed_figures_parse_back(capsys):
    times = {"a": [2.0, 3.0, 4.0], "b": [1.0, 1.0, 2.0]}
    T.report_times("X", times)
    assert T.report_ratio("X", times, "a", "b", ("<=", 1.3)) == pytest.approx(3.0)
    T.report_ratio("X", times, "b", "a", (">=", 2.0))
    T.report_value("X", "rss", 1843.25, "MiB", ("<=", 2048.0))
    T.report_value("X", "events", 301)
    figs = T.parse_output(capsys.readouterr().out)
    assert figs["time"]["a"] == {"tag": "X", "min": 2.0, "median": 3.0, "n": "3"}
    assert figs["ratio"]["a/b"]["min"] == 2.0 and figs["ratio"]["a/b"]["median"] == 3.0
    assert figs["ratio"]["a/b"]["paired"] == 2.0  # median of 2/1, 3/1, 4/2
    assert figs["ratio"]["a/b"]["met"] == "NOT met" and figs["ratio"]["b/a"]["met"] == "NOT met"
    assert figs["value"]["rss"]["value"] == pytest.approx(1843.0) and figs["value"]["rss"]["met"] == "met"
    assert figs["value"]["rss"]["unit"] == "MiB"
    assert figs["value"]["events"]["value"] == 301 and "goal" not in figs["value"]["events"]


def test_interleave_alternates_sides_and_warms_up():
    calls = []
    times = T.interleave({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then A B / B A / A B
    assert [len(v) for v in times.values()] == [3, 3] and all(t >= 0 for v in times.values() for t in v)


def test_p3_parity_check_catches_a_wrong_value():
    import bench_p3_features as P3

    sim = T.simulate(opportunities=400, weeks=6, name="parity")
    snaps, acts = sim.snapshots, sim.activities
    order = ["prospecting", "qualification", "proposal", "negotiation", "commit"]
    floor = P3.polars_floor(pl.from_pandas(snaps), pl.from_pandas(acts), order)
    pandas = P3.pandas_version(snaps, acts, order)
    features = [c for c in floor.columns if c not in ("opportunity_id", "snapshot_date")]
    P3.assert_same({"floor": floor, "pandas": pandas}, features)  # the two independent versions agree
    assert floor["activity_count_30d"].sum() > 0 and floor["close_date_slips"].max() > 0  # not trivially zero
    bad = pandas.copy()
    i = int(np.flatnonzero(bad["close_date_slips"].to_numpy() > 0)[0])
    bad.loc[i, "close_date_slips"] += 1
    with pytest.raises(AssertionError, match="close_date_slips differs on 1 rows"):
        P3.assert_same({"floor": floor, "pandas": bad}, features)


# ----------------------------------------------------------------------------------------- Dagster's floor
def test_the_dagster_floor_has_the_jobs_graph_and_runs_it_with_no_op_steps(tmp_path, monkeypatch):
    """The floor's graph is the job's: the same assets (under the prefix), partitions, inputs with equal
    partition mappings and blocking checks; its run on a real instance materializes every asset with every
    check passed, and its IO manager writes nothing."""
    for k in ("DAGSTER_HOME", "RISKML_DATA_DIR", "MLFLOW_TRACKING_URI"):  # Platform sets them: restored after
        monkeypatch.setenv(k, "unset")
    plat = T.Platform(tmp_path)
    try:
        graph = plat.defs.resolve_asset_graph()
        n_checks = {}
        for job in ("train_job", "ingest_job"):
            floor = T.DagsterFloor(plat, job)
            fgraph = floor.defs.resolve_asset_graph()
            keys = plat.defs.resolve_job_def(job).asset_layer.executable_asset_keys
            fkeys = floor.defs.resolve_job_def(f"floor_{job}").asset_layer.executable_asset_keys
            assert fkeys == {floor._key(k) for k in keys} and len(keys) >= 3
            n_checks[job] = 0
            for k in keys:
                real, copy = graph.get(k), fgraph.get(floor._key(k))
                assert copy.partitions_def == real.partitions_def
                assert copy.parent_keys == {floor._key(p) for p in real.parent_keys}
                for p in real.parent_keys:
                    assert fgraph.get_partition_mapping(floor._key(k), floor._key(p)) == graph.get_partition_mapping(k, p)
                checks = {(c.name, c.blocking, c.partitions_def) for c in real.assets_def.check_specs if c.asset_key == k}
                assert {(c.name, c.blocking, c.partitions_def) for c in copy.assets_def.check_specs} == checks
                n_checks[job] += len(checks)
            assert n_checks[job] > 0
        floor = T.DagsterFloor(plat, "train_job")
        assert {p.to_user_string() for p in floor.parents} == {"risk_snapshots", "opportunity_outcomes", "activity_events"}
        floor.prepare("floortenant", ["2026-11-09", "2026-11-16"])
        res = floor.run("floortenant", "2026-11-16")
        mats = {e.asset_key for e in res.get_asset_materialization_events()}
        assert mats == {floor._key(k) for k in floor.keys}
        evals = [e.event_specific_data for e in res.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        assert len(evals) == n_checks["train_job"]
        assert all(ev.passed for ev in evals)
        assert not any(plat.data.rglob("*.parquet"))  # the floor's IO manager keeps nothing
    finally:
        plat.close()


def test_report_floor_prints_the_lowest_reachable_ratio_and_the_seconds_left(capsys):
    times = {"dagster": [3.0, 4.0, 3.5], "bare": [2.0, 3.0, 2.5], "dagster_floor": [0.5, 0.9, 0.7]}
    T.report_floor("X", times, 1.3)
    v = T.parse_output(capsys.readouterr().out)["value"]
    assert v["floor_s_per_run"]["value"] == pytest.approx(0.7)
    assert v["lowest_reachable_ratio"]["value"] == pytest.approx(1 + 0.7 / 2.5, abs=1e-3)
    assert v["lowest_reachable_ratio"]["met"] == "met"
    assert v["project_s_over_floor"]["value"] == pytest.approx(2.8)  # median of 2.5, 3.1, 2.8
    assert v["goal_s_left_over_floor"]["value"] == pytest.approx(0.3 * 2.5 - 0.7)
    T.report_floor("X", {**times, "dagster_floor": [1.0, 1.2, 1.1]}, 1.3)
    v = T.parse_output(capsys.readouterr().out)["value"]
    assert v["lowest_reachable_ratio"]["met"] == "NOT met" and v["goal_s_left_over_floor"]["value"] < 0


# ----------------------------------------------------------------------------------------- the scripts, --quick
def test_p3_features_quick():
    out, figs = run_quick("bench_p3_features.py")
    assert "parity: all four sides give the same values" in out
    assert_times(figs, ["project", "project_pandas_io", "polars_floor", "pandas"])
    assert figs["ratio"]["project/polars_floor"]["op"] == "<="
    assert figs["ratio"]["pandas/project"]["op"] == ">="


@pytest.mark.slow
def test_memory_quick():
    _, figs = run_quick("bench_memory.py")
    assert_times(figs, ["data", "end_to_end"])
    v = figs["value"]
    assert 0 < v["peak_rss_data_mib"]["value"] < v["peak_rss_end_to_end_mib"]["value"]


@pytest.mark.slow
def test_p5_validate_quick():
    _, figs = run_quick("bench_p5_validate.py")
    assert_times(figs, ["validate", "import_definitions", "import_dagster"])
    assert {"validate/import_dagster", "import_definitions/import_dagster"} <= set(figs["ratio"])


@pytest.mark.slow
def test_p2_ingest_quick():
    out, figs = run_quick("bench_p2_ingest.py")
    assert_times(figs, ["dagster", "bare", "dagster_history", "bare_history"])
    assert {"dagster/bare", "dagster_history/bare_history",
            "dagster_history_stock_event_log/dagster_history"} <= set(figs["ratio"])
    # the history run stores each week's materializations and gate results: more records than one week's run
    assert figs["value"]["event_records_per_history_run"]["value"] > figs["value"]["event_records_per_run"]["value"] > 0
    assert "Dagster instance: sqlite" in out
    _assert_floor(figs)


@pytest.mark.services
def test_p2_ingest_quick_on_postgres():
    """--instance postgres: the Dagster side runs on a PostgreSQL instance (a server the benchmark starts and
    stops), as deploy/dagster.yaml's production instance."""
    out, figs = run_quick("bench_p2_ingest.py", "--instance", "postgres")
    assert "Dagster instance: postgres" in out
    assert_times(figs, ["dagster", "bare", "dagster_history", "bare_history"])
    assert figs["value"]["event_records_per_history_run"]["value"] > figs["value"]["event_records_per_run"]["value"] > 0


def _assert_floor(figs: dict) -> None:
    """The floor's figures follow from its printed times; its run has the job's steps, inputs and checks but
    none of the project's log records, so it stores fewer records than the job's run, and not far fewer."""
    t, v = figs["time"], figs["value"]
    assert v["floor_s_per_run"]["value"] == pytest.approx(t["dagster_floor"]["median"], abs=1e-3)
    assert v["lowest_reachable_ratio"]["value"] == pytest.approx(
        1 + t["dagster_floor"]["median"] / t["bare"]["median"], rel=0.01)
    job, floor = v["event_records_per_run"]["value"], v["floor_event_records_per_run"]["value"]
    assert 0.6 * job <= floor <= job


def _paired_difference(out: str) -> float:
    """Median of dagster_i - bare_i from the printed 'seconds in run order' note (2 decimals)."""
    import re
    import statistics

    line = next(ln for ln in out.splitlines() if "seconds in run order: dagster " in ln)
    m = re.search(r"dagster ([\d. ]+); bare ([\d. ]+)", line)
    d, b = ([float(x) for x in g.split()] for g in m.groups())
    return statistics.median(x - y for x, y in zip(d, b))


@pytest.mark.slow
def test_p1_dagster_vs_bare_quick():
    out, figs = run_quick("bench_p1_dagster_vs_bare.py", timeout=1800)
    assert_times(figs, ["dagster", "bare"])
    assert figs["value"]["event_records_per_run"]["value"] > 0
    assert "bare registered version 1" in out
    _assert_floor(figs)
    # the orchestration's seconds: the median of the back-to-back differences of the printed runs
    assert figs["value"]["orchestration_s_per_run"]["unit"] == "s"
    assert figs["value"]["orchestration_s_per_run"]["value"] == pytest.approx(_paired_difference(out), abs=0.011)


@pytest.mark.slow
def test_p4_scoring_quick():
    out, figs = run_quick("bench_p4_scoring.py", timeout=1800)
    assert_times(figs, ["score_1m", "model_only_1m", "risk_scores_dagster", "risk_scores_bare"])
    assert "registered champion v1" in out


# ----------------------------------------------------------------------------------------- compare.py
def test_compare_flips_the_order_and_reports_the_paired_differences():
    """``compare.py``: the sides' order flips every round (a steady drift adds as much to each side over two
    rounds); each figure gets both sides' medians and the median of the per-round differences new - old."""
    import compare as C

    assert C.order(4) == [["new", "old"], ["old", "new"], ["new", "old"], ["old", "new"]]
    text = "\n".join(["[P1] time dagster: min 3.000 s, median 3.500 s (n=3)",
                      "[P1] ratio dagster/bare: min 1.40, median 1.50, paired median 1.45 (goal <= 1.3: NOT met)",
                      "[P1] value orchestration_s_per_run: 1.2 s"])
    figs = C.figures(text)
    assert figs == {"P1 time dagster median": (3.5, "s"), "P1 ratio dagster/bare paired median": (1.45, ""),
                    "P1 orchestration_s_per_run": (1.2, "s")}
    runs = {"old": [{"P1 orchestration_s_per_run": (v, "s")} for v in (1.3, 1.1, 1.25, 1.2)],
            "new": [{"P1 orchestration_s_per_run": (v, "s")} for v in (1.0, 1.2, 1.05, 1.1)]}
    lines = C.compare(runs)
    figs = T.parse_output("\n".join(lines))["value"]
    assert figs["P1 orchestration_s_per_run old"]["value"] == pytest.approx(1.225)
    assert figs["P1 orchestration_s_per_run new"]["value"] == pytest.approx(1.075)
    # differences -0.3, +0.1, -0.2, -0.1: median -0.15
    assert figs["P1 orchestration_s_per_run new-old"]["value"] == pytest.approx(-0.15)
    assert figs["P1 orchestration_s_per_run new-old"]["unit"] == "s"
    assert any("new lower in 3 of 4 rounds" in ln for ln in lines)
    # a figure one run did not print is left out, not compared with a hole
    runs["old"][2] = {}
    assert C.compare(runs) == []


@pytest.mark.slow
def test_compare_runs_a_real_benchmark_on_two_checkouts(tmp_path):
    """A real run: P5 --quick on this checkout against itself, two rounds; every figure of P5 is compared."""
    res = subprocess.run([sys.executable, str(BENCH / "compare.py"), "--old", str(REPO), "--rounds", "2", "--",
                          "bench_p5_validate.py", "--quick"], capture_output=True, text=True, timeout=900, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert [ln.split(": ", 1)[1] for ln in out.splitlines() if "round" in ln and "done" in ln] == [
        "round 1: new done", "round 1: old done", "round 2: old done", "round 2: new done"]
    figs = T.parse_output(out)["value"]
    for label in ("P5 time validate median", "P5 validate_median_s"):
        old, new, diff = (figs[f"{label} {s}"]["value"] for s in ("old", "new", "new-old"))
        assert old > 0 and new > 0 and figs[f"{label} new-old"]["unit"] == "s"
        assert abs(diff) <= max(old, new)
    bad = subprocess.run([sys.executable, str(BENCH / "compare.py"), "--old", str(tmp_path), "--",
                          "bench_p5_validate.py"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert bad.returncode == 2 and "no riskml_assets package there" in bad.stderr
