"""Per-run overhead the Dagster shell adds (issue 11 P1): the gates file is parsed once per version of it, and the
instance does not store debug lines (one per loaded input partition) in the event log."""
import os
import shutil
from pathlib import Path

import dagster as dg

from riskml_assets import resources
from riskml_assets.resources import RiskmlSettings

ROOT = Path(__file__).resolve().parent.parent


def test_gates_are_parsed_once_per_version_of_the_file(tmp_path):
    path = tmp_path / "gates.yaml"
    path.write_text("training_examples_min_rows:\n  threshold: 123\n")
    settings = RiskmlSettings(gates_file=str(path))
    before = resources._gates_of.cache_info().misses
    first, second = settings.gates(), settings.gates()
    assert first["training_examples_min_rows"].threshold == 123.0 == second["training_examples_min_rows"].threshold
    assert resources._gates_of.cache_info().misses == before + 1  # the second call did not read the file
    first.pop("training_examples_min_rows")  # a caller's dict is its own
    assert "training_examples_min_rows" in settings.gates()
    path.write_text("training_examples_min_rows:\n  threshold: 4567\n")  # a new version of the file is read
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert settings.gates()["training_examples_min_rows"].threshold == 4567.0
    path.write_text("no_such_gate: {}\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    try:
        settings.gates()
        raise AssertionError("an unknown gate in the file must be refused")
    except ValueError as exc:
        assert "unknown gate 'no_such_gate'" in str(exc)


def test_the_instance_keeps_events_and_info_lines_but_not_debug_lines(tmp_path, monkeypatch):
    for cfg in ("config/dagster_home.yaml", "dagster.yaml", "deploy/dagster.yaml"):
        assert "python_log_level: INFO" in (ROOT / cfg).read_text(), cfg
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "config" / "dagster_home.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    @dg.asset(io_manager_key="mem")
    def noisy(context):
        context.log.debug("a debug line")
        context.log.info("an info line")
        return 1

    @dg.asset(io_manager_key="mem")
    def after_noisy(noisy):
        return noisy + 1

    with dg.DagsterInstance.get() as instance:
        res = dg.materialize([noisy, after_noisy], instance=instance, resources={"mem": dg.InMemoryIOManager()})
        assert res.success
        logs = instance.all_logs(res.run_id)
    lines = [e.user_message for e in logs if e.dagster_event is None]
    assert lines == ["an info line"]
    kinds = [e.dagster_event.event_type_value for e in logs if e.dagster_event is not None]
    assert kinds.count("ASSET_MATERIALIZATION") == 2 and kinds.count("STEP_SUCCESS") == 2
