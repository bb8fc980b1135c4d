"""Shared helpers of the speed benchmarks (issue 11): which code to import, interleaved timing, the printed
figures (and their parser, used by the test), peak RSS and the cached simulated data.

Every ``bench_*`` script measures its sides interleaved in one process run (A B, B A, A B, ...), after one
untimed warm-up call of each side, and prints for each side the min and median and for each pair the ratio
of the mins and of the medians. The printed lines have a fixed form so ``parse_output`` can read them back:

    [P3] time project: min 1.234 s, median 1.301 s (n=3)
    [P3] ratio project/polars_floor: min 1.05, median 1.07, paired median 1.06 (goal <= 1.2: met)
    [P3] value peak_rss: 1843.2 MiB (goal <= 2048: met)

``--code-root DIR`` imports ``riskml_assets`` from another checkout (e.g. a worktree of an older commit), so
the same script measures the code before and after a change. It only uses stable public entry points.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Mapping

REPO = Path(__file__).resolve().parents[1]
CACHE_DIR = Path(os.environ.get("RISKML_BENCH_CACHE", Path(tempfile.gettempdir()) / "riskml-bench-cache"))


# ----------------------------------------------------------------------------------------- code root, args
def parser(description: str, *, repeat: int, quick_repeat: int = 1) -> argparse.ArgumentParser:
    """An argparse parser with the options every benchmark shares (``--quick``, ``--repeat``, ``--code-root``)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small size and one repetition (a smoke run for the tests)")
    p.add_argument("--repeat", type=int, default=None,
                   help=f"timed repetitions of each side (default {repeat}, {quick_repeat} with --quick)")
    p.add_argument("--code-root", default=str(REPO),
                   help="checkout whose riskml_assets is measured (default: this repository)")
    p.set_defaults(_repeat_default=repeat, _quick_repeat=quick_repeat)
    return p


def add_instance_option(p: argparse.ArgumentParser) -> None:
    """``--instance``: the Dagster instance storage the Dagster side runs on (benchmarks with a Platform)."""
    p.add_argument("--instance", choices=("sqlite", "postgres"), default="sqlite",
                   help="sqlite: the embedded default (config/dagster_home.yaml); postgres: runs, events and "
                        "schedules in a PostgreSQL server started for the run on 127.0.0.1 (fsync on, as "
                        "deploy/dagster.yaml's production instance; needs the Debian postgresql package)")


def parse(p: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse, put ``--code-root`` first on ``sys.path`` (and on PYTHONPATH for child processes), work from it
    (relative config paths such as config/gates.yaml resolve there), and fill in ``repeat``."""
    args = p.parse_args(argv)
    root = Path(args.code_root).resolve()
    if not (root / "riskml_assets" / "__init__.py").exists():
        p.error(f"--code-root {root}: no riskml_assets package there")
    args.code_root = root
    use_code_root(root)
    if args.repeat is None:
        args.repeat = args._quick_repeat if args.quick else args._repeat_default
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    return args


def use_code_root(root: Path) -> None:
    root = Path(root).resolve()
    sys.path[:] = [x for x in sys.path if Path(x or ".").resolve() != REPO]
    sys.path.insert(0, str(root))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(root), *[x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                                              if x and Path(x).resolve() != REPO]])
    os.chdir(root)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import warnings

    warnings.filterwarnings("ignore")


def header(tag: str, what: str, args: argparse.Namespace) -> None:
    commit = _git_commit(args.code_root)
    import riskml_assets

    here = Path(riskml_assets.__file__).resolve()
    if args.code_root not in here.parents:
        raise SystemExit(f"riskml_assets was imported from {here}, not from --code-root {args.code_root}")
    print(f"[{tag}] {what}")
    print(f"[{tag}] code root: commit {commit}{' (quick)' if args.quick else ''}; repeat {args.repeat}; "
          f"cpus {os.cpu_count()}; load {os.getloadavg()[0]:.2f}", flush=True)


def _git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ----------------------------------------------------------------------------------------- timing
def interleave(sides: Mapping[str, Callable[[], object]], repeat: int, *, warmup: bool = True,
               before: Callable[[str, int], None] | None = None) -> dict[str, list[float]]:
    """Seconds of each side, ``repeat`` times, in alternating order (A B, B A, ...) so drift of the machine's
    load hits every side alike. ``before(side, i)`` runs untimed before each call (e.g. a fresh partition)."""
    names = list(sides)
    if warmup:
        for n in names:
            if before:
                before(n, -1)
            sides[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(repeat):
        for n in (names if i % 2 == 0 else names[::-1]):
            if before:
                before(n, i)
            t0 = time.perf_counter()
            sides[n]()
            times[n].append(time.perf_counter() - t0)
    return times


class Laps:
    """Stopwatch of the stages of one call: ``lap("name")`` closes the stage that ends now."""

    def __init__(self):
        self.t, self.laps = time.perf_counter(), {}

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + now - self.t
        self.t = now

    def text(self) -> str:
        return ", ".join(f"{k} {v:.1f} s" for k, v in self.laps.items())


def time_once(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _goal_text(goal: tuple[str, float] | None, value: float) -> str:
    if goal is None:
        return ""
    op, target = goal
    ok = value <= target if op == "<=" else value >= target
    return f" (goal {op} {target:g}: {'met' if ok else 'NOT met'})"


def report_times(tag: str, times: Mapping[str, list[float]]) -> None:
    for n, ts in times.items():
        print(f"[{tag}] time {n}: min {min(ts):.3f} s, median {statistics.median(ts):.3f} s (n={len(ts)})")
    note(tag, "seconds in run order: " + "; ".join(f"{n} " + " ".join(f"{t:.2f}" for t in ts) for n, ts in times.items()))


def report_ratio(tag: str, times: Mapping[str, list[float]], a: str, b: str,
                 goal: tuple[str, float] | None = None) -> float:
    """Print a/b as the ratio of the mins, of the medians, and the median of the paired ratios a_i/b_i (the two
    calls of repetition i ran back to back, so they saw about the same load); the goal is judged on the medians."""
    r_min = min(times[a]) / min(times[b])
    r_med = statistics.median(times[a]) / statistics.median(times[b])
    paired = statistics.median(x / y for x, y in zip(times[a], times[b]))
    print(f"[{tag}] ratio {a}/{b}: min {r_min:.2f}, median {r_med:.2f}, paired median {paired:.2f}"
          f"{_goal_text(goal, r_med)}", flush=True)
    return r_med


def paired_difference(times: Mapping[str, list[float]], a: str, b: str) -> float:
    """Median of a_i - b_i over the repetitions (each pair ran back to back): what side a costs on top of b."""
    return statistics.median(x - y for x, y in zip(times[a], times[b]))


def report_value(tag: str, name: str, value: float, unit: str = "", goal: tuple[str, float] | None = None) -> None:
    print(f"[{tag}] value {name}: {value:.4g}{(' ' + unit) if unit else ''}{_goal_text(goal, value)}", flush=True)


def note(tag: str, text: str) -> None:
    print(f"[{tag}] note: {text}", flush=True)


_TIME = re.compile(r"^\[(?P<tag>[^\]]+)\] time (?P<name>.+?): min (?P<min>[\d.]+) s, median (?P<median>[\d.]+) s "
                   r"\(n=(?P<n>\d+)\)$")
_RATIO = re.compile(r"^\[(?P<tag>[^\]]+)\] ratio (?P<name>.+?): min (?P<min>[\d.]+), median (?P<median>[\d.]+)"
                    r"(?:, paired median (?P<paired>[\d.]+))?"
                    r"(?: \(goal (?P<op><=|>=) (?P<goal>[\d.e+-]+): (?P<met>met|NOT met)\))?$")
_VALUE = re.compile(r"^\[(?P<tag>[^\]]+)\] value (?P<name>.+?): (?P<value>[-\d.e+]+)(?: (?P<unit>[^(]+?))?"
                    r"(?: \(goal (?P<op><=|>=) (?P<goal>[\d.e+-]+): (?P<met>met|NOT met)\))?$")


def parse_output(text: str) -> dict[str, dict[str, dict]]:
    """``{"time"|"ratio"|"value": {name: fields}}`` of the figure lines printed by a benchmark."""
    out: dict[str, dict[str, dict]] = {"time": {}, "ratio": {}, "value": {}}
    for line in text.splitlines():
        for kind, rx in (("time", _TIME), ("ratio", _RATIO), ("value", _VALUE)):
            m = rx.match(line.strip())
            if m:
                d = {k: v for k, v in m.groupdict().items() if v is not None}
                for k in ("min", "median", "paired", "value", "goal"):
                    if k in d:
                        d[k] = float(d[k])
                out[kind][d.pop("name")] = d
                break
    return out


# ----------------------------------------------------------------------------------------- memory
def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0 if sys.platform != "darwin" else kib / 2**20


def run_child(argv: list[str], timeout: float = 3600) -> tuple[float, dict]:
    """Run ``python <argv>`` (same interpreter, same PYTHONPATH) and return (wall seconds, the JSON object it
    prints on its last stdout line)."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"child {argv} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    lines = [x for x in res.stdout.strip().splitlines() if x.startswith("{")]
    return wall, (json.loads(lines[-1]) if lines else {})


# ----------------------------------------------------------------------------------------- data
def simulated(opportunities: int, weeks: int, name: str = "bench", seed: int = 7):
    """(snapshots, outcomes, activities) pandas frames of one simulated tenant (core.simulator), cached as
    parquet under the system temp folder so repeated runs (and the before/after comparison) read the same rows."""
    import pandas as pd

    key = hashlib.sha256(f"{name}:{opportunities}:{weeks}:{seed}".encode()).hexdigest()[:12]
    d = CACHE_DIR / f"{name}-{opportunities}-{weeks}-{key}"
    kinds = ("snapshots", "outcomes", "activities")
    if all((d / f"{k}.parquet").exists() for k in kinds):
        return tuple(pd.read_parquet(d / f"{k}.parquet") for k in kinds)
    sim = simulate(opportunities, weeks, name, seed)
    d.mkdir(parents=True, exist_ok=True)
    for k in kinds:
        tmp = d / f".{k}.parquet.tmp"
        getattr(sim, k).to_parquet(tmp, index=False)
        tmp.replace(d / f"{k}.parquet")
    return sim.snapshots, sim.outcomes, sim.activities


def simulate(opportunities: int, weeks: int, name: str = "bench", seed: int = 7):
    from riskml_assets.core import simulator as S

    return S.simulate_tenant(S.TenantSpec(name, 10.0, 0), weeks=weeks, opportunities=opportunities, seed=seed)


def write_incoming(sim, incoming: Path, oracle: Path) -> list[Path]:
    """The simulated tenant as contract files under ``incoming/<tenant>/`` (core.simulator.write_tenant)."""
    from riskml_assets.core import simulator as S

    return S.write_tenant(sim, incoming, oracle)


def weeks_of(incoming_tenant_dir: Path) -> list[str]:
    """Monday keys of the weeks that have a snapshots file, oldest first."""
    import datetime as dt

    out = set()
    for f in incoming_tenant_dir.iterdir():
        m = re.fullmatch(r"snapshots-(\d{4}-\d{2}-\d{2})\.\w+", f.name)
        if m:
            d = dt.date.fromisoformat(m.group(1))
            out.add((d - dt.timedelta(days=d.weekday())).isoformat())
    return sorted(out)


# ----------------------------------------------------------------------------------------- a Dagster platform
class Platform:
    """The project's own ``riskml_assets.definitions.defs`` (resources from the environment, as in production)
    on a persistent DagsterInstance in a temp DAGSTER_HOME, with data, assets, quarantine and MLflow in a temp
    data dir. Import only after ``parse`` (code root) — it sets the environment before loading definitions."""

    def __init__(self, root: Path, instance: str = "sqlite"):
        root = Path(root)
        self.root = root
        self.home, self.data = root / "dagster_home", root / "data"
        self.home.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(parents=True, exist_ok=True)
        # the instance config a user gets (`riskml` copies config/dagster_home.yaml into DAGSTER_HOME): same
        # log level and settings as a real run, so the event-record count is the user's
        shipped = Path.cwd() / "config" / "dagster_home.yaml"  # parse() works from the code root
        yaml_text = shipped.read_text() if shipped.exists() else "telemetry:\n  enabled: false\n"
        self._pg = None
        if instance == "postgres":  # the production instance's storage (deploy/dagster.yaml), on a local server
            import contextlib
            import importlib.util

            # the tests' throw-away server helper, loaded by path (sys.path stays on --code-root)
            spec = importlib.util.spec_from_file_location("_riskml_services", REPO / "riskml_assets_tests" / "services.py")
            services = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(services)
            self._pg = contextlib.ExitStack()
            pg = self._pg.enter_context(services.postgres_server(fsync=True))
            url = pg["createdb"]("dagster").replace("postgresql://", "postgresql+psycopg2://", 1)
            yaml_text += f"storage:\n  postgres:\n    postgres_url: {url}\n"
        (self.home / "dagster.yaml").write_text(yaml_text)
        os.environ["DAGSTER_HOME"] = str(self.home)
        os.environ["RISKML_DATA_DIR"] = str(self.data)
        self.tracking_uri = f"sqlite:///{self.data / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = self.tracking_uri
        for k in ("RISKML_STORAGE", "RISKML_STORAGE_OPTIONS"):
            os.environ.pop(k, None)
        import dagster as dg

        from riskml_assets.definitions import defs

        self.dg, self.defs = dg, defs
        self.instance = dg.DagsterInstance.get()
        self.incoming = self.data / "incoming"

    def relax_gates(self) -> None:
        """Every gate only warns (``RISKML_GATES_FILE``): for the --quick smoke runs, whose tiny tenants would
        fail quality gates and stop the job before the steps being timed."""
        from riskml_assets.core.gates import default_gates

        path = self.root / "gates_warn_only.yaml"
        path.write_text("".join(f"{name}:\n  action: warn\n" for name in default_gates()))
        os.environ["RISKML_GATES_FILE"] = str(path)

    def add_tenant(self, tenant: str) -> None:
        if tenant not in self.instance.get_dynamic_partitions("tenant"):
            self.instance.add_dynamic_partitions("tenant", [tenant])

    def run(self, job: str, tenant: str, week: str, run_config: dict | None = None):
        self.add_tenant(tenant)
        cfg = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
        for k, v in (run_config or {}).items():
            cfg[k] = v
        return self.defs.resolve_job_def(job).execute_in_process(
            partition_key=f"{tenant}|{week}", instance=self.instance, raise_on_error=False, run_config=cfg)

    def run_range(self, job: str, tenant: str, first: str, last: str, run_config: dict | None = None):
        """One run over the weeks ``first``..``last`` (the range tags a single-run backfill gives its run, as
        ``riskml run`` / ``riskml ingest-history`` launch a tenant's history)."""
        from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

        self.add_tenant(tenant)
        cfg = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}, **(run_config or {})}
        return self.defs.resolve_job_def(job).execute_in_process(
            instance=self.instance, raise_on_error=False, run_config=cfg,
            tags={ASSET_PARTITION_RANGE_START_TAG: f"{tenant}|{first}", ASSET_PARTITION_RANGE_END_TAG: f"{tenant}|{last}"})

    def step_durations(self, run_id: str) -> str:
        """Seconds of each step of a run (start to success/failure, from its event log), the sum of the steps,
        the run's wall time and the rest (run set-up and tear-down outside the steps)."""
        starts, ends, first, last = {}, {}, None, None
        for e in self.instance.all_logs(run_id):
            first = e.timestamp if first is None else min(first, e.timestamp)
            last = e.timestamp if last is None else max(last, e.timestamp)
            if e.dagster_event is None or not e.step_key:
                continue
            kind = e.dagster_event.event_type_value
            if kind == "STEP_START":
                starts[e.step_key] = e.timestamp
            elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
                ends[e.step_key] = e.timestamp
        steps = {k: ends[k] - starts[k] for k in starts if k in ends}
        total = sum(steps.values())
        wall = (last - first) if first is not None else 0.0
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(steps.items(), key=lambda kv: -kv[1]))
        return f"{parts}; steps {total:.1f} s of {wall:.1f} s between the first and last event"

    def event_records(self, run_id: str) -> int:
        return len(self.instance.all_logs(run_id))

    def ingest(self, tenant: str, weeks: list[str]) -> float:
        """Ingest the weeks with ``ingest_job`` (one run per week); returns seconds."""
        t0 = time.perf_counter()
        for w in weeks:
            res = self.run("ingest_job", tenant, w)
            if not res.success:
                raise RuntimeError(f"ingest_job {tenant}|{w} failed")
        return time.perf_counter() - t0

    def close(self) -> None:
        try:
            self.instance.dispose()
        except Exception:  # noqa: BLE001
            pass
        if self._pg is not None:
            self._pg.close()  # stops the PostgreSQL server this platform started (by its PID)


class DagsterFloor:
    """Dagster's own cost for a job's asset graph, on the platform's instance: a no-op copy of the job's assets
    (the same keys under a ``floor`` prefix, the same partitions, inputs with the same partition mappings and
    the same blocking checks) whose steps compute nothing, whose checks pass and whose IO manager keeps
    nothing. Its run pays what every run of the job pays whatever the steps do: run creation with its planned
    events, step starts and ends, one input event and one data-version lookup per input (windows included),
    partition mapping, the materializations and check evaluations, on the same patched instance storage. The
    job's run minus this floor is what the project's own code adds on top (reading and writing the data,
    metadata, plots); bare + floor is the fastest the job can run on Dagster with this graph."""

    PREFIX = "floor"

    def __init__(self, plat: "Platform", job: str):
        import dagster as dg

        class NullIO(dg.IOManager):
            def handle_output(self, context, obj):
                return None

            def load_input(self, context):
                return None

        self.plat, self.job, self.dg = plat, job, dg
        graph = plat.defs.resolve_asset_graph()
        self.keys = set(plat.defs.resolve_job_def(job).asset_layer.executable_asset_keys)
        self.parents = {p for k in self.keys for p in graph.get(k).parent_keys} - self.keys
        assets = []
        for key in sorted(self.keys | self.parents, key=lambda k: k.to_user_string()):
            node = graph.get(key)
            ins = {p: graph.get_partition_mapping(key, p) for p in node.parent_keys} if key in self.keys else {}
            real = sorted((c for c in node.assets_def.check_specs if c.asset_key == key), key=lambda c: c.name) \
                if key in self.keys else []
            checks = [c.name for c in real]
            with warnings.catch_warnings():  # partitioned check specs (as the project's gates) are a preview
                warnings.simplefilter("ignore")
                specs = [dg.AssetCheckSpec(c.name, asset=self._key(key), blocking=c.blocking,
                                           partitions_def=c.partitions_def) for c in real]
            assets.append(dg.asset(key=self._key(key), partitions_def=node.partitions_def, check_specs=specs or None,
                                   ins={"_".join(p.path): dg.AssetIn(key=self._key(p), partition_mapping=m)
                                        for p, m in ins.items()})(self._noop(self._key(key), checks)))
        jobs = [dg.define_asset_job(f"{self.PREFIX}_{job}", selection=[self._key(k) for k in self.keys])]
        if self.parents:
            jobs.append(dg.define_asset_job(f"{self.PREFIX}_upstream_{job}", selection=[self._key(k) for k in self.parents]))
        self.defs = dg.Definitions(assets=assets, jobs=jobs, resources={"io_manager": NullIO()})

    def _key(self, key):
        return self.dg.AssetKey([self.PREFIX, *key.path])

    def _noop(self, key, checks: list[str]):
        """A step that computes nothing: its materialization, then each check passed with its asset key (the
        order the project's assets yield them in, ``checks.checks_after_materialization``: Dagster looks up
        each check's target once)."""
        dg = self.dg

        def compute(context, **_inputs):
            yield dg.MaterializeResult()
            for n in checks:
                yield dg.AssetCheckResult(asset_key=key, check_name=n, passed=True)

        return compute

    def _execute(self, job: str, tenant: str, week: str):
        self.plat.add_tenant(tenant)
        res = self.defs.resolve_job_def(job).execute_in_process(
            partition_key=f"{tenant}|{week}", instance=self.plat.instance, raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}})
        if not res.success:
            raise RuntimeError(f"{job} {tenant}|{week} failed")
        return res

    def prepare(self, tenant: str, weeks: list[str]) -> None:
        """Materialize the no-op copies of the job's upstream assets for the weeks (one run each), so the floor's
        input data versions look up as many partitions as the job's."""
        if self.parents:
            for w in weeks:
                self._execute(f"{self.PREFIX}_upstream_{self.job}", tenant, w)

    def run(self, tenant: str, week: str):
        return self._execute(f"{self.PREFIX}_{self.job}", tenant, week)


def report_floor(tag: str, times: Mapping[str, list[float]], goal: float, job: str = "dagster",
                 floor: str = "dagster_floor", bare: str = "bare") -> None:
    """The floor's figures: its seconds, the lowest ratio this graph can reach on Dagster (1 + floor/bare, the
    medians), the project's own cost on top of the floor (job - floor, median of the back-to-back pairs) and
    the seconds the goal leaves for that cost ((goal - 1) x bare - floor; negative: unreachable with this
    graph)."""
    f, b = statistics.median(times[floor]), statistics.median(times[bare])
    report_value(tag, "floor_s_per_run", f, "s")
    report_value(tag, "lowest_reachable_ratio", 1 + f / b, "", ("<=", goal))
    report_value(tag, "project_s_over_floor", paired_difference(times, job, floor), "s")
    report_value(tag, "goal_s_left_over_floor", (goal - 1) * b - f, "s")


# ----------------------------------------------------------------------------------------- a small model
PARTITION_END = "2026-11-23"  # the Monday after the simulator's default last week (week 2026-11-16)
LATEST_WEEK = "2026-11-16"


def examples(snapshots, outcomes, activities, manifest: dict, window_weeks: int = 52):
    """Labelled point-in-time examples of the simulator's last complete week (core.features)."""
    from riskml_assets.core import features as F

    ex, _ = F.build_training_examples(snapshots, outcomes, activities, manifest, partition_end=PARTITION_END,
                                      window_weeks=window_weeks)
    return ex


def small_model(ex, manifest: dict, tenant: str = "bench", *, n_estimators: int = 60, max_train_rows: int = 50_000):
    """(artifact, calibrator, splits) of a quickly trained risk model (core cleaning, splits, training,
    calibration) — a stand-in champion for the scoring benchmarks; its quality does not matter."""
    from riskml_assets.core.cleaning import clean_examples
    from riskml_assets.core.evaluation import fit_risk_calibrator
    from riskml_assets.core.features import LABEL
    from riskml_assets.core.splits import split_examples
    from riskml_assets.core.training import XGBParams, predict_raw, train_xgb_classifier

    clean, _, _ = clean_examples(ex, manifest)
    sp = split_examples(clean, seed=0, tenant=tenant)
    train = sp[sp["split"] == "train"]
    train = train.sample(n=min(len(train), max_train_rows), random_state=0).reset_index(drop=True)
    valid = sp[sp["split"] == "validation"].reset_index(drop=True)
    art = train_xgb_classifier(train, valid, manifest, XGBParams(n_estimators=n_estimators, early_stopping_rounds=10))
    cal = fit_risk_calibrator(predict_raw(art, valid), valid[LABEL].to_numpy(int))
    return art, cal, sp


def latest_week(snapshots, week: str = LATEST_WEEK):
    import pandas as pd

    start = pd.Timestamp(week)
    ts = pd.to_datetime(snapshots["snapshot_date"])
    return snapshots[(ts >= start) & (ts < start + pd.Timedelta(days=7))].reset_index(drop=True)
