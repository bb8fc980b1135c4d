"""The pure scan of the incoming folder: out-of-range dates, symbolic links, run keys (real files, real links)."""
import datetime as dt
import json
import os

from riskml_assets.core.watch import dump_state, entry_refusal, load_state, scan

TODAY = dt.date(2026, 11, 25)  # a Wednesday: week 2026-11-23 is the current week
FIRST = "2010-01-04"


def put(root, rel, data=b"PAR1 some bytes"):
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def run(root, state=None, today=TODAY):
    events, refused, new = scan(root, state or load_state(None), today=today, first_week=FIRST)
    # the state must survive the cursor round trip unchanged
    assert load_state(dump_state(new)) == new
    return events, dict(refused), new


def test_out_of_range_and_impossible_dates_are_refused_once_and_the_others_go_on(tmp_path):
    put(tmp_path, "acme/snapshots-2099-01-05.parquet")  # far future
    put(tmp_path, "acme/snapshots-2009-12-28.parquet")  # before the first week
    put(tmp_path, "acme/snapshots-2026-11-28.parquet")  # later this week, beyond tomorrow: future
    put(tmp_path, "acme/snapshots-2026-13-45.csv")  # impossible date
    put(tmp_path, "acme/snapshots-2026-11-16.parquet")  # good (last week)
    put(tmp_path, "acme/outcomes-2026-11-25.parquet")  # good: today, the current week is accepted
    put(tmp_path, "beta/snapshots-2016-03-07.parquet")  # good: old history after the first week
    events, refused, state = run(tmp_path)
    assert sorted((e.rel_path, e.week) for e in events) == [
        ("acme/outcomes-2026-11-25.parquet", "2026-11-23"),
        ("acme/snapshots-2026-11-16.parquet", "2026-11-16"),
        ("beta/snapshots-2016-03-07.parquet", "2016-03-07"),
    ]
    assert set(refused) == {"acme/snapshots-2099-01-05.parquet", "acme/snapshots-2009-12-28.parquet",
                            "acme/snapshots-2026-11-28.parquet", "acme/snapshots-2026-13-45.csv"}
    assert "(future)" in refused["acme/snapshots-2099-01-05.parquet"]
    assert "(before_first_week)" in refused["acme/snapshots-2009-12-28.parquet"]
    assert "RISKML_FIRST_WEEK" in refused["acme/snapshots-2009-12-28.parquet"]
    assert "impossible date" in refused["acme/snapshots-2026-13-45.csv"]
    assert set(state["refused"]) == set(refused)
    # next scan: nothing new, nothing reported again
    events2, refused2, state2 = run(tmp_path, state)
    assert events2 == [] and refused2 == {}
    # once its day has come, the file dated later this week is accepted (same content, no change needed)
    events3, refused3, state3 = run(tmp_path, state2, today=dt.date(2026, 11, 28))
    assert [e.rel_path for e in events3] == ["acme/snapshots-2026-11-28.parquet"] and refused3 == {}
    assert "acme/snapshots-2026-11-28.parquet" not in state3["refused"]


def test_dangling_symlinks_are_refused_and_the_scan_goes_on(tmp_path):
    root = tmp_path / "incoming"
    put(root, "acme/snapshots-2026-11-16.parquet")
    os.symlink(tmp_path / "gone.parquet", root / "acme" / "snapshots-2026-11-17.parquet")
    os.symlink(tmp_path / "gone-dir", root / "ghost")  # a dangling tenant folder
    os.symlink("loop", root / "acme" / "loop")  # a link to itself
    events, refused, _ = run(root)
    assert [e.rel_path for e in events] == ["acme/snapshots-2026-11-16.parquet"]
    assert set(refused) == {"acme/snapshots-2026-11-17.parquet", "ghost/", "acme/loop"}
    assert "dangling symbolic link" in refused["acme/snapshots-2026-11-17.parquet"]
    assert "dangling symbolic link" in refused["acme/loop"]
    assert "is a symbolic link" in refused["ghost/"]


def test_symlinks_leaving_the_tenant_folder_are_refused(tmp_path):
    root = tmp_path / "incoming"
    other = put(root, "other/snapshots-2026-11-16.parquet", b"other tenant rows")
    secret = put(tmp_path, "secret.csv", b"opportunity_id\nX\n")
    acme = root / "acme"
    put(root, "acme/exports/latest.parquet", b"acme rows")
    os.symlink(other, acme / "snapshots-2026-11-17.parquet")  # another tenant's file
    os.symlink(secret, acme / "snapshots-2026-11-18.csv")  # any readable file
    os.symlink("../other/snapshots-2026-11-16.parquet", acme / "outcomes-2026-11-16.parquet")  # relative escape
    os.symlink("exports/latest.parquet", acme / "snapshots-2026-11-19.parquet")  # inside its own folder: fine
    os.symlink(root / "other", root / "evil")  # a tenant folder that is another tenant's folder
    os.symlink(tmp_path, root / "evil2")  # a tenant folder linking outside the incoming root
    events, refused, _ = run(root)
    assert sorted(e.rel_path for e in events) == ["acme/snapshots-2026-11-19.parquet",
                                                   "other/snapshots-2026-11-16.parquet"]
    assert set(refused) == {"acme/snapshots-2026-11-17.parquet", "acme/snapshots-2026-11-18.csv",
                            "acme/outcomes-2026-11-16.parquet", "evil/", "evil2/"}
    for rel in ("acme/snapshots-2026-11-17.parquet", "acme/snapshots-2026-11-18.csv",
                "acme/outcomes-2026-11-16.parquet"):
        assert "resolves outside the tenant folder acme/" in refused[rel]
    assert all(not e.tenant == "evil" for e in events)
    # the pure predicate, as the ingestion listing uses it
    assert entry_refusal(acme / "snapshots-2026-11-19.parquet", acme) is None
    assert entry_refusal(acme / "exports", acme) is None
    assert "outside" in entry_refusal(acme / "snapshots-2026-11-18.csv", acme)
    assert "is a symbolic link" in entry_refusal(root / "evil" / "snapshots-2026-11-16.parquet", root / "evil")


def test_an_incoming_root_behind_a_link_is_fine(tmp_path):
    real = tmp_path / "mnt"
    put(real, "acme/snapshots-2026-11-16.parquet")
    os.symlink("snapshots-2026-11-16.parquet", real / "acme" / "snapshots-2026-11-17.parquet")
    os.symlink(real, tmp_path / "incoming")
    events, refused, _ = run(tmp_path / "incoming")
    assert refused == {} and len(events) == 2


def test_revert_to_earlier_content_is_a_new_event_with_a_new_run_key(tmp_path):
    f = put(tmp_path, "acme/snapshots-2026-11-16.parquet", b"content A")
    keys = []
    state = None
    for content in (b"content A", b"content B!", b"content A"):
        f.write_bytes(content)
        os.utime(f, ns=(f.stat().st_mtime_ns + 10**9,) * 2)  # a distinct mtime even on coarse clocks
        events, _, state = run(tmp_path, state)
        assert len(events) == 1
        keys.append(events[0].run_key)
    assert len(set(keys)) == 3, keys
    assert keys[0].split("#")[0] == keys[2].split("#")[0]  # same file and content, different event number
    # unchanged or merely touched: no event at all, so never a second run
    assert run(tmp_path, state)[0] == []
    os.utime(f, ns=(f.stat().st_mtime_ns + 10**9,) * 2)
    assert run(tmp_path, state)[0] == []
    # the same cursor evaluated twice (a tick retried by the daemon) gives the same run key
    f.write_bytes(b"content C")
    assert run(tmp_path, state)[0][0].run_key == run(tmp_path, state)[0][0].run_key


def test_version_1_cursor_still_loads(tmp_path):
    put(tmp_path, "acme/snapshots-2026-11-16.parquet")
    old = json.dumps({"v": 1, "files": {}, "refused": {}})
    events, _, state = run(tmp_path, load_state(old))
    assert state["seq"] == 1 and events[0].run_key.endswith("#1")


def test_file_through_a_linked_tenant_folder_never_becomes_an_event(tmp_path):
    root = tmp_path / "incoming"
    put(tmp_path, "elsewhere/snapshots-2026-11-16.parquet")
    root.mkdir()
    os.symlink(tmp_path / "elsewhere", root / "acme")
    events, refused, _ = run(root)
    assert events == [] and list(refused) == ["acme/"]


def test_an_outcomes_file_also_calls_for_the_earlier_ingested_weeks_it_may_carry_rows_for(tmp_path):
    from riskml_assets.core.schemas import LATE_WEEKS
    from riskml_assets.core.watch import weeks_to_ingest

    put(tmp_path, "acme/outcomes-2026-11-23.parquet")
    put(tmp_path, "acme/snapshots-2026-11-20.parquet")
    events, _, _ = run(tmp_path)
    ev = {e.kind: e for e in events}
    ingested = {"2026-11-16", "2026-11-09", "2026-06-01", "2026-11-23"}
    weeks = weeks_to_ingest(ev["outcomes"], ingested, today=TODAY, first_week=FIRST)
    assert weeks == ["2026-11-23", "2026-11-09", "2026-11-16"]  # own week first; 2026-06-01 is beyond LATE_WEEKS
    assert LATE_WEEKS < 25
    # snapshots belong to their own week only
    assert weeks_to_ingest(ev["snapshots"], ingested, today=TODAY, first_week=FIRST) == ["2026-11-16"]
    # never before the first week
    assert weeks_to_ingest(ev["outcomes"], ingested, today=TODAY, first_week="2026-11-16") == ["2026-11-23", "2026-11-16"]


def test_a_named_pipe_is_refused_instead_of_blocking_the_scan(tmp_path):
    put(tmp_path, "acme/snapshots-2026-11-16.parquet")
    os.mkfifo(tmp_path / "acme" / "snapshots-2026-11-17.parquet")  # hashing it would wait forever for a writer
    events, refused, _ = run(tmp_path)
    assert [e.rel_path for e in events] == ["acme/snapshots-2026-11-16.parquet"]
    assert "not a regular file" in refused["acme/snapshots-2026-11-17.parquet"]


def test_the_cli_listing_refuses_linked_tenant_folders_and_files_leaving_the_tenant(tmp_path):
    """contract.scan_incoming (what `riskml run`/`ingest-history` list) applies the same link rules."""
    from riskml_assets.core.contract import scan_incoming

    root = tmp_path / "incoming"
    put(root, "acme/snapshots-2026-11-16.parquet")
    secret = put(tmp_path, "elsewhere/snapshots-2026-11-16.parquet")
    (root / "mallory").symlink_to(root / "acme", target_is_directory=True)  # a tenant folder behind a link
    (root / "acme" / "outcomes-2026-11-16.parquet").symlink_to(secret)  # a file linking out of the tenant
    (root / "acme" / "activities-2026-11-16.parquet").symlink_to(root / "acme" / "nowhere")  # dangling
    good, bad = scan_incoming(root)
    assert [(f.tenant, f.path.name) for f in good] == [("acme", "snapshots-2026-11-16.parquet")]
    reasons = {p.name: r for p, r in bad}
    assert set(reasons) == {"mallory", "outcomes-2026-11-16.parquet", "activities-2026-11-16.parquet"}
    assert "symbolic link" in reasons["mallory"] and "outside the tenant folder" in reasons["outcomes-2026-11-16.parquet"]
    assert "dangling" in reasons["activities-2026-11-16.parquet"]


def test_plan_requests_is_one_request_per_tenant_week_covering_every_file(tmp_path):
    from riskml_assets.core.watch import plan_requests

    for rel in ("acme/snapshots-2026-11-16.parquet", "acme/snapshots-2026-11-18.parquet",
                "acme/activities-2026-11-17.parquet", "acme/snapshots-2026-11-09.parquet",
                "beta/snapshots-2026-11-16.parquet"):
        put(tmp_path, rel, rel.encode())
    events, _, state = run(tmp_path)
    plan = plan_requests(events, first_week=FIRST)
    assert [(r.tenant, r.week, len(r.files)) for r in plan] == [
        ("acme", "2026-11-09", 1), ("acme", "2026-11-16", 3), ("beta", "2026-11-16", 1)]
    week = plan[1]
    assert week.run_key == "acme|2026-11-16#" + ",".join(str(e.seq) for e in sorted(week.events, key=lambda e: e.seq))
    assert plan[0].run_key == plan[0].events[0].run_key  # a single file keeps its own key (file@sha#seq)
    # an outcomes file of a later week joins the request of an already-ingested week it carries late rows for
    put(tmp_path, "acme/outcomes-2026-11-23.parquet", b"late rows")
    events2, _, _ = run(tmp_path, state)
    plan2 = plan_requests(events2, {"acme": {"2026-11-09", "2026-11-16"}}, today=TODAY, first_week=FIRST)
    assert [(r.week, r.late_from) for r in plan2] == [("2026-11-09", ("2026-11-23",)),
                                                      ("2026-11-16", ("2026-11-23",)), ("2026-11-23", ())]
    assert len({r.run_key for r in [*plan, *plan2]}) == 6


def test_already_ingested_counts_a_file_as_seen_only_when_its_week_was_ingested_after_its_last_change(tmp_path):
    from riskml_assets.core.watch import already_ingested

    a = put(tmp_path, "acme/snapshots-2026-11-16.parquet", b"a")
    b = put(tmp_path, "acme/activities-2026-11-17.parquet", b"b")
    c = put(tmp_path, "acme/snapshots-2026-11-09.parquet", b"c")
    os.utime(a, (1000, 1000))
    os.utime(b, (3000, 3000))
    os.utime(c, (1000, 1000))
    events, _, _ = run(tmp_path)
    ingested = {("acme", "2026-11-16", "snapshots"): 2000.0,   # after a's change: seen
                ("acme", "2026-11-16", "activities"): 2000.0,  # before b's change: b is new
                ("acme", "2026-11-09", "activities"): 5000.0}  # another kind of c's week: c is new
    new, seen = already_ingested(events, ingested)
    assert [e.rel_path for e in seen] == ["acme/snapshots-2026-11-16.parquet"]
    assert sorted(e.rel_path for e in new) == ["acme/activities-2026-11-17.parquet", "acme/snapshots-2026-11-09.parquet"]
