"""The action ranker and the simulator's recommendation feedback: contract-valid interactions with a
known ground truth, point-in-time features, and a ranker that clearly beats popularity."""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from riskml_assets.core import contract
from riskml_assets.core import families as FAM
from riskml_assets.core import ranking as RK
from riskml_assets.core import simulator
from riskml_assets.core.ingest import validate_frame

FAST = {"n_estimators": 200, "learning_rate": 0.1, "max_depth": 5}
KEYS = ["user_id", "opportunity_id", "action_id", "shown_at"]


@pytest.fixture(scope="module")
def acme():
    return simulator.simulate_tenant(simulator.DEFAULT_TENANTS[0])


@pytest.fixture(scope="module")
def examples(acme):
    df, info = RK.build_ranking_examples(acme.interactions, acme.snapshots, acme.activities, catalogue=acme.actions)
    return RK.split_ranking_examples(df, method="walk_forward"), info


@pytest.fixture(scope="module")
def parts(examples):
    df, _ = examples
    return {s: df[df["split"] == s].reset_index(drop=True) for s in ("train", "validation", "test")}


def oracle_scores(acme, df):
    return simulator.oracle_action_utility(acme.interaction_truth, df)


@pytest.fixture(scope="module")
def ranker(examples, parts):
    _, info = examples
    return RK.train_ranker(parts["train"], parts["validation"], features=info["features"],
                           feature_kinds=info["feature_kinds"], params=FAST, n_threads=1)


# ------------------------------------------------------------------ simulator


def test_interactions_follow_the_contract_and_the_ground_truth(acme):
    it = acme.interactions
    assert list(it.columns) == list(contract.INTERACTION_REQUIRED)
    assert len(it) > 20_000 and set(it["relevance"].unique()) == {0, 1, 2}
    res = validate_frame("interactions", it, tenant="acme", source_file="interactions-2026-11-13.parquet",
                         now=dt.datetime(2026, 11, 20))
    assert len(res.valid) == len(it)  # nothing quarantined
    assert it["shown_at"].max() < pd.Timestamp(acme.end)
    assert set(it["user_id"]) <= set(acme.snapshots["owner_id"])
    sizes = it.groupby(["user_id", "opportunity_id", "shown_at"]).size()
    assert sizes.between(*simulator.ACTIONS_SHOWN).all()
    # relevance follows the hidden need of the deal, not only the action's popularity
    t = acme.interaction_truth
    by_need = t.groupby(t["need"] >= 0.9)["relevance"].mean()
    assert by_need[True] > by_need[False] + 0.6
    for action, cat in [("exec_sponsor_call", "relationship"), ("reschedule_close", "timeline")]:
        rows = t[t["action_id"] == action].merge(acme.truth[["opportunity_id", "engaged", "slip_prone"]], on="opportunity_id")
        hidden = ~rows["engaged"] if cat == "relationship" else rows["slip_prone"]
        assert rows.loc[hidden, "relevance"].mean() > rows.loc[~hidden, "relevance"].mean() + 0.6


def test_interactions_are_deterministic_and_leave_the_other_frames_alone(acme):
    spec = simulator.DEFAULT_TENANTS[1]
    a = simulator.simulate_tenant(spec, weeks=20, seed=11)
    b = simulator.simulate_tenant(spec, weeks=20, seed=11)
    pd.testing.assert_frame_equal(a.interactions, b.interactions, check_exact=True)
    # the interactions come from their own random stream: regenerating them with another stream
    # changes them while snapshots/outcomes/activities/truth (drawn before) are untouched
    other, _ = simulator.simulate_interactions(a.snapshots, a.truth, end=a.end, rng=np.random.default_rng(99))
    assert not other.equals(a.interactions)
    digest = {k: int(pd.util.hash_pandas_object(getattr(a, k), index=False).sum() % 10**12)
              for k in ("snapshots", "outcomes", "activities", "truth")}
    # fingerprints computed with the simulator as it was before interactions existed (issue 4):
    # any change here changes every tenant's data
    assert digest == GLOBEX_20W_SEED11, digest


GLOBEX_20W_SEED11 = {"snapshots": 937652023771, "outcomes": 213802352752, "activities": 368805738795, "truth": 164561125341}


def test_write_tenant_writes_interaction_files_and_the_catalogue(tmp_path):
    sim = simulator.simulate_tenant(simulator.TenantSpec("small", 12.0, 5), weeks=6)
    files = simulator.write_tenant(sim, tmp_path / "in", tmp_path / "oracle")
    inter = [p for p in files if p.name.startswith("interactions-")]
    assert 1 <= len(inter) <= 5  # none for the last week: it would be shown after the as-of moment
    back = pd.concat([pd.read_parquet(p) for p in inter], ignore_index=True)
    assert len(back) == len(sim.interactions)
    for p in inter:
        fri = pd.Timestamp(p.stem.split("-", 1)[1])
        assert (pd.read_parquet(p)["shown_at"].dt.normalize() == fri).all()
    cat = pd.read_parquet(tmp_path / "oracle" / "small" / "actions.parquet")
    assert len(cat) == len(simulator.ACTION_CATALOGUE) and set(cat["category"]) == set(contract.RISK_CATEGORIES)
    assert (tmp_path / "oracle" / "small" / "interactions_truth.parquet").exists()
    assert files[-1].name == "truth.parquet"


# ------------------------------------------------------------------ examples


def test_examples_are_query_sorted_with_context(examples, acme):
    df, info = examples
    assert info["dropped_without_snapshot"] == 0 and info["rows"] == len(acme.interactions)
    assert (np.diff(df["qid"].to_numpy()) >= 0).all()
    per_q = df.groupby("qid")[["user_id", "opportunity_id", "shown_at"]].nunique()
    assert (per_q == 1).all().all()
    assert df.groupby(["user_id", "opportunity_id", "shown_at"])["qid"].nunique().eq(1).all()
    assert {"stage", "days_to_close", "engagement", "risk_relationship", "action_category_risk"} <= set(info["features"])
    # context = the latest snapshot at or before shown_at (the same Friday, 00:00)
    s = acme.snapshots.set_index(["opportunity_id", "snapshot_date"])
    sample = df.sample(200, random_state=0)
    snap = sample["shown_at"].dt.normalize()
    exp = (s.loc[list(zip(sample["opportunity_id"], snap)), "close_date"].to_numpy() - snap.to_numpy()) / np.timedelta64(1, "D")
    np.testing.assert_allclose(sample["days_to_close"].to_numpy(), exp)
    assert df.groupby("split")["opportunity_id"].nunique().sum() == df["opportunity_id"].nunique()  # no deal in two splits
    assert df.loc[df["split"] == "test", "shown_at"].max() >= df.loc[df["split"] == "train", "shown_at"].max()


def test_history_features_are_point_in_time(examples, acme):
    df, _ = examples
    it = acme.interactions
    rng = np.random.default_rng(1)
    for i in rng.choice(len(df), 150, replace=False):
        r = df.iloc[i]
        past = it[it["shown_at"] < r["shown_at"]]
        ua = past[(past["user_id"] == r["user_id"]) & (past["action_id"] == r["action_id"])]
        ac = past[past["action_id"] == r["action_id"]]
        oa = past[(past["opportunity_id"] == r["opportunity_id"]) & (past["action_id"] == r["action_id"])]
        assert r["ua_shown"] == len(ua) and r["action_shown"] == len(ac) and r["oa_shown"] == len(oa)
        if len(ua):
            assert r["ua_mean_rel"] == pytest.approx(ua["relevance"].mean())
            assert r["ua_accept_rate"] == pytest.approx((ua["relevance"] == 2).mean())
            acc = ua.loc[ua["relevance"] == 2, "shown_at"]
            want = (r["shown_at"] - acc.max()) / pd.Timedelta(days=1) if len(acc) else np.nan
            assert (np.isnan(want) and np.isnan(r["ua_days_since_accept"])) or r["ua_days_since_accept"] == pytest.approx(want)
        else:
            assert np.isnan(r["ua_mean_rel"])
        if len(ac):
            assert r["action_mean_rel"] == pytest.approx(ac["relevance"].mean())
        assert (np.isnan(r["oa_max_rel"]) and not len(oa)) or r["oa_max_rel"] == oa["relevance"].max()


# ------------------------------------------------------------------ the ranker


def test_ranker_clearly_beats_popularity(acme, parts, ranker):
    te = parts["test"]
    ev = RK.evaluate_ranker(te, RK.predict_ranker(ranker, te), baseline_scores=RK.popularity_baseline(parts["train"], te),
                            oracle_scores=oracle_scores(acme, te))
    assert ev["queries"] > 500
    assert ev["ndcg_at_10_lift"] >= 0.05, ev
    assert ev["model"]["map"] > ev["popularity"]["map"] + 0.05
    assert ev["model"]["precision_at_5"] >= ev["popularity"]["precision_at_5"]
    rand = RK.evaluate_ranker(te, np.random.default_rng(0).random(len(te)))["model"]["ndcg_at_10"]
    assert ev["popularity"]["ndcg_at_10"] > rand  # popularity is a real baseline
    assert ev["model"]["ndcg_at_10"] <= ev["oracle"]["ndcg_at_10"] + 0.01  # the oracle bounds what is learnable
    assert ev["model"]["ndcg_at_10"] > ev["oracle"]["ndcg_at_10"] - 0.08


def test_ranker_artifact_round_trip_and_objectives(examples, parts, ranker):
    _, info = examples
    te = parts["test"].head(400)
    back = json.loads(json.dumps(ranker))
    np.testing.assert_allclose(RK.predict_ranker(back, te), RK.predict_ranker(ranker, te), atol=1e-6)
    assert ranker["objective"] == "rank:pairwise" and back["popularity"]
    small = {"n_estimators": 60, "learning_rate": 0.2, "max_depth": 4}
    pop = RK.popularity_baseline(ranker["popularity"], parts["test"])
    base = RK.evaluate_ranker(parts["test"], pop)["model"]["ndcg_at_10"]
    for kw in ({"objective": "rank:ndcg"}, {"algorithm": "lightgbm", "params": {"n_estimators": 60, "num_leaves": 15}}):
        kw = {"params": small, **kw}
        art = RK.train_ranker(parts["train"], parts["validation"], features=info["features"],
                              feature_kinds=info["feature_kinds"], n_threads=1, **kw)
        nd = RK.evaluate_ranker(parts["test"], RK.predict_ranker(art, parts["test"]))["model"]["ndcg_at_10"]
        assert nd > base + 0.04, (kw, nd, base)
    with pytest.raises(ValueError, match="objective"):
        RK.train_ranker(parts["train"], None, features=info["features"], feature_kinds=info["feature_kinds"],
                        objective="rank:map")


def test_action_ranker_family_gates(acme, examples, parts):
    _, info = examples
    ctx = {"features": info["features"], "feature_kinds": info["feature_kinds"]}
    art = FAM.train_family("action_ranker", parts["train"], parts["validation"], ctx,
                           {"algorithm": "xgboost", "params": FAST, "n_threads": 1})
    rep = FAM.evaluate_family("action_ranker", parts["test"], art, {**ctx, "oracle_scores": oracle_scores(acme, parts["test"])})
    assert rep["gates"]["action_ranker_beats_popularity"]["passed"] is True
    assert rep["gates"]["action_ranker_min_queries"]["passed"] is True
    assert rep["should_deploy"] and rep["ndcg_at_10"] > rep["popularity"]["ndcg_at_10"]
    assert art["fit_check"]["scorer"] == "ndcg@10"
