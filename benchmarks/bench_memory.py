"""Memory: peak RSS of 1M snapshots end to end — point-in-time features and training examples, a model,
then scoring the latest week and the drift features of the history — in a fresh process (not a test).

    python benchmarks/bench_memory.py            # ~1M snapshot rows (simulated, cached), 2 runs of each child
    python benchmarks/bench_memory.py --quick    # ~10k rows, 1 run (smoke)
    python benchmarks/bench_memory.py --code-root <other checkout>

Two child processes, run interleaved: ``data`` only reads the simulated frames (the floor: Python, the
libraries and the data itself), ``end_to_end`` reads them and runs ``core.features.build_training_examples``
(52-week window over 78 weeks of history), trains a small model on at most 50k rows (core cleaning, splits,
training, calibration), ``core.scoring.score_open_opportunities`` for the latest week and
``core.scoring.compute_features`` on the whole history (the drift features ``risk_scores`` computes).
Each child reports its own peak RSS (getrusage). Goal (issue 11): end to end <= 2 GiB (was 2.9 GiB).
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing as T  # noqa: E402

TAG = "MEM"


def child(stage: str, opportunities: int, weeks: int) -> dict:
    out: dict = {}
    t0 = time.perf_counter()
    snaps, outs, acts = T.simulated(opportunities, weeks)
    out["rows"] = len(snaps)
    out["read_s"] = time.perf_counter() - t0
    if stage == "end_to_end":
        from riskml_assets.core import features as F
        from riskml_assets.core.scoring import compute_features, score_open_opportunities

        manifest = F.build_manifest()
        t = time.perf_counter()
        ex = T.examples(snaps, outs, acts, manifest)
        out["examples_s"], out["examples_rows"] = time.perf_counter() - t, len(ex)
        out["rss_after_examples_mib"] = T.peak_rss_mib()
        t = time.perf_counter()
        art, cal, _ = T.small_model(ex, manifest)
        out["model_s"] = time.perf_counter() - t
        del ex
        bundle = {"artifact": art, "calibrator": cal, "manifest": manifest, "name": "bench", "version": "1",
                  "alias": "champion"}
        t = time.perf_counter()
        scores = score_open_opportunities(snaps, acts, T.latest_week(snaps), bundle)
        feats, _ = compute_features(snaps, acts, manifest)
        out["scoring_s"], out["scored_rows"], out["drift_rows"] = time.perf_counter() - t, len(scores), len(feats)
    out["peak_rss_mib"] = T.peak_rss_mib()
    out["seconds"] = time.perf_counter() - t0
    return out


def main(argv=None) -> int:
    p = T.parser(__doc__, repeat=2, quick_repeat=1)
    p.add_argument("--opportunities", type=int, default=None,
                   help="simulated opportunities (default 131000 -> ~1M snapshot rows; 3000 with --quick)")
    p.add_argument("--child", choices=("data", "end_to_end"), help=argparse_hidden())
    args = T.parse(p, argv)
    opps = args.opportunities or (3000 if args.quick else 131_000)
    weeks = 12 if args.quick else 78
    if args.child:
        print(json.dumps(child(args.child, opps, weeks)))
        return 0
    T.header(TAG, "peak RSS of 1M snapshots end to end (features, examples, model, scoring) vs the data alone", args)
    T.simulated(opps, weeks)  # generate the cache once, outside the measured children
    base = [str(Path(__file__).resolve()), "--code-root", str(args.code_root)] + (["--quick"] if args.quick else []) \
        + (["--opportunities", str(args.opportunities)] if args.opportunities else [])
    results: dict[str, list[dict]] = {"data": [], "end_to_end": []}
    for i in range(args.repeat):
        for stage in (("data", "end_to_end") if i % 2 == 0 else ("end_to_end", "data")):
            _, res = T.run_child([*base, "--child", stage])
            results[stage].append(res)
    e2e = results["end_to_end"][-1]
    T.note(TAG, f"{e2e['rows']:,} snapshot rows, {e2e['examples_rows']:,} labelled examples, {e2e['scored_rows']:,} "
                f"open opportunities scored, drift features of {e2e['drift_rows']:,} rows; end to end: examples "
                f"{e2e['examples_s']:.1f} s, model {e2e['model_s']:.1f} s, scoring+drift {e2e['scoring_s']:.1f} s; "
                f"peak after examples {e2e['rss_after_examples_mib']:.0f} MiB")
    times = {k: [r["seconds"] for r in v] for k, v in results.items()}
    T.report_times(TAG, times)
    rss = {k: statistics.median(r["peak_rss_mib"] for r in v) for k, v in results.items()}
    T.report_value(TAG, "peak_rss_data_mib", rss["data"], "MiB")
    T.report_value(TAG, "peak_rss_end_to_end_mib", rss["end_to_end"], "MiB", ("<=", 2048.0))
    T.report_value(TAG, "peak_rss_end_to_end_over_data", rss["end_to_end"] / rss["data"])
    return 0


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())
