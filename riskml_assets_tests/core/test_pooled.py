"""The pooled risk model (core.pooled) on simulated tenants that share the simulator's ground truth."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from riskml_assets.core import evaluation, pooled, simulator, training
from riskml_assets.core import features as F
from riskml_assets.core import metrics as M

from .conftest import simulated_splits

LABEL = F.LABEL
FAST = dict(learning_rate=0.1, n_estimators=400, early_stopping_rounds=30)


def _splits(spec, manifest):
    sim = simulator.simulate_tenant(spec)
    return sim, simulated_splits(sim, manifest, seed=0, tenant=spec.name)


@pytest.fixture(scope="module")
def two_tenants(manifest):
    """initech (small: ~1.5k rows) and globex (~8k rows): different deals, the same true loss model."""
    small, large = simulator.DEFAULT_TENANTS[2], simulator.DEFAULT_TENANTS[1]
    sim_s, df_s = _splits(small, manifest)
    _, df_l = _splits(large, manifest)
    return {"sim": sim_s, "frames": {small.name: df_s, large.name: df_l}, "small": small.name, "large": large.name}


@pytest.fixture(scope="module")
def trained(two_tenants, manifest):
    frames, small = two_tenants["frames"], two_tenants["small"]
    res, rows = pooled.train_pooled_model(frames, small, manifest, list(frames), params=training.XGBParams(**FAST),
                                          return_rows=True)
    df = frames[small]
    tr, va = df[df.split == "train"], df[df.split == "validation"]
    own = training.train_xgb_classifier(tr, va, manifest, training.XGBParams(**FAST))
    own_cal = evaluation.fit_risk_calibrator(training.predict_raw(own, va), va[LABEL].to_numpy(int))
    return res, rows, own, own_cal


def _expected_brier(p, truth):
    """Brier expected under the ground truth: E[(p - y)^2] = (p - p_true)^2 + p_true (1 - p_true), per row."""
    return float(np.mean((p - truth) ** 2 + truth * (1 - truth)))


def test_pooled_model_beats_the_small_tenants_own_model_against_the_ground_truth(two_tenants, trained):
    res, _, own, own_cal = trained
    assert res["available"], res["reason"]
    small = two_tenants["small"]
    test = two_tenants["frames"][small].query("split == 'test'")
    y = test[LABEL].to_numpy(int)
    truth = test["opportunity_id"].map(two_tenants["sim"].truth.set_index("opportunity_id")["p_lost_true"]).to_numpy()
    assert len(y) > 80 and not np.isnan(truth).any()
    p_pool = pooled.predict_pooled(res["model"], test, small, res["calibrator"])
    p_own = evaluation.apply_calibrator(own_cal, training.predict_raw(own, test))
    e_pool, e_own, e_oracle = (_expected_brier(p, truth) for p in (p_pool, p_own, truth))
    summary = (f"expected Brier pooled {e_pool:.4f} own {e_own:.4f} oracle {e_oracle:.4f}; realised Brier pooled "
               f"{M.brier(y, p_pool):.4f} own {M.brier(y, p_own):.4f} oracle {M.brier(y, truth):.4f}; MSE to truth "
               f"pooled {np.mean((p_pool - truth) ** 2):.4f} own {np.mean((p_own - truth) ** 2):.4f}")
    print(summary)
    # not vacuous: the small tenant's own model is measurably off the truth ...
    assert e_own > 1.08 * e_oracle, summary
    # ... and the pooled model is much closer to it: at least a third of the excess over the oracle is gone
    assert e_pool - e_oracle < (2 / 3) * (e_own - e_oracle), summary
    assert e_pool <= 1.10 * e_oracle, summary


def test_no_validation_or_test_opportunity_of_any_tenant_is_trained_on(two_tenants, trained):
    res, rows, _, _ = trained
    frames = two_tenants["frames"]
    trained_on = set(zip(rows[pooled.TENANT_FEATURE], rows["opportunity_id"]))
    held_out = {(t, o) for t, df in frames.items() for o in df.loc[df.split != "train", "opportunity_id"]}
    train_keys = {(t, o) for t, df in frames.items() for o in df.loc[df.split == "train", "opportunity_id"]}
    assert held_out and not (trained_on & held_out)
    assert trained_on == train_keys  # every train row of both tenants, nothing else
    assert res["rows_by_tenant"] == {t: int((df.split == "train").sum()) for t, df in frames.items()}
    assert res["model"]["train_rows"] == sum(res["rows_by_tenant"].values())
    assert res["train_fingerprint"] == pooled.training_fingerprint(rows)
    # the calibrator saw the target's own validation rows only
    small = two_tenants["small"]
    assert res["calibrator"]["validation"]["rows"] == int((frames[small].split == "validation").sum())
    assert pooled.TENANT_FEATURE in res["model"]["features"]
    assert sorted(res["model"]["categories"][pooled.TENANT_FEATURE]) == sorted([*frames, "__missing__"])


def test_not_opted_in_or_alone_is_unavailable_with_the_reason_and_trains_nothing(two_tenants, manifest):
    frames, small, large = two_tenants["frames"], two_tenants["small"], two_tenants["large"]
    res = pooled.train_pooled_model(frames, small, manifest, [large])
    assert not res["available"] and res["model"] is None and "has not opted in" in res["reason"]
    res = pooled.train_pooled_model({small: frames[small]}, small, manifest, [small, large])
    assert not res["available"] and res["model"] is None
    assert "no other opted-in tenant" in res["reason"] and large in res["reason"]
    # the other tenant opted in but has validation/test rows only this week: nothing of it may be trained on
    other = frames[large][frames[large].split != "train"]
    res = pooled.train_pooled_model({small: frames[small], large: other}, small, manifest, [small, large])
    assert not res["available"] and "no other opted-in tenant has train rows" in res["reason"]


def test_features_with_another_version_are_masked_for_that_tenant(two_tenants, manifest):
    frames, small, large = two_tenants["frames"], two_tenants["small"], two_tenants["large"]
    other = {k: dict(v) for k, v in manifest.items()}
    other["stage_index"]["hash"] = "another-stage-order"
    small_df = frames[small].assign(x_lead_source="referral")  # a target-only extra column
    man = {**manifest, "x_lead_source": {"version": 1, "hash": "x", "kind": "categorical"}}
    rows, info = pooled.pooled_training_rows({small: small_df, large: frames[large]}, small, man, [small, large],
                                             manifests={large: other, small: man})
    assert info["features_masked"] == {large: ["stage_index"]}  # x_lead_source: globex has no such column
    big, mine = rows[rows.tenant == large], rows[rows.tenant == small]
    assert big["stage_index"].isna().all() and mine["stage_index"].notna().any()
    assert big["x_lead_source"].isna().all() and (mine["x_lead_source"] == "referral").all()
    assert big["region"].notna().all()  # same version and hash: pooled as is


@pytest.mark.parametrize("raw, expected", [(None, False), ({}, False), ({"pooled": True}, True),
                                           ({"pooled": False, "stages": ["a"]}, False)])
def test_parse_pooled(raw, expected):
    assert pooled.parse_pooled(raw) is expected


@pytest.mark.parametrize("value", ["yes", 1, ["true"], None])
def test_parse_pooled_refuses_a_non_boolean_naming_the_file(value):
    with pytest.raises(pooled.PooledConfigError, match=r"acme\.yaml: 'pooled' must be true or false"):
        pooled.parse_pooled({"pooled": value}, where="config/tenants/acme.yaml")


def test_tenant_calibration_picks_the_lowest_grouped_out_of_fold_brier():
    for seed in range(3):  # already calibrated scores: identity, Platt and isotonic compete; the lowest wins
        rng = np.random.default_rng(seed)
        p = rng.uniform(0.05, 0.95, 600)
        y = (rng.uniform(size=600) < p).astype(int)
        cal = pooled.calibrate_for_tenant(p, y, groups=np.arange(600))
        scores = cal["selection"]["grouped_oof_brier"]
        assert set(scores) == {"none", "platt", "isotonic"} and scores["none"] == pytest.approx(np.mean((p - y) ** 2))
        assert cal["method"] == min(scores, key=scores.get), scores
    cal = pooled.calibrate_for_tenant(p ** 3, y, groups=np.arange(600))  # far too confident of wins: a map helps
    assert cal["method"] in ("platt", "isotonic") and "kept: lowest out-of-fold Brier" in cal["selection"]["pooled_choice"]
    assert min(cal["selection"]["grouped_oof_brier"].values()) < cal["selection"]["grouped_oof_brier"]["none"] - 0.01
    assert pooled.calibrate_for_tenant(p, y, "platt")["method"] == "platt"  # an explicit method is obeyed


def test_grouped_folds_keep_isotonic_from_memorising_an_opportunitys_outcome():
    # 120 opportunities x 8 snapshots; the raw score is the true probability plus a little per-snapshot noise
    rng = np.random.default_rng(0)
    p_true = rng.uniform(0.1, 0.9, 120)
    won_lost = (rng.uniform(size=120) < p_true).astype(int)
    groups = np.repeat(np.arange(120), 8)
    p = np.clip(np.repeat(p_true, 8) + rng.normal(0, 0.01, 960), 0.01, 0.99)
    y = np.repeat(won_lost, 8)
    honest = float(np.mean(np.repeat(p_true * (1 - p_true), 8)))  # what any calibration can expect here
    row_folds = M.brier(y, evaluation.oof_calibrated(p, y, "isotonic"))
    grouped = pooled.grouped_oof_brier(p, y, groups)
    # row folds: snapshots of the same opportunity sit next to each other and give the outcome away (0.173 here)
    assert row_folds < honest - 0.01
    assert grouped["isotonic"] > row_folds + 0.01 and grouped["isotonic"] > grouped["none"]  # grouped: 0.191
    cal = pooled.calibrate_for_tenant(p, y, groups=groups)
    assert cal["method"] != "isotonic"


@pytest.mark.slow
def test_pooled_models_of_the_three_default_tenants_against_oracle_and_crm(manifest):
    """All three simulator tenants opt in (the main job's 52-week window): each tenant's pooled model against its
    own model, the oracle and the CRM's risk_score on its test rows. Prints the table (run with -s)."""
    sims, frames = {}, {}
    for spec in simulator.DEFAULT_TENANTS:
        sims[spec.name], frames[spec.name] = _splits(spec, manifest)
    rows = []
    for t in ("initech", "globex", "acme"):
        df = frames[t]
        tr, va, te = (df[df.split == s] for s in ("train", "validation", "test"))
        y = te[LABEL].to_numpy(int)
        truth = te["opportunity_id"].map(sims[t].truth.set_index("opportunity_id")["p_lost_true"]).to_numpy()
        own = training.train_xgb_classifier(tr, va, manifest)
        own_cal = evaluation.fit_risk_calibrator(training.predict_raw(own, va), va[LABEL].to_numpy(int))
        res = pooled.train_pooled_model(frames, t, manifest, list(frames))
        preds = {"own": evaluation.apply_calibrator(own_cal, training.predict_raw(own, te)),
                 "pooled": pooled.predict_pooled(res["model"], te, t, res["calibrator"]), "oracle": truth}
        crm = M.brier(y, te["baseline_risk_score"].to_numpy(float))
        for name, p in preds.items():
            rows.append({"tenant": t, "model": name, "test_rows": len(y), "brier": M.brier(y, p),
                         "brier_ratio": M.brier(y, p) / M.brier(y, truth),
                         "expected_ratio": _expected_brier(p, truth) / _expected_brier(truth, truth),
                         "auc": M.roc_auc(y, p), "ece": M.ece(y, p), "crm_brier": crm})
    table = pd.DataFrame(rows)
    print("\n" + table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    by = table.set_index(["tenant", "model"])
    for t in ("initech", "globex", "acme"):
        pool, own = by.loc[(t, "pooled")], by.loc[(t, "own")]
        assert pool["expected_ratio"] <= 1.10, (t, pool.to_dict())  # within 10 % of the oracle (ground truth)
        assert pool["expected_ratio"] <= own["expected_ratio"] + 0.005, t  # never worse than the tenant's own model
        assert pool["brier"] < pool["crm_brier"], t  # better than the CRM's own risk_score on the same rows
        assert pool["brier_ratio"] <= 1.10, (t, pool.to_dict())
