"""Dagster's SQLite instance storages, with their SQLite connections kept between statements (issue 11).

Dagster's SQLite storages (the embedded instance: ``SqliteEventLogStorage``, ``SqliteRunStorage``,
``SqliteScheduleStorage``) build a new SQLAlchemy engine for every statement, with ``NullPool``: every statement
opens a SQLite connection, runs, commits and closes it, and the engine is thrown away. Profiled, that was most of
the time a run spends storing its events:

* the compiled-statement cache goes with each engine, so every statement is compiled again (a 12-week ingestion
  run stored 291 events through 1,692 engines);
* in write-ahead-log mode the last connection to close checkpoints the log into the database and deletes it, so
  each statement paid a checkpoint and its file syncs on top of its commit;
* before every dynamic-partition look-up and check result it asks, through yet another engine, whether the index
  has a table (266 times in one training run).

``install()`` gives those classes, in this process, one kept engine per database file (LRU, ``MAX_ENGINES``) whose
pool keeps one open connection (more only while threads use it at once; the extra ones close on return), and a
memory of the tables that exist. The kept connections to write-ahead-log files sync the log at checkpoints rather
than at every commit (``synchronous=NORMAL``, SQLite's advice for WAL: ~0.3 ms less per commit here; a process crash
loses nothing committed, a power loss at most the last commits). Nothing else changes: the same files, schema,
journal mode, busy timeout and transactions (one per ``connect()``, committed at its end, as before), and the
same instance config. Other
processes that use the files (the webserver, the daemon) work as before: SQLite's file locks, not the pool, order
the writers, and an idle kept connection holds no lock. A forked child forgets the parent's connections.

Why a patch and not a storage class named in ``dagster.yaml``: a custom class does not learn which folder the
instance was opened from (``DagsterInstance.from_config(dir)``, run workers rebuilt from an instance ref), only
its own config; defaulting to ``$DAGSTER_HOME`` read and wrote the wrong event log whenever an instance was opened
from another folder. Patched here, Dagster keeps choosing the folder. Dagster is pinned (1.13.27); the tests
check the patched methods against the stock ones on real runs.

**PostgreSQL** (``deploy/dagster.yaml``, dagster-postgres): its storages build one engine each, but with ``NullPool``
in every process but the webserver (``optimize_for_webserver``), so every statement opens a new server connection:
a TCP (in production TLS) handshake, authentication (with Entra ID a token) and a server process, ~15 ms even on
127.0.0.1. A training run opened ~600 of them (P1 on a local server: 16 s, 8.9 s of it for Dagster's no-op floor).
``install()`` gives each PostgreSQL storage of this process one kept engine with the same URL, token provider and
``AUTOCOMMIT``: one pooled connection kept open between statements (extra ones for threads, closed on return),
checked with a ping before each use (``pool_pre_ping``: a connection the server, a proxy or a load balancer
dropped while idle is replaced, not failed on) and renewed after ``PG_POOL_RECYCLE_SECONDS``. A storage the
webserver already pools keeps its own engine. Present tables are remembered (Dagster asked inside an open
transaction, which took a second connection for every asset event) and present dynamic partitions briefly, as for
SQLite. A forked child forgets the parent's engines (psycopg2 does not end a session that another process opened
when it frees the connection, so the parent's stay open: tested).

Installed when the code location loads (``riskml_assets.definitions``: run workers, the code server, tests) and
by the ``riskml`` CLI before it opens the instance: at once for storage modules already imported (a run worker
opens its instance before it loads the code), else as soon as Dagster imports them.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import threading
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Iterator

SQLITE_EVENT_LOG = "dagster._core.storage.event_log.sqlite.sqlite_event_log"
POSTGRES = "dagster_postgres"
PG_POOL_RECYCLE_SECONDS = 1800  # a kept PostgreSQL connection is renewed after this (also renews an Entra ID login)

WAL_SYNCHRONOUS = "NORMAL"  # on kept connections to write-ahead-log files (the event log shards); see _on_connect

# per storage object: the index shard plus the runs being written or read at a time (each holds one connection)
MAX_ENGINES = 32

_STOCK: dict[tuple[type, str], tuple[Any, bool]] = {}  # (class, name): (Dagster's method, the class's own?)
_OWNERS: "weakref.WeakSet[Any]" = weakref.WeakSet()  # storages holding kept engines (forgotten in a forked child)
_LOCK = threading.Lock()  # the run and schedule storages have no lock of their own around connect()


def engine_for(storage, conn_string: str, connect_args: dict | None = None):
    """The kept engine of one database file of ``storage`` (least recently used ones disposed beyond MAX_ENGINES).

    Its pool keeps one connection open between statements; threads using it at the same time get extra
    connections, closed when they are returned. ``connect_args``: those Dagster passes for this storage."""
    from dagster._core.storage.sql import create_engine
    from sqlalchemy.pool import QueuePool

    with _LOCK:
        engines = storage.__dict__.setdefault("_riskml_engines", OrderedDict())
        engine = engines.pop(conn_string, None)
        if engine is None:
            engine = create_engine(conn_string, poolclass=QueuePool, pool_size=1, max_overflow=-1,
                                   # a pooled connection may serve another thread later (one at a time)
                                   connect_args={**(connect_args or {}), "check_same_thread": False})
            from sqlalchemy import event

            event.listen(engine, "connect", _on_connect)
            _OWNERS.add(storage)
        engines[conn_string] = engine
        while len(engines) > MAX_ENGINES:
            engines.popitem(last=False)[1].dispose()  # closes its idle connection; one in use closes on return
        return engine


def _on_connect(dbapi_conn, _record) -> None:
    """A new kept connection to a write-ahead-log database syncs the log at checkpoints, not at every commit
    (``synchronous=NORMAL``: SQLite's advice for WAL; a committed event survives a crash of the process, only a power
    loss can undo the last ones, and the file is never corrupted). Databases in another journal mode keep
    SQLite's default (``FULL``)."""
    cur = dbapi_conn.cursor()
    try:
        if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            cur.execute(f"PRAGMA synchronous={WAL_SYNCHRONOUS}")
    finally:
        cur.close()


def _event_log_connect_args() -> dict:
    from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS

    return {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}  # what Dagster's SQLite event log passes


@contextmanager
def _connect(self, shard: str) -> Iterator[Any]:  # SqliteEventLogStorage._connect, the engine kept
    with self._db_lock:
        engine = engine_for(self, self.conn_string_for_shard(shard), _event_log_connect_args())
        if shard not in self._initialized_dbs:
            if not _new_run_shard_from_template(self, shard):
                self._initdb(engine)
            self._initialized_dbs.add(shard)
        with engine.connect() as conn:
            with conn.begin():
                yield conn


@contextmanager
def _connect_single(self) -> Iterator[Any]:  # SqliteRunStorage / SqliteScheduleStorage.connect, the engine kept
    engine = engine_for(self, self._conn_string)  # Dagster passes no connect_args there
    with engine.connect() as conn:
        with conn.begin():
            yield conn


_TEMPLATE: dict[str, Any] = {}  # the empty run shard this process copies ("path"), removed when the process exits


def _run_shard_template(storage) -> str:
    """An empty run shard made by Dagster's own ``_initdb`` once per process (tables, write-ahead log mode, alembic
    stamp), in a temporary folder; closed, so the file holds all of it."""
    if "path" not in _TEMPLATE:
        import atexit
        import shutil
        import tempfile

        from dagster._core.storage.sql import create_engine
        from sqlalchemy.pool import NullPool

        folder = tempfile.mkdtemp(prefix="riskml-run-shard-")
        path = os.path.join(folder, "template.db")
        owner = os.getpid()
        atexit.register(lambda: os.getpid() == owner and shutil.rmtree(folder, ignore_errors=True))
        engine = create_engine(f"sqlite:///{path}", poolclass=NullPool, connect_args=_event_log_connect_args())
        try:
            type(storage)._initdb(storage, engine)
        finally:
            engine.dispose()
        if os.path.exists(path + "-wal"):  # pragma: no cover - the last connection closed checkpoints the log
            raise RuntimeError("the run shard template kept a write-ahead log")
        _TEMPLATE["path"] = path
    return _TEMPLATE["path"]


def _new_run_shard_from_template(storage, shard: str) -> bool:
    """Create a new run's shard file as a copy of the template (Dagster's ``_initdb`` builds every table and loads
    its migration scripts for each run: ~0.1 s). Only when the file does not exist yet; it appears atomically (a
    hard link), so a process creating the same shard at the same time finds either nothing or the whole file.
    False when it is not a new run shard: Dagster's ``_initdb`` then does what it always did."""
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME

    if shard == INDEX_SHARD_NAME:
        return False
    target = storage.path_for_shard(shard)
    if os.path.exists(target):
        return False
    import shutil
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=".riskml-", suffix=".db.tmp", dir=os.path.dirname(target))
    os.close(fd)
    try:
        shutil.copyfile(_run_shard_template(storage), tmp)
        os.link(tmp, target)
        return True
    except FileExistsError:
        return False
    except OSError:  # the template went (a cleaned temp folder), no hard links here, ...: Dagster's own way
        _TEMPLATE.clear()
        return False
    finally:
        os.unlink(tmp)


_PARTITION_TTL_SECONDS = 1.0


def _has_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> bool:
    """Dagster asks whether a dynamic partition exists for every key of every input's window (204 times in one
    training run, the same tenant each time). A present one is remembered for ``_PARTITION_TTL_SECONDS`` (deleted
    here: forgotten at once); an absent one is asked again."""
    import time

    seen = self.__dict__.setdefault("_riskml_partitions", {})
    key = (partitions_def_name, partition_key)
    if seen.get(key, 0.0) > time.monotonic():
        return True
    found = _stock(type(self), "has_dynamic_partition")(self, partitions_def_name, partition_key)
    if found:
        seen[key] = time.monotonic() + _PARTITION_TTL_SECONDS
    return found


def _delete_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> None:
    self.__dict__.get("_riskml_partitions", {}).pop((partitions_def_name, partition_key), None)
    _stock(type(self), "delete_dynamic_partition")(self, partitions_def_name, partition_key)


def _remembered_table(storage, table_name: str, ask) -> bool:
    """A table, once there, stays (migrations only add them; ``wipe`` forgets): a present one is remembered, an
    absent one asked again (``ask()``)."""
    tables = storage.__dict__.setdefault("_riskml_tables", set())
    if table_name in tables:
        return True
    found = ask()
    if found:
        tables.add(table_name)
    return found


def _has_table(self, table_name: str) -> bool:  # SqliteEventLogStorage.has_table, through the kept engine
    def ask() -> bool:
        from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME

        engine = engine_for(self, self.conn_string_for_shard(INDEX_SHARD_NAME), _event_log_connect_args())
        with engine.connect() as conn:
            return bool(engine.dialect.has_table(conn, table_name))

    return _remembered_table(self, table_name, ask)


def pg_engine_for(storage):
    """The kept engine of a PostgreSQL storage (see the module's docstring); the storage's own engine when it is
    pooled already (the webserver's)."""
    from sqlalchemy.pool import NullPool

    if not isinstance(storage._engine.pool, NullPool):
        return storage._engine
    engine = storage.__dict__.get("_riskml_pg_engine")
    if engine is None:
        from dagster_postgres.utils import create_pg_engine

        with _LOCK:
            engine = storage.__dict__.get("_riskml_pg_engine")
            if engine is None:
                engine = create_pg_engine(storage._engine.url, getattr(storage, "_token_provider", None),
                                          isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=-1,
                                          pool_pre_ping=True, pool_recycle=PG_POOL_RECYCLE_SECONDS)
                storage.__dict__["_riskml_pg_engine"] = engine
                _OWNERS.add(storage)
    return engine


def _pg_connect(self, *_run_id):  # PostgresEventLogStorage._connect, Postgres{Run,Schedule}Storage.connect
    from dagster_postgres.utils import create_pg_connection

    return create_pg_connection(pg_engine_for(self))


def _pg_has_table(self, table_name: str) -> bool:
    """PostgresEventLogStorage.has_table with the memory of present tables: Dagster asks it inside an open
    transaction (before storing each asset event's tags), so each question took a second connection."""
    return _remembered_table(self, table_name, lambda: _stock(type(self), "has_table")(self, table_name))


def _drop_engines(storage, close: bool = True) -> None:
    """Dispose of ``storage``'s kept engines (``close=False`` in a forked child: the connections are the parent's,
    and must not be closed or used there)."""
    storage.__dict__.pop("_riskml_tables", None)
    storage.__dict__.pop("_riskml_partitions", None)
    engines = list((storage.__dict__.pop("_riskml_engines", None) or {}).values())
    engines += [e for e in [storage.__dict__.pop("_riskml_pg_engine", None)] if e is not None]
    for engine in engines:
        engine.dispose(close=close)


def _stock(cls: type, name: str):
    """Dagster's own ``name`` of the patched class ``cls`` is (or derives from)."""
    return next(_STOCK[(klass, name)][0] for klass in cls.__mro__ if (klass, name) in _STOCK)


def _wipe(self) -> None:
    _drop_engines(self)
    _stock(type(self), "wipe")(self)


def _dispose(self) -> None:
    _drop_engines(self)
    _stock(type(self), "dispose")(self)


def _after_fork_in_child() -> None:
    global _LOCK
    _LOCK = threading.Lock()  # another thread of the parent may have held it
    _TEMPLATE.clear()  # the parent removes its own when it exits
    for storage in list(_OWNERS):
        _drop_engines(storage, close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _patches() -> list[tuple[type, dict]]:
    """The patched methods of each storage class: SQLite's (imported here if need be), and PostgreSQL's only where
    dagster-postgres is imported already (in use: installing does not import it)."""
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
    from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
    from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage

    out = [(SqliteEventLogStorage, {"_connect": _connect, "has_table": _has_table,
                                    "has_dynamic_partition": _has_dynamic_partition,
                                    "delete_dynamic_partition": _delete_dynamic_partition})]
    out += [(cls, {"connect": _connect_single}) for cls in (SqliteRunStorage, SqliteScheduleStorage)]
    if POSTGRES in sys.modules:
        from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

        out += [(PostgresEventLogStorage, {"_connect": _pg_connect, "has_table": _pg_has_table,
                                           "has_dynamic_partition": _has_dynamic_partition,
                                           "delete_dynamic_partition": _delete_dynamic_partition})]
        out += [(cls, {"connect": _pg_connect}) for cls in (PostgresRunStorage, PostgresScheduleStorage)]
    return [(cls, {**methods, "wipe": _wipe, "dispose": _dispose}) for cls, methods in out]


def install() -> None:
    """Keep engines in every SQLite and PostgreSQL instance storage of this process (idempotent; a storage module
    imported later is patched by a later call: ``install_when_imported``)."""
    for cls, methods in _patches():
        if any(klass is cls for klass, _ in _STOCK):
            continue
        for name, patched in methods.items():
            # the class's own method, or (``dispose`` of the run storage) the one it inherits
            own = name in cls.__dict__
            _STOCK[(cls, name)] = (cls.__dict__[name] if own else getattr(cls, name), own)
            setattr(cls, name, patched)


def uninstall() -> None:
    """Dagster's own methods again (for comparisons in the tests and benchmarks). The kept connections are closed,
    so Dagster's own methods find the files as they would without riskml."""
    for storage in list(_OWNERS):
        _drop_engines(storage)
    for (cls, name), (stock, own) in _STOCK.items():
        if own:
            setattr(cls, name, stock)
        else:
            delattr(cls, name)
    _STOCK.clear()


def installed() -> bool:
    return bool(_STOCK)


class _InstallOnImport(importlib.abc.MetaPathFinder):
    """Runs ``install()`` right after a storage module (Dagster's SQLite event log, dagster-postgres) is imported
    (when an instance is opened), so loading the code location does not import SQLAlchemy for it."""

    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.names:
            return None
        self.names.discard(fullname)
        sys.meta_path.remove(self)  # the module's own spec, found without this finder
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            if self.names:
                sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            install()

        spec.loader.exec_module = exec_module
        return spec


def install_when_imported() -> None:
    """``install()`` now if Dagster's SQLite event log is loaded (an instance is open), else as soon as it is; and
    for dagster-postgres, now or as soon as it is imported."""
    if SQLITE_EVENT_LOG in sys.modules:
        install()
    waiting = [m for m in (SQLITE_EVENT_LOG, POSTGRES) if m not in sys.modules]
    if waiting and not any(isinstance(f, _InstallOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _InstallOnImport(waiting))
