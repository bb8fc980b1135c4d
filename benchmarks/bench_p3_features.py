"""P3: point-in-time features at 1M snapshots — the project's feature path ÷ a minimal polars floor and
÷ a pandas ``merge_asof``/groupby version of the same features (not a test).

    python benchmarks/bench_p3_features.py            # ~1M snapshot rows (simulated, cached), 5 runs each
    python benchmarks/bench_p3_features.py --quick    # ~25k rows, 1 run each (smoke)
    python benchmarks/bench_p3_features.py --code-root <other checkout>

Data: one simulated tenant (core.simulator: many opportunities, weekly snapshots, activity events), 78 weeks,
cached as parquet in the temp folder. Sides, all on the same rows and the default manifest (24 features):

* ``project``: ``core.features.build_base_frame`` + ``extract_features`` on polars frames;
* ``project_pandas_io``: ``core.scoring.compute_features`` on pandas frames (pandas in, pandas out — what the
  scoring and registration assets call);
* ``polars_floor``: the same features in the simplest polars expressions written here;
* ``pandas``: the same features with pandas groupby/shift and ``merge_asof``.

The four results are compared value by value before timing (assert), so every side computes the same thing.
Goals (issue 11): project ÷ floor <= 1.2, pandas ÷ project >= 2.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing as T  # noqa: E402

TAG = "P3"
BY = "opportunity_id"
DAY_MS = 86_400_000
HALF_LIFE_DAYS = 14.0
RISK_COLS = ("risk_commercial", "risk_competitive", "risk_relationship", "risk_technical", "risk_timeline")
CAT_COLS = ("industry", "region", "product_line", "currency")


# ----------------------------------------------------------------------------------------- polars floor
def polars_floor(s, a, order: list[str]):
    """The default manifest's features with the simplest polars expressions (one sort, windows over the
    opportunity, three as-of joins against per-opportunity cumulative event counts)."""
    import polars as pl

    ms = pl.Datetime("ms")

    def days(x, y):
        return (pl.col(x) - pl.col(y)).dt.total_milliseconds().cast(pl.Float64) / DAY_MS

    s = s.with_columns(pl.col(BY).cast(pl.String), pl.col("snapshot_date").cast(ms),
                       pl.col("close_date").cast(ms)).sort(BY, "snapshot_date")
    s = s.with_columns(_prev_close=pl.col("close_date").shift(1).over(BY),
                       _prev_stage=pl.col("stage").shift(1).over(BY))
    slip = pl.col("close_date") > pl.col("_prev_close")
    s = s.with_columns(
        close_date_slips=pl.when(slip).then(1.0).otherwise(0.0).cum_sum().over(BY),
        close_date_slip_days=pl.when(slip).then(days("close_date", "_prev_close")).otherwise(0.0).cum_sum().over(BY),
        opportunity_age_days=(pl.col("snapshot_date") - pl.col("snapshot_date").min().over(BY))
        .dt.total_milliseconds().cast(pl.Float64) / DAY_MS,
        deal_value_change=pl.col("deal_value") / pl.col("deal_value").first().over(BY) - 1.0,
        _since=pl.when((pl.col("stage") != pl.col("_prev_stage")).fill_null(True)).then(pl.col("snapshot_date"))
        .forward_fill().over(BY),
    )
    tau_ms = HALF_LIFE_DAYS / math.log(2) * DAY_MS
    t0 = a.select(pl.col("occurred_at").cast(ms).min()).item()
    ev = (a.select(pl.col(BY).cast(pl.String), pl.col("occurred_at").cast(ms).alias("t")).drop_nulls()
          .group_by(BY, "t").agg(_n=pl.len(), _e=((pl.col("t") - t0).dt.total_milliseconds() / tau_ms).exp().sum())
          .sort(BY, "t")
          .with_columns(_cum=pl.col("_n").cum_sum().over(BY), _cumexp=pl.col("_e").cum_sum().over(BY))
          .sort("t"))
    s = s.sort("snapshot_date").join_asof(
        ev.select(BY, pl.col("t").alias("snapshot_date"), pl.col("t").alias("_last"), "_cum", "_cumexp"),
        on="snapshot_date", by=BY, strategy="backward", check_sortedness=False)
    for d in (30, 90):
        s = s.with_columns((pl.col("snapshot_date") - pl.duration(days=d)).alias("_k")).join_asof(
            ev.select(BY, pl.col("t").alias("_k"), pl.col("_cum").alias(f"_c{d}")),
            on="_k", by=BY, strategy="backward", check_sortedness=False).drop("_k")
    age = (pl.col("snapshot_date") - pl.lit(t0)).dt.total_milliseconds().cast(pl.Float64) / tau_ms
    stage_lc = pl.col("stage").cast(pl.String).str.strip_chars().str.to_lowercase()
    return s.select(
        BY, "snapshot_date",
        activity_count_30d=(pl.col("_cum").fill_null(0) - pl.col("_c30").fill_null(0)).cast(pl.Float64),
        activity_count_90d=(pl.col("_cum").fill_null(0) - pl.col("_c90").fill_null(0)).cast(pl.Float64),
        close_date_slip_days=pl.col("close_date_slip_days"),
        close_date_slips=pl.col("close_date_slips"),
        crm_probability=pl.col("probability").cast(pl.Float64),
        **{c: pl.col(c).cast(pl.String) for c in CAT_COLS},
        days_since_last_activity=days("snapshot_date", "_last"),
        days_to_close=days("close_date", "snapshot_date"),
        deal_value_change=pl.col("deal_value_change"),
        engagement=(pl.col("_cumexp") * (-age).exp()).fill_null(0.0),
        heuristic_risk_score=pl.col("risk_score").cast(pl.Float64),
        log_deal_value=pl.col("deal_value").log1p(),
        opportunity_age_days=pl.col("opportunity_age_days"),
        **{c: pl.col(c).cast(pl.Float64) for c in RISK_COLS},
        stage=pl.col("stage").cast(pl.String),
        stage_age_days=days("snapshot_date", "_since"),
        stage_index=stage_lc.replace_strict(order, [float(i) for i in range(len(order))], default=None,
                                            return_dtype=pl.Float64),
    )


# ----------------------------------------------------------------------------------------- pandas
def pandas_version(s, a, order: list[str]):
    """The same features with pandas: groupby shift/cumsum/transform and three ``merge_asof`` joins."""
    import numpy as np
    import pandas as pd

    def days(delta: pd.Series) -> pd.Series:
        return delta / pd.Timedelta(days=1)

    s = s.copy()
    s[BY] = s[BY].astype(str)
    s = s.sort_values([BY, "snapshot_date"], kind="stable").reset_index(drop=True)
    g = s.groupby(BY, sort=False)
    prev_close, prev_stage = g["close_date"].shift(1), g["stage"].shift(1)
    slip = (s["close_date"] > prev_close).fillna(False)
    out = pd.DataFrame({BY: s[BY], "snapshot_date": s["snapshot_date"]})
    out["close_date_slips"] = slip.astype(float).groupby(s[BY], sort=False).cumsum()
    out["close_date_slip_days"] = days(s["close_date"] - prev_close).where(slip, 0.0).groupby(s[BY], sort=False).cumsum()
    out["opportunity_age_days"] = days(s["snapshot_date"] - g["snapshot_date"].transform("min"))
    out["deal_value_change"] = s["deal_value"] / g["deal_value"].transform("first") - 1.0
    changed = s["stage"].ne(prev_stage) | prev_stage.isna() | s["stage"].isna()
    out["stage_age_days"] = days(s["snapshot_date"] - s["snapshot_date"].where(changed).groupby(s[BY], sort=False).ffill())
    out["days_to_close"] = days(s["close_date"] - s["snapshot_date"])
    out["log_deal_value"] = np.log1p(s["deal_value"].astype(float))
    out["crm_probability"] = s["probability"].astype(float)
    out["heuristic_risk_score"] = s["risk_score"].astype(float)
    for c in RISK_COLS:
        out[c] = s[c].astype(float)
    for c in (*CAT_COLS, "stage"):
        out[c] = s[c].astype(object)
    rank = {st: float(i) for i, st in enumerate(order)}
    out["stage_index"] = s["stage"].astype(str).str.strip().str.lower().map(rank).astype(float)

    tau = pd.Timedelta(days=HALF_LIFE_DAYS / math.log(2))
    t0 = a["occurred_at"].min()
    ev = a[[BY, "occurred_at"]].dropna().rename(columns={"occurred_at": "t"})
    ev[BY] = ev[BY].astype(str)
    ev["_e"] = np.exp((ev["t"] - t0) / tau)
    ev = ev.groupby([BY, "t"], sort=True).agg(_n=("_e", "size"), _e=("_e", "sum")).reset_index()
    eg = ev.groupby(BY, sort=False)
    ev["_cum"], ev["_cumexp"] = eg["_n"].cumsum(), eg["_e"].cumsum()
    ev = ev.sort_values("t", kind="stable")
    left = out[[BY, "snapshot_date"]].assign(_row=np.arange(len(out))).sort_values("snapshot_date", kind="stable")
    m = pd.merge_asof(left, ev[[BY, "t", "_cum", "_cumexp"]].assign(_last=ev["t"]), left_on="snapshot_date",
                      right_on="t", by=BY, direction="backward")
    for d in (30, 90):
        m["_k"] = m["snapshot_date"] - pd.Timedelta(days=d)
        m = pd.merge_asof(m, ev[[BY, "t", "_cum"]].rename(columns={"_cum": f"_c{d}", "t": "_t"}), left_on="_k",
                          right_on="_t", by=BY, direction="backward").drop(columns=["_t"])
    m = m.sort_values("_row").reset_index(drop=True)
    out["activity_count_30d"] = (m["_cum"].fillna(0) - m["_c30"].fillna(0)).astype(float)
    out["activity_count_90d"] = (m["_cum"].fillna(0) - m["_c90"].fillna(0)).astype(float)
    out["days_since_last_activity"] = days(m["snapshot_date"] - m["_last"])
    out["engagement"] = (m["_cumexp"] * np.exp(-((m["snapshot_date"] - t0) / tau))).fillna(0.0)
    return out


# ----------------------------------------------------------------------------------------- parity
def assert_same(frames: dict, features: list[str]) -> None:
    """Every frame has the same keys and, feature by feature, the same values (floats to 1e-9, nulls alike)."""
    import numpy as np
    import pandas as pd

    def norm(df):
        if not isinstance(df, pd.DataFrame):
            df = df.to_pandas()
        df = df.copy()
        df[BY] = df[BY].astype(str)
        df["snapshot_date"] = pd.to_datetime(df["snapshot_date"]).astype("datetime64[ns]")
        return df.sort_values([BY, "snapshot_date"], kind="stable").reset_index(drop=True)

    ref_name, *others = list(frames)
    ref = norm(frames[ref_name])
    missing = [f for f in features if f not in ref.columns]
    assert not missing, f"{ref_name} lacks features {missing}"
    for name in others:
        df = norm(frames[name])
        assert len(df) == len(ref), f"{name}: {len(df)} rows, {ref_name}: {len(ref)}"
        assert (df[BY].to_numpy() == ref[BY].to_numpy()).all(), f"{name}: opportunity keys differ from {ref_name}"
        assert (df["snapshot_date"].to_numpy() == ref["snapshot_date"].to_numpy()).all(), f"{name}: dates differ"
        for f in features:
            x, y = ref[f], df[f]
            nx, ny = x.isna().to_numpy(), y.isna().to_numpy()
            bad = int((nx != ny).sum())
            assert bad == 0, f"{name} vs {ref_name}: feature {f}: null on {bad} rows of one side only"
            if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
                xv, yv = x.to_numpy(float)[~nx], y.to_numpy(float)[~ny]
                ok = np.isclose(xv, yv, rtol=1e-9, atol=1e-9)
                assert ok.all(), (f"{name} vs {ref_name}: feature {f} differs on {int((~ok).sum())} rows, e.g. "
                                  f"{xv[~ok][:3]} vs {yv[~ok][:3]}")
            else:
                xv, yv = x.astype(str).to_numpy()[~nx], y.astype(str).to_numpy()[~ny]
                assert (xv == yv).all(), f"{name} vs {ref_name}: feature {f} differs on {int((xv != yv).sum())} rows"


def main(argv=None) -> int:
    p = T.parser(__doc__, repeat=5, quick_repeat=1)
    p.add_argument("--opportunities", type=int, default=None,
                   help="simulated opportunities (default 131000 -> ~1M snapshot rows; 3000 with --quick)")
    args = T.parse(p, argv)
    T.header(TAG, "point-in-time features: project vs polars floor vs pandas", args)
    import polars as pl

    from riskml_assets.core import features as F
    from riskml_assets.core.scoring import compute_features

    opps = args.opportunities or (3000 if args.quick else 131_000)
    snaps, _, acts = T.simulated(opps, weeks=12 if args.quick else 78)
    s_pl, a_pl = pl.from_pandas(snaps), pl.from_pandas(acts)
    manifest = F.build_manifest()
    order = list(manifest["stage_index"]["params"]["order"])
    features = sorted(manifest)
    T.note(TAG, f"{len(snaps):,} snapshot rows, {snaps[BY].nunique():,} opportunities, {len(acts):,} activity "
                f"events, {len(features)} features")

    def project():
        return F.extract_features(F.build_base_frame(s_pl, a_pl), manifest)[0]

    def project_pandas_io():
        return compute_features(snaps, acts, manifest)[0]

    sides = {"project": project, "project_pandas_io": project_pandas_io,
             "polars_floor": lambda: polars_floor(s_pl, a_pl, order), "pandas": lambda: pandas_version(snaps, acts, order)}
    assert_same({n: fn() for n, fn in sides.items()}, features)
    T.note(TAG, "parity: all four sides give the same values for every feature and row")
    times = T.interleave(sides, args.repeat, warmup=False)
    T.report_times(TAG, times)
    T.report_ratio(TAG, times, "project", "polars_floor", ("<=", 1.2))
    T.report_ratio(TAG, times, "project_pandas_io", "polars_floor")
    T.report_ratio(TAG, times, "pandas", "project", (">=", 2.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
