"""``riskml``: what Dagster's own CLI cannot do — generate data, register tenants, ingest history,
run the main job and show a tenant's latest metrics.

Every run it starts is a run of one of the code location's jobs (``ingest_job``, ``train_job``,
``score_job``, ...), created with the location's origin and executed in this process
(``riskml_assets.launch``), so the UI lists it under its job; a history is one backfill.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path.cwd()


class CliError(Exception):
    """A user error the CLI reports as one line (``riskml <command>: error: ...``), exit 2, no traceback."""


def tenant_arg(value: str) -> str:
    """argparse type: a tenant id in the contract (never becomes a path otherwise)."""
    from .core.contract import ContractError, validate_tenant

    try:
        return validate_tenant(value)
    except ContractError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def week_arg(value: str) -> str:
    """argparse type: a week key, the Monday that starts the week, as YYYY-MM-DD."""
    try:
        d = dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date YYYY-MM-DD (a week is named by its Monday)") from None
    if d.weekday() != 0:
        monday = d - dt.timedelta(days=d.weekday())
        raise argparse.ArgumentTypeError(f"{value} is a {d:%A}, not a Monday: weeks are named by their Monday "
                                         f"(that week is {monday.isoformat()})")
    return d.isoformat()


def positive_int(value: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return n


def positive_float(value: str) -> float:
    """argparse type: a number > 0."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not x > 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"{value} must be a finite number above 0")
    return x


def reason_arg(value: str) -> str:
    """argparse type: a non-blank free-text reason."""
    if not value.strip():
        raise argparse.ArgumentTypeError("the reason must not be blank: say why (it is recorded with the rollback)")
    return value.strip()


def known_tenants(incoming: Path, asked, where: str = "") -> None:
    """CliError when a tenant asked for has no files under the incoming folder."""
    have, _ = tenant_weeks(incoming)
    unknown = [t for t in (asked or []) if t not in have]
    if unknown:
        raise CliError(f"unknown tenant{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: no files "
                       f"under {incoming}{where} (known: {', '.join(have) or 'none'})")
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

    from .instance_storage import install_when_imported

    install_when_imported()  # the instance's SQLite storages keep their connections (issue 11)
    return dg.DagsterInstance.get()


def data_dir() -> Path:
    return Path(os.environ.get("RISKML_DATA_DIR", "data"))


def cmd_generate(args) -> int:
    from .core import simulator

    argv = ["--out", str(args.out), "--oracle", str(args.oracle), "--seed", str(args.seed)]
    if args.weeks is not None:
        argv += ["--weeks", str(args.weeks)]
    elif not (args.export_habits or args.history_from):
        argv += ["--weeks", "60"]
    if args.export_habits:
        argv.append("--export-habits")
    if args.history_from:
        argv += ["--history-from", args.history_from]
    if args.tenants:
        argv += ["--tenants", args.tenants]
    if args.opportunities:
        argv += ["--opportunities", str(args.opportunities)]
    return simulator.main(argv) or 0


def tenant_weeks(incoming: Path, kinds: tuple[str, ...] | None = None
                 ) -> tuple[dict[str, list[str]], list[tuple[Path, str]]]:
    """{tenant: sorted weeks that have files} from the incoming folder, plus refused entries with reasons.

    ``kinds`` keeps only weeks with a file of one of those kinds (e.g. ``("snapshots",)``)."""
    from .core.contract import scan_incoming, week_in_range
    from .partitions import PARTITIONS_START

    good, bad = scan_incoming(incoming)
    weeks: dict[str, set[str]] = {}
    for f in good:
        verdict = week_in_range(f.date, first=PARTITIONS_START)
        if not verdict.ok:  # no partition for that week: refused with a reason, never a traceback
            bad.append((f.path, verdict.reason))
            continue
        if kinds is None or f.kind in kinds:
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


def target_weeks(incoming: Path, tenants=None, today: dt.date | None = None) -> dict[str, str | None]:
    """{tenant: the week to train/show}: the last complete week that has a snapshots file (a week with only an
    outcomes or activities file has nothing to train on or score), None when there is none."""
    snaps, _ = tenant_weeks(incoming, kinds=("snapshots",))
    every, _ = tenant_weeks(incoming)
    return {t: latest_complete_week(snaps.get(t, []), today) for t in every if not tenants or t in tenants}


def run_partitions(instance, job_name: str, pairs: list[tuple[str, str]], verb: str = "ran",
                   title: str | None = None, launcher=None) -> int:
    """One backfill of a partitioned job over the (tenant, week) pairs, executed in this process, each run recorded as
    a run of the job in the code location ``riskml`` and listed under the backfill: one run per tenant-week, or for
    ``ingest_job`` (single-run backfill policy) one run per tenant and range of consecutive weeks."""
    from .launch import Launcher
    from .partitions import partition_key

    if not pairs:
        return 0
    t0 = time.perf_counter()

    def progress(i: int, n: int, out) -> None:
        if not out.success:
            print(f"  {job_name} {out.partition}: FAILED (run {out.run_id}; see the UI or `riskml failures`)",
                  file=sys.stderr)
        if i % 20 == 0 or i == n:
            print(f"  {verb} {i}/{n} tenant-weeks ({time.perf_counter() - t0:.0f}s)")

    keys = [partition_key(t, w) for t, w in pairs]
    own = launcher is None
    launcher = launcher or Launcher(instance)
    try:
        backfill_id, outcomes = launcher.backfill(job_name, keys, title=title, progress=progress)
    finally:
        if own:
            launcher.__exit__(None, None, None)
    print(f"  backfill {backfill_id} of {job_name}: {len(outcomes)} run(s) (listed under Backfills in the UI)")
    return sum(1 for o in outcomes if not o.success)


def ingest_history(instance, tenants: dict[str, list[str]], force: bool = False, until: dict[str, str] | None = None,
                   launcher=None) -> int:
    """Materialize the ingestion assets of every tenant-week that has files and no materialization yet: one
    backfill of ``ingest_job`` (one run per tenant and range of consecutive weeks, in this process)."""
    import dagster as dg

    from .partitions import partition_key

    done = set() if force else set(instance.get_materialized_partitions(dg.AssetKey("risk_snapshots")))
    todo = [(t, w) for t, ws in tenants.items() for w in ws
            if (until is None or w <= until.get(t, w)) and partition_key(t, w) not in done]
    return run_partitions(instance, "ingest_job", todo, verb="ingested", launcher=launcher,
                          title=f"riskml ingest-history: {len(todo)} tenant-week(s)")


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
    from .recovery import SlotWatchdog

    recover(instance)
    with SlotWatchdog(instance):
        return 1 if run_partitions(instance, args.job, todo, title=f"riskml backfill {args.tenant}") else 0


def cmd_rollback(args) -> int:
    """One line: move a tenant's champion back to the previous champion, with a reason (idempotent)."""
    from .assets.registry import RegistryResource
    from .core.contract import validate_tenant
    from .registry import ModelRegistry

    try:
        name = ModelRegistry.model_name(validate_tenant(args.tenant), args.family)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    uri = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{data_dir()}/mlflow.db")
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise CliError(f"unknown tenant {args.tenant!r}: there is no model registry at {uri} yet (nothing was "
                       "ever registered; `riskml run` trains and registers)")
    reg = RegistryResource(tracking_uri=uri).get()
    try:
        reg.client.get_registered_model(name)
    except Exception:  # mlflow raises RestException/MlflowException for a model that does not exist
        raise CliError(f"unknown tenant {args.tenant!r}: no registered model {name} in {uri}") from None
    res = reg.rollback(args.tenant, args.family, args.reason, further=args.further)
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
    known_tenants(Path(args.incoming), args.tenant)
    instance = _instance()
    weeks, _ = tenant_weeks(Path(args.incoming))
    if args.tenant:
        weeks = {t: w for t, w in weeks.items() if t in args.tenant}
    register_tenants(Path(args.incoming), instance)
    recover(instance)
    return 1 if ingest_history(instance, weeks, force=args.force) else 0


def launch_cmd(job: str, tenant: str, week: str, config: dict | None = None) -> str:
    """The shell command that starts the same run by hand (recorded under its job, like this one)."""
    extra = f" --config-json '{json.dumps(config, separators=(',', ':'))}'" if config else ""
    return f"riskml launch --job {job} --partition '{tenant}|{week}'{extra}"


# The model families of the seed graph beside the risk model, as the main job runs them: (family, job).
# Both run after a training run of the tenant-week that passed its gates (the forecast reads its splits, both read
# its feature manifest); the ranker only when the tenant sends recommendation feedback (interactions files).
FAMILY_JOBS = (("revenue_forecast", "forecast_job"), ("action_ranker", "ranker_job"))
# Selection budget of each family per tenant in the main job (Optuna trials / seconds, whichever comes first;
# `families_job` and `riskml launch` keep the asset's own default of 20 trials / 300 s). See README "main job".
MAIN_JOB_FAMILY_TRIALS, MAIN_JOB_FAMILY_SECONDS = 6, 20.0


def family_run_config(family: str, n_trials: int, seconds: float) -> dict:
    """The run config of a family's job with a selection budget (only its own ``<family>_model`` op)."""
    return {"ops": {f"{family}_model": {"config": {"n_trials": int(n_trials), "timeout_seconds": float(seconds)}}}}


def interaction_weeks(incoming: Path, tenant: str, week: str) -> list[str]:
    """Weeks up to ``week`` in which the tenant sent recommendation feedback (an ``interactions`` file)."""
    inter, _ = tenant_weeks(incoming, kinds=("interactions",))
    return [w for w in inter.get(tenant, []) if w <= week]


def run_families(launcher, instance, incoming: Path, tenant: str, week: str, trained: bool, n_trials: int,
                 seconds: float) -> dict[str, dict]:
    """Launch the forecast and ranker jobs of one tenant-week (or say why not): {family: outcome}, where an outcome
    is ``{"skipped": reason}`` or ``{"run_id", "success", "seconds"}``."""
    from .partitions import partition_key

    out: dict[str, dict] = {}
    for family, job in FAMILY_JOBS:
        if not trained:
            out[family] = {"skipped": "the week's training run (train_job or model_job) did not pass (the family "
                                      "needs its feature manifest"
                                      + (" and splits)" if family == "revenue_forecast" else ")")}
        elif family == "action_ranker" and not interaction_weeks(incoming, tenant, week):
            out[family] = {"skipped": "no recommendation feedback: no interactions-<date> file up to this week"}
        if "skipped" in out.get(family, {}):
            print(f"  {family} {tenant}|{week}: skipped ({out[family]['skipped']})")
            continue
        config = family_run_config(family, n_trials, seconds)
        print(f"$ {launch_cmd(job, tenant, week, config)}")
        t0, c0 = time.perf_counter(), time.process_time()
        res = launcher.run(job, partition_key(tenant, week),
                           run_config={**config, "loggers": {"console": {"config": {"log_level": "WARNING"}}}})
        out[family] = {"run_id": res.run_id, "success": res.success, "seconds": time.perf_counter() - t0,
                       "cpu_seconds": time.process_time() - c0}  # CPU of this process (all threads): load-independent
        if not res.success:
            for ln in run_errors(instance, res.run_id)[-5:]:
                print(f"    {ln[:300]}")
        print(f"  {family} {tenant}|{week}: {'ok' if res.success else 'FAILED'} in {out[family]['seconds']:.0f}s "
              f"(CPU {out[family]['cpu_seconds']:.0f}s)")
    return out


def cmd_launch(args) -> int:
    """One run of a job for one partition, executed here and recorded under the job in the code location."""
    from .launch import Launcher

    instance = _instance()
    recover(instance)
    from .recovery import SlotWatchdog

    with Launcher(instance) as launcher, SlotWatchdog(instance):
        if args.partition:
            tenant, _, week = args.partition.partition("|")
            try:
                tenant_arg(tenant)  # a tenant outside the contract never becomes a path
                week_arg(week)
            except argparse.ArgumentTypeError as exc:
                raise CliError(f"--partition {args.partition!r}: {exc}") from None
            if tenant not in instance.get_dynamic_partitions("tenant"):
                raise CliError(f"unknown tenant {tenant!r}: not a registered tenant partition "
                               "(`riskml register-tenants`)")
        config = json.loads(args.config_json) if args.config_json else None
        if config is not None:
            config = {**config, "loggers": config.get("loggers", {"console": {"config": {"log_level": "WARNING"}}})}
        out = launcher.run(args.job, args.partition, run_config=config)
    print(f"{args.job} {args.partition or ''}: {'ok' if out.success else 'FAILED'} (run {out.run_id})")
    return 0 if out.success else 1


def family_rows(instance, tenant: str, week: str, outcomes: dict[str, dict] | None = None) -> list[dict]:
    """One row per model family (forecast, ranker) of a tenant-week: status, headline metrics and every gate with
    its result (pass / FAIL / warn) from the partition's own check results. ``outcomes`` (from
    :func:`run_families`) says what this invocation did: a skipped family is shown with its reason, a failed run
    without an evaluation as failed, even when an older evaluation of that partition exists."""
    import dagster as dg

    from .checks import partition_checks
    from .core.families import get_family
    from .partitions import partition_key

    pk = partition_key(tenant, week)
    rows = []
    for family, job in FAMILY_JOBS:
        key = dg.AssetKey(f"{family}_evaluation")
        row = {"family": family, "tenant": tenant, "week": week, "status": "not run", "metrics": {}, "gates": [],
               "run_id": None}
        out = (outcomes or {}).get(family)
        if out and "skipped" in out:
            row["status"] = f"skipped: {out['skipped']}"
            rows.append(row)
            continue
        recs = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[pk]),
                                               limit=1).records
        if out and (not recs or recs[0].run_id != out["run_id"]):  # this invocation's run did not evaluate
            row.update(status="failed (see run)", run_id=out["run_id"])
            rows.append(row)
            continue
        if not recs:
            rows.append(row)
            continue
        md = recs[0].asset_materialization.metadata
        row["run_id"] = recs[0].run_id
        val = lambda k: float(md[k].value) if k in md else None  # noqa: E731
        if family == "revenue_forecast":
            row["metrics"] = {"p50_mae": val("p50_mae"), "coverage": val("coverage"),
                              "nominal_coverage": val("nominal_coverage"), "pinball_skill": val("pinball_skill")}
        else:
            row["metrics"] = {"ndcg_at_10": val("ndcg_at_10"), "ndcg_at_10_lift": val("ndcg_at_10_lift"),
                              "queries": val("queries")}
        checks = partition_checks(instance, [dg.AssetCheckKey(key, g.name) for g in get_family(family).gates], pk,
                                  completed=True)
        for g in get_family(family).gates:
            c = checks.get(dg.AssetCheckKey(key, g.name))
            ev = c.evaluation if c is not None else None
            if ev is None:
                result = "-"
            else:
                result = "pass" if ev.passed else ("FAIL" if ev.severity == dg.AssetCheckSeverity.ERROR else "warn")
            value = ev.metadata.get("value") if ev is not None and ev.metadata else None
            row["gates"].append({"check": g.name, "result": result, "action": g.action,
                                 "value": getattr(value, "value", value)})
        failed = [g["check"] for g in row["gates"] if g["result"] == "FAIL"]
        row["status"] = f"blocked by a gate ({', '.join(failed)})" if failed else "evaluated"
        rows.append(row)
    return rows


def summary_rows(instance, targets: dict[str, str], family_outcomes: dict[str, dict] | None = None) -> list[dict]:
    import dagster as dg

    from .partitions import partition_key

    rows = []
    for tenant, week in targets.items():
        pk = partition_key(tenant, week)
        row = {"tenant": tenant, "week": week, "rows": None, "auc": None, "brier": None, "ece": None,
               "champion_source": None, "champion_algorithm": None, "gates": "", "status": "not trained"}
        failed = []
        recs = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("training_examples"), asset_partitions=[pk]), limit=1).records
        ev = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("risk_evaluation"), asset_partitions=[pk]), limit=1).records
        if recs:
            md = recs[0].asset_materialization.metadata
            row["rows"] = md["dagster/row_count"].value if "dagster/row_count" in md else None
            run_ids = [recs[0].run_id]  # train_job: one run; prepare_job + model_job: the gates of both runs
            if ev and ev[0].run_id != recs[0].run_id and ev[0].timestamp >= recs[0].timestamp:
                run_ids.append(ev[0].run_id)
            evals = gate_evaluations(instance, run_ids, pk)
            passed = sum(1 for e in evals if e.passed)
            failed = [e.check_name for e in evals if is_blocking_failure(e)]
            warned = [e.check_name for e in evals if not e.passed and not is_blocking_failure(e)]
            row["gates"] = f"{passed}/{len(evals)}" + (f" (failed: {', '.join(failed)})" if failed else "") + (
                f" (warn: {', '.join(warned)})" if warned else "")
        if ev:
            md = ev[0].asset_materialization.metadata
            for k in ("auc", "brier", "ece"):
                row[k] = md[k].value
            for k in ("champion_source", "champion_algorithm"):  # which candidate the evaluation chose
                row[k] = md[k].value if k in md else None
            for k in ("auc_ci", "brier_ci"):  # 90% opportunity-bootstrap intervals of the test metrics
                row[k] = [md[f"{k}_low"].value, md[f"{k}_high"].value] if f"{k}_low" in md else None
            kept = md["kept_variant"].value if "kept_variant" in md else "as trained"
            row["kept_variant"] = kept
            row["status"] = "evaluated" if kept == "as trained" else f"evaluated ({kept} kept)"
        elif recs:
            row["status"] = "blocked by a gate" if failed else "failed (see run)"
        row["families"] = family_rows(instance, tenant, week, (family_outcomes or {}).get(tenant))
        rows.append(row)
    return rows


def _family_headline(r: dict) -> str:
    m = r["metrics"]
    f = lambda v, spec=".4f": "-" if v is None else format(v, spec)  # noqa: E731
    if r["family"] == "revenue_forecast":
        return (f"P50 MAE {f(m.get('p50_mae'), ',.0f')}, P10-P90 coverage {f(m.get('coverage'), '.3f')} "
                f"(nominal {f(m.get('nominal_coverage'), '.2f')})")
    return f"NDCG@10 {f(m.get('ndcg_at_10'))} ({f(m.get('ndcg_at_10_lift'), '+.4f')} vs popularity)"


def print_family_summary(rows: list[dict]) -> None:
    fams = [f for r in rows for f in r.get("families", [])]
    if not fams:
        return
    print()
    fmt = "{:<17} {:<12} {:<11} {}"
    print(fmt.format("family", "tenant", "week", "status / headline (test split)"))
    for r in fams:
        if not r["metrics"]:
            print(fmt.format(r["family"], r["tenant"], r["week"], r["status"]))
            continue
        print(fmt.format(r["family"], r["tenant"], r["week"], f"{r['status']}: {_family_headline(r)}"))
        prefix = r["family"] + "_"
        gates = ", ".join(f"{g['check'][len(prefix):] if g['check'].startswith(prefix) else g['check']} "
                          f"{g['result']}" for g in r["gates"])
        print(f"{'':<17} gates: {gates}")


def print_summary(rows: list[dict]) -> None:
    print_risk_summary(rows)
    print_family_summary(rows)


def champion_label(row: dict) -> str:
    """``source/algorithm`` of the tenant's champion candidate (tenant_model | crm_score | pooled), ``-`` if none."""
    source, algo = row.get("champion_source"), row.get("champion_algorithm")
    if not source:
        return "-"
    return f"{source}/{algo}" if algo and algo != source else str(source)  # crm_score's algorithm is itself


def print_risk_summary(rows: list[dict]) -> None:
    fmt = "{:<12} {:<11} {:>7} {:>7} {:>7} {:>7}  {:<27} {:<27} {}"
    print(fmt.format("tenant", "week", "rows", "AUC", "Brier", "ECE", "champion (source/algo)", "status",
                     "gates passed"))
    for r in rows:
        f = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        print(fmt.format(r["tenant"], r["week"], str(r["rows"] or "-"), f(r["auc"]), f(r["brier"]), f(r["ece"]),
                         champion_label(r), r["status"], r["gates"]))
        if r.get("auc_ci") and r.get("brier_ci"):
            print(f"{'':<12} {'':<11} 90% CI (opportunity bootstrap): AUC {r['auc_ci'][0]:.4f}-{r['auc_ci'][1]:.4f}, "
                  f"Brier {r['brier_ci'][0]:.4f}-{r['brier_ci'][1]:.4f}")


def pooled_opt_ins(tenants) -> dict[str, bool]:
    """{tenant: opted in to the pooled model?} from config/tenants/<tenant>.yaml (or $RISKML_TENANTS_DIR). A config
    the pooled model would refuse (not YAML, ``pooled`` not a boolean) counts as not opted in, said on stderr; the
    tenant's own pooled_risk_model step reports the error with the file."""
    from .core.pooled import PooledConfigError, parse_pooled
    from .resources import RiskmlSettings

    settings = RiskmlSettings(tenants_dir=os.environ.get("RISKML_TENANTS_DIR", "config/tenants"))
    out = {}
    for t in tenants:
        try:
            out[t] = parse_pooled(settings.tenant_config(t), where=str(settings.tenant_config_path(t)))
        except (PooledConfigError, ValueError) as exc:
            print(f"  pooled model: {t} counted as not opted in: {exc}", file=sys.stderr)
            out[t] = False
    return out


def training_plan(tenants: list[str], opted_in) -> dict:
    """The jobs the main job launches for its tenants. Nobody of the run opts in to the pooled model: per tenant
    ``train_job`` then ``score_job``. Someone does: ``prepare_job`` for every tenant of the run first (the pooled
    model of a tenant reads every tenant's dataset_splits of the week), then per tenant ``model_job`` (risk and
    registry groups, so features and splits are not materialized twice) and ``score_job``."""
    if any(t in set(opted_in) for t in tenants):
        return {"prepare": list(tenants), "per_tenant": ("model_job", "score_job")}
    return {"prepare": [], "per_tenant": ("train_job", "score_job")}


def gate_evaluations(instance, run_ids, partition: str | None = None) -> list:
    """The gate results (asset check evaluations) stored by runs; with ``partition``, only that partition's and
    unpartitioned ones (the checks are partitioned: a history run holds one result per week)."""
    import dagster as dg

    evals = [e.dagster_event.event_specific_data for run_id in run_ids
             for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)]
    return [e for e in evals if partition is None or e.partition in (None, partition)]


def is_blocking_failure(evaluation) -> bool:
    """A failed gate of ERROR severity (a ``fail`` action): it stops the downstream steps of its run."""
    import dagster as dg

    return not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR


def blocking_failures(instance, run_id: str, partition: str | None = None) -> list[str]:
    """The blocking gates that failed in a run. A blocking check only stops downstream steps within its own run:
    the next job of the same partition must be held back by the caller."""
    return list(dict.fromkeys(e.check_name for e in gate_evaluations(instance, [run_id], partition)
                              if is_blocking_failure(e)))


def prepare_tenants(launcher, instance, targets: dict[str, str], tenants: list[str]) -> dict[str, str]:
    """``prepare_job`` for every tenant of the run (before any model_job): {tenant: why it must not be trained} for
    the tenants whose run failed or had a failed blocking gate."""
    from .partitions import partition_key

    refused = {}
    for tenant in tenants:
        week = targets[tenant]
        pk = partition_key(tenant, week)
        t0 = time.perf_counter()
        print(f"$ {launch_cmd('prepare_job', tenant, week)}")
        out = launcher.run("prepare_job", pk)
        blocked = blocking_failures(instance, out.run_id, pk)
        if blocked:
            refused[tenant] = f"prepare_job blocked by a gate ({', '.join(blocked)})"
        elif not out.success:
            refused[tenant] = "prepare_job failed"
        if tenant in refused:
            for ln in run_errors(instance, out.run_id)[-5:]:
                print(f"    {ln[:300]}")
        print(f"  {tenant}|{week}: prepared {'ok' if tenant not in refused else 'FAILED'} in "
              f"{time.perf_counter() - t0:.0f}s")
    return refused


def cmd_run(args) -> int:
    """The main job: sample data if missing -> tenants -> history ingestion -> whole graph per tenant -> summary."""
    t_start = time.perf_counter()
    incoming, oracle = data_dir() / "incoming", data_dir() / "oracle"
    if not incoming.exists() or not any(incoming.iterdir()):
        print(f"no incoming data: generating the simulator's default tenants into {incoming}")
        from .core import simulator

        simulator.generate(incoming, oracle)
    known_tenants(incoming, args.tenant)
    instance = _instance()
    recover(instance)
    weeks, _ = tenant_weeks(incoming)
    if args.tenant:
        weeks = {t: w for t, w in weeks.items() if t in args.tenant}
    register_tenants(incoming, instance)
    all_targets = target_weeks(incoming, list(weeks))
    targets = {t: w for t, w in all_targets.items() if w}
    skipped = sorted(t for t, w in all_targets.items() if not w)
    print("ingesting history (one backfill: one run per tenant over its weeks that have files) ...")
    from .launch import Launcher
    from .partitions import partition_key
    from .recovery import SlotWatchdog

    launch_failed, family_outcomes, family_seconds, family_cpu = [], {}, 0.0, 0.0
    # a run killed elsewhere while holding a pool slot must not stall this one
    with Launcher(instance) as launcher, SlotWatchdog(instance):
        ingest_failed = ingest_history(instance, weeks, until=targets, launcher=launcher)
        opted = {t for t, o in pooled_opt_ins(list(targets)).items() if o}
        plan = training_plan(list(targets), opted)
        refused = {}
        if plan["prepare"]:
            print(f"pooled model: {', '.join(sorted(opted))} opted in: features and splits of every tenant of the run "
                  "first, then each tenant's models")
            refused = prepare_tenants(launcher, instance, targets, plan["prepare"])
        for tenant, week in targets.items():
            t0 = time.perf_counter()
            trained = False
            if tenant in refused:  # its features/splits did not pass: no model is trained on them
                launch_failed.append(tenant)
                print(f"  {tenant}|{week}: model and scoring skipped: {refused[tenant]}")
            for job in (() if tenant in refused else plan["per_tenant"]):  # scoring only after a training run passed
                print(f"$ {launch_cmd(job, tenant, week)}")
                out = launcher.run(job, partition_key(tenant, week))
                trained = trained or (job in ("train_job", "model_job") and out.success)
                if not out.success:
                    launch_failed.append(tenant)
                    for ln in run_errors(instance, out.run_id)[-5:]:
                        print(f"    {ln[:300]}")
                    break
            status = "FAILED" if tenant in launch_failed else "ok"
            print(f"  {tenant}|{week}: {status} in {time.perf_counter() - t0:.0f}s")
            if args.families:
                family_outcomes[tenant] = run_families(launcher, instance, incoming, tenant, week, trained,
                                                       args.family_trials, args.family_seconds)
                family_seconds += sum(o.get("seconds", 0.0) for o in family_outcomes[tenant].values())
                family_cpu += sum(o.get("cpu_seconds", 0.0) for o in family_outcomes[tenant].values())
    print()
    rows = summary_rows(instance, targets, family_outcomes)
    if not args.families:
        for r in rows:
            r["families"] = [f for f in r["families"] if f["status"] != "not run"]
    print_summary(rows)
    for t in skipped:
        print(f"{t:<12} skipped: no complete week with a snapshots file yet")
    print(f"\nmain job took {time.perf_counter() - t_start:.0f}s"
          + (f" (forecast and ranker: {family_seconds:.0f}s, CPU {family_cpu:.0f}s)" if family_seconds else ""))
    print("\nOpen the UI:      DAGSTER_HOME=$PWD/.dagster .venv/bin/dagster dev   (http://127.0.0.1:3000)")
    print(f"Open MLflow:      .venv/bin/mlflow ui --backend-store-uri sqlite:///{data_dir()}/mlflow.db   (http://127.0.0.1:5000)")
    return run_exit_code(rows, launch_failed, ingest_failed)


def run_exit_code(rows: list[dict], launch_failed: list[str], ingest_failed: int) -> int:
    """0 only when every tenant trained was evaluated (its gates passed or only warned) and nothing failed.

    The forecast and ranker count like the risk model: a family run that failed, or whose blocking gate failed, is
    a problem of its tenant (exit 1); a family skipped for want of its data (no interactions files) is not."""
    bad = {r["tenant"]: r["status"] for r in rows if not str(r["status"]).startswith("evaluated")}
    bad.update({t: bad.get(t, "materialize failed") for t in launch_failed})
    problems = [f"{t}: {why}" for t, why in sorted(bad.items())]
    problems += [f"{f['tenant']} {f['family']}: {f['status']}" for r in rows for f in r.get("families", [])
                 if f["status"].startswith(("blocked", "failed"))]
    if ingest_failed:
        problems.append(f"{ingest_failed} ingestion run(s) failed (`riskml failures`)")
    if not rows:
        problems.append("no tenant had a complete week to train")
    if problems:
        print(f"\nexit 1: {'; '.join(problems)}", file=sys.stderr)
        return 1
    return 0


def run_errors(instance, run_id: str) -> list[str]:
    """One line per failed step or failed blocking gate of a run (what the user needs to look at)."""
    import dagster as dg

    lines = []
    for e in instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_FAILURE,
                                                dg.DagsterEventType.ASSET_CHECK_EVALUATION}):
        ev = e.dagster_event
        if ev.event_type == dg.DagsterEventType.STEP_FAILURE:
            err = getattr(ev.event_specific_data, "error", None)
            lines.append(f"ERROR {ev.step_key}: " + (err.message.strip().splitlines()[0] if err else "failed"))
        elif is_blocking_failure(ev.event_specific_data):
            lines.append(f"FAILED gate {ev.event_specific_data.check_name}")
    return lines


def recover(instance) -> list[dict]:
    """Fail dead runs and free the pool slots they hold (see ``riskml_assets.recovery``)."""
    from .recovery import recover_dead_runs

    return recover_dead_runs(instance)


def cmd_recover(args) -> int:
    """Mark runs whose process died as failed and free the pool slots they held (e.g. ``mlflow_registry``)."""
    instance = _instance()
    done = recover(instance)
    if args.json:
        print(json.dumps(done, indent=2, default=str))
    elif not done:
        print("nothing to recover: no dead run holds or waits for a pool slot, no in-progress run is dead")
    return 0


def cmd_summary(args) -> int:
    known_tenants(Path(args.incoming), args.tenant)
    instance = _instance()
    targets = {t: (args.week or w) for t, w in target_weeks(Path(args.incoming), args.tenant).items()}
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

    from .checks import partition_checks

    pk = partition_key(tenant, week)
    rows = []

    def row(key, ev, run_id):
        md = {k: getattr(v, "value", v) for k, v in (ev.metadata or {}).items()}
        return {"asset": key.to_user_string(), "check": ev.check_name, "passed": bool(ev.passed),
                "severity": ev.severity.value, "value": md.get("value"), "op": md.get("operator"),
                "threshold": md.get("threshold"), "run_id": run_id, "partition": ev.partition}

    for asset in defs.assets:
        if not getattr(asset, "check_specs", None):
            continue
        for key in asset.keys:
            # the partition's own stored results (check specs are partitioned like their asset)
            found = partition_checks(instance, [s.key for s in asset.check_specs if s.asset_key == key], pk,
                                     completed=True)
            if found:
                rows.extend(row(key, c.evaluation, c.run_id) for c in found.values() if c.evaluation is not None)
                continue
            # results stored before the specs were partitioned (partition None): those of the latest materialization
            recs = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[pk]),
                                                   limit=1).records
            if not recs:
                continue
            run_id = recs[0].run_id
            for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
                ev = e.dagster_event.event_specific_data
                if ev.asset_key == key and ev.partition is None:
                    rows.append(row(key, ev, run_id))
    return rows


def cmd_checks(args) -> int:
    known_tenants(Path(args.incoming), [args.tenant])
    instance = _instance()
    week = args.week or target_weeks(Path(args.incoming), [args.tenant]).get(args.tenant)
    if not week:
        print(f"no complete week with snapshots for tenant {args.tenant!r} under {args.incoming}", file=sys.stderr)
        return 2
    rows = check_rows(instance, args.tenant, week)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(f"gates of {args.tenant}|{week} (the latest result of each gate for this partition)")
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
    p = _Parser(prog="riskml", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    g = sub.add_parser("generate", help="write simulated CRM files in the data contract (deterministic by seed)")
    g.add_argument("--out", default=str(data_dir() / "incoming"), help="incoming root (default: %(default)s)")
    g.add_argument("--oracle", default=str(data_dir() / "oracle"), help="ground-truth side files (tests only)")
    g.add_argument("--tenants", help="comma list of tenant names or NAME:OPPS_PER_WEEK pairs (default: acme,globex,initech)")
    g.add_argument("--weeks", type=int, default=None,
                   help="weeks written (default: 60; with --export-habits/--history-from: every week of the history)")
    g.add_argument("--export-habits", action="store_true",
                   help="write files the way real CRM exports look: history from 2016, outcomes filed by export "
                        "date, the tenant's own stage names and two extra columns (default tenant: northwind)")
    g.add_argument("--history-from", help="first week of history (a Monday, e.g. 2016-01-04)")
    g.add_argument("--opportunities", type=int, help="about this many opportunities per tenant")
    g.add_argument("--seed", type=int, default=7)
    g.set_defaults(fn=cmd_generate)
    r = sub.add_parser("register-tenants", help="add every valid tenant folder of the incoming root to the tenant partitions")
    r.add_argument("--incoming", default=str(data_dir() / "incoming"))
    r.set_defaults(fn=cmd_register)
    i = sub.add_parser("ingest-history", help="materialize the ingestion assets of every tenant-week that has files")
    i.add_argument("--incoming", default=str(data_dir() / "incoming"))
    i.add_argument("--tenant", action="append", type=tenant_arg, help="only this tenant (repeatable)")
    i.add_argument("--force", action="store_true", help="re-ingest weeks that are already materialized")
    i.set_defaults(fn=cmd_ingest)
    m = sub.add_parser("run", help="the main job: data if missing, tenants, history, whole graph for the latest "
                                   "complete week of every tenant, summary")
    m.add_argument("--tenant", action="append", type=tenant_arg, help="only this tenant (repeatable)")
    m.add_argument("--no-families", dest="families", action="store_false",
                   help="only the risk model: skip the revenue forecast and the action ranker")
    m.add_argument("--family-trials", type=positive_int, default=MAIN_JOB_FAMILY_TRIALS,
                   help="selection budget of each family per tenant, in Optuna trials (default: %(default)s)")
    m.add_argument("--family-seconds", type=positive_float, default=MAIN_JOB_FAMILY_SECONDS,
                   help="... and in seconds, whichever comes first (default: %(default)s)")
    m.set_defaults(fn=cmd_run)
    b = sub.add_parser("backfill", help="run a job for every week of one tenant's history (in this process)")
    b.add_argument("--tenant", required=True, type=tenant_arg)
    b.add_argument("--job", default="riskml_full_job", choices=["ingest_job", "train_job", "riskml_full_job"])
    b.add_argument("--from", dest="start", type=week_arg, help="first week (Monday, YYYY-MM-DD)")
    b.add_argument("--to", dest="end", type=week_arg, help="last week (Monday, YYYY-MM-DD)")
    b.add_argument("--incoming", default=str(data_dir() / "incoming"))
    b.set_defaults(fn=cmd_backfill)
    rb = sub.add_parser("rollback", help="move a tenant's champion back to the previous champion (safe to run twice)")
    rb.add_argument("--tenant", required=True, type=tenant_arg)
    rb.add_argument("--family", default="risk", help="model family (default: %(default)s)")
    rb.add_argument("--reason", required=True, type=reason_arg)
    rb.add_argument("--further", action="store_true", help="go back one more champion after a rollback")
    rb.set_defaults(fn=cmd_rollback)
    la = sub.add_parser("launch", help="one run of a job for one partition, recorded under the job in the UI "
                                       "(unlike `dg launch`/`dagster asset materialize` in Dagster 1.13)")
    la.add_argument("--job", required=True, choices=["ingest_job", "train_job", "score_job", "families_job",
                                                     "forecast_job", "ranker_job", "prepare_job", "model_job",
                                                     "riskml_full_job"])
    la.add_argument("--partition", required=True, help="'tenant|week', e.g. 'acme|2026-11-16'")
    la.add_argument("--config-json", help="run config as JSON (as for `dagster job execute --config-json`)")
    la.set_defaults(fn=cmd_launch)
    rc = sub.add_parser("recover", help="mark runs whose process died (kill -9) as failed and free the pool slots "
                                        "they hold, e.g. mlflow_registry (also done at the start of run/backfill)")
    rc.add_argument("--json", action="store_true")
    rc.set_defaults(fn=cmd_recover)
    f = sub.add_parser("failures", help="failed runs recorded by the run_failure_recorder sensor (step and gate)")
    f.add_argument("--last", type=int, default=20)
    f.set_defaults(fn=cmd_failures)
    s = sub.add_parser("summary", help="latest metrics and gates of each tenant")
    s.add_argument("--incoming", default=str(data_dir() / "incoming"))
    s.add_argument("--tenant", action="append", type=tenant_arg)
    s.add_argument("--week", type=week_arg, help="week key (Monday, YYYY-MM-DD); default: latest complete week with data")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_summary)
    c = sub.add_parser("checks", help="the latest result of every gate (asset check) of one tenant-week; exit 1 "
                                      "when a blocking gate failed")
    c.add_argument("--tenant", required=True, type=tenant_arg)
    c.add_argument("--week", type=week_arg, help="week key (Monday, YYYY-MM-DD); default: latest complete week with data")
    c.add_argument("--incoming", default=str(data_dir() / "incoming"))
    c.add_argument("--json", action="store_true")
    c.set_defaults(fn=cmd_checks)
    return p


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block: `riskml rollback: error: argument --tenant: ...`
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv=None) -> int:
    from .core.contract import ContractError

    import warnings

    warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)")  # Dagster API notices, not errors
    # MLflow's per-download progress bars would flood the run output (one per loaded artifact)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (CliError, ContractError) as exc:
        print(f"riskml {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"riskml {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
