"""The feature registry: point-in-time correctness, brute-force values, versions/hashes, missing data
and the labelling of training examples (pure module, no dagster)."""
from __future__ import annotations

import copy
import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from riskml_assets.core import features as F
from riskml_assets.core import simulator
from riskml_assets.core.features import FeatureDef, FeatureVersionError

ACTIVITY_FEATURES = ("activity_count_30d", "activity_count_90d", "engagement", "days_since_last_activity")
DAY = pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def sim():
    return simulator.simulate_tenant(simulator.TenantSpec("pit", 6.0), weeks=20)


def _features(snapshots, activities, manifest):
    base = F.build_base_frame(snapshots, activities)
    return F.extract_features(base, manifest)


# --------------------------------------------------------------------------------------------
# Point in time


def _planting_targets(sim, cutoff: pd.Timestamp, k: int):
    """Opportunities with a snapshot at ``cutoff`` and one a week later whose close date did not move."""
    s = sim.snapshots
    now = s[s["snapshot_date"] == cutoff].set_index("opportunity_id")["close_date"]
    nxt = s[s["snapshot_date"] == cutoff + 7 * DAY].set_index("opportunity_id")["close_date"]
    both = now.index.intersection(nxt.index)
    steady = sorted(o for o in both if now[o] == nxt[o])
    assert len(steady) >= k + 1, "the simulated tenant is too small for this test"
    return steady[:k], steady[k]


def test_features_are_point_in_time(sim, manifest):
    cutoff = pd.Timestamp(sim.fridays[10])
    planted, inserted_opp = _planting_targets(sim, cutoff, k=4)
    before, unavailable = _features(sim.snapshots, sim.activities, manifest)
    assert unavailable == {}

    # events after the cutoff (1 ms after it, within the next week, exactly at the next snapshot, far future)
    offsets = [pd.Timedelta(milliseconds=1), 2 * DAY, 7 * DAY, 30 * DAY]
    extra = pd.DataFrame([{"opportunity_id": o, "occurred_at": cutoff + off, "activity_type": "meeting"}
                          for o in planted for off in offsets])
    activities = pd.concat([sim.activities, extra], ignore_index=True)
    # the next week's snapshot row changes: the close date slips 60 days, the stage and the value jump
    snaps = sim.snapshots.copy()
    nxt = snaps["opportunity_id"].isin(planted) & (snaps["snapshot_date"] == cutoff + 7 * DAY)
    assert nxt.sum() == len(planted)
    snaps.loc[nxt, "close_date"] += 60 * DAY
    snaps.loc[nxt, "stage"] = "commit"
    snaps.loc[nxt, "deal_value"] *= 2
    # and another opportunity gets an extra (mid-week) snapshot row after the cutoff, slipping 10 days
    row = snaps[(snaps["opportunity_id"] == inserted_opp) & (snaps["snapshot_date"] == cutoff)].copy()
    row["snapshot_date"] += 3 * DAY
    row["close_date"] += 10 * DAY
    snaps = pd.concat([snaps, row], ignore_index=True)

    after, unavailable_after = _features(snaps, activities, manifest)
    assert unavailable_after == {}
    # every feature of every snapshot at or before the cutoff is bit-for-bit unchanged
    old = pl.col("snapshot_date") <= cutoff
    assert before.filter(old).height > 500
    assert_frame_equal(before.filter(old), after.filter(old), check_exact=True)

    # ... while the later snapshots of the planted opportunities did change (the test is not vacuous)
    def at(frame, opps, when):
        return (frame.filter(pl.col("opportunity_id").is_in(opps) & (pl.col("snapshot_date") == when))
                .sort("opportunity_id").to_pandas().set_index("opportunity_id"))

    b, a = at(before, planted, cutoff + 7 * DAY), at(after, planted, cutoff + 7 * DAY)
    assert len(a) == len(planted)
    np.testing.assert_array_equal(a["activity_count_30d"] - b["activity_count_30d"], 3.0)
    np.testing.assert_array_equal(a["activity_count_90d"] - b["activity_count_90d"], 3.0)
    np.testing.assert_array_equal(a["days_since_last_activity"], 0.0)
    tau = F.ENGAGEMENT_HALF_LIFE_DAYS
    gain = 0.5 ** ((7 - 1 / 86_400_000) / tau) + 0.5 ** (5 / tau) + 1.0
    np.testing.assert_allclose(a["engagement"] - b["engagement"], gain, rtol=1e-9)
    np.testing.assert_array_equal(a["close_date_slips"] - b["close_date_slips"], 1.0)
    np.testing.assert_allclose(a["close_date_slip_days"] - b["close_date_slip_days"], 60.0)
    assert (a["stage"] == "commit").all()
    np.testing.assert_allclose(a["days_to_close"] - b["days_to_close"], 60.0)
    # the planted +30 day events show up a month later, never earlier
    later = cutoff + 35 * DAY
    b2, a2 = at(before, planted, later), at(after, planted, later)
    if len(a2):
        assert (a2["activity_count_30d"] > b2["activity_count_30d"]).all()

    bi, ai = at(before, [inserted_opp], cutoff + 7 * DAY), at(after, [inserted_opp], cutoff + 7 * DAY)
    assert ai["close_date_slips"].iloc[0] == bi["close_date_slips"].iloc[0] + 1
    assert ai["close_date_slip_days"].iloc[0] == pytest.approx(bi["close_date_slip_days"].iloc[0] + 10)
    mid = at(after, [inserted_opp], cutoff + 3 * DAY)
    assert len(mid) == 1 and mid["close_date_slips"].iloc[0] == bi["close_date_slips"].iloc[0] + 1


def test_training_examples_ignore_data_after_the_partition_end(sim, manifest):
    """Snapshot rows and events after the partition end cannot change the examples of that partition."""
    end = pd.Timestamp(sim.fridays[14]) + 3 * DAY  # a Monday
    kw = dict(partition_end=end.date().isoformat(), window_weeks=8)
    ex, _ = F.build_training_examples(sim.snapshots, sim.outcomes, sim.activities, manifest, **kw)
    snaps = sim.snapshots.copy()
    late = snaps["snapshot_date"] >= end
    assert late.sum() > 0
    snaps.loc[late, "close_date"] += 90 * DAY
    snaps.loc[late, "deal_value"] *= 3
    ids = ex["opportunity_id"].unique()[:20]
    extra = pd.DataFrame({"opportunity_id": np.repeat(ids, 3),
                          "occurred_at": np.tile([end, end + DAY, end + 20 * DAY], len(ids)),
                          "activity_type": "call"})
    acts = pd.concat([sim.activities, extra], ignore_index=True)
    ex2, _ = F.build_training_examples(snaps, sim.outcomes, acts, manifest, **kw)
    pd.testing.assert_frame_equal(ex, ex2, check_exact=True)


# --------------------------------------------------------------------------------------------
# Brute force


def _slow_features(snaps: pd.DataFrame, acts: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """Straightforward per-row re-implementation of the activity and slip features."""
    half_life = F.ENGAGEMENT_HALF_LIFE_DAYS
    ev_by_opp = {o: g["occurred_at"].sort_values().tolist() for o, g in acts.groupby("opportunity_id")}
    snaps_by_opp = {o: g.sort_values("snapshot_date") for o, g in snaps.groupby("opportunity_id")}
    out = []
    for _, r in rows.iterrows():
        t = r["snapshot_date"]
        events = [e for e in ev_by_opp.get(r["opportunity_id"], []) if e <= t]
        n30 = sum(1 for e in events if e > t - 30 * DAY)
        n90 = sum(1 for e in events if e > t - 90 * DAY)
        eng = sum(0.5 ** (((t - e) / DAY) / half_life) for e in events)
        last = ((t - max(events)) / DAY) if events else math.nan
        hist = snaps_by_opp[r["opportunity_id"]]
        hist = hist[hist["snapshot_date"] <= t]
        slips, slip_days, prev = 0, 0.0, None
        for c in hist["close_date"]:
            if prev is not None and c > prev:
                slips += 1
                slip_days += (c - prev) / DAY
            prev = c
        out.append({"activity_count_30d": float(n30), "activity_count_90d": float(n90), "engagement": eng,
                    "days_since_last_activity": last, "close_date_slips": float(slips),
                    "close_date_slip_days": slip_days})
    return pd.DataFrame(out, index=rows.index)


def test_activity_and_slip_features_match_brute_force(sim, manifest):
    rng = np.random.default_rng(0)
    snaps = sim.snapshots
    acts = sim.activities.copy()
    acts["occurred_at"] = acts["occurred_at"].astype("datetime64[ms]")
    pick = snaps.sample(n=15, random_state=1)
    exact = [t for t in pick["snapshot_date"].iloc[:5]]
    boundary = pd.DataFrame({
        "opportunity_id": pick["opportunity_id"].to_numpy(),
        # at the snapshot (counts), exactly 30 days before (not in the 30-day window), 30 days minus 1 s (in it)
        "occurred_at": np.concatenate([
            np.asarray(exact, dtype="datetime64[ms]"),
            (pick["snapshot_date"].iloc[5:10] - 30 * DAY).to_numpy(dtype="datetime64[ms]"),
            (pick["snapshot_date"].iloc[10:15] - 30 * DAY + pd.Timedelta(seconds=1)).to_numpy(dtype="datetime64[ms]"),
        ]),
        "activity_type": "email",
    })
    dupes = acts.sample(n=40, random_state=2)  # exported twice: same opportunity, same instant
    acts = pd.concat([acts, boundary, dupes], ignore_index=True).sample(frac=1.0, random_state=3)

    feats, _ = _features(snaps, acts, manifest)
    fp = feats.to_pandas()
    silent = set(snaps["opportunity_id"]) - set(acts["opportunity_id"])
    sample_idx = set(rng.choice(len(fp), size=100, replace=False).tolist())
    keys = set(zip(pick["opportunity_id"], pick["snapshot_date"]))
    sample_idx |= set(np.flatnonzero([(o, t) in keys for o, t in zip(fp["opportunity_id"], fp["snapshot_date"])]))
    # every snapshot of a few opportunities with duplicated events
    sample_idx |= set(np.flatnonzero(fp["opportunity_id"].isin(dupes["opportunity_id"].iloc[:6])).tolist())
    sample_idx |= set(np.flatnonzero(fp["opportunity_id"].isin(silent))[:5].tolist())
    rows = fp.iloc[sorted(sample_idx)]
    assert len(rows) >= 110

    slow = _slow_features(snaps, acts, rows[["opportunity_id", "snapshot_date"]])
    for c in ("activity_count_30d", "activity_count_90d", "close_date_slips"):
        np.testing.assert_array_equal(rows[c].to_numpy(), slow[c].to_numpy(), err_msg=c)
    for c in ("engagement", "days_since_last_activity", "close_date_slip_days"):
        np.testing.assert_allclose(rows[c].to_numpy(), slow[c].to_numpy(), rtol=1e-9, atol=1e-9, err_msg=c)
    # the sample exercises the interesting cases
    assert (slow["close_date_slips"] > 0).sum() >= 10
    assert (slow["activity_count_30d"] == 0).sum() >= 3 and (slow["activity_count_30d"] >= 3).sum() >= 10
    assert (slow["days_since_last_activity"] == 0).sum() >= 5


def test_engagement_v2_decays_with_the_half_life(manifest):
    snaps = pd.DataFrame({
        "opportunity_id": ["a", "a"], "snapshot_date": pd.to_datetime(["2026-01-02", "2026-01-16"]),
        "deal_value": 1000.0, "currency": "USD", "probability": 50.0, "stage": "proposal",
        "close_date": pd.to_datetime(["2026-03-01", "2026-03-01"]), "last_activity_at": pd.NaT,
    })
    acts = pd.DataFrame({"opportunity_id": ["a", "a"], "occurred_at": pd.to_datetime(["2026-01-02", "2026-01-02"]),
                         "activity_type": "call"})
    feats, _ = _features(snaps, acts, manifest)
    eng = feats.sort("snapshot_date")["engagement"].to_list()
    h = F.ENGAGEMENT_HALF_LIFE_DAYS
    assert eng[0] == pytest.approx(2.0)
    assert eng[1] == pytest.approx(2.0 * 0.5 ** (14.0 / h))


# --------------------------------------------------------------------------------------------
# Versions and hashes


def test_manifest_pins_the_latest_version_of_every_feature(manifest):
    names = {n for n, _ in F.REGISTRY}
    assert set(manifest) == names
    for name, pin in manifest.items():
        latest = max(v for n, v in F.REGISTRY if n == name)
        assert pin["version"] == latest, name
        fd = F.resolve_pin(name, pin)  # bound to its pinned parameters for a per-tenant feature
        assert fd.version == latest and fd.definition_hash == pin["hash"]
        assert pin["kind"] == fd.kind and pin["critical"] == fd.critical
        if fd.parametric:
            assert pin["template_hash"] == F.REGISTRY[(name, latest)].template_hash
    assert manifest["engagement"]["version"] == 2
    assert manifest["days_since_last_activity"]["version"] == 2
    assert {n for n, p in manifest.items() if p["critical"]} == {"days_to_close", "log_deal_value",
                                                                  "crm_probability", "stage"}
    F.verify_manifest(manifest)  # does not raise
    json.loads(json.dumps(manifest))  # JSON-able


def test_pinned_old_version_is_extracted(sim):
    m1 = F.build_manifest({"engagement": 1})
    assert m1["engagement"]["version"] == 1
    assert m1["engagement"]["hash"] == F.REGISTRY[("engagement", 1)].definition_hash
    assert m1["engagement"]["hash"] != F.build_manifest()["engagement"]["hash"]
    feats, _ = _features(sim.snapshots, sim.activities, m1)
    assert feats["engagement"].to_list() == feats["activity_count_30d"].to_list()
    feats2, _ = _features(sim.snapshots, sim.activities, F.build_manifest())
    assert feats2["engagement"].to_list() != feats2["activity_count_30d"].to_list()


def test_unknown_versions_are_refused():
    with pytest.raises(FeatureVersionError, match=r"engagement.*no version 9.*known: \[1, 2\]"):
        F.build_manifest({"engagement": 9})
    with pytest.raises(FeatureVersionError, match=r"no_such_feature.*unknown feature"):
        F.build_manifest({"no_such_feature": 1})
    m = F.build_manifest()
    m["stage_age_days"] = {**m["stage_age_days"], "version": 3}
    with pytest.raises(FeatureVersionError, match=r"stage_age_days: pinned v3 does not exist"):
        F.verify_manifest(m)


def test_tampered_hash_is_refused_naming_feature_and_both_hashes(sim):
    m = copy.deepcopy(F.build_manifest())
    good = m["close_date_slips"]["hash"]
    m["close_date_slips"]["hash"] = "deadbeefdeadbeef"
    with pytest.raises(FeatureVersionError) as exc:
        F.verify_manifest(m)
    msg = str(exc.value)
    assert "close_date_slips" in msg and "deadbeefdeadbeef" in msg and good in msg
    assert "engagement" not in msg  # only the offending feature is named
    base = F.build_base_frame(sim.snapshots, sim.activities)
    with pytest.raises(FeatureVersionError, match="close_date_slips"):
        F.extract_features(base, m)


def test_lock_file_matches_the_registry():
    """Changing a released feature's definition without a version bump breaks this test (on purpose)."""
    lock = json.loads((Path(F.__file__).parent / "feature_lock.json").read_text())
    current = F.lock_entries()  # plain features: the definition hash; per-tenant ones: the template (code) hash
    assert {k for k in current if "@" in k} >= {f"{n}@{v}" for n, v in F.REGISTRY}
    assert sorted(lock) == sorted(current), "features added/removed without updating feature_lock.json"
    changed = {k: (lock[k], current[k]) for k in lock if lock[k] != current[k]}
    assert changed == {}, f"released features changed without a version bump: {changed}"


def test_definition_hash_changes_with_the_code():
    """The guard above is not vacuous: the same name/version with other code has another hash."""
    lock = json.loads((Path(F.__file__).parent / "feature_lock.json").read_text())
    reg = F.REGISTRY[("engagement", 2)]
    other = FeatureDef("engagement", 2, "numeric", reg.description, reg.sources, lambda: pl.col("_n_90d"))
    assert other.definition_hash != lock["engagement@2"]
    same_code_other_kind = FeatureDef("engagement", 2, "categorical", reg.description, reg.sources, reg.expr)
    assert same_code_other_kind.definition_hash != reg.definition_hash
    assert FeatureDef("engagement", 2, "numeric", reg.description, reg.sources, reg.expr).definition_hash \
        == lock["engagement@2"]


# --------------------------------------------------------------------------------------------
# Missing data


def test_activity_features_unavailable_without_activity_log(sim, manifest):
    with_log, _ = _features(sim.snapshots, sim.activities, manifest)
    for activities in (None, sim.activities.iloc[0:0]):
        feats, unavailable = _features(sim.snapshots, activities, manifest)
        assert set(unavailable) == set(ACTIVITY_FEATURES)
        assert all("activities" in why for why in unavailable.values())
        assert not set(ACTIVITY_FEATURES) & set(feats.columns)  # absent, not zero-filled
        expected = [c for c in manifest if c not in ACTIVITY_FEATURES]
        assert feats.columns == ["opportunity_id", "snapshot_date", *expected]
        assert_frame_equal(feats, with_log.select(feats.columns), check_exact=True)
    # the CRM's own last-activity field (v1) still works without an activity log
    m1 = F.build_manifest({"days_since_last_activity": 1})
    feats, unavailable = _features(sim.snapshots, None, m1)
    assert "days_since_last_activity" not in unavailable
    s = sim.snapshots.sort_values(["opportunity_id", "snapshot_date"])
    expected = ((s["snapshot_date"] - s["last_activity_at"]) / DAY).to_numpy()
    np.testing.assert_allclose(feats["days_since_last_activity"].to_numpy(), expected, equal_nan=True)


def test_opportunity_without_events_is_not_fabricated(manifest):
    snaps = pd.DataFrame({
        "opportunity_id": ["busy", "quiet"], "snapshot_date": pd.to_datetime(["2026-01-09", "2026-01-09"]),
        "deal_value": 1000.0, "currency": "USD", "probability": 50.0, "stage": "proposal",
        "close_date": pd.to_datetime(["2026-03-01", "2026-03-01"]), "last_activity_at": pd.NaT,
    })
    acts = pd.DataFrame({"opportunity_id": ["busy"], "occurred_at": pd.to_datetime(["2026-01-05"]),
                         "activity_type": "call"})
    feats, unavailable = _features(snaps, acts, manifest)
    assert not set(unavailable) & set(ACTIVITY_FEATURES)
    assert "heuristic_risk_score" in unavailable  # that optional column is absent here
    q = feats.filter(pl.col("opportunity_id") == "quiet").row(0, named=True)
    assert q["activity_count_30d"] == 0 and q["engagement"] == 0 and q["days_since_last_activity"] is None
    b = feats.filter(pl.col("opportunity_id") == "busy").row(0, named=True)
    assert b["activity_count_30d"] == 1 and b["days_since_last_activity"] == pytest.approx(4.0)


def test_null_risk_score_makes_heuristic_score_unavailable(sim, manifest):
    snaps = sim.snapshots.copy()
    snaps["risk_score"] = np.nan
    feats, unavailable = _features(snaps, sim.activities, manifest)
    assert set(unavailable) == {"heuristic_risk_score"}
    assert "risk_score" in unavailable["heuristic_risk_score"]
    assert "heuristic_risk_score" not in feats.columns and "risk_timeline" in feats.columns
    feats, unavailable = _features(snaps.drop(columns=["risk_score"]), sim.activities, manifest)
    assert set(unavailable) == {"heuristic_risk_score"}
    # partly null: available, and the nulls stay null
    snaps = sim.snapshots.copy()
    snaps.loc[snaps.index[::2], "risk_score"] = np.nan
    feats, unavailable = _features(snaps, sim.activities, manifest)
    assert "heuristic_risk_score" not in unavailable
    assert feats["heuristic_risk_score"].null_count() == (len(snaps) + 1) // 2


# --------------------------------------------------------------------------------------------
# Training examples


def _expected_labelled(snaps, outcomes, end, window_weeks):
    start = end - pd.Timedelta(weeks=window_weeks)
    s = snaps[(snaps["snapshot_date"] >= start) & (snaps["snapshot_date"] < end)]
    o = outcomes[outcomes["closed_at"] < end]
    conflicted = o.groupby("opportunity_id")["outcome"].nunique().loc[lambda n: n > 1].index
    o = o[~o["opportunity_id"].isin(conflicted)]  # outcomes that disagree are no label (features.resolve_outcomes)
    o = o.sort_values("closed_at").drop_duplicates("opportunity_id", keep="last")
    j = s.merge(o[["opportunity_id", "outcome", "closed_at"]], on="opportunity_id")
    j = j[j["closed_at"] > j["snapshot_date"]]
    return {(r.opportunity_id, r.snapshot_date): int(r.outcome == "lost") for r in j.itertuples()}


def _got(ex):
    return {(o, pd.Timestamp(t)): int(y) for o, t, y in zip(ex["opportunity_id"], ex["snapshot_date"], ex[F.LABEL])}


def test_training_examples_labels_and_window(sim, manifest):
    end = pd.Timestamp(sim.fridays[14])  # a Friday: its own snapshot is not in the partition
    weeks = 8
    outcomes = sim.outcomes.copy()
    ex0, _ = F.build_training_examples(sim.snapshots, outcomes, sim.activities, manifest,
                                       partition_end=end.date().isoformat(), window_weeks=weeks)
    labelled_ids = ex0.groupby("opportunity_id")["snapshot_date"].nunique()
    multi = sorted(labelled_ids[labelled_ids >= 3].index)
    late_opp, cut_opp, corrected_opp, at_end_opp, twice_opp = multi[:5]

    # 1. an outcome closing after the partition end labels nothing
    outcomes.loc[outcomes["opportunity_id"] == late_opp, "closed_at"] = end + DAY
    outcomes.loc[outcomes["opportunity_id"] == at_end_opp, "closed_at"] = end  # not strictly before the end
    # 2. closed_at equal to a snapshot date: that snapshot and later ones are not labelled
    cut_dates = sorted(ex0.loc[ex0["opportunity_id"] == cut_opp, "snapshot_date"])
    outcomes.loc[outcomes["opportunity_id"] == cut_opp, "closed_at"] = pd.Timestamp(cut_dates[1])
    # 3. a correction recorded after the end does not replace the outcome known at the end
    prev = outcomes.loc[outcomes["opportunity_id"] == corrected_opp].iloc[0]
    flipped = "won" if prev["outcome"] == "lost" else "lost"
    correction = prev.to_frame().T.assign(outcome=flipped, closed_at=end + 2 * DAY)
    # 4. two outcomes before the end that disagree (won, then lost): no label at all, reported as a conflict
    first_close = outcomes.loc[outcomes["opportunity_id"] == twice_opp].iloc[0]
    reopened = first_close.to_frame().T.assign(
        outcome="won" if first_close["outcome"] == "lost" else "lost", closed_at=end - 2 * DAY)
    # 5. outcomes of opportunities never seen in a snapshot
    ghosts = pd.DataFrame({"opportunity_id": ["ghost-1", "ghost-2", "ghost-late"], "outcome": ["lost", "won", "lost"],
                           "closed_at": [end - 3 * DAY, end - 10 * DAY, end + DAY], "actual_revenue": 0.0})
    cols = list(ghosts.columns)
    outcomes = pd.concat([outcomes[cols], correction[cols], reopened[cols], ghosts], ignore_index=True)
    outcomes["closed_at"] = pd.to_datetime(outcomes["closed_at"])

    ex, stats = F.build_training_examples(sim.snapshots, outcomes, sim.activities, manifest,
                                          partition_end=end.date().isoformat(), window_weeks=weeks)
    got = _got(ex)
    assert got == _expected_labelled(sim.snapshots, outcomes, end, weeks)
    assert len(got) == len(ex) > 150
    assert late_opp not in set(ex["opportunity_id"]) and at_end_opp not in set(ex["opportunity_id"])
    assert sorted(ex.loc[ex["opportunity_id"] == cut_opp, "snapshot_date"]) == [cut_dates[0]]
    assert (ex.loc[ex["opportunity_id"] == corrected_opp, "outcome"] == prev["outcome"]).all()
    assert twice_opp not in set(ex["opportunity_id"]) and twice_opp in set(ex0["opportunity_id"])
    assert stats["conflicting_outcome_opportunities"] == 1 and stats["conflicting_outcome_rows"] == 2
    assert stats["conflicts"]["opportunity_id"].to_list() == [twice_opp, twice_opp]
    assert set(stats["conflicts"]["reason_code"]) == {"conflicting_outcome"}
    assert stats["snapshot_rows_excluded_conflicting_outcome"] == int((ex0["opportunity_id"] == twice_opp).sum())
    assert not ex["opportunity_id"].str.startswith("ghost").any()
    assert (ex["closed_at"] < end).all() and (ex["closed_at"] > ex["snapshot_date"]).all()
    np.testing.assert_array_equal(ex[F.LABEL], (ex["outcome"] == "lost").astype(int))

    # outcomes without snapshots: the two ghosts closed before the end (not the late one), plus the tenant's own
    seen = set(sim.snapshots.loc[sim.snapshots["snapshot_date"] < end, "opportunity_id"])
    known = outcomes[outcomes["closed_at"] < end].drop_duplicates("opportunity_id")
    assert stats["outcomes_without_snapshot"] == int((~known["opportunity_id"].isin(seen)).sum())
    _, stats0 = F.build_training_examples(sim.snapshots, sim.outcomes, sim.activities, manifest,
                                          partition_end=end.date().isoformat(), window_weeks=weeks)
    assert stats["outcomes_without_snapshot"] == stats0["outcomes_without_snapshot"] + 2
    assert stats["labelled_rows"] == len(ex)
    assert stats["snapshot_rows_history"] == int((sim.snapshots["snapshot_date"] < end).sum())

    # the window: snapshot_date in [end - window, end), and the history before it was really cut off
    start = end - pd.Timedelta(weeks=weeks)
    assert ex["snapshot_date"].min() == start
    assert ex["snapshot_date"].max() == end - 7 * DAY
    assert (sim.snapshots["snapshot_date"] < start).any() and (sim.snapshots["snapshot_date"] >= end).any()
    in_window = ((sim.snapshots["snapshot_date"] >= start) & (sim.snapshots["snapshot_date"] < end)).sum()
    assert stats["snapshot_rows_in_window"] == int(in_window)
    assert stats["unlabelled_rows"] == int(in_window) - len(ex)
    # history before the window still feeds history features (age counts from the first snapshot ever)
    first = sim.snapshots.groupby("opportunity_id")["snapshot_date"].min()
    age = (ex["snapshot_date"] - ex["opportunity_id"].map(first)) / DAY
    np.testing.assert_allclose(ex["opportunity_age_days"], age)
    assert (ex["opportunity_age_days"] > 7 * weeks).any()


def test_training_examples_window_sizes(sim, manifest):
    end = pd.Timestamp(sim.fridays[-4]) + 7 * DAY
    sizes = []
    for weeks in (1, 4, 12):
        ex, _ = F.build_training_examples(sim.snapshots, sim.outcomes, sim.activities, manifest,
                                          partition_end=end.date().isoformat(), window_weeks=weeks)
        assert ex["snapshot_date"].min() >= end - pd.Timedelta(weeks=weeks)
        assert _got(ex) == _expected_labelled(sim.snapshots, sim.outcomes, end, weeks)
        sizes.append(len(ex))
    assert sizes[0] < sizes[1] < sizes[2]
    assert ex["snapshot_date"].nunique() == 12
