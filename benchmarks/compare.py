"""Compare two checkouts with one benchmark, in alternating order (not a test).

    python benchmarks/compare.py --old <worktree of an older commit> -- bench_p1_dagster_vs_bare.py --repeat 3
    python benchmarks/compare.py --old A --new B --rounds 4 -- bench_p2_ingest.py

This machine's speed drifts within minutes, so "run the old code, then the new code" mostly measures the drift:
whichever side ran later looked slower (seen in issue 11: the same two commits came out 0.26 s apart in one order
and -0.3 s apart in the other). Here each round runs the benchmark once per checkout as a child process, the
order flipping every round (new old, old new, new old, ...), so a steady drift adds as much to one side as to
the other over two rounds. For every figure both runs printed (``_timing`` format: times, ratios, values) it
prints each side's median over the rounds and the median of the per-round differences (new - old), with how
many rounds the new side came out lower.

Lines printed (parsed back by ``_timing.parse_output``):

    [AB] value P1 orchestration_s_per_run old: 1.21 s
    [AB] value P1 orchestration_s_per_run new: 1.02 s
    [AB] value P1 orchestration_s_per_run new-old: -0.19 s
    [AB] note: P1 orchestration_s_per_run: new lower in 3 of 4 rounds; old 1.30 1.18 1.25 1.17; new ...
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing as T  # noqa: E402

TAG = "AB"
HERE = Path(__file__).resolve().parent


def figures(text: str) -> dict[str, tuple[float, str]]:
    """{label: (number, unit)} of a benchmark's printed figures: a time's median, a ratio's paired median (its
    median when it has none), a value."""
    parsed = T.parse_output(text)
    tag_of = lambda d: d.get("tag", "")  # noqa: E731
    out = {}
    for name, d in parsed["time"].items():
        out[f"{tag_of(d)} time {name} median"] = (d["median"], "s")
    for name, d in parsed["ratio"].items():
        out[f"{tag_of(d)} ratio {name} " + ("paired median" if "paired" in d else "median")] = (
            d.get("paired", d["median"]), "")
    for name, d in parsed["value"].items():
        out[f"{tag_of(d)} {name}"] = (d["value"], (d.get("unit") or "").strip())
    return out


def order(rounds: int) -> list[list[str]]:
    """The sides' order per round: new first in even rounds, old first in odd ones."""
    return [["new", "old"] if i % 2 == 0 else ["old", "new"] for i in range(rounds)]


def run_benchmark(script: str, args: list[str], code_root: Path, timeout: float) -> str:
    cmd = [sys.executable, str(HERE / script), *args, "--code-root", str(code_root)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    return res.stdout


def compare(runs: dict[str, list[dict[str, tuple[float, str]]]]) -> list[str]:
    """The printed lines for the figures every run of both sides has."""
    lines = []
    labels = [k for k in runs["new"][0] if all(k in r for side in runs.values() for r in side)]
    for label in labels:
        unit = runs["new"][0][label][1]
        u = f" {unit}" if unit else ""
        old = [r[label][0] for r in runs["old"]]
        new = [r[label][0] for r in runs["new"]]
        diffs = [n - o for n, o in zip(new, old)]
        lines.append(f"[{TAG}] value {label} old: {statistics.median(old):.4g}{u}")
        lines.append(f"[{TAG}] value {label} new: {statistics.median(new):.4g}{u}")
        lines.append(f"[{TAG}] value {label} new-old: {statistics.median(diffs):.4g}{u}")
        lines.append(f"[{TAG}] note: {label}: new lower in {sum(d < 0 for d in diffs)} of {len(diffs)} rounds; "
                     f"old {' '.join(f'{x:.4g}' for x in old)}; new {' '.join(f'{x:.4g}' for x in new)}")
    return lines


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        raise SystemExit("usage: compare.py --old DIR [--new DIR] [--rounds N] -- <bench script> [its options]")
    cut = argv.index("--")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", required=True, help="checkout of the baseline (e.g. a git worktree of an older commit)")
    p.add_argument("--new", default=str(T.REPO), help="checkout measured against it (default: this repository)")
    p.add_argument("--rounds", type=int, default=4, help="rounds; each runs the benchmark once per side (default 4)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed per benchmark run")
    args = p.parse_args(argv[:cut])
    bench = argv[cut + 1:]
    if not bench or not (HERE / bench[0]).is_file():
        p.error(f"after --: a script of {HERE.name}/, e.g. bench_p1_dagster_vs_bare.py (got {bench[:1]})")
    if args.rounds < 2:
        p.error("--rounds must be >= 2 (the order flips between rounds)")
    roots = {"old": Path(args.old).resolve(), "new": Path(args.new).resolve()}
    for side, root in roots.items():
        if not (root / "riskml_assets" / "__init__.py").exists():
            p.error(f"--{side} {root}: no riskml_assets package there")
    print(f"[{TAG}] {bench[0]} {' '.join(bench[1:])}: old {T._git_commit(roots['old'])}, "
          f"new {T._git_commit(roots['new'])}; {args.rounds} rounds, order flipping", flush=True)
    runs: dict[str, list] = {"old": [], "new": []}
    for i, sides in enumerate(order(args.rounds)):
        for side in sides:
            out = run_benchmark(bench[0], bench[1:], roots[side], args.timeout)
            runs[side].append(figures(out))
            T.note(TAG, f"round {i + 1}: {side} done")
    for line in compare(runs):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
