"""The IO manager never leaves its storage root: hostile partition keys on a real instance (item 16)."""
import dagster as dg
import pandas as pd
import pytest
from upath import UPath

from riskml_assets.core.contract import ContractError
from riskml_assets.io_manager import RiskmlIOManager, check_partition_key, is_inside
from riskml_assets.partitions import tenant_week

WEEK = "2026-11-16"


@dg.asset(partitions_def=tenant_week)
def probe() -> pd.DataFrame:
    return pd.DataFrame({"x": [1, 2]})


@dg.asset(partitions_def=tenant_week)
def reader(probe: pd.DataFrame) -> pd.DataFrame:
    return probe.assign(x=probe.x * 10)


@pytest.fixture()
def store(tmp_path):
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        instance.add_dynamic_partitions("tenant", ["acme", "../evil", "../../evil2"])
        yield tmp_path, instance, {"io_manager": RiskmlIOManager(base_path=str(tmp_path / "store" / "assets"))}


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "dagster" not in p.parts)


def error_of(res):
    [failure] = res.get_step_failure_events()
    err = failure.event_specific_data.error
    return "\n".join(e.message for e in (err, err.cause) if e is not None)


def test_a_hostile_tenant_key_writes_nothing_anywhere_and_says_why(store):
    root, instance, resources = store
    ok = dg.materialize([probe], partition_key=f"acme|{WEEK}", instance=instance, resources=resources)
    assert ok.success and files_under(root) == [f"store/assets/probe/acme/{WEEK}.parquet"]
    for tenant in ("../evil", "../../evil2"):
        res = dg.materialize([probe], partition_key=f"{tenant}|{WEEK}", instance=instance, resources=resources,
                             raise_on_error=False)
        assert not res.success
        msg = error_of(res)
        assert "refused writing probe" in msg and f"invalid tenant id {tenant!r}" in msg and "nothing was written" in msg
    # before the fix: store/assets/evil/<week>.parquet and store/evil2/<week>.parquet
    assert files_under(root) == [f"store/assets/probe/acme/{WEEK}.parquet"]


def test_a_hostile_tenant_key_reads_nothing_outside_the_root(store):
    root, instance, resources = store
    assert dg.materialize([probe], partition_key=f"acme|{WEEK}", instance=instance, resources=resources).success
    planted = root / "store" / "assets" / "evil" / f"{WEEK}.parquet"  # where probe/../evil/<week> points
    planted.parent.mkdir(parents=True)
    pd.DataFrame({"x": [666]}).to_parquet(planted, index=False)
    res = dg.materialize([probe, reader], selection=[reader], partition_key=f"../evil|{WEEK}", instance=instance,
                         resources=resources, raise_on_error=False)
    assert not res.success
    msg = error_of(res)
    assert "refused reading probe" in msg and "invalid tenant id '../evil'" in msg and "nothing was read" in msg
    assert not res.get_asset_materialization_events()
    # only the planted file and acme's value; before the fix the planted rows were read and reader/../evil written
    assert files_under(root) == [f"store/assets/evil/{WEEK}.parquet", f"store/assets/probe/acme/{WEEK}.parquet"]


def test_keys_and_paths_checked_by_the_io_manager():
    check_partition_key(dg.MultiPartitionKey({"tenant": "acme-1", "week": WEEK}))
    for bad in ({"tenant": "../x", "week": WEEK}, {"tenant": "Acme", "week": WEEK}, {"tenant": "acme", "week": ".."},
                {"tenant": "acme", "week": "2026/11"}):
        with pytest.raises(ContractError):
            check_partition_key(dg.MultiPartitionKey(bad))
    with pytest.raises(ContractError):
        check_partition_key("a\\..\\b")
    base = UPath("memory://bucket/assets")
    assert is_inside(base, base / "probe" / "acme" / WEEK)
    assert not is_inside(base, base / "probe" / ".." / ".." / "x")
    assert not is_inside(base, UPath("memory://bucket/assets-other/x"))
    local = UPath("store/assets")
    assert is_inside(local, local / "a" / ".." / "b") and not is_inside(local, local / ".." / "b")


@dg.asset(partitions_def=tenant_week, ins={"probe": dg.AssetIn(metadata={"frame_type": "polars"})})
def polars_reader(probe) -> dict:
    return {"type": type(probe).__module__.split(".")[0], "x": [int(v) for v in probe["x"]]}


@dg.asset(partitions_def=tenant_week)
def pandas_reader(probe) -> dict:
    return {"type": type(probe).__module__.split(".")[0], "x": [int(v) for v in probe["x"]]}


def test_an_input_declared_polars_reads_parquet_as_polars_others_as_pandas(store):
    """Issue 11: windowed inputs cannot carry a frame type annotation ({partition: frame}); input metadata
    ``frame_type: polars`` makes the IO manager read their parquet as polars (no pandas round trip)."""
    import json

    root, instance, resources = store
    res = dg.materialize([probe, polars_reader, pandas_reader], partition_key=f"acme|{WEEK}", instance=instance,
                         resources=resources)
    assert res.success
    got = {name: json.loads((root / "store" / "assets" / name / "acme" / f"{WEEK}.json").read_text())
           for name in ("polars_reader", "pandas_reader")}
    assert got == {"polars_reader": {"type": "polars", "x": [1, 2]}, "pandas_reader": {"type": "pandas", "x": [1, 2]}}


def test_a_window_read_as_pandas_at_once_equals_reading_each_week(tmp_path, monkeypatch):
    """Issue 11: the weeks of a pandas-typed window are converted from Arrow in one go (``tables_to_pandas``); each
    week's frame is exactly what ``pd.read_parquet`` gives for its file (values, dtypes, index, attrs), also when
    the weeks' schemas differ (a column null all week) and when a frame is changed afterwards."""
    import numpy as np
    import pyarrow.parquet as pq

    from riskml_assets.io_manager import tables_to_pandas

    import types

    import pyarrow as pa

    from riskml_assets import io_manager

    concats = []
    monkeypatch.setattr(io_manager, "pa", types.SimpleNamespace(
        Table=pa.Table, concat_tables=lambda tables, **kw: concats.append(len(tables)) or pa.concat_tables(tables, **kw)))

    def week(i: int, note=None, attrs=None) -> pd.DataFrame:
        df = pd.DataFrame({"opportunity_id": [f"o{i}-{j}" for j in range(3 + i)],
                           "snapshot_date": pd.Timestamp("2026-01-05") + pd.to_timedelta(np.arange(3 + i), "D"),
                           "deal_value": [1.5 * j if j % 2 else np.nan for j in range(3 + i)],
                           "n": np.arange(3 + i, dtype="int64"), "note": note})
        df.attrs = attrs or {}
        return df

    for name, frames, at_once in (("same schema", [week(i, "x") for i in range(4)], 4),
                                  ("same schema and attrs", [week(i, "x", {"k": 1}) for i in range(3)], 3),
                                  ("other attrs in one week", [week(0, "x"), week(1, "x", {"k": 2})], None),
                                  ("a null column in one week", [week(0, "x"), week(1), week(2, "y")], None)):
        concats.clear()
        paths = []
        for i, df in enumerate(frames):
            paths.append(tmp_path / f"{name}-{i}.parquet")
            df.to_parquet(paths[-1], index=False)
        got = tables_to_pandas({i: pq.read_table(p, use_pandas_metadata=True) for i, p in enumerate(paths)}
                               | {"json": {"kept": True}})
        assert got["json"] == {"kept": True}
        assert concats == ([at_once] if at_once else []), name  # converted at once only when that is exact
        for i, p in enumerate(paths):
            want = pd.read_parquet(p)
            pd.testing.assert_frame_equal(got[i], want, check_exact=True)
            assert got[i].attrs == want.attrs == frames[i].attrs
        got[0].loc[0, "deal_value"] = 99.0  # a week's frame is its own: the next one is untouched
        assert got[1]["deal_value"].equals(pd.read_parquet(paths[1])["deal_value"])


def test_a_window_is_read_concurrently_in_key_order_with_its_missing_weeks_said(store, monkeypatch):
    """On a remote store the weeks of a lookback window are read on several threads (each read is a round trip;
    forced here on a local folder, which reads them one after the other): the input still gets every stored week
    under its own key, in order, and the missing ones are said once."""
    import threading

    from riskml_assets import io_manager
    from riskml_assets.partitions import LOOKBACK_WEEKS, lookback_mapping

    root, instance, resources = store
    weeks = ["2026-10-19", "2026-10-26", "2026-11-09", "2026-11-16"]  # 2026-11-02 never materialized

    @dg.asset(partitions_def=tenant_week, name="probe")
    def weekly(context) -> pd.DataFrame:
        return pd.DataFrame({"week": [context.partition_key.keys_by_dimension["week"]] * 2})

    got = {}

    @dg.asset(partitions_def=tenant_week, ins={"probe": dg.AssetIn(
        partition_mapping=lookback_mapping, metadata={"allow_missing_partitions": True})})
    def window(probe) -> pd.DataFrame:
        got.update(probe)
        return pd.DataFrame({"n": [len(probe)]})

    for w in weeks:
        assert dg.materialize([weekly], partition_key=f"acme|{w}", instance=instance, resources=resources).success
    threads = set()
    real = io_manager.RiskmlUPathIOManager.load_from_path
    assert io_manager.RiskmlUPathIOManager(base_path=UPath(root / "x")).read_threads() == 1
    assert io_manager.RiskmlUPathIOManager(base_path=UPath("memory://bucket/x")).read_threads() == io_manager.READ_THREADS
    monkeypatch.setattr(io_manager.RiskmlUPathIOManager, "read_threads", lambda self: io_manager.READ_THREADS)

    def spy(self, *a, **k):
        threads.add(threading.current_thread().name)
        return real(self, *a, **k)
    monkeypatch.setattr(io_manager.RiskmlUPathIOManager, "load_from_path", spy)
    res = dg.materialize([weekly, window], selection=[window], partition_key=f"acme|{weeks[-1]}", instance=instance,
                         resources=resources)
    assert res.success
    assert list(got) == sorted(got) and [k.split("|")[1] for k in got] == weeks
    assert all(frame["week"].tolist() == [k.split("|")[1]] * 2 for k, frame in got.items())
    assert len(threads) > 1 and all(t.startswith("riskml-read") for t in threads)
    said = [e.user_message for e in instance.all_logs(res.run_id) if "not materialized" in (e.user_message or "")]
    assert len(said) == 1 and f"{LOOKBACK_WEEKS - len(weeks)} of {LOOKBACK_WEEKS} partitions" in said[0]


def test_a_local_polars_window_is_read_at_once_and_equals_reading_each_week(store, monkeypatch):
    """Issue 11: on a local folder a polars-typed window's weeks are read by polars for all files at once
    (``_read_local_polars``); each week's frame equals ``pl.read_parquet`` of its file (values, dtypes: strings,
    datetimes, categoricals, a column null all week), keys in order, missing weeks said once."""
    import numpy as np
    import polars as pl

    from riskml_assets import io_manager
    from riskml_assets.partitions import LOOKBACK_WEEKS, lookback_mapping

    root, instance, resources = store
    weeks = ["2026-10-19", "2026-10-26", "2026-11-09", "2026-11-16"]

    @dg.asset(partitions_def=tenant_week, name="probe")
    def weekly(context) -> pd.DataFrame:
        w = context.partition_key.keys_by_dimension["week"]
        n = 3 + weeks.index(w)
        return pd.DataFrame({"week": [w] * n, "when": pd.Timestamp(w) + pd.to_timedelta(np.arange(n), "h"),
                             "value": [float(i) if i % 2 else np.nan for i in range(n)],
                             "stage": pd.Categorical(["a", "b"] * (n // 2) + ["a"] * (n % 2)),
                             "note": None if w == weeks[1] else "x"})

    got = {}

    @dg.asset(partitions_def=tenant_week, ins={"probe": dg.AssetIn(
        partition_mapping=lookback_mapping, metadata={"allow_missing_partitions": True, "frame_type": "polars"})})
    def window(probe) -> pd.DataFrame:
        got.update(probe)
        return pd.DataFrame({"n": [len(probe)]})

    for w in weeks:
        assert dg.materialize([weekly], partition_key=f"acme|{w}", instance=instance, resources=resources).success
    at_once = []
    real = io_manager._read_local_polars
    monkeypatch.setattr(io_manager, "_read_local_polars",
                        lambda paths, cache=None: at_once.append(len(paths)) or real(paths, cache))
    res = dg.materialize([weekly, window], selection=[window], partition_key=f"acme|{weeks[-1]}", instance=instance,
                         resources=resources)
    assert res.success
    assert at_once == [len(weeks)]  # every stored week of the window (it ends with the partition's own week)
    assert [k.split("|")[1] for k in got] == weeks
    for key, frame in got.items():
        path = root / "store" / "assets" / "probe" / "acme" / f"{key.split('|')[1]}.parquet"
        want = pl.read_parquet(path)
        assert isinstance(frame, pl.DataFrame) and frame.schema == want.schema and frame.equals(want), key
    said = [e.user_message for e in instance.all_logs(res.run_id) if "not materialized" in (e.user_message or "")]
    assert len(said) == 1 and f"{LOOKBACK_WEEKS - len(weeks)} of {LOOKBACK_WEEKS} partitions" in said[0]


def test_a_lazy_window_is_read_only_when_the_step_asks(store, monkeypatch):
    """An input declared ``lazy`` gets a ``LazyWindow``: nothing is read unless the step calls ``load()``, which
    gives the same weeks an eager input gets (read once, then kept)."""
    from riskml_assets import io_manager
    from riskml_assets.io_manager import LazyWindow, window_value
    from riskml_assets.partitions import lookback_mapping

    root, instance, resources = store
    weeks = ["2026-11-02", "2026-11-09", "2026-11-16"]

    @dg.asset(partitions_def=tenant_week, name="probe")
    def weekly(context) -> pd.DataFrame:
        return pd.DataFrame({"week": [context.partition_key.keys_by_dimension["week"]] * 2})

    for w in weeks:
        assert dg.materialize([weekly], partition_key=f"acme|{w}", instance=instance, resources=resources).success
    reads, seen = [], {}
    real = io_manager.RiskmlUPathIOManager._read_window
    monkeypatch.setattr(io_manager.RiskmlUPathIOManager, "_read_window",
                        lambda self, context, *a: reads.append(context.name) or real(self, context, *a))

    def reader(name: str, lazy: bool, ask: bool):
        meta = {"allow_missing_partitions": True, **({"lazy": True} if lazy else {})}

        @dg.asset(partitions_def=tenant_week, name=name,
                  ins={"probe": dg.AssetIn(partition_mapping=lookback_mapping, metadata=meta)})
        def _reader(probe) -> pd.DataFrame:
            seen[name] = (type(probe).__name__, window_value(probe) if ask else None,
                          window_value(probe) is window_value(probe) if ask else None)
            return pd.DataFrame({"n": [1]})
        return _reader

    assets = [reader("lazy_unasked", True, False), reader("lazy_asked", True, True), reader("eager", False, True)]
    for a in assets:
        reads.clear()
        res = dg.materialize([weekly, a], selection=[a], partition_key=f"acme|{weeks[-1]}", instance=instance,
                             resources=resources)
        assert res.success
        name = a.key.to_user_string()
        assert reads == ([] if name == "lazy_unasked" else ["probe"]), name
    assert seen["lazy_unasked"][0] == seen["lazy_asked"][0] == LazyWindow.__name__
    assert seen["lazy_asked"][2] is True  # read once, then kept
    lazy, eager = seen["lazy_asked"][1], seen["eager"][1]
    assert list(lazy) == list(eager) and [k.split("|")[1] for k in lazy] == weeks
    for k in eager:
        pd.testing.assert_frame_equal(lazy[k], eager[k])


def test_read_cache_hands_out_own_copies_and_rereads_a_changed_file(tmp_path):
    """``ReadCache``: a value is kept for the next read of the same unchanged file; each reader gets its own copy
    (changing it in place changes nothing kept); a rewritten or forgotten file is read again; bounded (least
    recently used out, a value over a quarter of the bound never kept); 0 bytes keeps nothing."""
    import os

    import polars as pl

    from riskml_assets.io_manager import _MISSING, ReadCache

    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "s": ["p", "q", "r"]})
    frame.to_parquet(a, index=False)
    frame.to_parquet(b, index=False)
    cache = ReadCache(2**20)
    kept, stamp = cache.get(str(a), "pandas")
    assert kept is _MISSING and stamp is not None and cache.misses == 1
    first = cache.put(str(a), "pandas", stamp, pd.read_parquet(a))
    second, _ = cache.get(str(a), "pandas")
    assert cache.hits == 1 and second is not first
    pd.testing.assert_frame_equal(second, frame)
    second.loc[0, "x"] = -1.0  # a step changing its input in place
    second["s"] = "changed"
    third, _ = cache.get(str(a), "pandas")
    pd.testing.assert_frame_equal(third, frame)
    assert cache.get(str(a), "polars")[0] is _MISSING  # another kind of value is another entry

    pl_frame = pl.read_parquet(b)
    _, stamp_b = cache.get(str(b), "polars")
    cache.put(str(b), "polars", stamp_b, pl_frame)
    got_b, _ = cache.get(str(b), "polars")
    assert got_b.equals(pl_frame)
    got_b.insert_column(0, pl.Series("y", [9, 9, 9]))  # polars' in-place API on the reader's clone
    assert cache.get(str(b), "polars")[0].columns == ["x", "s"]

    frame.assign(x=frame.x * 2).to_parquet(a, index=False)  # rewritten (another size or mtime)
    os.utime(a, ns=(stamp[0] + 10**9, stamp[0] + 10**9))
    assert cache.get(str(a), "pandas")[0] is _MISSING
    _, stamp = cache.get(str(a), "pandas")
    cache.put(str(a), "pandas", stamp, pd.read_parquet(a))
    assert cache.get(str(a), "pandas")[0] is not _MISSING
    cache.forget(str(a))
    assert cache.get(str(a), "pandas")[0] is _MISSING
    assert cache.get(str(tmp_path / "gone.parquet"), "pandas") == (_MISSING, None)

    big = pd.DataFrame({"x": range(100_000)}).astype("float64")  # 800 kB
    small = ReadCache(4 * 10**6)
    for i in range(6):  # 6 x 0.8 MB > 4 MB: the oldest go first
        f = tmp_path / f"w{i}.parquet"
        big.to_parquet(f, index=False)
        small.put(str(f), "pandas", small.get(str(f), "pandas")[1], big)
        small.get(str(tmp_path / "w0.parquet"), "pandas")  # w0 stays recently used
    assert small.nbytes <= 4 * 10**6
    held = [i for i in range(6) if small.get(str(tmp_path / f"w{i}.parquet"), "pandas")[0] is not _MISSING]
    assert 0 in held and 5 in held and 1 not in held and len(held) == 4
    tiny = ReadCache(2 * 10**6)  # 800 kB > a quarter of 2 MB: not kept
    f = tmp_path / "w0.parquet"
    tiny.put(str(f), "pandas", tiny.get(str(f), "pandas")[1], big)
    assert tiny.get(str(f), "pandas")[0] is _MISSING and tiny.nbytes == 0
    off = ReadCache(0)
    assert off.get(str(f), "pandas") == (_MISSING, None)
    from riskml_assets.io_manager import _value_bytes

    texts = pd.DataFrame({"s": [f"opportunity-{i:06d}" for i in range(50_000)], "x": 1.0})
    deep = int(texts.memory_usage(deep=True).sum())  # the strings count, not only their pointers
    assert deep * 0.9 <= _value_bytes(texts) <= deep * 1.3
    assert off.put(str(f), "pandas", (1, 2, 3), big) is big and off.nbytes == 0


def test_a_run_reads_a_file_once_for_all_its_steps_and_each_step_gets_its_own_frame(tmp_path, monkeypatch):
    """Issue 11: in one run, three steps reading the same upstream partition open its file once (the IO manager's
    read cache); a step that changes its input in place does not change what the next step gets; a window read as
    polars by two steps is read from disk once. With ``read_cache_mb=0`` every step reads the file."""
    import polars as pl

    from riskml_assets import io_manager
    from riskml_assets.partitions import lookback_mapping

    weeks = ["2026-11-02", "2026-11-09", "2026-11-16"]

    @dg.asset(partitions_def=tenant_week, name="upstream")
    def upstream(context) -> pd.DataFrame:
        w = context.partition_key.keys_by_dimension["week"]
        return pd.DataFrame({"x": [1.0, 2.0, 3.0], "week": [w] * 3})

    seen = {}

    def consumer(name: str):
        @dg.asset(partitions_def=tenant_week, name=name)
        def _consumer(upstream: pd.DataFrame) -> pd.DataFrame:
            seen[name] = upstream.copy()
            upstream["x"] = upstream["x"] * 100  # changes its own input in place
            return pd.DataFrame({"n": [len(upstream)]})
        return _consumer

    window_in = dg.AssetIn(partition_mapping=lookback_mapping,
                           metadata={"allow_missing_partitions": True, "frame_type": "polars"})

    def window_reader(name: str):
        @dg.asset(partitions_def=tenant_week, name=name, ins={"upstream": window_in})
        def _reader(upstream) -> pd.DataFrame:
            seen[name] = pl.concat([upstream[k] for k in sorted(upstream)])
            return pd.DataFrame({"n": [len(upstream)]})
        return _reader

    steps = [consumer("first"), consumer("second"), consumer("third"), window_reader("win_a"),
             window_reader("win_b")]
    opened, scanned = [], []
    real_read, real_collect = pd.read_parquet, pl.collect_all
    monkeypatch.setattr(io_manager.pd, "read_parquet", lambda fh, *a, **k: opened.append(1) or real_read(fh, *a, **k))
    monkeypatch.setattr(io_manager.pl, "collect_all", lambda qs, *a, **k: scanned.append(len(qs)) or real_collect(qs, *a, **k))

    for mb in (io_manager.READ_CACHE_MB, 0):
        root = tmp_path / f"cache{mb}"
        (root / "dagster").mkdir(parents=True)
        with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
            instance.add_dynamic_partitions("tenant", ["acme"])
            resources = {"io_manager": RiskmlIOManager(base_path=str(root / "store"), read_cache_mb=mb)}
            for w in weeks[:-1]:
                assert dg.materialize([upstream], partition_key=f"acme|{w}", instance=instance,
                                      resources=resources).success
            opened.clear(), scanned.clear(), seen.clear()
            res = dg.materialize([upstream, *steps], partition_key=f"acme|{weeks[-1]}", instance=instance,
                                 resources=resources)
            assert res.success
        want = pd.DataFrame({"x": [1.0, 2.0, 3.0], "week": [weeks[-1]] * 3})
        for name in ("first", "second", "third"):  # none sees another step's change
            pd.testing.assert_frame_equal(seen[name], want)
        for name in ("win_a", "win_b"):
            assert seen[name]["week"].to_list() == [w for w in weeks for _ in range(3)]
        if mb:
            assert len(opened) == 1, opened  # upstream|last week: read once for three steps
            assert scanned == [len(weeks)], scanned  # the window: every week read by the first reader only
        else:
            assert len(opened) == 3, opened
            assert scanned == [len(weeks), len(weeks)], scanned
