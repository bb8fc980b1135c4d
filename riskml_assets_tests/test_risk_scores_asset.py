"""risk_scores on a real instance (issue 11 item 2): the windowed inputs arrive as polars frames (one load per
input), the champion's features are computed once for scoring and drift, and the scores equal the core
scoring of the same stored history."""
from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import polars as pl
import pytest

from riskml_assets.core import drift as D
from riskml_assets.core import evaluation, simulator, training
from riskml_assets.core import features as F
from riskml_assets.core.scoring import score_open_opportunities

from .conftest import Platform

TENANT = "scoreco"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _champion():
    """A small XGBoost risk model + calibrator trained on another simulated tenant (same contract columns)."""
    sim = simulator.simulate_tenant(simulator.TenantSpec("trainco", 15.0, 9), weeks=30)
    manifest = F.build_manifest(snapshots=sim.snapshots)
    ex, _ = F.build_training_examples(sim.snapshots, sim.outcomes, sim.activities, manifest,
                                      partition_end="2026-11-23", window_weeks=52)
    valid = ex["opportunity_id"].map(hash) % 4 == 0
    art = training.train_xgb_classifier(ex[~valid], ex[valid], manifest, training.XGBParams(n_estimators=60))
    cal = evaluation.fit_risk_calibrator(training.predict_raw(art, ex[valid]), ex.loc[valid, F.LABEL].to_numpy(int))
    split = ex.assign(split=np.where(valid, "validation", "train"))
    return art, cal, manifest, D.reference_from_train(split, manifest)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    root = tmp_path_factory.mktemp("scores")
    (root / "dagster").mkdir()
    # three stored weeks against a champion trained on a year: the drift gate trips (history features are
    # truncated) -- it warns here, the test is about how risk_scores computes, not about this draw
    (root / "gates.yaml").write_text("risk_scores_drift: {action: warn}\n")
    with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
        p = Platform(root, instance)
        simulator.write_tenant(simulator.simulate_tenant(simulator.TenantSpec(TENANT, 12.0, 4), weeks=3),
                               p.incoming, p.oracle)
        p.ingest_all(TENANT)
        art, cal, manifest, reference = _champion()
        reg = p.resources["model_registry"].get()
        version = reg.register(TENANT, "risk", art, cal, manifest, {"auc": 0.7}, "test champion", True,
                               reference_data=reference)
        reg.promote(TENANT, "risk", version, {"should_deploy": True, "reason": "test champion"})
        yield p, reg


def _stored(p: Platform, asset: str) -> pd.DataFrame:
    files = sorted((p.root / "assets" / asset / TENANT).glob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def test_risk_scores_reads_polars_windows_computes_features_once_and_matches_core_scoring(scored, monkeypatch):
    p, reg = scored
    week = p.weeks(TENANT)[-1]
    calls = []
    real = F.build_base_frame

    def counting(snapshots, *args, **kwargs):  # the real function, counted
        calls.append(type(snapshots).__module__.split(".")[0])
        return real(snapshots, *args, **kwargs)

    monkeypatch.setattr(F, "build_base_frame", counting)
    res = p.run("score_job", TENANT, week, QUIET)
    assert res.success
    # once for scoring *and* drift (before: once for scoring, once more over the whole history for drift),
    # on polars frames straight from the IO manager
    assert calls == ["polars"]
    got = p.load("risk_scores", TENANT, week)
    monkeypatch.setattr(F, "build_base_frame", real)
    history, acts = _stored(p, "risk_snapshots"), _stored(p, "activity_events")
    start = pd.Timestamp(week)
    latest = history[(history["snapshot_date"] >= start) & (history["snapshot_date"] < start + pd.Timedelta(days=7))]
    want = score_open_opportunities(history, acts, latest, reg.load(TENANT, "risk"))
    assert len(got) == latest["opportunity_id"].nunique() > 50
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_exact=True, check_dtype=False)
    # the drift gate compared the scored rows' features with the registered train rows
    [mat] = [e for e in res.get_asset_materialization_events()]
    meta = mat.materialization.metadata
    # every model feature is compared; three weeks of history truncate the history features (age, stage age,
    # activity counts) against a year of training rows: the gate sees it
    table = meta["drift"].value
    assert all(f"| {f} " in table for f in reg.load(TENANT, "risk")["artifact"]["features"])
    assert meta["max_psi"].value > 0.25 and "| opportunity_age_days     | numeric     |" in table
    evaluations = {e.check_name: e.passed for e in
                   (ev.event_specific_data for ev in res.all_events if ev.event_type_value == "ASSET_CHECK_EVALUATION")}
    assert set(evaluations) == {"risk_scores_drift", "risk_scores_drift_warn"}


def test_the_drift_reference_is_the_train_rows_real_only_and_sampled():
    rows = pd.DataFrame({"opportunity_id": [f"o{i}" for i in range(30)], "snapshot_date": pd.Timestamp("2026-11-16"),
                         "split": ["train"] * 20 + ["validation"] * 5 + ["test"] * 5,
                         "is_synthetic": [False] * 15 + [True] * 5 + [False] * 10,
                         "days_to_close": np.arange(30.0), "label": 0, "unpinned": 1.0})
    ref = D.reference_from_train(rows, {"days_to_close": {}, "stage": {}})
    assert list(ref.columns) == ["opportunity_id", "snapshot_date", "days_to_close"]
    assert sorted(ref["opportunity_id"]) == sorted(f"o{i}" for i in range(15))  # train, real rows only
    small = D.reference_from_train(rows, {"days_to_close": {}}, max_rows=4)
    assert len(small) == 4 and small.equals(D.reference_from_train(rows, {"days_to_close": {}}, max_rows=4))
    with pytest.raises(ValueError, match="split"):
        D.reference_from_train(rows.drop(columns="split"), {"days_to_close": {}})
