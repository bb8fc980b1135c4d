"""``riskml``: what Dagster's own CLI cannot do — generate data, register tenants, ingest history,
run the main job and show a tenant's latest metrics.

Training itself always goes through ``dagster asset materialize -m riskml_assets.definitions``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path.cwd()
def train_assets() -> list[str]:
    """The assets the main job materializes per tenant-week: the train and score jobs' selection."""
    from .definitions import defs
    from .jobs import SCORE_SELECTION, TRAIN_SELECTION

    keys = (TRAIN_SELECTION | SCORE_SELECTION).resolve(defs.resolve_asset_graph())
    return sorted(k.to_user_string() for k in keys)


HOME_YAML = Path(__file__).resolve().parent.parent / "config" / "dagster_home.yaml"


def ensure_dagster_home() -> Path:
    """Use $DAGSTER_HOME, or ``./.dagster``; storage is SQLite under that folder either way.

    (The repository's ./dagster.yaml points at the same ``.dagster/`` folder when DAGSTER_HOME is unset.)
    """
    home = Path(os.environ.get("DAGSTER_HOME") or (ROOT / ".dagster")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        if HOME_YAML.exists():
            shutil.copy(HOME_YAML, home / "dagster.yaml")
        else:
            (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _instance():
    ensure_dagster_home()
    import dagster as dg

    return dg.DagsterInstance.get()


def data_dir() -> Path:
    return Path(os.environ.get("RISKML_DATA_DIR", "data"))


def cmd_generate(args) -> int:
    from .core import simulator

    argv = ["--out", str(args.out), "--oracle", str(args.oracle), "--seed", str(args.seed), "--weeks", str(args.weeks)]
    if args.tenants:
        argv += ["--tenants", args.tenants]
    if args.opportunities:
        argv += ["--opportunities", str(args.opportunities)]
    return simulator.main(argv) or 0


def tenant_weeks(incoming: Path) -> tuple[dict[str, list[str]], list[tuple[Path, str]]]:
    """{tenant: sorted weeks that have files} from the incoming folder, plus refused entries with reasons."""
    from .core.contract import scan_incoming

    good, bad = scan_incoming(incoming)
    weeks: dict[str, set[str]] = {}
    for f in good:
        weeks.setdefault(f.tenant, set()).add(f.week)
    return {t: sorted(w) for t, w in sorted(weeks.items())}, bad


def register_tenants(incoming: Path, instance) -> list[str]:
    from .partitions import tenant_partitions

    weeks, bad = tenant_weeks(incoming)
    for path, reason in bad:
        print(f"refused {path}: {reason}", file=sys.stderr)
    have = set(instance.get_dynamic_partitions(tenant_partitions.name))
    new = [t for t in weeks if t not in have]
    if new:
        instance.add_dynamic_partitions(tenant_partitions.name, new)
    print(f"tenants: {', '.join(weeks) or '(none)'}" + (f" (new: {', '.join(new)})" if new else ""))
    return list(weeks)


def cmd_register(args) -> int:
    register_tenants(Path(args.incoming), _instance())
    return 0


def latest_complete_week(weeks: list[str], today: dt.date | None = None) -> str | None:
    from .core.contract import latest_complete_week as lcw

    cutoff = lcw(today or dt.date.today())
    done = [w for w in weeks if w <= cutoff]
    return done[-1] if done else None


def run_partitions(instance, job_name: str, pairs: list[tuple[str, str]], verb: str = "ran") -> int:
    """Execute a partitioned job for each (tenant, week) in this process, recorded in the instance."""
    from .definitions import defs
    from .partitions import partition_key

    job = defs.resolve_job_def(job_name)
    t0, failed = time.perf_counter(), 0
    for i, (t, w) in enumerate(pairs, 1):
        res = job.execute_in_process(partition_key=partition_key(t, w), instance=instance, raise_on_error=False,
                                     run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
        if not res.success:
            failed += 1
            print(f"  {job_name} {t}|{w}: FAILED (run {res.run_id}; see the UI or `riskml failures`)", file=sys.stderr)
        if i % 20 == 0 or i == len(pairs):
            print(f"  {verb} {i}/{len(pairs)} tenant-weeks ({time.perf_counter() - t0:.0f}s)")
    return failed


def ingest_history(instance, tenants: dict[str, list[str]], force: bool = False, until: dict[str, str] | None = None) -> int:
    """Materialize the ingestion assets of every tenant-week that has files and no materialization yet."""
    import dagster as dg

    from .partitions import partition_key

    done = set() if force else set(instance.get_materialized_partitions(dg.AssetKey("risk_snapshots")))
    todo = [(t, w) for t, ws in tenants.items() for w in ws
            if (until is None or w <= until.get(t, w)) and partition_key(t, w) not in done]
    return run_partitions(instance, "ingest_job", todo, verb="ingested")


def cmd_backfill(args) -> int:
    """Run a job for every week of a tenant's history (the weeks that have files), oldest first."""
    instance = _instance()
    weeks, _ = tenant_weeks(Path(args.incoming))
    if args.tenant not in weeks:
        print(f"no files for tenant {args.tenant!r} under {args.incoming}", file=sys.stderr)
        return 2
    register_tenants(Path(args.incoming), instance)
    todo = [(args.tenant, w) for w in weeks[args.tenant]
            if (not args.start or w >= args.start) and (not args.end or w <= args.end)]
    print(f"backfilling {args.job} for {len(todo)} week(s) of {args.tenant}")
    return 1 if run_partitions(instance, args.job, todo) else 0


def cmd_rollback(args) -> int:
    """One line: move a tenant's champion back to the previous champion, with a reason (idempotent)."""
    from .assets.registry import RegistryResource
    from .core.contract import validate_tenant

    uri = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{data_dir()}/mlflow.db")
    res = RegistryResource(tracking_uri=uri).get().rollback(validate_tenant(args.tenant), args.family, args.reason,
                                                            further=args.further)
    print(json.dumps(res, indent=2, default=str))
    return 0


def cmd_failures(args) -> int:
    path = data_dir() / "ops" / "run_failures.jsonl"
    if not path.exists():
        print(f"no failed runs recorded ({path} does not exist; the run_failure_recorder sensor writes it)")
        return 0
    for line in path.read_text().splitlines()[-args.last:]:
        r = json.loads(line)
        gates = ", ".join(f"{g['gate']}={g.get('value')}" for g in r["failed_gates"]) or "-"
        print(f"{r['recorded_at']}  {r['job']:<16} {r['partition'] or '-':<22} steps={','.join(r['failed_steps'])}  "
              f"gates={gates}")
    return 0


def cmd_ingest(args) -> int:
    instance = _instance()
    weeks, _ = tenant_weeks(Path(args.incoming))
    if args.tenant:
        weeks = {t: w for t, w in weeks.items() if t in args.tenant}
    register_tenants(Path(args.incoming), instance)
    return 1 if ingest_history(instance, weeks, force=args.force) else 0


def materialize_cmd(tenant: str, week: str, assets=None) -> list[str]:
    assets = assets or train_assets()
    return [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "riskml_assets.definitions",
            "--select", ",".join(assets), "--partition", f"{tenant}|{week}"]


def summary_rows(instance, targets: dict[str, str]) -> list[dict]:
    import dagster as dg

    from .partitions import partition_key

    rows = []
    for tenant, week in targets.items():
        pk = partition_key(tenant, week)
        row = {"tenant": tenant, "week": week, "rows": None, "auc": None, "brier": None, "ece": None,
               "gates": "", "status": "not trained"}
        failed = []
        recs = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("training_examples"), asset_partitions=[pk]), limit=1).records
        if recs:
            md = recs[0].asset_materialization.metadata
            row["rows"] = md["dagster/row_count"].value if "dagster/row_count" in md else None
            run_id = recs[0].run_id
            evals = [e.dagster_event.event_specific_data for e in instance.all_logs(
                run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)]
            passed = sum(1 for e in evals if e.passed)
            failed = [e.check_name for e in evals if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR]
            warned = [e.check_name for e in evals if not e.passed and e.severity != dg.AssetCheckSeverity.ERROR]
            row["gates"] = f"{passed}/{len(evals)}" + (f" (failed: {', '.join(failed)})" if failed else "") + (
                f" (warn: {', '.join(warned)})" if warned else "")
        ev = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("risk_evaluation"), asset_partitions=[pk]), limit=1).records
        if ev:
            md = ev[0].asset_materialization.metadata
            for k in ("auc", "brier", "ece"):
                row[k] = md[k].value
            kept = md["kept_variant"].value if "kept_variant" in md else "as trained"
            row["kept_variant"] = kept
            row["status"] = "evaluated" if kept == "as trained" else f"evaluated ({kept} kept)"
        elif recs:
            row["status"] = "blocked by a gate" if failed else "failed (see run)"
        rows.append(row)
    return rows


def print_summary(rows: list[dict]) -> None:
    fmt = "{:<12} {:<11} {:>7} {:>7} {:>7} {:>7}  {:<27} {}"
    print(fmt.format("tenant", "week", "rows", "AUC", "Brier", "ECE", "status", "gates passed"))
    for r in rows:
        f = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        print(fmt.format(r["tenant"], r["week"], str(r["rows"] or "-"), f(r["auc"]), f(r["brier"]), f(r["ece"]),
                         r["status"], r["gates"]))


def cmd_run(args) -> int:
    """The main job: sample data if missing -> tenants -> history ingestion -> whole graph per tenant -> summary."""
    t_start = time.perf_counter()
    incoming, oracle = data_dir() / "incoming", data_dir() / "oracle"
    if not incoming.exists() or not any(incoming.iterdir()):
        print(f"no incoming data: generating the simulator's default tenants into {incoming}")
        from .core import simulator

        simulator.generate(incoming, oracle)
    instance = _instance()
    weeks, _ = tenant_weeks(incoming)
    if args.tenant:
        weeks = {t: w for t, w in weeks.items() if t in args.tenant}
    register_tenants(incoming, instance)
    targets = {t: latest_complete_week(ws) for t, ws in weeks.items()}
    targets = {t: w for t, w in targets.items() if w}
    print(f"ingesting history (one run per tenant-week that has files) ...")
    ingest_history(instance, weeks, until=targets)
    for tenant, week in targets.items():
        cmd = materialize_cmd(tenant, week)
        print(f"$ {' '.join(cmd[0:1] and ['dagster'] + cmd[1:])}")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
        print(f"  {tenant}|{week}: {status} in {time.perf_counter() - t0:.0f}s")
        if proc.returncode != 0:
            tail = [ln for ln in proc.stderr.splitlines() if "ERROR" in ln or "Error" in ln or "FAILED" in ln]
            for ln in tail[-5:]:
                print(f"    {ln[:300]}")
    print()
    print_summary(summary_rows(instance, targets))
    print(f"\nmain job took {time.perf_counter() - t_start:.0f}s")
    print("\nOpen the UI:      DAGSTER_HOME=$PWD/.dagster .venv/bin/dagster dev   (http://127.0.0.1:3000)")
    print(f"Open MLflow:      .venv/bin/mlflow ui --backend-store-uri sqlite:///{data_dir()}/mlflow.db   (http://127.0.0.1:5000)")
    return 0


def cmd_summary(args) -> int:
    instance = _instance()
    weeks, _ = tenant_weeks(Path(args.incoming))
    targets = {t: (args.week or latest_complete_week(ws)) for t, ws in weeks.items() if not args.tenant or t in args.tenant}
    rows = summary_rows(instance, {t: w for t, w in targets.items() if w})
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print_summary(rows)
    return 0


def check_rows(instance, tenant: str, week: str) -> list[dict]:
    """The latest evaluation of every gate (asset check) of one tenant-week, asset by asset."""
    import dagster as dg

    from .definitions import defs
    from .partitions import partition_key

    pk = partition_key(tenant, week)
    rows = []
    for asset in defs.assets:
        if not getattr(asset, "check_specs", None):
            continue
        for key in asset.keys:
            recs = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[pk]),
                                                   limit=1).records
            if not recs:
                continue
            run_id = recs[0].run_id
            for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
                ev = e.dagster_event.event_specific_data
                if ev.asset_key != key:
                    continue
                md = {k: getattr(v, "value", v) for k, v in (ev.metadata or {}).items()}
                rows.append({"asset": key.to_user_string(), "check": ev.check_name, "passed": bool(ev.passed),
                             "severity": ev.severity.value, "value": md.get("value"), "op": md.get("operator"),
                             "threshold": md.get("threshold"), "run_id": run_id})
    return rows


def cmd_checks(args) -> int:
    instance = _instance()
    weeks, _ = tenant_weeks(Path(args.incoming))
    week = args.week or latest_complete_week(weeks.get(args.tenant, []))
    if not week:
        print(f"no week with data for tenant {args.tenant!r} under {args.incoming}", file=sys.stderr)
        return 2
    rows = check_rows(instance, args.tenant, week)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(f"gates of {args.tenant}|{week} (latest materialization of each asset)")
        fmt = "{:<28} {:<38} {:<6} {:>10} {:>3} {:>9}"
        print(fmt.format("asset", "check", "result", "value", "op", "threshold"))
        for r in rows:
            res = "pass" if r["passed"] else ("FAIL" if r["severity"] == "ERROR" else "warn")
            num = lambda v: f"{v:.4g}" if isinstance(v, (int, float)) else str(v)  # noqa: E731
            print(fmt.format(r["asset"], r["check"], res, num(r["value"]), str(r["op"] or ""), num(r["threshold"])))
        if not rows:
            print("  nothing materialized for this partition yet")
    return 1 if any(not r["passed"] and r["severity"] == "ERROR" for r in rows) else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="riskml", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write simulated CRM files in the data contract (deterministic by seed)")
    g.add_argument("--out", default=str(data_dir() / "incoming"), help="incoming root (default: %(default)s)")
    g.add_argument("--oracle", default=str(data_dir() / "oracle"), help="ground-truth side files (tests only)")
    g.add_argument("--tenants", help="comma list of tenant names or NAME:OPPS_PER_WEEK pairs (default: acme,globex,initech)")
    g.add_argument("--weeks", type=int, default=60)
    g.add_argument("--opportunities", type=int, help="about this many opportunities per tenant")
    g.add_argument("--seed", type=int, default=7)
    g.set_defaults(fn=cmd_generate)
    r = sub.add_parser("register-tenants", help="add every valid tenant folder of the incoming root to the tenant partitions")
    r.add_argument("--incoming", default=str(data_dir() / "incoming"))
    r.set_defaults(fn=cmd_register)
    i = sub.add_parser("ingest-history", help="materialize the ingestion assets of every tenant-week that has files")
    i.add_argument("--incoming", default=str(data_dir() / "incoming"))
    i.add_argument("--tenant", action="append", help="only this tenant (repeatable)")
    i.add_argument("--force", action="store_true", help="re-ingest weeks that are already materialized")
    i.set_defaults(fn=cmd_ingest)
    m = sub.add_parser("run", help="the main job: data if missing, tenants, history, whole graph for the latest "
                                   "complete week of every tenant, summary")
    m.add_argument("--tenant", action="append", help="only this tenant (repeatable)")
    m.set_defaults(fn=cmd_run)
    b = sub.add_parser("backfill", help="run a job for every week of one tenant's history (in this process)")
    b.add_argument("--tenant", required=True)
    b.add_argument("--job", default="riskml_full_job", choices=["ingest_job", "train_job", "riskml_full_job"])
    b.add_argument("--from", dest="start", help="first week (Monday, YYYY-MM-DD)")
    b.add_argument("--to", dest="end", help="last week (Monday, YYYY-MM-DD)")
    b.add_argument("--incoming", default=str(data_dir() / "incoming"))
    b.set_defaults(fn=cmd_backfill)
    rb = sub.add_parser("rollback", help="move a tenant's champion back to the previous champion (safe to run twice)")
    rb.add_argument("--tenant", required=True)
    rb.add_argument("--family", default="risk")
    rb.add_argument("--reason", required=True)
    rb.add_argument("--further", action="store_true", help="go back one more champion after a rollback")
    rb.set_defaults(fn=cmd_rollback)
    f = sub.add_parser("failures", help="failed runs recorded by the run_failure_recorder sensor (step and gate)")
    f.add_argument("--last", type=int, default=20)
    f.set_defaults(fn=cmd_failures)
    s = sub.add_parser("summary", help="latest metrics and gates of each tenant")
    s.add_argument("--incoming", default=str(data_dir() / "incoming"))
    s.add_argument("--tenant", action="append")
    s.add_argument("--week", help="week key (Monday, YYYY-MM-DD); default: latest complete week with data")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_summary)
    c = sub.add_parser("checks", help="the latest result of every gate (asset check) of one tenant-week; exit 1 "
                                      "when a blocking gate failed")
    c.add_argument("--tenant", required=True)
    c.add_argument("--week", help="week key (Monday, YYYY-MM-DD); default: latest complete week with data")
    c.add_argument("--incoming", default=str(data_dir() / "incoming"))
    c.add_argument("--json", action="store_true")
    c.set_defaults(fn=cmd_checks)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.fn(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
