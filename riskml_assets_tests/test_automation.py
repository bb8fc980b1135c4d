"""Sensor, schedule and failure recorder against a real instance and real files."""
import datetime as dt
import hashlib
import json
import os
import shutil

import dagster as dg
import pandas as pd
import pytest

from riskml_assets.core import simulator
from riskml_assets.sensors import failure_log_path, snapshot_sensor, weekly_retraining_schedule


@pytest.fixture()
def watch(tmp_path):
    """A fresh instance and incoming folder per test, so cursors and tenants start empty."""
    from .conftest import Platform

    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        yield Platform(tmp_path, instance)


def tick(platform, cursor=None):
    ctx = dg.build_sensor_context(instance=platform.instance, cursor=cursor, definitions=platform.defs,
                                  resources={"riskml": platform.resources["riskml"]})
    return snapshot_sensor(ctx), ctx


def daemon_tick(platform, cursor=None):
    """Evaluate the sensor as the code server does for the daemon: with an instance ref, run requests are
    resolved against the job's partitions (an unknown partition key raises here, as it fails the tick)."""
    ctx = dg.build_sensor_context(instance=platform.instance, instance_ref=platform.instance.get_ref(), cursor=cursor,
                                  definitions=platform.defs, resources={"riskml": platform.resources["riskml"]})
    return snapshot_sensor.evaluate_tick(ctx)


def write_week(platform, tenant, kinds=("snapshots",), weeks=1, offset=11):
    sim = simulator.simulate_tenant(simulator.TenantSpec(tenant, 5.0, offset), weeks=weeks)
    files = simulator.write_tenant(sim, platform.incoming, platform.oracle)
    keep = [f for f in files if f.name.split("-")[0] in kinds]
    for f in files:
        if f not in keep:
            f.unlink()
    return sorted(keep)


def test_new_file_once_then_nothing_then_two_files_two_requests(watch):
    [f1] = write_week(watch, "alpha")
    res, _ = tick(watch)
    assert len(res.run_requests) == 1
    rr = res.run_requests[0]
    assert rr.partition_key == f"alpha|{simulator.last_friday(simulator.DEFAULT_END) - dt.timedelta(days=4)}"
    # the new tenant is added in the same tick, before its run is requested (the daemon applies these first)
    assert res.dynamic_partitions_requests[0].partition_keys == ["alpha"]
    # same file, next tick: nothing
    res2, _ = tick(watch, res.cursor)
    assert res2.run_requests == [] or res2.run_requests is None
    # touching a file without changing its content does not re-request it
    f1.touch()
    assert not tick(watch, res.cursor)[0].run_requests
    # two new files in one tick: two requests with distinct run keys
    write_week(watch, "beta", kinds=("snapshots", "outcomes"), weeks=2, offset=12)
    res3, _ = tick(watch, res.cursor)
    files = [r.tags["riskml/file"] for r in res3.run_requests]
    assert len(files) == len(set(r.run_key for r in res3.run_requests)) >= 2
    assert all(f.startswith("beta/") for f in files)
    # changed content -> requested again, with a new run key
    df = pd.read_parquet(f1)
    df.head(len(df) - 1).to_parquet(f1, index=False)
    res4, _ = tick(watch, res3.cursor)
    assert [r.tags["riskml/file"] for r in res4.run_requests] == [f"alpha/{f1.name}"]
    assert res4.run_requests[0].run_key != rr.run_key


def test_hostile_and_malformed_names_yield_no_request_and_a_clear_log(watch, caplog):
    (watch.incoming / "..x").mkdir(parents=True)
    (watch.incoming / "..x" / "snapshots-2026-11-20.parquet").write_bytes(b"x")
    (watch.incoming / "Bad Tenant").mkdir()
    (watch.incoming / "good").mkdir()
    (watch.incoming / "good" / "snapshots-2026-13-45.parquet").write_bytes(b"x")
    (watch.incoming / "good" / "notes.txt").write_text("hello")
    (watch.incoming / "good" / "snapshots-2026-11-20.parquet").write_bytes(b"")
    res, ctx = tick(watch)
    assert not res.run_requests and not res.dynamic_partitions_requests
    state = json.loads(res.cursor)
    assert set(state["refused"]) == {"..x/", "Bad Tenant/", "good/snapshots-2026-13-45.parquet", "good/notes.txt",
                                     "good/snapshots-2026-11-20.parquet"}
    assert "invalid tenant id" in state["refused"]["..x/"]["reason"]
    assert "empty file" in state["refused"]["good/snapshots-2026-11-20.parquet"]["reason"]
    # refusals are not repeated on the next tick, and nothing was deleted
    res2, _ = tick(watch, res.cursor)
    assert not res2.run_requests
    assert (watch.incoming / "good" / "notes.txt").exists() and (watch.incoming / "..x").exists()
    # a good file next to the bad ones still goes through
    write_week(watch, "good", offset=13)
    res3, _ = tick(watch, res2.cursor)
    assert len(res3.run_requests) == 1 and res3.run_requests[0].partition_key.startswith("good|")


def test_schedule_requests_exactly_the_expected_tenant_weeks_and_skips_blocked(watch):
    # two tenants with an ingested, clean last week; one with a duplicate-key failure; one never ingested
    for i, t in enumerate(("t1", "t2", "t3")):
        sim = simulator.simulate_tenant(simulator.TenantSpec(t, 15.0, 20 + i), weeks=1)
        files = simulator.write_tenant(sim, watch.incoming, watch.oracle)
        if t == "t3":
            snap = [f for f in files if f.name.startswith("snapshots-")][0]
            df = pd.read_parquet(snap)
            dup = df.head(len(df) // 5).assign(deal_value=lambda d: d.deal_value + 1)
            pd.concat([df, dup]).to_parquet(snap, index=False)
        watch.run("ingest_job", t, watch.weeks(t)[-1])
    watch.add_tenant("t4")
    week = watch.weeks("t1")[-1]
    monday_after = dt.datetime.fromisoformat(week) + dt.timedelta(days=7, hours=6)
    ctx = dg.build_schedule_context(instance=watch.instance,
                                    scheduled_execution_time=monday_after.replace(tzinfo=dt.timezone.utc),
                                    repository_def=watch.defs.get_repository_def())
    reqs = weekly_retraining_schedule.evaluate_tick(ctx).run_requests
    assert sorted(r.partition_key for r in reqs) == [f"t1|{week}", f"t2|{week}"]
    assert all(r.job_name in (None, "train_job") for r in reqs)


def test_failure_sensor_records_the_failed_gate(watch):
    sim = simulator.simulate_tenant(simulator.TenantSpec("failco", 15.0, 30), weeks=1)
    files = simulator.write_tenant(sim, watch.incoming, watch.oracle)
    snap = [f for f in files if f.name.startswith("snapshots-")][0]
    df = pd.read_parquet(snap)
    pd.concat([df, df.head(len(df) // 5).assign(deal_value=1.0)]).to_parquet(snap, index=False)
    res = watch.run("riskml_full_job", "failco", watch.weeks("failco")[-1])
    assert not res.success
    from riskml_assets.sensors import run_failure_recorder

    ctx = dg.build_run_status_sensor_context(
        sensor_name="run_failure_recorder", dagster_instance=watch.instance, dagster_run=res.dagster_run,
        dagster_event=res.get_run_failure_event(), resources={"riskml": watch.resources["riskml"]},
    ).for_run_failure()
    run_failure_recorder(ctx)
    lines = failure_log_path(watch.resources["riskml"]).read_text().splitlines()
    rec = json.loads(lines[-1])
    assert rec["run_id"] == res.run_id and rec["partition"] == f"failco|{watch.weeks('failco')[-1]}"
    assert "risk_snapshots" in rec["failed_steps"]
    assert "risk_snapshots_duplicate_keys" in [g["gate"] for g in rec["failed_gates"]]


def _week_of(path):
    d = dt.date.fromisoformat(path.name.split("-", 1)[1][:10])
    return str(d - dt.timedelta(days=d.weekday()))


def _copy(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def test_out_of_range_and_unparseable_files_are_refused_once_and_the_tick_goes_on(watch):
    """Item 13: one file dated 2099, before the first week or on an impossible date must not stop the tick."""
    from riskml_assets.partitions import PARTITIONS_START

    [good] = write_week(watch, "alpha")
    today = dt.datetime.now(dt.timezone.utc).date()
    before = dt.date.fromisoformat(PARTITIONS_START) - dt.timedelta(days=3)
    bad = {
        "alpha/snapshots-2099-01-02.parquet": "(future)",
        f"alpha/snapshots-{before}.parquet": "(before_first_week)",
        "alpha/snapshots-2026-13-45.csv": "impossible date",
    }
    for rel in bad:
        _copy(good, watch.incoming / rel)
    current = _copy(good, watch.incoming / "beta" / f"outcomes-{today}.parquet")  # the current week: accepted
    res = daemon_tick(watch)  # before the fix: DagsterUnknownPartitionError for the 2099 week, the cursor stops
    got = sorted((r.tags["riskml/file"], r.partition_key) for r in res.run_requests)
    assert got == sorted([(f"alpha/{good.name}", f"alpha|{_week_of(good)}"),
                          (f"beta/{current.name}", f"beta|{today - dt.timedelta(days=today.weekday())}")])
    refused = json.loads(res.cursor)["refused"]
    assert set(refused) == set(bad)
    for rel, why in bad.items():
        assert why in refused[rel]["reason"]
    # refused once: the next tick neither requests nor crashes, and a new good file still goes through
    res2 = daemon_tick(watch, res.cursor)
    assert not res2.run_requests
    write_week(watch, "gamma", offset=14)
    res3 = daemon_tick(watch, res2.cursor)
    assert [r.partition_key.split("|")[0] for r in res3.run_requests] == ["gamma"]
    assert all((watch.incoming / rel).exists() for rel in bad)  # nothing deleted


def test_dangling_symlinks_are_refused_and_the_tick_goes_on(watch):
    """Item 14: a dangling link (a tenant folder or a file) under incoming/ must not crash the tick."""
    [good] = write_week(watch, "alpha")
    os.symlink(watch.root / "nowhere", watch.incoming / "ghost")
    os.symlink(watch.root / "nowhere.parquet", watch.incoming / "alpha" / "snapshots-2026-11-17.parquet")
    res = daemon_tick(watch)  # before the fix: FileNotFoundError from stat() of the dangling tenant link
    assert [r.tags["riskml/file"] for r in res.run_requests] == [f"alpha/{good.name}"]
    refused = json.loads(res.cursor)["refused"]
    assert set(refused) == {"ghost/", "alpha/snapshots-2026-11-17.parquet"}
    assert "dangling symbolic link" in refused["alpha/snapshots-2026-11-17.parquet"]["reason"]


def test_symlinks_out_of_the_tenant_folder_are_never_ingested(watch):
    """Item 15: a link to another tenant's file, to any file, or a tenant folder that is a link: refused,
    by the sensor and by the ingestion listing."""
    from riskml_assets.assets.ingest import week_files

    [victim] = write_week(watch, "victim")
    week = _week_of(victim)
    secret = watch.root / "secret.parquet"
    shutil.copyfile(victim, secret)
    thief = watch.incoming / "thief"
    thief.mkdir()
    os.symlink(victim, thief / victim.name)  # another tenant's rows
    stolen = thief / f"snapshots-{week}.parquet"  # any readable file, dated on the Monday
    os.symlink(secret, stolen)
    os.symlink(watch.incoming / "victim", watch.incoming / "mirror")  # a whole tenant folder
    res = daemon_tick(watch)
    assert [r.tags["riskml/file"] for r in res.run_requests] == [f"victim/{victim.name}"]
    assert res.dynamic_partitions_requests[0].partition_keys == ["victim"]
    refused = json.loads(res.cursor)["refused"]
    assert set(refused) == {"mirror/", f"thief/{victim.name}", f"thief/{stolen.name}"}
    assert all("outside the tenant folder thief/" in refused[k]["reason"] for k in refused if k.startswith("thief/"))
    # the ingestion's own listing refuses the same entries (the CLI and a manual run do not go through the sensor)
    assert week_files(watch.incoming / "thief", "snapshots", week) == []
    assert week_files(watch.incoming / "mirror", "snapshots", week) == []
    assert week_files(watch.incoming / "victim", "snapshots", week) == [victim]


def test_a_file_reverted_to_earlier_content_is_requested_again(watch):
    """Item 18: A -> B -> A yields three requests with three run keys (the daemon drops a repeated key);
    an unchanged file never yields a second request."""
    [f] = write_week(watch, "alpha")
    a = f.read_bytes()
    df = pd.read_parquet(f)
    cursor, keys = None, []
    for step in ("A", "B", "A"):
        if step == "B":
            df.head(len(df) - 1).to_parquet(f, index=False)
        elif keys:
            f.write_bytes(a)
        os.utime(f, ns=(f.stat().st_mtime_ns + 10**9,) * 2)
        res = daemon_tick(watch, cursor)
        assert [r.tags["riskml/file"] for r in res.run_requests] == [f"alpha/{f.name}"], step
        keys.append(res.run_requests[0].run_key)
        cursor = res.cursor
    assert len(set(keys)) == 3
    assert res.run_requests[0].tags["riskml/sha256"] == hashlib.sha256(a).hexdigest()[:16]
    assert not daemon_tick(watch, cursor).run_requests


def schedule_for(platform, week):
    """Evaluate the weekly schedule on the Monday 06:00 UTC after ``week``; (partition keys requested, skip message)."""
    monday_after = dt.datetime.fromisoformat(week) + dt.timedelta(days=7, hours=6)
    ctx = dg.build_schedule_context(instance=platform.instance,
                                    scheduled_execution_time=monday_after.replace(tzinfo=dt.timezone.utc),
                                    repository_def=platform.defs.get_repository_def())
    data = weekly_retraining_schedule.evaluate_tick(ctx)
    return sorted(r.partition_key for r in data.run_requests or []), data.skip_message


def test_schedule_skips_a_week_with_an_unreadable_file(watch, capfd):
    """Item 17: the readable files are ingested, the unreadable one fails <asset>_files_readable, and the
    weekly schedule sees it and skips the tenant with a log line; a clean tenant is still retrained."""
    from riskml_assets.sensors import ingestion_blocked

    for t, off in (("clean", 40), ("broken", 41)):
        simulator.write_tenant(simulator.simulate_tenant(simulator.TenantSpec(t, 15.0, off), weeks=1),
                               watch.incoming, watch.oracle)
    week = watch.weeks("clean")[-1]
    assert watch.run("ingest_job", "clean", week).success
    assert watch.run("ingest_job", "broken", week).success
    assert schedule_for(watch, week)[0] == [f"broken|{week}", f"clean|{week}"]
    # a second snapshot file of the same week arrives and cannot be read
    (watch.incoming / "broken" / f"snapshots-{week}.parquet").write_bytes(b"PAR1 this is not parquet")
    res = watch.run("ingest_job", "broken", week)
    assert not res.success
    assert len(watch.load("risk_snapshots", "broken", week)) > 0  # the readable file is still ingested
    why = ingestion_blocked(watch.instance, "broken", week)
    assert why is not None and "risk_snapshots_files_readable" in why
    capfd.readouterr()
    requested, _ = schedule_for(watch, week)
    assert requested == [f"clean|{week}"]
    logged = [line for line in capfd.readouterr().err.splitlines() if "not retraining" in line]
    assert len(logged) == 1 and "not retraining broken" in logged[0] and "files_readable" in logged[0]


def test_schedule_judges_every_ingest_asset_on_its_latest_attempt_for_the_week(watch):
    """Item 17: a blocking gate failed by an ingest asset re-run on its own (not the snapshots' run), or a
    failed ingestion attempt that left a stale stored value, skips the tenant; a clean re-run unblocks it."""
    from riskml_assets.sensors import ingestion_blocked

    files = simulator.write_tenant(simulator.simulate_tenant(simulator.TenantSpec("acme", 15.0, 42), weeks=2),
                                   watch.incoming, watch.oracle)
    weeks = watch.weeks("acme")
    week, older = weeks[-1], weeks[-2]
    outcomes = [f for f in files if f.name.startswith("outcomes-") and _week_of(f) == week][0]
    good = outcomes.read_bytes()
    assert watch.run("ingest_job", "acme", week).success
    job = watch.defs.resolve_job_def("ingest_job")

    def outcomes_only():
        return job.execute_in_process(partition_key=f"acme|{week}", instance=watch.instance, raise_on_error=False,
                                      asset_selection=[dg.AssetKey("opportunity_outcomes")])

    # an older week failing its gates does not block the week to train
    older_snap = [f for f in files if f.name.startswith("snapshots-") and _week_of(f) == older][0]
    df = pd.read_parquet(older_snap)
    pd.concat([df, df.assign(deal_value=df.deal_value + 1)]).to_parquet(older_snap, index=False)
    assert not watch.run("ingest_job", "acme", older).success
    assert schedule_for(watch, week)[0] == [f"acme|{week}"]
    # 1. the outcomes of the week re-ingested alone, with duplicate keys: its blocking gate fails
    df = pd.read_parquet(outcomes)
    pd.concat([df, df.assign(actual_revenue=df.actual_revenue + 1)]).to_parquet(outcomes, index=False)
    assert not outcomes_only().success
    why = ingestion_blocked(watch.instance, "acme", week)
    assert why is not None and "opportunity_outcomes_duplicate_keys" in why
    assert schedule_for(watch, week)[0] == []
    # 2. the only outcomes file becomes unreadable: the attempt fails, the stored outcomes are stale
    outcomes.write_bytes(b"PAR1 garbage")
    assert not outcomes_only().success
    why = ingestion_blocked(watch.instance, "acme", week)
    assert why is not None and "opportunity_outcomes ingestion failed" in why and "stale" in why
    requested, skip = schedule_for(watch, week)
    assert requested == [] and "acme" in skip
    # 3. the file is fixed and re-ingested: the latest results are clean again
    outcomes.write_bytes(good)
    assert outcomes_only().success
    assert ingestion_blocked(watch.instance, "acme", week) is None
    assert schedule_for(watch, week)[0] == [f"acme|{week}"]


def test_a_new_outcomes_file_also_reingests_the_earlier_weeks_it_may_carry_late_rows_for(watch):
    """Outcomes are routed to the week of their closed_at: a new outcomes file is also read by the ingestion of
    the LATE_WEEKS weeks before its own, so those already ingested are requested again (never-ingested weeks
    read it when their own ingestion comes)."""
    files = write_week(watch, "late", kinds=("snapshots", "outcomes"), weeks=2, offset=15)
    weeks = sorted({_week_of(f) for f in files})
    older, last = weeks[-2], weeks[-1]
    new_outcomes = [f for f in files if f.name.startswith("outcomes-") and _week_of(f) == last][0]
    aside = new_outcomes.with_name(".held-back")
    new_outcomes.rename(aside)
    res = daemon_tick(watch)
    # one request per tenant-week (the snapshots and outcomes files of the older week together); no earlier
    # week ingested yet: own weeks only
    assert [r.partition_key for r in res.run_requests] == [f"late|{older}", f"late|{last}"]
    assert res.run_requests[0].tags["riskml/files"] == "2"
    assert watch.run("ingest_job", "late", older).success
    aside.rename(new_outcomes)
    res2 = daemon_tick(watch, res.cursor)
    got = [(r.partition_key, r.tags.get("riskml/late_rows_from")) for r in res2.run_requests]
    assert got == [(f"late|{older}", last), (f"late|{last}", None)]  # one request per tenant-week, oldest first
    assert len({r.run_key for r in [*res.run_requests, *res2.run_requests]}) == 4


def test_after_a_cli_ingest_the_first_tick_requests_nothing_and_new_files_of_a_week_are_one_request(watch):
    """Issue 10 item 7: the cursor starts empty after `riskml ingest-history`; files whose tenant-week was
    ingested after their last change are seen (recorded in the cursor, no request); the files of a new week
    are one request, whose run key covers all of them."""
    files = write_week(watch, "acme", kinds=("snapshots", "activities"), weeks=3, offset=21)
    weeks = sorted({_week_of(f) for f in files})
    held = [f for f in files if _week_of(f) == weeks[-1]]
    assert len(held) == 2
    for f in held:
        f.rename(f.with_name(f".held-{f.name}"))
    watch.ingest_all("acme")  # what `riskml ingest-history` does, into the same instance
    visible = [f for f in files if f not in held]
    res = daemon_tick(watch)
    assert not res.run_requests, [r.partition_key for r in res.run_requests]
    assert set(json.loads(res.cursor)["files"]) == {f"acme/{f.name}" for f in visible}
    # two new files of one new week: one request with both files
    for f in held:
        f.with_name(f".held-{f.name}").rename(f)
        os.utime(f)
    res2 = daemon_tick(watch, res.cursor)
    [req] = res2.run_requests
    assert req.partition_key == f"acme|{weeks[-1]}"
    assert req.tags["riskml/file"] == ",".join(sorted(f"acme/{f.name}" for f in held))
    assert req.tags["riskml/files"] == "2" and req.run_key.startswith(f"acme|{weeks[-1]}#")
    assert not daemon_tick(watch, res2.cursor).run_requests
    # a file changed after its week was ingested is not hidden by the seeding of an empty cursor
    changed = [f for f in visible if f.name.startswith("snapshots-") and _week_of(f) == weeks[0]][0]
    df = pd.read_parquet(changed)
    df.head(len(df) - 1).to_parquet(changed, index=False)
    os.utime(changed, (changed.stat().st_atime, changed.stat().st_mtime + 5))
    res3 = daemon_tick(watch)
    assert sorted(r.partition_key for r in res3.run_requests) == [f"acme|{weeks[0]}", f"acme|{weeks[-1]}"]


def test_without_a_seed_several_files_of_a_tenant_week_are_still_one_request(watch):
    """No ingestion yet: every tenant-week with files is requested once, whatever the number of its files."""
    files = write_week(watch, "multi", kinds=("snapshots", "outcomes", "activities"), weeks=2, offset=22)
    res = daemon_tick(watch)
    weeks = sorted({_week_of(f) for f in files})
    assert [r.partition_key for r in res.run_requests] == [f"multi|{w}" for w in weeks]
    assert sum(int(r.tags["riskml/files"]) for r in res.run_requests) == len(files)
    assert len({r.run_key for r in res.run_requests}) == len(weeks)
