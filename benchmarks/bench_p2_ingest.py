"""P2: one ingestion run (``ingest_job`` for one tenant-week, through Dagster on a real instance) ÷ the bare
validation of the same files by ``core.ingest`` in one process (not a test).

    python benchmarks/bench_p2_ingest.py            # acme-sized tenant (60 new opportunities a week), 7 runs each
    python benchmarks/bench_p2_ingest.py --quick    # a smaller tenant, 1 run each (smoke)
    python benchmarks/bench_p2_ingest.py --code-root <other checkout>

Set-up (untimed): a simulated tenant written as contract files into a temp data dir, the project's
``definitions.defs`` on a DagsterInstance in a temp DAGSTER_HOME. Two comparisons, each interleaved:

* one week: ``ingest_job`` for one tenant-week (re-materialized each repetition, as the sensor launches a new
  week) ÷ the bare validation of that week;
* history: one ``ingest_job`` run over every week of the tenant (the single-run backfill ``riskml run`` and
  ``riskml ingest-history`` launch) ÷ the bare validation of every week; and the same run with Dagster's own
  SQLite storage methods (``riskml_assets.instance_storage`` uninstalled) ÷ with riskml's kept connections.

The one-week comparison also runs ``dagster_floor``: the job's asset graph with no-op steps, passing checks and
an IO manager that keeps nothing (``_timing.DagsterFloor``), on the same instance: what Dagster itself costs
for this graph, and with it the lowest ratio the graph can reach (1 + floor ÷ bare).

Bare side: for every kind the job ingests, ``core.ingest.files_for_week`` + ``core.ingest.ingest_week`` on the
same files (validation and quarantine routing; no storage). Goal (issue 11): Dagster ÷ bare <= 2.
"""
from __future__ import annotations

import datetime as dt
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing as T  # noqa: E402

TAG = "P2"
KINDS = ("snapshots", "outcomes", "activities", "interactions")


def main(argv=None) -> int:
    p = T.parser(__doc__, repeat=7, quick_repeat=1)
    T.add_instance_option(p)
    p.add_argument("--weeks", type=int, default=None, help="simulated weeks (default 12, 4 with --quick)")
    args = T.parse(p, argv)
    T.header(TAG, "one ingestion run through Dagster vs the bare core.ingest validation", args)
    weeks = args.weeks or (4 if args.quick else 12)
    root = Path(tempfile.mkdtemp(prefix="riskml-bench-p2-"))
    plat = None
    try:
        plat = T.Platform(root, instance=args.instance)
        T.note(TAG, f"Dagster instance: {args.instance}")
        from riskml_assets.core import ingest as core_ingest
        from riskml_assets.partitions import PARTITIONS_START

        tenant = "benchp2"
        sim = T.simulate(opportunities=(30 if args.quick else 60) * (20 + weeks), weeks=weeks, name=tenant)
        T.write_incoming(sim, plat.incoming, root / "oracle")
        tdir = plat.incoming / tenant
        all_weeks = T.weeks_of(tdir)
        week = all_weeks[len(all_weeks) // 2]
        files = sorted(tdir.iterdir())
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)

        def bare(weeks=(week,)):
            rows = 0
            for w in weeks:
                for kind in KINDS:
                    fs = core_ingest.files_for_week(kind, files, w)
                    if fs:
                        rows += len(core_ingest.ingest_week(kind, fs, tenant=tenant, now=now, week=w,
                                                            first_week=PARTITIONS_START).valid)
            return rows

        run_ids = []

        def dagster():
            res = plat.run("ingest_job", tenant, week)
            if not res.success:
                raise RuntimeError(f"ingest_job {tenant}|{week} failed")
            run_ids.append(res.run_id)

        rows = bare()
        T.note(TAG, f"tenant-week {tenant}|{week}: {rows} valid rows over {len(KINDS)} kinds")
        floor = T.DagsterFloor(plat, "ingest_job")
        floor_ids = []
        times = T.interleave({"dagster": dagster, "bare": bare,
                              "dagster_floor": lambda: floor_ids.append(floor.run(tenant, week).run_id)}, args.repeat)
        T.report_times(TAG, times)
        T.report_ratio(TAG, times, "dagster", "bare", ("<=", 2.0))
        T.report_value(TAG, "orchestration_s_per_run", T.paired_difference(times, "dagster", "bare"), "s")
        T.report_value(TAG, "event_records_per_run", plat.event_records(run_ids[-1]))
        T.report_floor(TAG, times, 2.0)
        T.report_value(TAG, "floor_event_records_per_run", plat.event_records(floor_ids[-1]))

        # history: every week of the tenant in one run
        history_ids = []

        def dagster_history():
            res = plat.run_range("ingest_job", tenant, all_weeks[0], all_weeks[-1])
            if not res.success:
                raise RuntimeError(f"ingest_job {tenant}|{all_weeks[0]}..{all_weeks[-1]} failed")
            history_ids.append(res.run_id)

        rows = bare(all_weeks)
        T.note(TAG, f"history {tenant}|{all_weeks[0]}..{all_weeks[-1]}: {len(all_weeks)} weeks, {rows} valid rows")
        sides = {"dagster_history": dagster_history, "bare_history": lambda: bare(all_weeks)}
        try:  # code with riskml_assets.instance_storage: the same run with Dagster's own SQLite storage methods
            from riskml_assets import instance_storage
        except ImportError:
            instance_storage = None
        if instance_storage is not None and instance_storage.installed():
            def dagster_history_stock_event_log():
                instance_storage.uninstall()
                try:
                    dagster_history()
                finally:
                    instance_storage.install()

            sides["dagster_history_stock_event_log"] = dagster_history_stock_event_log
        times = T.interleave(sides, max(1, args.repeat // 2))
        T.report_times(TAG, times)
        T.report_ratio(TAG, times, "dagster_history", "bare_history", ("<=", 2.0))
        if "dagster_history_stock_event_log" in times:
            T.report_ratio(TAG, times, "dagster_history_stock_event_log", "dagster_history")
        T.report_value(TAG, "event_records_per_history_run", plat.event_records(history_ids[-1]))
    finally:
        if plat:
            plat.close()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
