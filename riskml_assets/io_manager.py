"""The one IO manager: data frames as parquet, JSON-able dicts (models, manifests, reports) as JSON.

Built on ``dagster.UPathIOManager`` so the same code writes to a local folder or to any fsspec URL
(``abfs://container/path`` on Azure through adlfs). Nothing is pickled.

Partition keys become path segments, so they are checked before any path is built, for outputs and
inputs alike: the ``tenant`` dimension must follow the data contract (``contract.validate_tenant``),
no key may hold a path separator or be ``.``/``..``, and every path must stay under ``base_path``
(a dynamic partition such as ``../evil`` added to the instance would otherwise write outside it).
"""

import json
import os
import posixpath
from typing import Any, Optional

import dagster as dg
from pydantic import Field

from .core.contract import ContractError, validate_tenant
from .core.lazy import lazy_attr, lazy_module

pd = lazy_module("pandas")
pa = lazy_module("pyarrow")
pa_parquet = lazy_module("pyarrow.parquet")

# imported on first use, not when the code location loads (upath scans every entry point on import)
pl = lazy_module("polars")
UPath = lazy_attr("upath", "UPath")

PARQUET, JSON = ".parquet", ".json"
READ_THREADS = 8  # concurrent reads of a window's weeks on a remote (fsspec) store
READ_CACHE_MB = 256  # default size of the run's read cache (RiskmlIOManager.read_cache_mb)
_MISSING = object()


def check_partition_key(key: Any) -> None:
    """ContractError unless every dimension of ``key`` is safe as a path segment (the tenant by the contract)."""
    dims = key.keys_by_dimension if isinstance(key, dg.MultiPartitionKey) else {"": key}
    for dim, value in dims.items():
        if dim == "tenant":
            validate_tenant(value)
        elif (not isinstance(value, str) or value in ("", ".", "..") or "/" in value or "\\" in value
              or "\x00" in value):
            raise ContractError(f"partition key {value!r}{f' (dimension {dim})' if dim else ''} cannot be a path "
                                f"segment: it is empty, '.', '..' or holds a path separator")


def is_inside(base: UPath, path: UPath) -> bool:
    """Is ``path`` lexically inside ``base`` (``..`` segments resolved, links not followed)?"""
    if getattr(base, "protocol", "") in ("", "file", "local"):
        b, p = os.path.normpath(os.path.abspath(str(base))), os.path.normpath(os.path.abspath(str(path)))
        return p == b or p.startswith(b.rstrip(os.sep) + os.sep)
    if getattr(path, "protocol", None) != base.protocol:
        return False
    b, p = posixpath.normpath(base.path), posixpath.normpath(path.path)
    return p == b or p.startswith(b.rstrip("/") + "/")


class ReadCache:
    """Parquet values already read in this run, kept for the next step that reads the same file.

    In one run every step loads its inputs again from storage: ``dataset_splits`` is read by six steps of a
    training run, ``balanced_train`` by two, a snapshot window by up to three. The IO manager lives as long as the
    run (in-process executor: one instance for all steps), and so does this cache.

    * Local files only: an entry is stamped with the file's (mtime_ns, size, inode) when read and is used only
      while ``os.stat`` still gives that stamp, so a file rewritten since (by this run or any other process) is
      read again.
    * Each reader gets its own value: a deep copy of a pandas frame (a step may change its input in place), a
      clone of a polars frame (shared buffers, copied on write), an Arrow table as it is (immutable).
    * Bounded: at most ``max_bytes`` (least recently used first out); a value larger than a quarter of it is not
      kept. ``max_bytes=0`` turns it off.
    """

    def __init__(self, max_bytes: int):
        import threading
        from collections import OrderedDict

        self.max_bytes = max(int(max_bytes), 0)
        self._entries: "OrderedDict[tuple[str, str], tuple[tuple, Any, int]]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @staticmethod
    def stamp(file: str) -> tuple | None:
        try:
            st = os.stat(file)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def get(self, file: str, kind: str) -> tuple[Any, tuple | None]:
        """(a reader's own copy of the kept value or _MISSING, the file's stamp now)."""
        stamp = self.stamp(file) if self.max_bytes and file else None
        if stamp is None:
            return _MISSING, None
        with self._lock:
            entry = self._entries.get((file, kind))
            if entry is None or entry[0] != stamp:
                self.misses += 1
                return _MISSING, stamp
            self._entries.move_to_end((file, kind))
            self.hits += 1
        return _own_copy(entry[1]), stamp

    def put(self, file: str, kind: str, stamp: tuple | None, value: Any) -> Any:
        """Keep ``value`` (read from ``file`` when it had ``stamp``); returns what the reader gets."""
        size = _value_bytes(value)
        if stamp is None or size is None or size > self.max_bytes // 4:
            return value
        with self._lock:
            old = self._entries.pop((file, kind), None)
            if old is not None:
                self._bytes -= old[2]
            self._entries[(file, kind)] = (stamp, value, size)
            self._bytes += size
            while self._bytes > self.max_bytes and self._entries:
                _, (_, _, freed) = self._entries.popitem(last=False)
                self._bytes -= freed
        return _own_copy(value)

    def forget(self, file: str) -> None:
        """Drop what is kept of ``file`` (it is being written: the stamp alone may not change when a file is
        rewritten in place with the same size within the clock's granularity)."""
        if not self.max_bytes or not file:
            return
        with self._lock:
            for key in [k for k in self._entries if k[0] == file]:
                self._bytes -= self._entries.pop(key)[2]

    @property
    def nbytes(self) -> int:
        return self._bytes


def _own_copy(value: Any) -> Any:
    if isinstance(value, pd.DataFrame):
        return value.copy(deep=True)
    if isinstance(value, pl.DataFrame):
        return value.clone()
    return value  # an Arrow table: immutable


def _value_bytes(value: Any) -> int | None:
    """Approximate bytes held by a kept value (None: a type the cache does not keep)."""
    if isinstance(value, pd.DataFrame):
        size = int(value.memory_usage(index=True, deep=False).sum())
        objects = [c for c, t in value.dtypes.items() if t == object]
        if objects and len(value):  # the Python objects (strings) behind them, estimated from up to 1,000 rows
            sample = value.iloc[:: max(len(value) // 1000, 1)][objects]
            size += int(sample.memory_usage(index=False, deep=True).sum() / len(sample) * len(value))
        return size
    if isinstance(value, pl.DataFrame):
        return int(value.estimated_size())
    if isinstance(value, pa.Table):
        return int(value.nbytes)
    return None


class RiskmlUPathIOManager(dg.UPathIOManager):
    extension = None  # chosen per object: .parquet for frames, .json for dicts

    def __init__(self, base_path=None, read_cache_mb: int = READ_CACHE_MB):
        super().__init__(base_path=base_path)
        local = getattr(self._base_path, "protocol", "") == ""  # plain paths: os.stat and os.fspath apply
        self.read_cache = ReadCache(int(read_cache_mb) * 2**20 if local else 0)

    def _with_extension(self, path):  # keep the partition path bare; the suffix is added per object
        return path

    def _refuse(self, context, what: str, why: str):
        asset = context.asset_key.to_user_string() if context.has_asset_key else "output"
        io = "reading" if isinstance(context, dg.InputContext) else "writing"
        return ContractError(f"riskml IO manager: refused {io} {asset} for {what}: {why}; nothing was "
                             f"{'read' if io == 'reading' else 'written'} (storage root {self._base_path})")

    def _inside_or_raise(self, context, path: UPath, what: str) -> UPath:
        if not is_inside(self._base_path, path):
            raise self._refuse(context, what, f"the path {path} leaves the storage root")
        return path

    def _get_paths_for_partitions(self, context):
        # the keys are checked before any path is built (outputs and inputs alike)
        for key in context.asset_partition_keys:
            try:
                check_partition_key(key)
            except ContractError as exc:
                raise self._refuse(context, f"partition key {str(key)!r}", str(exc)) from None
        paths = super()._get_paths_for_partitions(context)
        for key, path in paths.items():
            self._inside_or_raise(context, path, f"partition key {str(key)!r}")
        return paths

    def make_safe_partition_path(self, base_path: UPath, partition: str) -> UPath:
        # also the join point of Dagster's backcompat multi-partition paths: never leave the root
        path = super().make_safe_partition_path(base_path, partition)
        if not is_inside(self._base_path, path):
            raise ContractError(f"riskml IO manager: partition {partition!r} would leave the storage root "
                                f"{self._base_path}; nothing was read or written")
        return path

    def _get_path(self, context):
        return self._inside_or_raise(context, super()._get_path(context), "its asset path")

    def handle_output(self, context: dg.OutputContext, obj: Any):
        if context.has_asset_partitions and isinstance(obj, dict) and obj and all(
            isinstance(v, (pd.DataFrame, pl.DataFrame)) for v in obj.values()
        ):
            paths = self._get_paths_for_partitions(context)
            for key, frame in obj.items():
                self.dump_to_path(context, frame, paths[key])
            return
        super().handle_output(context, obj)

    def dump_to_path(self, context, obj: Any, path: UPath):
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(obj, pl.LazyFrame):
            obj = obj.collect()
        if isinstance(obj, (pd.DataFrame, pl.DataFrame)):
            target = path.with_name(path.name + PARQUET)
            self.read_cache.forget(self._cache_key(target))
            with target.open("wb") as fh:
                if isinstance(obj, pl.DataFrame):
                    obj.write_parquet(fh)
                else:
                    obj.to_parquet(fh, index=False)
            self._remove(path.with_name(path.name + JSON))
        elif isinstance(obj, dict):
            target = path.with_name(path.name + JSON)
            target.write_text(json.dumps(obj, default=_json_default))
            self.read_cache.forget(self._cache_key(path.with_name(path.name + PARQUET)))
            self._remove(path.with_name(path.name + PARQUET))
        else:
            raise TypeError(
                f"{context.asset_key.to_user_string()}: the riskml IO manager stores pandas/polars frames and "
                f"JSON-able dicts, got {type(obj).__name__}"
            )

    def _cache_key(self, file: UPath) -> str:
        """The read cache's name for ``file`` ('' when the cache is off: only local paths have an os.fspath)."""
        return os.fspath(file) if self.read_cache.max_bytes else ""

    @staticmethod
    def _remove(p: UPath) -> None:
        if p.exists():
            p.unlink()

    def load_partitions(self, context: dg.InputContext):
        # An input with allow_missing_partitions (a lookback window reaching before the tenant's history, weeks
        # without files) misses partitions as a matter of course: one info line per input says how many, instead
        # of Dagster's "Couldn't load partition" warning for each of them.
        if not (context.definition_metadata or {}).get("allow_missing_partitions", False):
            return super().load_partitions(context)
        paths = self._get_paths_for_partitions(context)
        backcompat = self._get_multipartition_backcompat_paths(context)
        keys = sorted(context.asset_partition_keys, key=str)  # tenant|week: oldest week first (Dagster's order varies)
        listings: dict = {}
        candidates = {key: [p for p in (paths[key], backcompat.get(key)) if p is not None] for key in keys}
        for key in keys:  # listed first, one request per folder; the reads below only open what is there
            for path in candidates[key]:
                self._stored_names(path.parent, listings)

        def read():
            return self._read_window(context, keys, candidates, listings)

        if (context.definition_metadata or {}).get("lazy", False):
            return LazyWindow(read)  # read when the step asks for it (an input it needs only sometimes)
        return read()

    def _read_window(self, context, keys: list, candidates: dict, listings: dict):
        """The stored values of a window's ``keys`` ({key: value}, or the value itself for one key), the missing
        ones skipped and said in one line."""

        def load(key):
            for path in candidates[key]:
                try:
                    return self.load_from_path(context=context, path=path, stored=listings[str(path.parent)],
                                               arrow_for_pandas=True)
                except FileNotFoundError:
                    continue
            return _MISSING

        # on a blob store the weeks of a window are read concurrently (each read waits on a round trip); a local
        # disk reads them as fast one after the other (measured: threads only added contention on 2 cores)
        threads = min(self.read_threads(), len(keys))
        fast = {}
        if getattr(self._base_path, "protocol", "") == "" and (
                _wants(context, pl.DataFrame) or _wants_polars_by_metadata(context)):
            fast = _read_local_polars({k: candidates[k][0] for k in keys if candidates[k]
                                       and candidates[k][0].name + PARQUET in listings[str(candidates[k][0].parent)]},
                                      self.read_cache)
        if fast:
            values = [fast[k] if k in fast else load(k) for k in keys]
        elif threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(threads, thread_name_prefix="riskml-read") as pool:
                values = list(pool.map(load, keys))
        else:
            values = [load(k) for k in keys]
        objs = {k: v for k, v in zip(keys, values) if v is not _MISSING}
        missing = [k for k, v in zip(keys, values) if v is _MISSING]
        objs = tables_to_pandas(objs)
        if missing:
            context.log.info(missing_partitions_message(context.asset_key.to_user_string(), missing, len(keys)))
        if len(keys) == 1:
            return objs.get(keys[0])
        return objs

    def read_threads(self) -> int:
        """Concurrent reads of a window's weeks: READ_THREADS on a remote store, 1 on a local folder."""
        return 1 if getattr(self._base_path, "protocol", "") in ("", "file", "local") else READ_THREADS

    @staticmethod
    def _stored_names(folder: UPath, listings: dict) -> set[str]:
        """The names stored in ``folder``, listed once per load (one request on a blob store, where asking each
        partition of a 52-week window whether it exists costs several round trips)."""
        if str(folder) not in listings:
            try:
                listings[str(folder)] = {p.name for p in folder.iterdir()}
            except (FileNotFoundError, NotADirectoryError):
                listings[str(folder)] = set()
        return listings[str(folder)]

    def load_from_path(self, context, path: UPath, stored: set[str] | None = None,
                       arrow_for_pandas: bool = False) -> Any:
        """The parquet or JSON value at ``path``; ``stored``: the folder's listing when known (skips the look-ups).
        Opened directly (no exists() first): one round trip less per value on a blob store. ``arrow_for_pandas``:
        a frame wanted as pandas comes back as the Arrow table ``pd.read_parquet`` converts (``tables_to_pandas``
        converts the tables of a window at once)."""
        pq, js = path.with_name(path.name + PARQUET), path.with_name(path.name + JSON)
        if stored is None or pq.name in stored:
            kind = ("polars" if _wants(context, pl.DataFrame) or _wants_polars_by_metadata(context)
                    else "arrow" if arrow_for_pandas else "pandas")
            file = self._cache_key(pq)
            kept, stamp = self.read_cache.get(file, kind)
            if kept is not _MISSING:
                return kept
            try:
                with pq.open("rb") as fh:
                    if kind == "polars":
                        value = pl.read_parquet(fh)
                    elif kind == "arrow":
                        value = pa_parquet.read_table(fh, use_pandas_metadata=True)
                    else:
                        value = pd.read_parquet(fh)
                return self.read_cache.put(file, kind, stamp, value)
            except FileNotFoundError:
                pass
        if stored is None or js.name in stored:
            try:
                return json.loads(js.read_text())
            except FileNotFoundError:
                pass
        raise FileNotFoundError(f"no stored value for {context.asset_key.to_user_string()} at {path}(.parquet|.json)")


class LazyWindow:
    """An input window read on first ``load()`` (and kept): what the IO manager gives an input declared with
    ``metadata={"lazy": True}``, for a step that needs the window only sometimes (``registered_models`` recomputes
    the champion's features from the history only when the champion pins other feature versions)."""

    def __init__(self, read):
        self._read, self._value = read, _MISSING

    def load(self):
        if self._value is _MISSING:
            self._value, self._read = self._read(), None
        return self._value


def window_value(value):
    """An input's value: a ``LazyWindow`` read now, anything else as it is (a step invoked directly with frames)."""
    return value.load() if isinstance(value, LazyWindow) else value


def _read_local_polars(paths: dict, cache: ReadCache | None = None) -> dict:
    """{key: polars frame} of local parquet files, read by polars' own reader for all of them at once (its thread
    pool; measured about 3x faster on 40 weekly files than opening each through fsspec). The same frames
    ``pl.read_parquet`` gives each file (tested). Files kept in ``cache`` (read earlier in the run, unchanged
    since) are not read again."""
    if len(paths) < 2:
        return {}
    files = {k: os.fspath(p.with_name(p.name + PARQUET)) for k, p in paths.items()}
    out, stamps = {}, {}
    for k, f in files.items():
        kept, stamps[k] = cache.get(f, "polars") if cache is not None else (_MISSING, None)
        if kept is not _MISSING:
            out[k] = kept
    todo = [k for k in files if k not in out]
    try:
        frames = pl.collect_all([pl.scan_parquet(files[k], glob=False) for k in todo]) if todo else []
    except Exception:  # noqa: BLE001 - a file gone or unreadable since the listing: read one by one (said there)
        return {}
    for k, frame in zip(todo, frames):
        out[k] = cache.put(files[k], "polars", stamps[k], frame) if cache is not None else frame
    return {k: out[k] for k in files}


def tables_to_pandas(values: dict) -> dict:
    """``values`` with its Arrow tables as pandas frames, converted at once when they share one schema (one
    ``to_pandas`` instead of one per week of a window: about half the time of reading each file with
    ``pd.read_parquet``); each frame is its own copy with a fresh index, as ``pd.read_parquet`` returns it.
    Tables of different schemas (a column null in some weeks) are converted one by one."""
    keys = [k for k, v in values.items() if isinstance(v, pa.Table)]
    if not keys:
        return values
    out = dict(values)
    tables = [values[k] for k in keys]
    if len(keys) == 1 or any(not t.schema.equals(tables[0].schema, check_metadata=True) for t in tables[1:]):
        for k, t in zip(keys, tables):
            out[k] = _with_attrs(t.to_pandas(), t)
        return out
    whole = pa.concat_tables(tables).to_pandas()
    start = 0
    for k, t in zip(keys, tables):
        out[k] = _with_attrs(whole.iloc[start:start + t.num_rows].reset_index(drop=True), t)
        start += t.num_rows
    return out


def _with_attrs(frame, table):
    """The frame's ``attrs`` stored with it (what ``pd.read_parquet`` restores)."""
    meta = table.schema.metadata or {}
    frame.attrs = json.loads(meta[b"PANDAS_ATTRS"]) if b"PANDAS_ATTRS" in meta else {}
    return frame


def missing_partitions_message(asset: str, missing: list, total: int) -> str:
    """The one line said per input about the partitions of its window that are not materialized."""
    keys = sorted(str(k) for k in missing)
    span = keys[0] if len(keys) == 1 else f"{keys[0]} .. {keys[-1]}"
    return (f"input {asset}: {len(keys)} of {total} partitions of the window are not materialized ({span}) and "
            f"were skipped; normal for a lookback window that reaches before the tenant's history or over weeks "
            f"without files (allow_missing_partitions); {total - len(keys)} loaded")


def _wants_polars_by_metadata(context) -> bool:
    """An input declared with ``metadata={"frame_type": "polars"}`` reads parquet as polars (for windowed inputs,
    whose values arrive as {partition: frame} and cannot carry a frame type annotation)."""
    return isinstance(context, dg.InputContext) and (context.definition_metadata or {}).get("frame_type") == "polars"


def _wants(context, typ) -> bool:
    import typing

    t = getattr(getattr(context, "dagster_type", None), "typing_type", None)
    if typing.get_origin(t) is dict:
        t = typing.get_args(t)[1]
    return t is typ


def _json_default(o):
    import datetime as dt

    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (dt.date, dt.datetime, pd.Timestamp)):
        return o.isoformat()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# Option names that hold a secret: they never go into plain resource config (the UI shows resource config under
# Deployment -> Resources). Secrets are the ``azure_*`` fields below, set from the environment through dg.EnvVar.
SECRET_OPTION_WORDS = ("key", "secret", "token", "password", "connection_string", "credential", "sig")
AZURE_PROTOCOLS = ("abfs", "abfss", "az")
_SECRET = {"dagster__is_secret": True}  # masked in the UI even if someone sets a literal value


def check_no_secrets(base_path: str, storage_options: dict) -> None:
    """ValueError when plain config would carry a secret: a secret-looking storage option or a SAS in the URL."""
    bad = sorted(k for k in storage_options if any(w in str(k).lower() for w in SECRET_OPTION_WORDS))
    if bad:
        raise ValueError(
            f"riskml IO manager: storage option(s) {', '.join(bad)} look like secrets; plain config is shown in the "
            f"Dagster UI (Deployment -> Resources). Put the secret in the environment instead: "
            f"AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_TOKEN or AZURE_STORAGE_CONNECTION_STRING (read through "
            f"dg.EnvVar), or nothing at all for a managed identity (DefaultAzureCredential)")
    if "?" in base_path and "sig=" in base_path.split("?", 1)[1].lower():
        raise ValueError("riskml IO manager: the storage URL carries a SAS signature (sig=...); plain config is shown "
                         "in the Dagster UI. Set AZURE_STORAGE_SAS_TOKEN instead and drop the query from the URL")


def storage_protocol(base_path: str) -> str:
    """The fsspec protocol of a storage URL ('' for a local folder)."""
    return base_path.split("://", 1)[0].lower() if "://" in base_path else ""


class RiskmlIOManager(dg.ConfigurableIOManagerFactory):
    """Where every asset value lives: a local folder (default ``data/assets``) or an fsspec URL.

    On Azure (``abfs://container/prefix``, ``abfs://container@account.dfs.core.windows.net/prefix`` or
    ``az://container/prefix``, through adlfs) the credentials come from the ``azure_*`` fields, which
    ``default_resources`` binds to the environment with ``dg.EnvVar`` (the UI shows the variable's name, never its
    value); when none is set, adlfs reads the ``AZURE_STORAGE_*`` variables itself and otherwise uses
    ``DefaultAzureCredential`` (managed identity, workload identity, ``az login``). ``storage_options_json`` is for
    non-secret fsspec options only: a secret-looking key is refused.
    """

    base_path: str = Field("data/assets", description="Local folder or fsspec URL (abfs://container/prefix).")
    storage_options_json: str = Field("{}", description="Non-secret fsspec/adlfs options as JSON (secrets refused).")
    azure_account_name: Optional[str] = Field(None, description="Storage account (also read from the URL's "
                                                                "@<account>.dfs.core.windows.net or the env).")
    azure_account_key: Optional[str] = Field(None, description="Account key: dg.EnvVar('AZURE_STORAGE_ACCOUNT_KEY').",
                                             json_schema_extra=_SECRET)
    azure_sas_token: Optional[str] = Field(None, description="SAS token: dg.EnvVar('AZURE_STORAGE_SAS_TOKEN').",
                                           json_schema_extra=_SECRET)
    azure_connection_string: Optional[str] = Field(
        None, description="Connection string: dg.EnvVar('AZURE_STORAGE_CONNECTION_STRING').", json_schema_extra=_SECRET)
    read_cache_mb: int = Field(READ_CACHE_MB, ge=0, description=(
        "Parquet values read in a run are kept (up to this many MiB) for the next step of the same run that reads "
        "the same unchanged file; local folders only; 0 turns it off."))

    def storage_options(self) -> dict:
        """The fsspec options for ``base_path`` (secrets included: never log or return this to the UI)."""
        opts = json.loads(self.storage_options_json or "{}")
        if not isinstance(opts, dict):
            raise ValueError(f"riskml IO manager: storage options must be a JSON object, got {type(opts).__name__}")
        check_no_secrets(self.base_path, opts)
        if storage_protocol(self.base_path) in AZURE_PROTOCOLS:
            for name, value in (("account_name", self.azure_account_name), ("account_key", self.azure_account_key),
                                ("sas_token", self.azure_sas_token),
                                ("connection_string", self.azure_connection_string)):
                if value:
                    opts[name] = value
        return opts

    def create_io_manager(self, context) -> RiskmlUPathIOManager:
        opts = self.storage_options()
        base = UPath(self.base_path, **opts) if storage_protocol(self.base_path) else UPath(self.base_path)
        return RiskmlUPathIOManager(base_path=base, read_cache_mb=self.read_cache_mb)
