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


def test_the_sqlite_event_log_keeps_one_engine_per_shard(tmp_path, monkeypatch):
    """Loading the code location patches Dagster's SQLite event log (riskml_assets.instance_storage): it stores
    and reads the same events as Dagster's own methods in the same files, building one SQLAlchemy engine per shard
    instead of one per statement (issue 11: ~1,700 engines for a 12-week ingestion run)."""
    import riskml_assets.definitions  # noqa: F401  (installs the patch when an instance is opened)
    from riskml_assets import instance_storage as S

    built, asked = [], []
    real_engine_for = S.engine_for
    import dagster._core.storage.sql as sql

    real_create = sql.create_engine
    import dagster._core.storage.event_log.sqlite.sqlite_event_log as stock_module

    def counting(url, *a, **k):  # engines of the event log's shard files (history/runs/*.db) only
        if "/history/runs/" in str(url):
            built.append(url)
        return real_create(url, *a, **k)
    monkeypatch.setattr(sql, "create_engine", counting)
    monkeypatch.setattr(stock_module, "create_engine", counting)
    monkeypatch.setattr(S, "engine_for", lambda st, url: asked.append(url) or real_engine_for(st, url))

    @dg.asset(io_manager_key="mem", check_specs=[dg.AssetCheckSpec("positive", asset="counted")])
    def counted(context):
        context.log.info("an info line")
        yield dg.Output(3)
        yield dg.AssetCheckResult(check_name="positive", passed=True)

    @dg.asset(io_manager_key="mem")
    def doubled(counted):
        return counted * 2

    def run(name: str):
        home = tmp_path / name
        home.mkdir()
        shutil.copy(ROOT / "config" / "dagster_home.yaml", home / "dagster.yaml")
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "elsewhere"))  # the folder opened wins, not the variable
        built.clear()
        asked.clear()
        with dg.DagsterInstance.from_config(str(home)) as instance:
            for _ in range(2):
                res = dg.materialize([counted, doubled], instance=instance, resources={"mem": dg.InMemoryIOManager()})
                assert res.success
            kinds = [e.dagster_event.event_type_value if e.dagster_event else "log" for e in instance.all_logs(res.run_id)]
            mats = instance.fetch_materializations(dg.AssetKey("doubled"), limit=10).records
            checks = instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(dg.AssetKey("counted"), "positive"), limit=10)
        assert (home / "history" / "runs" / f"{res.run_id}.db").exists()
        assert not (tmp_path / "elsewhere").exists()
        return kinds, len(mats), [c.status.value for c in checks], list(built), list(asked)

    S.install()
    ours = run("patched")
    S.uninstall()
    try:
        stock = run("stock")
    finally:
        S.install()
    kinds, mats, checks, engines, statements = ours
    assert 2 <= len(engines) <= 4 and len(set(engines)) <= 3, engines  # index (+ its init) and 2 runs: not per statement
    assert len(statements) > 10 * len(engines)  # ... for the many statements that went through them
    assert len(stock[3]) > 10 * len(engines) and stock[4] == []  # Dagster's own: an engine per statement
    assert kinds == stock[0] and len(kinds) > 15
    assert mats == stock[1] == 2
    assert checks == stock[2] == ["SUCCEEDED", "SUCCEEDED"]


def test_the_patch_is_installed_when_an_instance_opens_not_when_the_code_location_loads():
    code = ("import sys, riskml_assets.definitions\n"
            "from riskml_assets import instance_storage as S\n"
            "assert 'sqlalchemy' not in sys.modules and not S.installed()\n"
            "import dagster as dg, tempfile\n"
            "d = tempfile.mkdtemp()\n"
            "open(d + '/dagster.yaml', 'w').write('telemetry:\\n  enabled: false\\n')\n"
            "i = dg.DagsterInstance.from_config(d)\n"
            "assert S.installed() and i.event_log_storage.has_table.__func__ is S._has_table\n")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_the_event_log_disposes_engines_beyond_its_bound(tmp_path, monkeypatch):
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    from riskml_assets import instance_storage as S

    S.install()
    monkeypatch.setattr(S, "MAX_ENGINES", 2)
    storage = SqliteEventLogStorage(str(tmp_path / "runs"))
    for run_id in ("a", "b", "c"):
        with storage.run_connection(run_id) as conn:
            conn.exec_driver_sql("select 1")
    assert [k.rsplit("/", 1)[-1] for k in storage._riskml_engines] == ["b.db", "c.db"]  # index's and a's went
    storage.dispose()
    assert "_riskml_engines" not in storage.__dict__


def test_the_event_log_remembers_present_tables_only(tmp_path):
    import sqlite3

    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    from riskml_assets import instance_storage as S

    S.install()
    storage = SqliteEventLogStorage(str(tmp_path / "runs"))
    assert storage.has_table("dynamic_partitions") and "dynamic_partitions" in storage._riskml_tables
    assert not storage.has_table("no_such_table") and "no_such_table" not in storage._riskml_tables
    with storage.index_connection() as conn:
        conn.exec_driver_sql("create table no_such_table (x integer)")
    assert storage.has_table("no_such_table")  # asked again, found now
    storage.add_dynamic_partitions("tenant", ["acme"])
    assert storage.has_dynamic_partition("tenant", "acme") and not storage.has_dynamic_partition("tenant", "other")
    storage.wipe()  # forgets, then Dagster re-creates the index (and asks again)
    with sqlite3.connect(tmp_path / "runs" / "index.db") as db:
        present = {r[0] for r in db.execute("select name from sqlite_master where type = 'table'")}
    assert storage._riskml_tables and storage._riskml_tables <= present and "no_such_table" not in storage._riskml_tables
    storage.dispose()
