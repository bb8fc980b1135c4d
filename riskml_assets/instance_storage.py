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

Installed when the code location loads (``riskml_assets.definitions``: run workers, the code server, tests) and
by the ``riskml`` CLI before it opens the instance. PostgreSQL (``deploy/dagster.yaml``) pools its connections
already and is not affected.
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


def _has_table(self, table_name: str) -> bool:
    """A table, once there, stays (migrations only add them; ``wipe`` forgets): a present one is remembered, an
    absent one asked again."""
    tables = self.__dict__.setdefault("_riskml_tables", set())
    if table_name in tables:
        return True
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME

    engine = engine_for(self, self.conn_string_for_shard(INDEX_SHARD_NAME), _event_log_connect_args())
    with engine.connect() as conn:
        found = bool(engine.dialect.has_table(conn, table_name))
    if found:
        tables.add(table_name)
    return found


def _drop_engines(storage, close: bool = True) -> None:
    """Dispose of ``storage``'s kept engines (``close=False`` in a forked child: the connections are the parent's,
    and must not be closed or used there)."""
    storage.__dict__.pop("_riskml_tables", None)
    storage.__dict__.pop("_riskml_partitions", None)
    engines = storage.__dict__.pop("_riskml_engines", None) or {}
    for engine in engines.values():
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
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
    from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
    from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage

    out = [(SqliteEventLogStorage, {"_connect": _connect, "has_table": _has_table,
                                    "has_dynamic_partition": _has_dynamic_partition,
                                    "delete_dynamic_partition": _delete_dynamic_partition})]
    out += [(cls, {"connect": _connect_single}) for cls in (SqliteRunStorage, SqliteScheduleStorage)]
    return [(cls, {**methods, "wipe": _wipe, "dispose": _dispose}) for cls, methods in out]


def install() -> None:
    """Keep engines in every SQLite instance storage of this process (idempotent)."""
    if _STOCK:
        return
    for cls, methods in _patches():
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
    """Runs ``install()`` right after Dagster's SQLite storage modules are imported (when an instance is opened),
    so loading the code location does not import SQLAlchemy for it."""

    def find_spec(self, fullname, path, target=None):
        if fullname != SQLITE_EVENT_LOG:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            install()

        spec.loader.exec_module = exec_module
        return spec


def install_when_imported() -> None:
    """``install()`` now if Dagster's SQLite event log is loaded, else as soon as it is."""
    if SQLITE_EVENT_LOG in sys.modules:
        install()
    elif not any(isinstance(f, _InstallOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _InstallOnImport())
