"""Issue 9 item 8: a fair champion/challenger comparison across two consecutive weeks of one tenant.

Real parts: the simulator, the pure training path with the stable splits, real XGBoost models and a real
MLflow SQLite registry. The champion is week 1's model, the challenger week 2's.
"""
from __future__ import annotations

import functools

import pytest

from riskml_assets import registry as R
from riskml_assets.core import evaluation, promotion, simulator, training
from riskml_assets.core import features as F
from riskml_assets.core.cleaning import clean_examples
from riskml_assets.core.splits import split_examples

LABEL = F.LABEL
TENANT = "fairco"
WEEKS = ("2026-11-16", "2026-11-23")  # partition ends of two consecutive weeks
PARAMS = training.XGBParams(n_estimators=120, learning_rate=0.1, early_stopping_rounds=20, seed=0)


@functools.lru_cache(maxsize=1)
def _sim():
    return simulator.simulate_tenant(simulator.TenantSpec(TENANT, 14.0, 11), weeks=40)


def _week(end: str, **split_kw) -> dict:
    sim, manifest = _sim(), F.build_manifest()
    ex, _ = F.build_training_examples(sim.snapshots, sim.outcomes, sim.activities, manifest,
                                      partition_end=end, window_weeks=26)
    clean, _, _ = clean_examples(ex, manifest)
    df = split_examples(clean, tenant=TENANT, **split_kw)
    parts = {n: df[df["split"] == n].reset_index(drop=True) for n in ("train", "validation", "test")}
    art = training.train_xgb_classifier(parts["train"], parts["validation"], manifest, PARAMS)
    cal = evaluation.fit_risk_calibrator(training.predict_raw(art, parts["validation"]),
                                         parts["validation"][LABEL].to_numpy(int))
    trained = sorted(set(parts["train"]["opportunity_id"].astype(str)) | set(parts["validation"]["opportunity_id"].astype(str)))
    return {"df": df, "parts": parts, "artifact": art, "calibrator": cal, "manifest": manifest, "trained": trained}


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    return R.ModelRegistry(f"sqlite:///{tmp_path_factory.mktemp('fair') / 'mlflow.db'}")


def _register(reg, tenant, w):
    sim = _sim()
    return R.register_risk_candidate(
        reg, tenant, artifact=w["artifact"], calibrator=w["calibrator"], manifest=w["manifest"],
        test=w["parts"]["test"], metrics={}, report_md="", gates_passed=True, floors={"min_auc": 0.5},
        snapshots_history=sim.snapshots, activities=sim.activities, n_boot=200,
        trained_opportunities=w["trained"])


def test_two_consecutive_weeks_compare_only_on_opportunities_neither_model_trained_on(reg):
    w1, w2 = _week(WEEKS[0]), _week(WEEKS[1])
    # the same opportunity keeps its split across the two weeks
    s1 = w1["df"].groupby("opportunity_id")["split"].first()
    s2 = w2["df"].groupby("opportunity_id")["split"].first()
    both = s1.index.intersection(s2.index)
    assert len(both) > 200 and len(s2.index.difference(s1.index)) > 0
    assert (s1[both] == s2[both]).all()

    first = _register(reg, TENANT, w1)
    assert first["decision"]["first_model"] and first["champion_after"] == first["version"]
    champ = reg.load(TENANT, "risk", alias="champion")
    assert champ["trained_opportunities"] == w1["trained"]  # recorded with the version

    second = _register(reg, TENANT, w2)
    d = second["decision"]
    comp = d["comparison"]
    rows, info = promotion.comparison_set(w2["parts"]["test"], champ["trained_opportunities"], w2["trained"])
    assert info == comp and d["n_rows"] == comp["rows"] and d["n_groups"] == comp["opportunities"]
    ids = set(rows["opportunity_id"].astype(str))
    assert not ids & set(w1["trained"]) and not ids & set(w2["trained"])  # zero overlap with either model
    # with stable splits nothing had to be dropped: the whole test split is a fair comparison set
    assert comp["excluded_opportunities"] == 0 and comp["opportunities"] == comp["test_opportunities"] > 50
    assert "comparison set" in d["reason"]
    assert reg.version_tags(TENANT, "risk", second["version"])["riskml.decision.comparison_opportunities"] == \
        str(comp["opportunities"])


def test_a_champion_trained_on_other_splits_is_never_scored_on_its_training_rows(reg):
    """A champion trained with another split (seed 1: a reshuffle, as before stable splits) saw most of
    this week's test opportunities; they are dropped from the comparison."""
    tenant = TENANT + "-reshuffled"
    w1, w2 = _week(WEEKS[0], seed=1), _week(WEEKS[1])
    _register(reg, tenant, w1)
    d = _register(reg, tenant, w2)["decision"]
    comp = d["comparison"]
    test_ids = set(w2["parts"]["test"]["opportunity_id"].astype(str))
    seen = test_ids & set(w1["trained"])
    assert comp["excluded_champion"] == len(seen) > 0.5 * len(test_ids)
    assert comp["opportunities"] == len(test_ids - set(w1["trained"])) > 0
    assert comp["excluded_challenger"] == 0
    assert d["n_groups"] == comp["opportunities"] and d["n_rows"] == comp["rows"] < comp["test_rows"]
