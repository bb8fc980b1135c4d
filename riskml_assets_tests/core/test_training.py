"""The risk model against the simulator's oracle: the pure pipeline (features -> cleaning -> split ->
balancing -> XGBoost -> calibration) must get close to the true loss probabilities on held-out deals."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from riskml_assets.core import evaluation, simulator, training
from riskml_assets.core import features as F
from riskml_assets.core import metrics as M
from riskml_assets.core.balancing import balance
from riskml_assets.core.cleaning import clean_examples
from riskml_assets.core.splits import split_examples

LABEL = F.LABEL


@pytest.fixture(scope="module")
def splits(acme, manifest):
    ex, stats = F.build_training_examples(acme.snapshots, acme.outcomes, acme.activities, manifest,
                                          partition_end="2026-11-23", window_weeks=52)
    assert stats["unavailable_features"] == {}
    clean, _, cstats = clean_examples(ex, manifest)
    assert cstats["rows_out"] > 20_000
    df = split_examples(clean, method="stratified", seed=0)
    parts = {name: df[df["split"] == name].reset_index(drop=True) for name in ("train", "validation", "test")}
    return parts


@pytest.fixture(scope="module")
def trained(splits, manifest):
    balanced, _ = balance(splits["train"], strategy="oversample", min_ratio=0.5, seed=0)
    artifact = training.train_xgb_classifier(balanced, splits["validation"], manifest)
    return artifact, balanced


def test_calibrated_model_is_close_to_the_oracle(acme, splits, trained):
    artifact, _ = trained
    valid, test = splits["validation"], splits["test"]
    p_val = training.predict_raw(artifact, valid)
    calibrator = evaluation.fit_risk_calibrator(p_val, valid[LABEL].to_numpy(dtype=int))
    p_test = evaluation.apply_calibrator(calibrator, training.predict_raw(artifact, test))

    y = test[LABEL].to_numpy(dtype=int)
    oracle = test["opportunity_id"].map(acme.truth.set_index("opportunity_id")["p_lost_true"]).to_numpy()
    assert len(y) > 3000 and not np.isnan(oracle).any()
    brier_model, brier_oracle = M.brier(y, p_test), M.brier(y, oracle)
    auc_model, auc_oracle = M.roc_auc(y, p_test), M.roc_auc(y, oracle)
    brier_base_true = M.brier(y, np.full(len(y), splits["train"][LABEL].mean()))
    brier_crm = M.brier(y, test["baseline_risk_score"].to_numpy(dtype=float))
    summary = (f"model brier {brier_model:.4f} auc {auc_model:.4f} | oracle brier {brier_oracle:.4f} "
               f"auc {auc_oracle:.4f} | base rate {brier_base_true:.4f} | CRM risk_score {brier_crm:.4f}")

    # not vacuous: knowing nothing is far from the oracle
    assert brier_base_true > 1.2 * brier_oracle, summary
    # the model gets close to the oracle ...
    assert brier_model <= 1.10 * brier_oracle, summary
    assert auc_model >= auc_oracle - 0.03, summary
    # ... and beats the CRM's own risk score
    assert brier_model < brier_crm, summary
    # the calibrated probabilities are honest on average
    assert abs(p_test.mean() - y.mean()) < 0.03, summary
    assert artifact["best_iteration"] > 10


def test_model_on_shuffled_labels_learns_nothing(splits, manifest):
    rng = np.random.default_rng(0)
    tv = pd.concat([splits["train"], splits["validation"]], ignore_index=True)
    tv[LABEL] = rng.permutation(tv[LABEL].to_numpy())
    train, valid = tv[tv["split"] == "train"], tv[tv["split"] == "validation"]
    artifact = training.train_xgb_classifier(train, valid, manifest)
    auc = M.roc_auc(valid[LABEL].to_numpy(dtype=int), training.predict_raw(artifact, valid))
    assert auc < 0.6
    # the very same code on the real labels is far better (the gate can tell them apart)
    real = training.train_xgb_classifier(splits["train"], splits["validation"], manifest)
    real_auc = M.roc_auc(splits["validation"][LABEL].to_numpy(dtype=int),
                         training.predict_raw(real, splits["validation"]))
    assert real_auc > 0.75 > auc + 0.1


def test_artifact_survives_json_round_trip(splits, trained):
    artifact, _ = trained
    test = splits["test"]
    p_before = training.predict_raw(artifact, test)
    text = json.dumps(artifact)  # plain JSON: no custom encoder needed
    loaded = json.loads(text)
    assert loaded == artifact
    training._BOOSTER_CACHE.clear()  # the loaded artifact must rebuild its booster from the JSON
    p_after = training.predict_raw(loaded, test)
    np.testing.assert_array_equal(p_before, p_after)
    assert p_after.shape == (len(test),) and np.all((p_after > 0) & (p_after < 1))
    assert training.artifact_size(artifact) == len(text)
    assert loaded["features"] == artifact["features"] and set(loaded["importance"]) == set(loaded["features"])
    assert sum(loaded["importance"].values()) == pytest.approx(1.0)


def test_unseen_categories_do_not_crash_prediction(splits, trained):
    artifact, _ = trained
    rows = splits["test"].head(200).copy()
    p_ref = training.predict_raw(artifact, rows)
    changed = rows.copy()
    changed.loc[changed.index[:100], "industry"] = "aerospace"  # never seen in training
    changed.loc[changed.index[:100], "stage"] = "legal_review"
    changed.loc[changed.index[100:150], "region"] = None
    p = training.predict_raw(artifact, changed)
    assert p.shape == (200,) and np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))
    np.testing.assert_array_equal(p[150:], p_ref[150:])  # other rows are unaffected
    assert not np.array_equal(p[:100], p_ref[:100])  # the change is not ignored either
    X = training.design_matrix(changed, artifact["features"], artifact["feature_kinds"], artifact["categories"])
    assert X["industry"].iloc[:100].isna().all()  # unseen -> missing, never a new category code
    assert list(X["industry"].cat.categories) == artifact["categories"]["industry"]
    with pytest.raises(KeyError, match="engagement"):
        training.predict_raw(artifact, rows.drop(columns=["engagement"]))


def test_training_is_deterministic(splits, manifest):
    train, valid, test = splits["train"], splits["validation"], splits["test"]
    params = training.XGBParams(n_estimators=150, seed=3)
    a = training.train_xgb_classifier(train, valid, manifest, params)
    b = training.train_xgb_classifier(train, valid, manifest, params)
    pa, pb = training.predict_raw(a, test), training.predict_raw(b, test)
    np.testing.assert_array_equal(pa, pb)
    assert a["booster_json"] == b["booster_json"]
    c = training.train_xgb_classifier(train, valid, manifest, training.XGBParams(n_estimators=150, seed=4))
    assert not np.array_equal(pa, training.predict_raw(c, test))  # the seed matters (subsampling)


def test_training_refuses_single_class(splits, manifest):
    train = splits["train"][splits["train"][LABEL] == 0]
    with pytest.raises(ValueError, match="single class"):
        training.train_xgb_classifier(train, splits["validation"], manifest)
