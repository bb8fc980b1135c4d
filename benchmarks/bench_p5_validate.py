"""P5: loading the code location — `dagster definitions validate -m riskml_assets.definitions` and
`python -c "import riskml_assets.definitions"` wall time, next to a bare `python -c "import dagster"` (not a test).

    python benchmarks/bench_p5_validate.py             # 5 interleaved runs of each command
    python benchmarks/bench_p5_validate.py --quick     # 1 run (smoke)
    python benchmarks/bench_p5_validate.py --code-root <other checkout>

Each command runs in a fresh process from the code root (PYTHONPATH = code root, DAGSTER_HOME a temp folder).
Goals (issue 11): validate <= 3 s, import <= 3 s.
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing as T  # noqa: E402

TAG = "P5"


def command(args: list[str], env: dict, cwd: Path) -> None:
    res = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")


def main(argv=None) -> int:
    args = T.parse(T.parser(__doc__, repeat=5, quick_repeat=1), argv)
    T.header(TAG, "loading the code location: validate and import vs `import dagster`", args)
    home = Path(tempfile.mkdtemp(prefix="riskml-bench-p5-"))
    try:
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(args.code_root), "PYTHONWARNINGS": "ignore"}
        # a user's Python writes bytecode caches (the warm-up run writes them); with PYTHONDONTWRITEBYTECODE set,
        # as on some CI machines, every run compiles the ~50 project modules again (~0.2 s more per command)
        if env.pop("PYTHONDONTWRITEBYTECODE", None):
            T.note(TAG, "PYTHONDONTWRITEBYTECODE unset for the measured commands (bytecode cached, as for a user)")
        dagster = str(Path(sys.executable).with_name("dagster"))
        if not Path(dagster).exists():
            dagster = shutil.which("dagster") or "dagster"
        py = sys.executable
        sides = {
            "validate": lambda: command([dagster, "definitions", "validate", "-m", "riskml_assets.definitions"],
                                        env, args.code_root),
            "import_definitions": lambda: command([py, "-c", "import riskml_assets.definitions"], env, args.code_root),
            "import_dagster": lambda: command([py, "-c", "import dagster"], env, args.code_root),
        }
        times = T.interleave(sides, args.repeat, warmup=not args.quick)
        T.report_times(TAG, times)
        T.report_ratio(TAG, times, "validate", "import_dagster")
        T.report_ratio(TAG, times, "import_definitions", "import_dagster")
        T.report_value(TAG, "validate_median_s", statistics.median(times["validate"]), "s", ("<=", 3.0))
        T.report_value(TAG, "import_definitions_median_s", statistics.median(times["import_definitions"]), "s",
                       ("<=", 3.0))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
