"""The point-in-time base frame equals a straightforward reference implementation, value for value.

``reference_base_frame`` is the previous implementation of ``features.build_base_frame`` (per-opportunity
windows over the string id, as-of joins for the activity counts), kept here -- not in the package -- as the
definition the fast version must reproduce exactly on simulator data (issue 11: same values, less work).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from riskml_assets.core import features as F
from riskml_assets.core import simulator

DAY = pd.Timedelta(days=1)


def _ms(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.Datetime("ms"))


def _days(a: str, b: str) -> pl.Expr:
    return (pl.col(a) - pl.col(b)).dt.total_milliseconds().cast(pl.Float64) / F.DAY_MS


def reference_base_frame(snapshots, activities=None) -> pl.DataFrame:
    s = F._to_polars(snapshots)
    s = s.with_columns(
        _ms("snapshot_date").alias("snapshot_date"),
        _ms("close_date").alias("close_date"),
        (_ms("last_activity_at") if "last_activity_at" in s.columns else pl.lit(None, pl.Datetime("ms"))).alias("last_activity_at"),
        pl.col("opportunity_id").cast(pl.String),
    ).sort("opportunity_id", "snapshot_date")
    by = "opportunity_id"
    prev_close = pl.col("close_date").shift(1).over(by)
    slip = pl.when(pl.col("close_date") > prev_close).then(1).otherwise(0)
    slip_days = pl.when(pl.col("close_date") > prev_close).then(_days("close_date", "_prev_close")).otherwise(0.0)
    stage_changed = (pl.col("stage") != pl.col("stage").shift(1).over(by)).fill_null(True)
    s = (
        s.with_columns(_prev_close=prev_close, _stage_changed=stage_changed)
        .with_columns(
            _first_seen=pl.col("snapshot_date").min().over(by),
            _first_value=pl.col("deal_value").first().over(by),
            _slips=slip.cum_sum().over(by),
            _slip_days=slip_days.cum_sum().over(by),
            _stage_since=pl.when(pl.col("_stage_changed")).then(pl.col("snapshot_date")).otherwise(None)
            .forward_fill().over(by),
        )
        .drop("_prev_close", "_stage_changed")
    )
    a = F._to_polars(activities)
    if a.is_empty() or "occurred_at" not in a.columns:
        return s.with_columns(
            _last_event_at=pl.lit(None, pl.Datetime("ms")), _n_30d=pl.lit(None, pl.Int64),
            _n_90d=pl.lit(None, pl.Int64), _decayed=pl.lit(None, pl.Float64), _has_activity_log=pl.lit(False),
        )
    tau_ms = F.ENGAGEMENT_HALF_LIFE_DAYS / math.log(2) * F.DAY_MS
    t0 = a.select(_ms("occurred_at").min()).item()
    ev = (
        a.select(pl.col("opportunity_id").cast(pl.String), _ms("occurred_at").alias("t"))
        .drop_nulls()
        .sort(by, "t")
        .with_columns(
            _cum=pl.int_range(1, pl.len() + 1).over(by),
            _cumexp=((pl.col("t") - pl.lit(t0)).dt.total_milliseconds().cast(pl.Float64) / tau_ms).exp().cum_sum().over(by),
        )
        .sort("t")
    )
    s = s.sort("snapshot_date")
    out = s.join_asof(ev.select(by, pl.col("t").alias("snapshot_date"), pl.col("t").alias("_last_event_at"),
                                "_cum", "_cumexp"),
                      on="snapshot_date", by=by, strategy="backward", check_sortedness=False)
    for days in (30, 90):
        key = f"_t{days}"
        out = out.with_columns((pl.col("snapshot_date") - pl.duration(days=days)).alias(key)).sort(key)
        out = out.join_asof(ev.select(by, pl.col("t").alias(key), pl.col("_cum").alias(f"_cum{days}")),
                            on=key, by=by, strategy="backward", check_sortedness=False)
        out = out.with_columns(
            (pl.col("_cum").fill_null(0) - pl.col(f"_cum{days}").fill_null(0)).alias(f"_n_{days}d")
        ).drop(key, f"_cum{days}")
    age = (pl.col("snapshot_date") - pl.lit(t0)).dt.total_milliseconds().cast(pl.Float64) / tau_ms
    out = out.with_columns(
        _decayed=(pl.col("_cumexp") * (-age).exp()).fill_null(0.0),
        _has_activity_log=pl.lit(True),
    ).drop("_cum", "_cumexp")
    return out.sort(by, "snapshot_date")


@pytest.fixture(scope="module")
def sim():
    return simulator.simulate_tenant(simulator.TenantSpec("refco", 8.0, 5), weeks=30)


def _tricky_activities(sim) -> pd.DataFrame:
    """The simulator's events plus the cases that break a careless window: events exactly at a snapshot,
    exactly 30 and 90 days before one and 1 ms inside, exports of the same event twice, events of an
    opportunity that has no snapshot, and a missing timestamp."""
    acts = sim.activities.copy()
    acts["occurred_at"] = acts["occurred_at"].astype("datetime64[ms]")
    pick = sim.snapshots.sample(n=40, random_state=4)
    t = pick["snapshot_date"].astype("datetime64[ms]")
    planted = pd.concat([
        pd.DataFrame({"opportunity_id": pick["opportunity_id"], "occurred_at": t + off})
        for off in (pd.Timedelta(0), -30 * DAY, -30 * DAY + pd.Timedelta(milliseconds=1), -90 * DAY,
                    -90 * DAY + pd.Timedelta(milliseconds=1))
    ], ignore_index=True).assign(activity_type="call")
    ghost = pd.DataFrame({"opportunity_id": ["nobody-1", "nobody-1"], "activity_type": "email",
                          "occurred_at": pd.to_datetime(["2020-01-01", "2026-01-01"]).astype("datetime64[ms]")})
    missing = acts.head(1).assign(occurred_at=pd.NaT)
    return pd.concat([acts, planted, acts.sample(n=60, random_state=5), ghost, missing],
                     ignore_index=True).sample(frac=1.0, random_state=6)


def test_base_frame_equals_the_reference_on_simulator_data(sim):
    snaps = sim.snapshots.sample(frac=1.0, random_state=7)  # input order must not matter
    acts = _tricky_activities(sim)
    got = F.build_base_frame(snaps, acts)
    want = reference_base_frame(snaps, acts)
    assert got.height == len(snaps) and got.columns == want.columns
    assert_frame_equal(got, want, check_exact=True)
    # the cases are exercised: counts at 0 and above, slips, stage changes, events exactly at a snapshot
    assert got["_n_30d"].min() == 0 and got["_n_90d"].max() >= 10
    assert got["_slips"].max() >= 2 and (got["_stage_since"] != got["_first_seen"]).sum() > 100
    assert (got["_last_event_at"] == got["snapshot_date"]).sum() >= 30


def test_base_frame_equals_the_reference_without_activities_and_with_polars_input(sim):
    snaps = pl.from_pandas(sim.snapshots)
    assert_frame_equal(F.build_base_frame(snaps), reference_base_frame(snaps), check_exact=True)
    assert_frame_equal(F.build_base_frame(snaps, pl.DataFrame()), reference_base_frame(snaps), check_exact=True)
    # activities of other opportunities only: every count is 0, no last event
    other = pd.DataFrame({"opportunity_id": ["nobody"], "occurred_at": [pd.Timestamp("2026-01-01")],
                          "activity_type": ["call"]})
    got = F.build_base_frame(snaps, other)
    assert_frame_equal(got, reference_base_frame(snaps, other), check_exact=True)
    assert got["_n_90d"].max() == 0 and got["_last_event_at"].null_count() == got.height


def test_ranked_times_give_the_same_frame_as_millisecond_offsets(sim, monkeypatch):
    """Keys that would overflow 63 bits (centuries of dates x many opportunities) switch to ranked times:
    forced here by lowering the bound, the frame must not change."""
    snaps, acts = sim.snapshots, _tricky_activities(sim)
    want = F.build_base_frame(snaps, acts)
    monkeypatch.setattr(F, "_MAX_KEY", 1)
    assert_frame_equal(F.build_base_frame(snaps, acts), want, check_exact=True)
