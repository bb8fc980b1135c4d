"""Dagster's SQLite event log, with its SQLAlchemy engines kept between statements (issue 11).

Dagster's ``SqliteEventLogStorage`` (the event log of the embedded SQLite instance) builds a new SQLAlchemy engine
for every statement it runs and disposes of it afterwards: one per stored event (two or three for an asset event
or a check result, which are mirrored into the index shard), one per dynamic-partition look-up. Building the
engine and compiling each statement again -- an engine's compiled-statement cache goes with it -- was about a
third of the time spent storing events (profiled: a 12-week ingestion run stored 291 events through 1,692
engines). It also asks, through yet another new engine, whether the index has a table before every
dynamic-partition look-up (266 times in one training run).

``install()`` gives that class, in this process, one kept engine per shard file (LRU, ``MAX_ENGINES``) and a memory
of the tables that exist. It still uses ``NullPool``: every statement opens its own SQLite connection and closes
it, exactly as before, so processes that did not install it (the webserver, the daemon) share the files as they
did; only the engine object and its statement cache are reused. Same files, same schema, same instance config.

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
import sys
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Iterator

SQLITE_EVENT_LOG = "dagster._core.storage.event_log.sqlite.sqlite_event_log"

# the index shard plus the runs being written or read at a time; an engine holds no connection (NullPool)
MAX_ENGINES = 32
SQLITE_BUSY_TIMEOUT_SECONDS = 15  # Dagster's own value for its SQLite connections

_STOCK: dict[str, Any] = {}


def engine_for(storage, conn_string: str):
    """The kept engine of one shard file of ``storage`` (least recently used ones disposed beyond MAX_ENGINES)."""
    from dagster._core.storage.sql import create_engine
    from sqlalchemy.pool import NullPool

    engines = storage.__dict__.setdefault("_riskml_engines", OrderedDict())
    engine = engines.pop(conn_string, None)
    if engine is None:
        engine = create_engine(conn_string, poolclass=NullPool, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
    engines[conn_string] = engine
    while len(engines) > MAX_ENGINES:
        engines.popitem(last=False)[1].dispose()
    return engine


@contextmanager
def _connect(self, shard: str) -> Iterator[Any]:  # Dagster's _connect, the engine kept
    with self._db_lock:
        engine = engine_for(self, self.conn_string_for_shard(shard))
        if shard not in self._initialized_dbs:
            self._initdb(engine)
            self._initialized_dbs.add(shard)
        with engine.connect() as conn:
            with conn.begin():
                yield conn


def _has_table(self, table_name: str) -> bool:
    """A table, once there, stays (migrations only add them; ``wipe`` forgets): a present one is remembered, an
    absent one asked again."""
    tables = self.__dict__.setdefault("_riskml_tables", set())
    if table_name in tables:
        return True
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME

    engine = engine_for(self, self.conn_string_for_shard(INDEX_SHARD_NAME))
    with engine.connect() as conn:
        found = bool(engine.dialect.has_table(conn, table_name))
    if found:
        tables.add(table_name)
    return found


def _drop_engines(storage) -> None:
    storage.__dict__.pop("_riskml_tables", None)
    engines = storage.__dict__.pop("_riskml_engines", None) or {}
    for engine in engines.values():
        engine.dispose()


def _wipe(self) -> None:
    _drop_engines(self)
    _STOCK["wipe"](self)


def _dispose(self) -> None:
    _drop_engines(self)
    _STOCK["dispose"](self)


def install() -> None:
    """Keep engines in every ``SqliteEventLogStorage`` of this process (idempotent)."""
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    if _STOCK:
        return
    for name, patched in (("_connect", _connect), ("has_table", _has_table), ("wipe", _wipe), ("dispose", _dispose)):
        _STOCK[name] = SqliteEventLogStorage.__dict__[name]
        setattr(SqliteEventLogStorage, name, patched)


def uninstall() -> None:
    """Dagster's own methods again (for comparisons in the tests and benchmarks)."""
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    for name, stock in _STOCK.items():
        setattr(SqliteEventLogStorage, name, stock)
    _STOCK.clear()


def installed() -> bool:
    return bool(_STOCK)


class _InstallOnImport(importlib.abc.MetaPathFinder):
    """Runs ``install()`` right after Dagster's SQLite event-log module is first imported (when an instance is
    opened), so loading the code location does not import SQLAlchemy for it."""

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
