"""Per-run overhead the Dagster shell adds (issue 11 P1): the gates file is parsed once per version of it, and the
instance does not store debug lines (one per loaded input partition) in the event log."""
import os
import shutil
from pathlib import Path

import dagster as dg

from riskml_assets import resources
from riskml_assets.resources import RiskmlSettings

from .conftest import in_forked_child

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


def _shipped_home(home: Path) -> Path:
    """A Dagster home with the instance config riskml ships (embedded SQLite)."""
    home.mkdir()
    shutil.copy(ROOT / "config" / "dagster_home.yaml", home / "dagster.yaml")
    return home


def test_the_sqlite_storages_keep_their_engines_and_connections(tmp_path, monkeypatch):
    """Loading the code location patches Dagster's SQLite instance storages (riskml_assets.instance_storage): they
    store and read the same events, runs and check results as Dagster's own methods in the same files, keeping one
    SQLAlchemy engine and one open connection per database file instead of building both for every statement
    (issue 11: ~1,700 engines and connections for a 12-week ingestion run)."""
    import riskml_assets.definitions  # noqa: F401  (installs the patch when an instance is opened)
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from riskml_assets import instance_storage as S

    built, asked, opened = [], [], []
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
    monkeypatch.setattr(S, "engine_for", lambda st, url, *a: asked.append(url) or real_engine_for(st, url, *a))

    def on_connect(dbapi_conn, record):  # every SQLite connection opened, by file
        opened.append(dbapi_conn.execute("pragma database_list").fetchone()[2].rsplit("/", 1)[-1])

    @dg.asset(io_manager_key="mem", check_specs=[dg.AssetCheckSpec("positive", asset="counted")])
    def counted(context):
        context.log.info("an info line")
        yield dg.Output(3)
        yield dg.AssetCheckResult(check_name="positive", passed=True)

    @dg.asset(io_manager_key="mem")
    def doubled(counted):
        return counted * 2

    def run(name: str):
        home = _shipped_home(tmp_path / name)
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "elsewhere"))  # the folder opened wins, not the variable
        with dg.DagsterInstance.from_config(str(home)) as instance:
            instance.get_runs()  # the instance's own set-up is done
            built.clear(), asked.clear(), opened.clear()
            event.listen(Engine, "connect", on_connect)
            try:
                for _ in range(2):
                    res = dg.materialize([counted, doubled], instance=instance,
                                         resources={"mem": dg.InMemoryIOManager()})
                    assert res.success
                kinds = [e.dagster_event.event_type_value if e.dagster_event else "log"
                         for e in instance.all_logs(res.run_id)]
                mats = instance.fetch_materializations(dg.AssetKey("doubled"), limit=10).records
                checks = instance.event_log_storage.get_asset_check_execution_history(
                    dg.AssetCheckKey(dg.AssetKey("counted"), "positive"), limit=10)
                runs = [(r.run_id, r.status.value) for r in instance.get_runs()]
            finally:
                event.remove(Engine, "connect", on_connect)
        assert (home / "history" / "runs" / f"{res.run_id}.db").exists()
        assert not (tmp_path / "elsewhere").exists()
        return kinds, len(mats), [c.status.value for c in checks], runs, list(built), list(asked), list(opened)

    S.install()
    ours = run("patched")
    S.uninstall()
    try:
        stock = run("stock")
    finally:
        S.install()
    kinds, mats, checks, runs, engines, statements, connections = ours
    assert 2 <= len(engines) <= 4 and len(set(engines)) <= 3, engines  # index (+ its init) and 2 runs: not per statement
    assert len(statements) > 10 * len(engines)  # ... for the many statements that went through them
    assert len(stock[4]) > 10 * len(engines) and stock[5] == []  # Dagster's own: an engine per statement
    # one kept connection per file: the two new run shards (copies of the process's empty shard, made once) and
    # the index if it was not open yet (runs.db was, from the set-up); Dagster's own methods open one per statement
    connections = [c for c in connections if c != "template.db"]
    assert len(set(connections)) <= 3 and all(connections.count(f) == 1 for f in connections), connections
    assert {f"{r}.db" for r, _ in runs} <= set(connections) and "runs.db" not in connections, connections
    assert len(stock[6]) > 20 * len(connections) and stock[6].count("runs.db") > 5, (len(stock[6]), connections)
    assert kinds == stock[0] and len(kinds) > 15
    assert mats == stock[1] == 2
    assert checks == stock[2] == ["SUCCEEDED", "SUCCEEDED"]
    assert [status for _, status in runs] == [status for _, status in stock[3]] == ["SUCCESS", "SUCCESS"]


def test_kept_connections_sync_a_write_ahead_log_at_checkpoints_only(tmp_path):
    """The kept connections to the event log's write-ahead-log files (run shards, the index) use
    ``synchronous=NORMAL`` (measured: ~0.1 s less per training run, ~0.3 ms per commit on this disk); a database in
    another journal mode keeps SQLite's default ``FULL``; a stock connection to the same shard still gets the
    default, so the setting lives on riskml's connections only."""
    import sqlite3

    import riskml_assets.definitions  # noqa: F401
    from sqlalchemy import text

    from riskml_assets import instance_storage as S

    @dg.asset
    def one():
        return 1

    home = _shipped_home(tmp_path / "home")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        res = dg.materialize([one], instance=instance, resources={"io_manager": dg.InMemoryIOManager()})
        assert res.success and S.installed()
        seen = {}
        for storage in (instance.event_log_storage, instance.run_storage):
            for url, engine in storage.__dict__.get("_riskml_engines", {}).items():
                with engine.connect() as conn:
                    seen[url.rsplit("/", 1)[-1]] = (conn.execute(text("PRAGMA journal_mode")).scalar(),
                                                    conn.execute(text("PRAGMA synchronous")).scalar())
    assert {f"{res.run_id}.db", "runs.db"} <= set(seen) and set(seen.values()) == {("wal", 1)}, seen
    stock = sqlite3.connect(home / "history" / "runs" / f"{res.run_id}.db")
    assert stock.execute("PRAGMA synchronous").fetchone()[0] == 2
    stock.close()
    rollback = sqlite3.connect(tmp_path / "rollback.db")  # not a write-ahead log: left at FULL
    S._on_connect(rollback, None)
    assert rollback.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert rollback.execute("PRAGMA synchronous").fetchone()[0] == 2
    rollback.close()


def test_kept_connections_see_and_let_through_another_process_writes(tmp_path):
    """Another process with Dagster's own storages (a webserver, the daemon, a run worker without riskml) writes
    to the same instance while this process keeps its connections open: each side sees the other's runs, events
    and materializations at once, and neither is locked out."""
    import subprocess
    import sys

    from riskml_assets import instance_storage as S

    S.install()
    home = _shipped_home(tmp_path / "home")

    @dg.asset(io_manager_key="mem")
    def here():
        return 1

    other = ("import sys, dagster as dg\n"
             "@dg.asset(io_manager_key='mem')\n"
             "def there():\n    return 2\n"
             "with dg.DagsterInstance.from_config(sys.argv[1]) as i:\n"
             "    assert 'riskml_assets' not in sys.modules\n"
             "    for _ in range(2):\n"
             "        assert dg.materialize([there], instance=i, resources={'mem': dg.InMemoryIOManager()}).success\n"
             "    print(len(i.fetch_materializations(dg.AssetKey('here'), limit=10).records))\n")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert dg.materialize([here], instance=instance, resources={"mem": dg.InMemoryIOManager()}).success
        assert instance.event_log_storage._riskml_engines  # connections are kept open now
        out = subprocess.run([sys.executable, "-c", other, str(home)], capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stdout.strip().splitlines()[-1] == "1"  # it saw this process's materialization
        theirs = instance.fetch_materializations(dg.AssetKey("there"), limit=10).records
        assert len(theirs) == 2  # ... and this process sees its two, through the kept connections
        assert len(instance.get_runs()) == 3
        assert dg.materialize([here], instance=instance, resources={"mem": dg.InMemoryIOManager()}).success
        assert len(instance.fetch_materializations(dg.AssetKey("here"), limit=10).records) == 2


def test_a_forked_child_opens_its_own_connections(tmp_path):
    """A forked process (e.g. a multiprocessing worker started with fork) must not use its parent's SQLite
    connections: the child forgets them, opens its own, and the parent's keep working."""
    from riskml_assets import instance_storage as S

    S.install()
    home = _shipped_home(tmp_path / "home")

    @dg.asset(io_manager_key="mem")
    def forked():
        return 1

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert dg.materialize([forked], instance=instance, resources={"mem": dg.InMemoryIOManager()}).success
        parent_engines = dict(instance.event_log_storage._riskml_engines)
        assert parent_engines
        def child() -> str:
            forgot = "_riskml_engines" not in instance.event_log_storage.__dict__
            ok = dg.materialize([forked], instance=instance, resources={"mem": dg.InMemoryIOManager()}).success
            mine = instance.event_log_storage._riskml_engines
            return f"{forgot} {ok} {all(e is not parent_engines.get(k) for k, e in mine.items())}"

        assert in_forked_child(child) == "True True True"
        assert instance.event_log_storage._riskml_engines == parent_engines  # the parent's are untouched
        assert dg.materialize([forked], instance=instance, resources={"mem": dg.InMemoryIOManager()}).success
        assert len(instance.fetch_materializations(dg.AssetKey("forked"), limit=10).records) == 3


def test_threads_share_the_kept_engines(tmp_path):
    """Threads of one process (the code server answers sensors in threads) use a kept engine at the same time:
    each gets its own connection while it needs one, and every write lands."""
    from concurrent.futures import ThreadPoolExecutor

    from riskml_assets import instance_storage as S

    S.install()
    home = _shipped_home(tmp_path / "home")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        def work(i: int) -> int:
            for j in range(10):
                instance.add_dynamic_partitions("tenant", [f"t{i}-{j}"])
                instance.get_runs(limit=5)
            return len(instance.get_dynamic_partitions("tenant"))

        with ThreadPoolExecutor(4) as pool:
            counts = list(pool.map(work, range(4)))
        assert len(instance.get_dynamic_partitions("tenant")) == 40
        assert all(10 <= c <= 40 for c in counts)
        assert len(instance.event_log_storage._riskml_engines) == 1  # the index's, shared by the threads


def test_uninstall_gives_back_dagsters_own_methods():
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
    from dagster._core.storage.runs.base import RunStorage
    from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage

    from riskml_assets import instance_storage as S

    S.install()
    assert SqliteRunStorage.connect is S._connect_single and SqliteRunStorage.dispose is S._dispose
    S.uninstall()
    try:
        assert "dispose" not in SqliteRunStorage.__dict__ and SqliteRunStorage.dispose is RunStorage.dispose
        assert SqliteRunStorage.connect is not S._connect_single
        assert SqliteEventLogStorage._connect is not S._connect and SqliteEventLogStorage.has_table is not S._has_table
    finally:
        S.install()


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


def _schema(path) -> tuple:
    import sqlite3

    with sqlite3.connect(path) as db:
        tables = sorted(r for r in db.execute("select type, name, tbl_name, sql from sqlite_master"))
        return tables, db.execute("select version_num from alembic_version").fetchall(), \
            db.execute("pragma journal_mode").fetchone()[0]


def test_a_new_run_shard_is_a_copy_of_dagsters_own_empty_shard(tmp_path):
    """A new run's event-log shard is copied from an empty shard Dagster's own ``_initdb`` made once per process:
    the same tables, indexes, alembic stamp and write-ahead-log mode as a shard Dagster creates, and the events of
    the run land in it. A shard that exists already is left to Dagster."""
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    from riskml_assets import instance_storage as S

    S.install()
    ours = SqliteEventLogStorage(str(tmp_path / "ours"))
    with ours.run_connection("run-a") as conn:
        conn.exec_driver_sql("select 1")
    S.uninstall()
    try:
        stock = SqliteEventLogStorage(str(tmp_path / "stock"))
        with stock.run_connection("run-a") as conn:
            conn.exec_driver_sql("select 1")
        stock.dispose()
    finally:
        S.install()
    made, want = _schema(tmp_path / "ours" / "run-a.db"), _schema(tmp_path / "stock" / "run-a.db")
    assert made == want and made[2] == "wal" and len(made[0]) > 5 and made[1]
    assert not [p.name for p in (tmp_path / "ours").iterdir() if p.name.endswith(".tmp")]  # no leftovers
    # an existing file is never replaced
    (tmp_path / "ours" / "run-b.db").write_bytes(b"")
    assert not S._new_run_shard_from_template(ours, "run-b") and (tmp_path / "ours" / "run-b.db").stat().st_size == 0
    assert not S._new_run_shard_from_template(ours, "index")
    import shutil

    shutil.rmtree(Path(S._TEMPLATE["path"]).parent)  # the template went: Dagster makes the next shard itself
    assert not S._new_run_shard_from_template(ours, "run-c") and not S._TEMPLATE
    with ours.run_connection("run-c") as conn:
        conn.exec_driver_sql("select 1")
    assert _schema(tmp_path / "ours" / "run-c.db") == want
    assert S._new_run_shard_from_template(ours, "run-d") and _schema(tmp_path / "ours" / "run-d.db") == want  # a new one
    ours.dispose()


def test_present_dynamic_partitions_are_remembered_briefly(tmp_path, monkeypatch):
    """Dagster asks for the tenant partition once per key of every input window; a present partition is
    remembered for a second (deleted here: forgotten at once), an absent one is always asked again."""
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    from riskml_assets import instance_storage as S

    S.install()
    storage = SqliteEventLogStorage(str(tmp_path / "runs"))
    asked = []
    stock = S._STOCK[(SqliteEventLogStorage, "has_dynamic_partition")][0]
    monkeypatch.setitem(S._STOCK, (SqliteEventLogStorage, "has_dynamic_partition"),
                        (lambda st, n, k: asked.append(k) or stock(st, n, k), True))
    storage.add_dynamic_partitions("tenant", ["acme"])
    assert all(storage.has_dynamic_partition("tenant", "acme") for _ in range(50)) and asked == ["acme"]
    assert not storage.has_dynamic_partition("tenant", "other") and not storage.has_dynamic_partition("tenant", "other")
    assert asked == ["acme", "other", "other"]
    storage.delete_dynamic_partition("tenant", "acme")
    assert not storage.has_dynamic_partition("tenant", "acme")  # forgotten at once
    storage.add_dynamic_partitions("tenant", ["acme"])
    assert storage.has_dynamic_partition("tenant", "acme")
    asked.clear()
    monkeypatch.setattr(S, "_PARTITION_TTL_SECONDS", 0.0)  # expired: asked again
    storage.__dict__.pop("_riskml_partitions")
    storage.has_dynamic_partition("tenant", "acme"), storage.has_dynamic_partition("tenant", "acme")
    assert asked == ["acme", "acme"]
    storage.dispose()


def test_window_offsets_are_remembered_and_equal_dagsters_own():
    """partitions.remember_window_offsets: the same datetime as Dagster's own walk through the schedule, for
    weekly, daily (a DST zone) and hourly definitions, backwards and forwards; equal instants in two zones keep
    their own zone; a repeated window is computed once; the lookback mapping gives the same 78 weeks."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    from dagster._core.definitions.partitions.mapping import time_window as tw

    from riskml_assets import partitions as P

    remembered = tw._offsetted_datetime
    assert remembered.riskml_remembered
    stock = remembered.__wrapped__
    P.remember_window_offsets()  # idempotent: not wrapped twice
    assert tw._offsetted_datetime is remembered

    ny = ZoneInfo("America/New_York")
    cases = [
        (P.week_partitions, dt.datetime(2026, 11, 16, tzinfo=dt.timezone.utc), (-77, -1, 0, 3)),
        (dg.DailyPartitionsDefinition("2020-01-01", timezone="America/New_York"),
         dt.datetime(2026, 3, 9, tzinfo=ny), (-3, -1, 2, 300)),  # across the March and November DST changes
        (dg.HourlyPartitionsDefinition("2020-01-01-00:00", timezone="America/New_York"),
         dt.datetime(2026, 11, 1, 3, tzinfo=ny), (-5, 4)),
        (dg.WeeklyPartitionsDefinition("2020-01-06", day_offset=1, timezone="Europe/Berlin"),
         dt.datetime(2026, 4, 6, tzinfo=ZoneInfo("Europe/Berlin")), (-30, 30)),
    ]
    for pdef, start, offsets in cases:
        for off in offsets:
            got, want = remembered(pdef, start, off), stock(pdef, start, off)
            assert got == want and repr(got.tzinfo) == repr(want.tzinfo), (pdef, start, off, got, want)
            assert remembered(pdef, start, off) == want  # a hit gives the same
    utc = dt.datetime(2026, 11, 16, tzinfo=dt.timezone.utc)
    same_instant = utc.astimezone(ZoneInfo("Asia/Tokyo"))
    remembered(P.week_partitions, utc, 0)  # kept for the UTC datetime; offset 0 gives the datetime back
    assert repr(remembered(P.week_partitions, same_instant, 0).tzinfo) == repr(same_instant.tzinfo)

    calls = []

    def counting(pdef, d, off):
        calls.append(off)
        return stock(pdef, d, off)

    tw._offsetted_datetime = counting
    try:
        P.remember_window_offsets()
        for _ in range(3):
            tw._offsetted_datetime(P.week_partitions, dt.datetime(2025, 1, 6, tzinfo=dt.timezone.utc), -77)
        assert calls == [-77]  # computed once
        inst = dg.DagsterInstance.ephemeral()
        inst.add_dynamic_partitions("tenant", ["acme"])
        sub = P.tenant_week.empty_subset().with_partition_keys(["acme|2026-11-16"])
        keys = sorted(P.lookback_mapping.get_upstream_mapped_partitions_result_for_partitions(
            sub, P.tenant_week, P.tenant_week, dynamic_partitions_store=inst).partitions_subset.get_partition_keys())
    finally:
        tw._offsetted_datetime = remembered
    assert len(keys) == P.LOOKBACK_WEEKS and keys[0] == "acme|2025-05-26" and keys[-1] == "acme|2026-11-16"
