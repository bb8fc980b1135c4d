"""PSI drift of a new snapshot week against the training data (pure module, no dagster)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from riskml_assets.core import drift, scoring, simulator
from riskml_assets.core import features as F


# --------------------------------------------------------------------------------------------
# psi itself
# --------------------------------------------------------------------------------------------

def test_psi_of_identical_samples_is_zero_and_grows_with_the_shift():
    rng = np.random.default_rng(0)
    ref = rng.lognormal(10, 1, 20_000)
    assert drift.psi(ref, ref) == pytest.approx(0.0, abs=1e-12)
    values = [drift.psi(ref, rng.lognormal(10 + s, 1, 5_000)) for s in (0.0, 0.25, 0.5, 1.0)]
    assert values == sorted(values)
    assert values[0] < 0.01          # same distribution: sampling noise only
    assert 0.03 < values[1] < 0.15   # matches the research anchor (0.063 at 0.25 sd)
    assert values[3] > 0.25


def test_psi_bins_come_from_the_reference_and_open_at_both_ends():
    ref = np.arange(100.0)
    # everything far outside the reference range lands in the outer bins, nothing is lost
    assert drift.psi(ref, np.full(50, 1e9)) > 5
    assert drift.psi(ref, np.full(50, -1e9)) > 5


def test_psi_categorical_uses_frequencies_and_a_new_category_counts():
    ref = pd.Series(["a"] * 50 + ["b"] * 50)
    assert drift.psi(ref, pd.Series(["b", "a"] * 40)) == pytest.approx(0.0, abs=1e-12)
    new_cat = pd.Series(["a"] * 45 + ["b"] * 45 + ["c"] * 10)
    value = drift.psi(ref, new_cat)
    # c: (0.10 - 1e-4) * ln(0.10 / 1e-4) ~ 0.69, plus a small contribution of a and b
    assert 0.6 < value < 0.8
    assert drift.psi(ref, new_cat, kind="categorical") == value


def test_psi_counts_missing_values_as_their_own_bin():
    ref = pd.Series(np.linspace(0, 1, 1000))
    half_missing = pd.Series(np.r_[np.linspace(0, 1, 500), [np.nan] * 500])
    assert drift.psi(ref, half_missing) > 1.0
    assert drift.psi(half_missing, half_missing) == pytest.approx(0.0, abs=1e-12)


def test_psi_refuses_empty_samples():
    with pytest.raises(ValueError, match="rows in both"):
        drift.psi([], [1.0])


def test_expected_noise_matches_sampling_psi():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=50_000)
    sims = [drift.psi(ref, rng.normal(size=200)) for _ in range(200)]
    assert np.mean(sims) == pytest.approx(drift.expected_noise(10, 50_000, 200), rel=0.25)


# --------------------------------------------------------------------------------------------
# the report on simulator data: a planted shift fails, an unshifted week passes
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def weeks():
    """Training-window features of every snapshot (the reference) and the features of the last week."""
    sim = simulator.simulate_tenant(simulator.TenantSpec("acme", 60.0, 0))
    manifest = F.build_manifest()
    last = sim.snapshots["snapshot_date"].max()
    history = sim.snapshots[sim.snapshots["snapshot_date"] < last]
    feats, _ = scoring.compute_features(history, sim.activities, manifest)
    reference = feats[feats["snapshot_date"] >= last - pd.Timedelta(weeks=52)]
    return sim, manifest, reference, last


def _week_features(sim, manifest, last, mutate=None):
    snaps = sim.snapshots.copy()
    if mutate is not None:
        week = snaps["snapshot_date"] == last
        snaps.loc[week] = mutate(snaps.loc[week].copy())
    feats, _ = scoring.compute_features(snaps, sim.activities, manifest)
    return feats[feats["snapshot_date"] == last]


def test_unshifted_week_passes(weeks):
    sim, manifest, reference, last = weeks
    new = _week_features(sim, manifest, last)
    assert len(new) > 400
    report = drift.drift_report(reference, new, list(manifest), F.feature_kinds(manifest))
    summary = drift.drift_summary(report)
    assert summary["status"] == "ok", report.head(5).to_string()
    assert summary["max_psi"] < drift.WARN_PSI
    assert set(report.columns) >= {"feature", "psi", "status", "expected_noise"}
    assert len(report) == len(manifest)


def test_planted_deal_value_shift_trips_the_gate(weeks):
    sim, manifest, reference, last = weeks

    def triple(df):
        df["deal_value"] = df["deal_value"] * 3
        return df

    new = _week_features(sim, manifest, last, triple)
    report = drift.drift_report(reference, new, list(manifest), F.feature_kinds(manifest))
    row = report.set_index("feature").loc["log_deal_value"]
    assert row["status"] == "fail" and row["psi"] > drift.FAIL_PSI
    # worst first: the value itself and its change since the first snapshot (tripled this week)
    assert set(report["feature"].head(2)) == {"log_deal_value", "deal_value_change"}
    summary = drift.drift_summary(report)
    assert summary["status"] == "fail" and summary["worst_feature"] in {"log_deal_value", "deal_value_change"}
    # the features untouched by the shift stay quiet
    untouched = report[~report["feature"].isin(["log_deal_value", "deal_value_change"])]
    assert (untouched["status"] == "ok").all(), untouched.head().to_string()


def test_planted_close_date_shift_trips_the_gate(weeks):
    sim, manifest, reference, last = weeks

    def later(df):
        df["close_date"] = df["close_date"] + pd.Timedelta(days=120)
        return df

    new = _week_features(sim, manifest, last, later)
    report = drift.drift_report(reference, new, list(manifest), F.feature_kinds(manifest)).set_index("feature")
    assert report.loc["days_to_close", "status"] == "fail"


def test_thresholds_and_small_samples(weeks):
    sim, manifest, reference, last = weeks
    new = _week_features(sim, manifest, last)
    strict = drift.drift_report(reference, new, ["days_to_close"], {"days_to_close": "numeric"}, warn=0.0, fail=0.0)
    assert strict.loc[0, "status"] == "fail"
    tiny = new.head(20)
    capped = drift.drift_report(reference, tiny, ["stage"], {"stage": "categorical"}, warn=0.0, fail=0.0,
                                min_rows=100)
    assert capped.loc[0, "status"] == "warn" and "capped" in capped.loc[0, "note"]
    with pytest.raises(ValueError, match="warn <= fail"):
        drift.drift_report(reference, new, ["stage"], warn=0.3, fail=0.2)


def test_feature_missing_from_new_data_fails(weeks):
    sim, manifest, reference, last = weeks
    new = _week_features(sim, manifest, last).drop(columns=["engagement"])
    report = drift.drift_report(reference, new, ["engagement", "stage"], F.feature_kinds(manifest)).set_index("feature")
    assert report.loc["engagement", "status"] == "fail"
    assert "missing from the new data" in report.loc["engagement", "note"]
    assert report.loc["stage", "status"] == "ok"
