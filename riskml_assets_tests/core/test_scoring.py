"""Batch scoring with the champion's pinned feature versions, traffic split, loud version mismatches."""
from __future__ import annotations

import copy
import hashlib

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from riskml_assets.core import evaluation, scoring, training
from riskml_assets.core import features as F
from riskml_assets.core.features import FeatureVersionError
from riskml_assets_tests.core.test_promotion import risk_models


@pytest.fixture(scope="module")
def models():
    return risk_models()


def _bundle(model: dict, version: str, alias: str) -> dict:
    return {"artifact": model["artifact"], "calibrator": model["calibrator"], "manifest": model["manifest"],
            "name": "riskml.globex.risk", "version": version, "alias": alias}


@pytest.fixture(scope="module")
def week(models):
    snaps = models["sim"].snapshots
    last = snaps["snapshot_date"].max()
    return snaps[snaps["snapshot_date"] < last], snaps[snaps["snapshot_date"] == last], models["sim"].activities


def _score(week, champion, **kw):
    history, latest, activities = week
    return scoring.score_open_opportunities(history, activities, latest, champion, **kw)


def test_scores_every_open_opportunity_of_the_latest_week(models, week):
    champion = _bundle(models["strong"], "3", "champion")
    scores = _score(week, champion)
    latest = week[1]
    assert list(scores.columns) == list(scoring.SCORE_COLUMNS)
    assert len(scores) == latest["opportunity_id"].nunique() > 100
    assert scores["opportunity_id"].is_monotonic_increasing and scores["opportunity_id"].is_unique
    assert scores["p_lost"].between(0, 1).all() and scores["p_lost_raw"].between(0, 1).all()
    assert (scores["model_version"] == "3").all() and (scores["model_alias"] == "champion").all()
    assert (scores["manifest_fingerprint"] == F.manifest_fingerprint(models["strong"]["manifest"])).all()
    assert (scores["snapshot_date"] == latest["snapshot_date"].max()).all()
    # the calibrator is applied to the raw model output
    np.testing.assert_allclose(scores["p_lost"], evaluation.apply_calibrator(champion["calibrator"], scores["p_lost_raw"]))
    assert (scores["above_threshold"] == (scores["p_lost"] >= champion["calibrator"]["threshold"])).all()


def test_scores_are_point_in_time_and_match_the_model_on_full_history(models, week):
    """Scoring the week from history + the week equals the model applied to features built from everything."""
    champion = _bundle(models["strong"], "1", "champion")
    scores = _score(week, champion)
    feats, _ = scoring.compute_features(models["sim"].snapshots, models["sim"].activities, champion["manifest"])
    rows = scores[["opportunity_id", "snapshot_date"]].merge(feats, on=["opportunity_id", "snapshot_date"])
    np.testing.assert_array_equal(scores["p_lost_raw"].to_numpy(), training.predict_raw(champion["artifact"], rows))


def test_scores_of_an_unchanged_model_are_identical_across_reruns(models, week):
    champion = _bundle(models["strong"], "1", "champion")
    challenger = _bundle(models["weak"], "2", "challenger")
    a = _score(week, champion, challenger_bundle=challenger, challenger_share=0.3)
    b = _score(week, copy.deepcopy(champion), challenger_bundle=copy.deepcopy(challenger), challenger_share=0.3)
    assert_frame_equal(a, b, check_exact=True)


def test_scoring_uses_exactly_the_pinned_feature_versions(models, week):
    """A model trained on engagement v1 / days_since_last_activity v1 is scored with v1, not the latest v2."""
    manifest_v1 = F.build_manifest({"engagement": 1, "days_since_last_activity": 1})
    assert manifest_v1["engagement"]["version"] == 1 and F.build_manifest()["engagement"]["version"] == 2
    sim, parts = models["sim"], models["parts"]
    ex, _ = F.build_training_examples(sim.snapshots, sim.outcomes, sim.activities, manifest_v1,
                                      partition_end="2026-11-23", window_weeks=52)
    train = ex[ex["opportunity_id"].isin(parts["train"]["opportunity_id"])]
    valid = ex[ex["opportunity_id"].isin(parts["validation"]["opportunity_id"])]
    art = training.train_xgb_classifier(train, valid, manifest_v1)
    bundle = {"artifact": art, "calibrator": None, "manifest": manifest_v1, "version": "7", "alias": "champion"}
    scores = _score(week, bundle)
    feats_v1, _ = scoring.compute_features(sim.snapshots, sim.activities, manifest_v1)
    feats_v2, _ = scoring.compute_features(sim.snapshots, sim.activities, F.build_manifest())
    keys = scores[["opportunity_id", "snapshot_date"]]
    rows_v1 = keys.merge(feats_v1, on=["opportunity_id", "snapshot_date"])
    rows_v2 = keys.merge(feats_v2, on=["opportunity_id", "snapshot_date"])
    assert not np.allclose(rows_v1["engagement"], rows_v2["engagement"])  # the versions really differ
    np.testing.assert_array_equal(scores["p_lost_raw"], training.predict_raw(art, rows_v1))
    assert (scores["p_lost"] == scores["p_lost_raw"]).all()  # no calibrator: raw probabilities


def test_changed_feature_hash_fails_loudly_before_computing_anything(models):
    champion = copy.deepcopy(_bundle(models["strong"], "4", "champion"))
    real = champion["manifest"]["days_to_close"]["hash"]
    champion["manifest"]["days_to_close"]["hash"] = "0123456789abcdef"
    with pytest.raises(FeatureVersionError) as err:
        # the inputs are not even data frames: the manifest is checked first
        scoring.score_open_opportunities(None, None, "not a frame", champion)
    msg = str(err.value)
    assert "days_to_close" in msg and "0123456789abcdef" in msg and real in msg and "v1" in msg
    assert "champion riskml.globex.risk v4" in msg


def test_changed_feature_version_fails_naming_both_versions(models, week):
    champion = copy.deepcopy(_bundle(models["strong"], "4", "champion"))
    champion["manifest"]["engagement"]["version"] = 9
    with pytest.raises(FeatureVersionError) as err:
        _score(week, champion)
    msg = str(err.value)
    assert "'engagement'" in msg and "v9" in msg and "v1" in msg and "v2" in msg
    # the registry pins one version but the model was trained with another
    champion = _bundle(models["strong"], "4", "champion")
    champion["manifest"] = {**champion["manifest"], "engagement": F.build_manifest({"engagement": 1})["engagement"]}
    with pytest.raises(FeatureVersionError, match=r"'engagement': the model was trained with v2 .* pins v1"):
        _score(week, champion)


def test_a_challenger_manifest_is_verified_too(models, week):
    challenger = copy.deepcopy(_bundle(models["weak"], "5", "challenger"))
    challenger["manifest"]["stage"]["hash"] = "ffffffffffffffff"
    with pytest.raises(FeatureVersionError, match="challenger.*'stage'"):
        _score(week, _bundle(models["strong"], "4", "champion"), challenger_bundle=challenger, challenger_share=0.5)


def test_missing_source_data_fails_instead_of_fabricating(models, week):
    history, latest, _ = week
    with pytest.raises(scoring.ScoringError, match="activity_count_30d.*missing source data"):
        scoring.score_open_opportunities(history, None, latest, _bundle(models["strong"], "1", "champion"))
    # a model that needs no activity log scores fine without one
    weak = scoring.score_open_opportunities(history, None, latest, _bundle(models["weak"], "2", "champion"))
    assert len(weak) == latest["opportunity_id"].nunique()


def test_closed_stages_and_repeated_snapshots_in_the_week(models, week):
    history, latest, activities = week
    latest = latest.copy()
    first = latest["opportunity_id"].iloc[0]
    latest.loc[latest.index[1], "stage"] = "Closed Won"
    closed = latest["opportunity_id"].iloc[1]
    earlier = latest.iloc[[0]].assign(snapshot_date=latest["snapshot_date"].iloc[0] - pd.Timedelta(days=2))
    scores = scoring.score_open_opportunities(history, activities, pd.concat([earlier, latest]),
                                              _bundle(models["strong"], "1", "champion"))
    assert closed not in set(scores["opportunity_id"])
    assert (scores["opportunity_id"] == first).sum() == 1
    assert scores.loc[scores["opportunity_id"] == first, "snapshot_date"].iloc[0] == latest["snapshot_date"].max()
    with pytest.raises(scoring.ScoringError, match="no snapshot rows"):
        scoring.score_open_opportunities(history, activities, latest.head(0), _bundle(models["strong"], "1", "champion"))


# --------------------------------------------------------------------------------------------
# champion / challenger traffic split
# --------------------------------------------------------------------------------------------

def test_assign_challenger_is_a_stable_sha256_split():
    ids = [f"opp-{i:05d}" for i in range(20_000)]
    mask = scoring.assign_challenger(ids, 0.2, salt="s")
    assert abs(mask.mean() - 0.2) < 0.01
    # stable: the documented formula, independent of Python's per-process hash()
    u = int.from_bytes(hashlib.sha256(b"s:opp-00000").digest()[:8], "big") / 2 ** 64
    assert mask[0] == (u < 0.2)
    assert (scoring.assign_challenger(ids, 0.2, salt="s") == mask).all()
    # monotone in the share, salt-dependent, bounded
    assert (mask <= scoring.assign_challenger(ids, 0.5, salt="s")).all()
    assert not scoring.assign_challenger(ids, 0.0).any() and scoring.assign_challenger(ids, 1.0).all()
    assert (scoring.assign_challenger(ids, 0.2, salt="other") != mask).any()
    with pytest.raises(ValueError, match="share"):
        scoring.assign_challenger(ids, 1.5)


def test_traffic_split_routes_a_share_to_the_challenger_and_labels_every_row(models, week):
    champion, challenger = _bundle(models["strong"], "1", "champion"), _bundle(models["weak"], "2", "challenger")
    scores = _score(week, champion, challenger_bundle=challenger, challenger_share=0.4)
    routed = scoring.assign_challenger(scores["opportunity_id"], 0.4)
    assert ((scores["model_alias"] == "challenger") == routed).all()
    assert 0.25 < routed.mean() < 0.55
    assert set(scores.loc[routed, "model_version"]) == {"2"} and set(scores.loc[~routed, "model_version"]) == {"1"}
    assert (scores.loc[routed, "manifest_fingerprint"] == F.manifest_fingerprint(challenger["manifest"])).all()
    only_champion = _score(week, champion)
    # champion rows are unchanged by the split; challenger rows come from the challenger
    merged = scores.merge(only_champion, on="opportunity_id", suffixes=("", "_champ"))
    keep = merged["model_alias"] == "champion"
    np.testing.assert_array_equal(merged.loc[keep, "p_lost"], merged.loc[keep, "p_lost_champ"])
    assert (merged.loc[~keep, "p_lost"] != merged.loc[~keep, "p_lost_champ"]).any()
    # no share, or no challenger: everything from the champion
    assert (_score(week, champion, challenger_bundle=challenger, challenger_share=0.0)["model_alias"] == "champion").all()
    assert (_score(week, champion, challenger_bundle=challenger, challenger_share=1.0)["model_alias"] == "challenger").all()


# --------------------------------------------------------------------------------------------
# predictions on labelled examples (champion vs challenger on the same test rows)
# --------------------------------------------------------------------------------------------

def test_predict_on_examples_reuses_or_recomputes_features(models):
    test = models["parts"]["test"]
    strong = _bundle(models["strong"], "1", "champion")
    p, p_raw = scoring.predict_on_examples(strong, test, models["manifest"])
    np.testing.assert_allclose(p, models["strong"]["p_test"])
    # examples extracted with other versions: the bundle's pinned features are recomputed from snapshots
    manifest_v1 = F.build_manifest({"engagement": 1})
    stale = test.assign(engagement=-1.0)
    with pytest.raises(scoring.ScoringError, match="snapshots_history"):
        scoring.predict_on_examples(strong, stale, manifest_v1)
    p2, _ = scoring.predict_on_examples(strong, stale, manifest_v1, snapshots_history=models["sim"].snapshots,
                                        activities=models["sim"].activities)
    np.testing.assert_allclose(p2, models["strong"]["p_test"])
    # the history as functions (registered_models reads its windows only on demand): called only to recompute
    asked = []

    def ask(name, value):
        return lambda: asked.append(name) or value

    p3, _ = scoring.predict_on_examples(strong, test, models["manifest"], snapshots_history=ask("s", None),
                                        activities=ask("a", None))
    assert asked == [] and np.allclose(p3, p)
    p4, _ = scoring.predict_on_examples(strong, stale, manifest_v1, snapshots_history=ask("s", models["sim"].snapshots),
                                        activities=ask("a", models["sim"].activities))
    assert asked == ["s", "a"]
    np.testing.assert_allclose(p4, p2)


# --------------------------------------------------------------------------------------------
# Issue 11: features computed once, from the scored opportunities' history only


def test_features_from_the_scored_opportunities_history_equal_the_full_history_exactly(models, week):
    """score_with_features computes the features from the scored opportunities' rows only (and the activity
    origin of all events): scores and feature rows are bit for bit those of the whole history, with pandas or
    polars inputs; the feature rows are the champion's features of every scored row (what drift compares)."""
    import polars as pl

    history, latest, activities = week
    champion = _bundle(models["strong"], "1", "champion")
    challenger = _bundle(models["weak"], "2", "challenger")
    scores, rows = scoring.score_with_features(history, activities, latest, champion, challenger, 0.3)
    feats, _ = scoring.compute_features(pd.concat([history, latest]), activities, champion["manifest"])
    want = scores[["opportunity_id", "snapshot_date"]].merge(feats, on=["opportunity_id", "snapshot_date"])
    assert len(rows) == len(scores) == latest["opportunity_id"].nunique()
    assert_frame_equal(rows, want[rows.columns], check_exact=True)
    # the same scores as the public entry point, and with polars frames in
    assert_frame_equal(scores, _score(week, champion, challenger_bundle=challenger, challenger_share=0.3),
                       check_exact=True)
    s_pl, r_pl = scoring.score_with_features(pl.from_pandas(history), pl.from_pandas(activities),
                                             pl.from_pandas(latest), champion, challenger, 0.3)
    assert_frame_equal(s_pl, scores, check_exact=True)
    assert_frame_equal(r_pl, rows, check_exact=True)
    # both models scored some rows; the challenger's rows carry the champion's features too
    assert set(scores["model_alias"]) == {"champion", "challenger"}


def test_a_feature_empty_on_the_scored_rows_but_present_in_history_is_scored_as_before(models, week):
    """Limiting the rows to the scored opportunities must not turn a feature into 'unavailable' (and the run into
    an error) when it has values elsewhere in the history: the whole history then decides, as before."""
    history, latest, activities = week
    champion = _bundle(models["strong"], "1", "champion")
    assert "heuristic_risk_score" in champion["artifact"]["features"]
    latest = latest.assign(risk_score=np.nan)
    scored = set(latest["opportunity_id"])
    history = history.assign(risk_score=history["risk_score"].where(~history["opportunity_id"].isin(scored)))
    scores, rows = scoring.score_with_features(history, activities, latest, champion)
    assert rows["heuristic_risk_score"].isna().all() and len(scores) == latest["opportunity_id"].nunique()
    feats, _ = scoring.compute_features(pd.concat([history, latest]), activities, champion["manifest"])
    want = scores[["opportunity_id", "snapshot_date"]].merge(feats, on=["opportunity_id", "snapshot_date"])
    np.testing.assert_array_equal(scores["p_lost_raw"].to_numpy(), training.predict_raw(champion["artifact"], want))


def test_concat_frames_and_rows_between():
    import polars as pl

    a = pd.DataFrame({"opportunity_id": ["o1"], "snapshot_date": pd.to_datetime(["2026-11-16 10:00"]), "x": [1]})
    b = pl.DataFrame({"opportunity_id": ["o2", "o3"], "snapshot_date": [pd.Timestamp("2026-11-22 23:59"),
                                                                       pd.Timestamp("2026-11-23")],
                      "x": [2.5, None], "extra": ["a", "b"]})
    both = scoring.concat_frames({"t|2026-11-23": b, "t|2026-11-16": a, "t|2026-11-09": None})
    assert both["opportunity_id"].to_list() == ["o1", "o2", "o3"]  # partition order
    assert both["x"].to_list() == [1.0, 2.5, None] and both["extra"].to_list() == [None, "a", "b"]
    week = scoring.rows_between(both, "2026-11-16", "2026-11-23")
    assert week["opportunity_id"].to_list() == ["o1", "o2"]  # [start, end)
    assert scoring.concat_frames(None).is_empty() and scoring.concat_frames({"k": None}).is_empty()


def test_recomputed_example_features_use_the_examples_opportunities_only_with_identical_values(models):
    """predict_on_examples recomputes a champion's pinned features from the examples' opportunities' rows only:
    the predictions are exactly those of features built from the whole history."""
    test = models["parts"]["test"]
    strong = _bundle(models["strong"], "1", "champion")
    sim = models["sim"]
    stale = test.assign(engagement=-1.0)
    p, p_raw = scoring.predict_on_examples(strong, stale, F.build_manifest({"engagement": 1}),
                                           snapshots_history=sim.snapshots, activities=sim.activities)
    feats, _ = scoring.compute_features(sim.snapshots, sim.activities, strong["manifest"])
    keys = test[["opportunity_id", "snapshot_date"]].astype({"opportunity_id": str})
    rows = keys.merge(feats, on=["opportunity_id", "snapshot_date"], how="left")
    np.testing.assert_array_equal(p_raw, training.predict_raw(strong["artifact"], rows))
    assert test["opportunity_id"].nunique() < 0.5 * sim.snapshots["opportunity_id"].nunique()
