"""Time of each augmentation method and balancing strategy at 5,000 and 50,000 rows (not a test).

    python benchmarks/bench_augmentation.py             # timings
    python benchmarks/bench_augmentation.py --ablation  # + the ablation table of every simulated tenant

Augmentation: the real train split of the simulator's small tenant (initech, ~1,000 rows) is augmented up
to 5,000 and 50,000 rows by each method alone (generation + repair + rejection; the quality validation
is timed separately). Balancing: an imbalanced train frame (lost rows thinned to ~1:4) of 5,000 and
50,000 rows is balanced to 1:1 by each strategy. The baseline of each table is plain random
oversampling to the same size, measured in the same run; "x baseline" is the ratio to it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from riskml_assets.core import ablation as AB  # noqa: E402
from riskml_assets.core import augmentation as A  # noqa: E402
from riskml_assets.core import features as F  # noqa: E402
from riskml_assets.core import simulator as S  # noqa: E402
from riskml_assets.core.balancing import balance  # noqa: E402
from riskml_assets.core.cleaning import clean_examples  # noqa: E402
from riskml_assets.core.splits import split_examples  # noqa: E402

SIZES = (5_000, 50_000)


def examples(spec: S.TenantSpec, manifest: dict) -> pd.DataFrame:
    sim = S.simulate_tenant(spec)
    ex, _ = F.build_training_examples(sim.snapshots, sim.outcomes, sim.activities, manifest,
                                      partition_end="2026-11-23", window_weeks=52)
    clean, _, _ = clean_examples(ex, manifest)
    return split_examples(clean, seed=0)


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def random_oversample(train: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """The baseline: real rows duplicated at random up to ``n`` rows (imbalanced-learn's RandomOverSampler)."""
    from imblearn.over_sampling import RandomOverSampler

    y = train[F.LABEL].to_numpy(dtype=int)
    counts = {int(c): int(k) for c, k in zip(*np.unique(y, return_counts=True))}
    extra = n - len(train)
    target = {c: k + int(round(extra * k / len(train))) for c, k in counts.items()}
    idx, _ = RandomOverSampler(sampling_strategy=target, random_state=seed).fit_resample(
        np.arange(len(train)).reshape(-1, 1), y)
    return train.iloc[idx.ravel()].reset_index(drop=True)


def bench_augmentation(train: pd.DataFrame, manifest: dict, repeat: int) -> pd.DataFrame:
    rows = []
    for n in SIZES:
        reps = repeat if n <= 5_000 else 1
        base, _ = best_of(lambda: random_oversample(train, n), reps)
        rows.append({"rows": n, "method": "random oversampling (baseline)", "seconds": base,
                     "validate_seconds": float("nan"), "x baseline": 1.0, "quality": ""})
        for m in A.METHODS:
            secs, (out, info) = best_of(lambda: A.augment(train, manifest, methods=[m], target_rows=n, seed=0,
                                                          validate=False), reps)
            real, syn = out[~out["is_synthetic"]], out[out["is_synthetic"]]
            t0 = time.perf_counter()
            q = A.method_quality(real, syn, manifest)["evaluation"]
            vsecs = time.perf_counter() - t0
            rows.append({"rows": n, "method": m, "seconds": secs, "validate_seconds": vsecs,
                         "x baseline": secs / base,
                         "quality": ("pass" if q["passed"] else "FAIL") + f" (ks {q['max_ks']:.3f}, "
                                    f"tvd {q['max_category_tvd']:.3f}, corr {q['corr_distance']:.3f}, "
                                    f"impossible {q['impossible_rows']})"})
    return pd.DataFrame(rows)


def bench_balancing(pool: pd.DataFrame, manifest: dict, repeat: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    lost = pool[pool[F.LABEL] == 1]
    won = pool[pool[F.LABEL] == 0]
    rows = []
    for n in SIZES:
        reps = repeat if n <= 5_000 else 1
        n_won = int(n * 0.8)
        df = pd.concat([won.iloc[rng.choice(len(won), n_won, replace=n_won > len(won))],
                        lost.iloc[rng.choice(len(lost), n - n_won, replace=n - n_won > len(lost))]], ignore_index=True)
        df["opportunity_id"] = [f"b{i}" for i in range(len(df))]
        base = None
        for strategy in ("oversample", "undersample", "smote"):  # oversample first: it is the baseline
            kw = {"features": manifest} if strategy == "smote" else {}
            secs, (out, info) = best_of(lambda: balance(df, strategy=strategy, min_ratio=1.0, seed=0, **kw), reps)
            base = secs if base is None else base
            rows.append({"rows": n, "strategy": strategy + (" (baseline)" if strategy == "oversample" else ""),
                         "seconds": secs, "x baseline": secs / base, "rows_after": info["rows_after"],
                         "ratio_after": round(info["ratio_after"], 4)})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ablation", action="store_true", help="also print the ablation table of every simulated tenant")
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs at 5,000 rows (50,000: one run)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    manifest = F.build_manifest()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")

    small = examples(S.DEFAULT_TENANTS[2], manifest)
    train = small[small["split"] == "train"].reset_index(drop=True)
    print(f"\n## Augmentation of initech's real train split ({len(train)} rows) up to N rows\n")
    print(bench_augmentation(train, manifest, args.repeat).to_markdown(index=False, floatfmt=".3f"))

    big = examples(S.TenantSpec("benchpool", 120.0, 9), manifest)
    pool = big[big["split"] == "train"].reset_index(drop=True)
    print(f"\n## Balancing a 1:4 train frame of N rows to 1:1 (rows drawn from {len(pool)} simulated examples)\n")
    print(bench_balancing(pool, manifest, args.repeat).to_markdown(index=False, floatfmt=".3f"))

    if args.ablation:
        for spec in S.DEFAULT_TENANTS:
            sp = examples(spec, manifest)
            t0 = time.perf_counter()
            table = AB.run_ablation(sp, manifest, seed=0)
            decision = AB.choose_variant(table, "augmented+balanced")
            print()
            print(AB.ablation_markdown(table, decision, title=f"Ablation: {spec.name} "
                                       f"({int((sp['split'] == 'train').sum())} real train rows, "
                                       f"{time.perf_counter() - t0:.0f}s)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
