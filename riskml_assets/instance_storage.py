"""The Dagster instance's SQLite event log, with its SQLAlchemy engines kept between statements (issue 11).

Dagster's ``SqliteEventLogStorage`` builds a new SQLAlchemy engine for every statement it runs and disposes of
it afterwards: one per stored event (two or three for an asset event or a check result, which are mirrored into
the index shard), one per dynamic-partition look-up. Building the engine and compiling each statement again --
an engine's compiled-statement cache goes with it -- was about a third of the time spent storing events
(profiled: a 12-week ingestion run stored 291 events through 1,692 engines). It also asks, through yet
another new engine, whether the index has a table before every dynamic-partition look-up (266 times in one
training run); a present table is remembered here.

``RiskmlSqliteEventLogStorage`` keeps one engine per shard file (the index and the most recent runs). It still
uses ``NullPool``: every statement opens its own SQLite connection and closes it, exactly as before, so
several processes (run workers, the webserver, the daemon) share the files as they did; only the engine object
and its statement cache are reused. Same files and schema as Dagster's class: an instance can switch between
the two.

Configured in ``config/dagster_home.yaml`` (copied into a new DAGSTER_HOME) and ``dagster.yaml``::

    event_log_storage:
      module: riskml_assets.instance_storage
      class: RiskmlSqliteEventLogStorage

``base_dir`` defaults to ``$DAGSTER_HOME/history/runs``, where Dagster's default SQLite storage keeps it.
PostgreSQL (``deploy/dagster.yaml``) pools its connections already and does not use this.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Iterator

from dagster import Field, StringSource
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.sql import create_engine
from sqlalchemy.pool import NullPool

# the index shard plus the runs being written or read at a time; an engine holds no connection (NullPool)
MAX_ENGINES = 32
SQLITE_BUSY_TIMEOUT_SECONDS = 15  # Dagster's own value for its SQLite connections


def default_base_dir() -> str:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise ValueError("RiskmlSqliteEventLogStorage: set base_dir in dagster.yaml or the DAGSTER_HOME variable")
    return os.path.join(home, "history", "runs", "")


class RiskmlSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` that reuses one SQLAlchemy engine per shard (see the module docstring)."""

    def __init__(self, base_dir: str | None = None, inst_data=None):
        self._engines: OrderedDict[str, Any] = OrderedDict()  # before Dagster's __init__, which runs statements
        self._tables: set[str] = set()
        super().__init__(base_dir or default_base_dir(), inst_data=inst_data)

    @classmethod
    def config_type(cls):
        return {"base_dir": Field(StringSource, is_required=False,
                                  description="Folder of the SQLite shards (default: $DAGSTER_HOME/history/runs)")}

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> "RiskmlSqliteEventLogStorage":
        return cls(base_dir=(config_value or {}).get("base_dir"), inst_data=inst_data)

    def engine_for(self, conn_string: str):
        """The kept engine of one shard file (least recently used ones are disposed beyond ``MAX_ENGINES``)."""
        engine = self._engines.pop(conn_string, None)
        if engine is None:
            engine = create_engine(conn_string, poolclass=NullPool,
                                   connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
        self._engines[conn_string] = engine
        while len(self._engines) > MAX_ENGINES:
            _, old = self._engines.popitem(last=False)
            old.dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Any]:  # Dagster's _connect, with the engine kept
        with self._db_lock:
            engine = self.engine_for(self.conn_string_for_shard(shard))
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                with conn.begin():
                    yield conn

    def has_table(self, table_name: str) -> bool:
        """Dagster asks before every dynamic-partition look-up and asset-check write whether the index has a table
        (266 times in one training run, each through a new engine). A table, once there, stays (migrations only
        add them; ``wipe`` forgets): a present table is remembered, an absent one asked again."""
        if table_name in self._tables:
            return True
        engine = self.engine_for(self.conn_string_for_shard(INDEX_SHARD_NAME))
        with engine.connect() as conn:
            found = bool(engine.dialect.has_table(conn, table_name))
        if found:
            self._tables.add(table_name)
        return found

    def _drop_engines(self) -> None:
        self._tables.clear()
        while self._engines:
            self._engines.popitem()[1].dispose()

    def wipe(self) -> None:
        self._drop_engines()
        super().wipe()

    def dispose(self) -> None:
        self._drop_engines()
        super().dispose()
