"""Cleaning, splitting and balancing of training examples (pure modules, no dagster)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from riskml_assets.core import features as F
from riskml_assets.core import simulator
from riskml_assets.core.balancing import balance, class_ratio
from riskml_assets.core.cleaning import clean_examples
from riskml_assets.core.splits import SPLITS, split_examples, split_stats

LABEL = F.LABEL


@pytest.fixture(scope="module")
def examples(manifest):
    sim = simulator.simulate_tenant(simulator.TenantSpec("prep", 30.0, 3), weeks=30)
    ex, stats = F.build_training_examples(sim.snapshots, sim.outcomes, sim.activities, manifest,
                                          partition_end="2026-11-21", window_weeks=30)
    assert stats["unavailable_features"] == {}
    return ex


# --------------------------------------------------------------------------------------------
# Cleaning


def test_clean_examples_drops_bad_rows_with_reasons(examples, manifest):
    df = examples.head(400).copy().reset_index(drop=True)
    df["row_id"] = np.arange(len(df))
    clean0, dropped0, _ = clean_examples(df, manifest)
    assert len(dropped0) == 0 and len(clean0) == len(df)  # the simulator's rows are all fine

    bad = {
        3: "probability_out_of_range", 4: "probability_out_of_range",
        10: "non_finite", 11: "non_finite",
        20: "missing_critical", 21: "missing_critical",
        30: "missing_label",
    }
    df.loc[3, ["raw_probability", "crm_probability"]] = 150.0
    df.loc[4, ["raw_probability", "crm_probability"]] = -1.0
    df.loc[10, "engagement"] = np.inf
    df.loc[11, "days_since_last_activity"] = -np.inf
    df.loc[20, "days_to_close"] = np.nan
    df.loc[21, "stage"] = None
    df[LABEL] = df[LABEL].astype("float64")
    df.loc[30, LABEL] = np.nan
    # a row that breaks two rules is dropped for the first one
    df.loc[40, ["raw_probability", "crm_probability"]] = 150.0
    df.loc[40, "days_to_close"] = np.nan
    bad[40] = "probability_out_of_range"
    # tolerated: NaN in non-critical numeric features, a missing categorical, probability at the bounds
    df.loc[50, "engagement"] = np.nan
    df.loc[51, "days_since_last_activity"] = np.nan
    df.loc[52, "industry"] = None
    df.loc[53, ["raw_probability", "crm_probability"]] = 100.0
    df.loc[54, ["raw_probability", "crm_probability"]] = 0.0

    clean, dropped, stats = clean_examples(df, manifest)
    assert sorted(dropped["row_id"]) == sorted(bad)
    assert dict(zip(dropped["row_id"], dropped["drop_reason"])) == bad
    assert sorted(clean["row_id"]) == sorted(set(range(len(df))) - set(bad))
    assert stats["rows_in"] == len(df) and stats["rows_out"] == len(df) - len(bad)
    assert stats["rows_dropped"] == len(bad)
    assert stats["drop_share"] == pytest.approx(len(bad) / len(df))
    assert stats["drop_reasons"] == {"probability_out_of_range": 3, "non_finite": 2, "missing_critical": 2,
                                     "missing_label": 1}
    c = clean.set_index("row_id")
    assert np.isnan(c.loc[50, "engagement"]) and np.isnan(c.loc[51, "days_since_last_activity"])
    assert c.loc[52, "industry"] == "__missing__"
    assert c.loc[53, "crm_probability"] == 100.0
    assert stats["null_rates"]["engagement"] == pytest.approx(1 / len(clean))
    # kept rows are untouched apart from the missing categorical
    keep = df.drop(index=list(bad)).drop(index=52).set_index("row_id")
    pd.testing.assert_frame_equal(c.drop(index=52)[keep.columns], keep, check_dtype=False)


def test_clean_examples_explicit_critical_list(examples, manifest):
    df = examples.head(50).copy()
    df.iloc[0, df.columns.get_loc("engagement")] = np.nan
    clean, dropped, _ = clean_examples(df, manifest, critical=("engagement",))
    assert len(dropped) == 1 and dropped["drop_reason"].iloc[0] == "missing_critical"
    # a critical feature the frame does not have: nothing can be scored
    clean, dropped, stats = clean_examples(df.drop(columns=["days_to_close"]), manifest)
    assert len(clean) == 0 and stats["drop_reasons"] == {"missing_critical": 50}


# --------------------------------------------------------------------------------------------
# Splits


def _by_opp(df):
    return df.groupby("opportunity_id").agg(split=("split", "first"), label=(LABEL, "max"),
                                            closed_at=("closed_at", "max"), n_splits=("split", "nunique"))


def test_stratified_split(examples):
    out = split_examples(examples, method="stratified", seed=0, tenant="prep")
    assert len(out) == len(examples) and set(out["split"]) == set(SPLITS)
    pd.testing.assert_frame_equal(out.drop(columns="split"), examples)
    g = _by_opp(out)
    assert (g["n_splits"] == 1).all()
    assert split_stats(out)["opportunities_in_several_splits"] == 0
    n = len(g)
    assert n > 700
    # a fixed cut of a hash: the shares match the fractions up to sampling noise (3.5 binomial sd)
    shares = g["split"].value_counts(normalize=True)
    for name, frac in zip(SPLITS, (0.70, 0.15, 0.15)):
        assert shares[name] == pytest.approx(frac, abs=3.5 * np.sqrt(frac * (1 - frac) / n))
    overall_opp = g["label"].mean()
    assert 0.2 < overall_opp < 0.8
    for name in SPLITS:  # the same expected lost rate in every split
        k = int((g["split"] == name).sum())
        sd = np.sqrt(overall_opp * (1 - overall_opp) / k)
        assert g.loc[g["split"] == name, "label"].mean() == pytest.approx(overall_opp, abs=3.5 * sd)

    again = split_examples(examples, method="stratified", seed=0, tenant="prep")
    pd.testing.assert_series_equal(again["split"], out["split"])
    other = split_examples(examples, method="stratified", seed=1, tenant="prep")
    assert (other["split"] != out["split"]).mean() > 0.2
    other_tenant = split_examples(examples, method="stratified", seed=0, tenant="other")
    assert (other_tenant["split"] != out["split"]).mean() > 0.2
    # the input row order does not matter, only the opportunities
    shuffled = split_examples(examples.sample(frac=1.0, random_state=5), method="stratified", seed=0, tenant="prep")
    pd.testing.assert_series_equal(shuffled["split"].sort_index(), out["split"].sort_index())


def test_stratified_split_is_stable_across_weeks(manifest):
    """Issue 9 item 8: next week's examples (new opportunities added, old ones leaving the window) keep
    every known opportunity in the split it was in, whatever else is in the frame."""
    sim = simulator.simulate_tenant(simulator.TenantSpec("stable", 30.0, 4), weeks=30)
    weeks = {}
    for end in ("2026-11-14", "2026-11-21"):
        ex, _ = F.build_training_examples(sim.snapshots, sim.outcomes, sim.activities, manifest,
                                          partition_end=end, window_weeks=20)
        weeks[end] = _by_opp(split_examples(ex, tenant="stable"))["split"]
    a, b = weeks["2026-11-14"], weeks["2026-11-21"]
    both = a.index.intersection(b.index)
    assert len(both) > 300 and len(b.index.difference(a.index)) > 10  # new opportunities closed meanwhile
    assert len(a.index.difference(b.index)) > 0  # and some left the window
    assert (a[both] == b[both]).all(), f"{int((a[both] != b[both]).sum())} opportunities changed split"
    # so last week's train/validation opportunities never reach this week's test split
    assert not set(a[a != "test"].index) & set(b[b == "test"].index)
    # and a subset of the opportunities (any other frame) gets the same splits too
    sub = split_examples(_sample_opps(sim, both[:50]), tenant="stable")
    assert (sub.groupby("opportunity_id")["split"].first() == b[both[:50]]).all()


def _sample_opps(sim, ids):
    rows = pd.DataFrame({"opportunity_id": list(ids), LABEL: 0, "closed_at": pd.Timestamp("2026-01-01"),
                         "snapshot_date": pd.Timestamp("2026-01-01")})
    return rows


def test_walk_forward_split(examples):
    out = split_examples(examples, method="walk_forward")
    g = _by_opp(out)
    assert (g["n_splits"] == 1).all()
    closed = {name: g.loc[g["split"] == name, "closed_at"] for name in SPLITS}
    assert closed["test"].min() >= closed["validation"].max() >= closed["train"].max()
    assert closed["validation"].min() >= closed["train"].max()
    # every test opportunity's outcome is known no earlier than any train opportunity's
    te = out[out["split"] == "test"]
    tr = out[out["split"] == "train"]
    assert te["closed_at"].min() >= tr["closed_at"].max()
    shares = g["split"].value_counts(normalize=True)
    for name, frac in zip(SPLITS, (0.70, 0.15, 0.15)):
        assert shares[name] == pytest.approx(frac, abs=0.005)


@pytest.mark.parametrize("fractions", [(0.7, 0.2, 0.2), (0.5, 0.3, 0.1), (1.2, -0.1, -0.1), (0.8, -0.1, 0.3)])
def test_invalid_fractions_raise(examples, fractions):
    with pytest.raises(ValueError, match="fractions"):
        split_examples(examples, fractions=fractions)


def test_unknown_split_method_raises(examples):
    with pytest.raises(ValueError, match="random"):
        split_examples(examples, method="random")


# --------------------------------------------------------------------------------------------
# Balancing


def _imbalanced(n=1000, pos_share=0.1, seed=0):
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=int)
    y[rng.choice(n, int(n * pos_share), replace=False)] = 1
    return pd.DataFrame({"row_id": np.arange(n), "x": rng.normal(size=n), "opportunity_id": [f"o{i // 3}" for i in range(n)],
                         LABEL: y.astype("int8")})


def _assert_real_rows(out, src):
    """Every output row is an input row, unchanged."""
    assert out["row_id"].isin(src["row_id"]).all()
    back = src.set_index("row_id").loc[out["row_id"]].reset_index()
    pd.testing.assert_frame_equal(out[src.columns].reset_index(drop=True), back[src.columns])


@pytest.mark.parametrize("target", [1.0, 0.5])
def test_oversample_reaches_target(target):
    df = _imbalanced()
    n_pos, n_neg = int(df[LABEL].sum()), int((df[LABEL] == 0).sum())
    out, info = balance(df, strategy="oversample", target_ratio=target, min_ratio=1.0, seed=0)
    pos, neg = int(out[LABEL].sum()), int((out[LABEL] == 0).sum())
    assert neg == n_neg  # majority untouched
    assert abs(pos - target * n_neg) <= 1
    assert info["applied"] and info["ratio_after"] == pytest.approx(target, abs=1 / n_neg)
    assert info["ratio_before"] == pytest.approx(n_pos / n_neg)
    assert info["rows_after"] == len(out) == pos + neg
    _assert_real_rows(out, df)
    assert set(df["row_id"]) <= set(out["row_id"])  # every original row is kept
    assert int(out["resampled"].sum()) == len(out) - len(df)  # the rest are duplicates, marked
    assert out.loc[out["resampled"], LABEL].eq(1).all()


@pytest.mark.parametrize("target", [1.0, 0.5])
def test_undersample_reaches_target(target):
    df = _imbalanced()
    n_pos = int(df[LABEL].sum())
    out, info = balance(df, strategy="undersample", target_ratio=target, min_ratio=1.0, seed=0)
    pos, neg = int(out[LABEL].sum()), int((out[LABEL] == 0).sum())
    assert pos == n_pos  # minority untouched
    assert abs(pos - target * neg) <= 1
    assert class_ratio(out[LABEL]) == pytest.approx(target, abs=1 / neg)
    _assert_real_rows(out, df)
    assert not out["row_id"].duplicated().any()


def test_balance_is_deterministic_per_seed():
    df = _imbalanced()
    a, _ = balance(df, strategy="undersample", min_ratio=1.0, seed=0)
    b, _ = balance(df, strategy="undersample", min_ratio=1.0, seed=0)
    c, _ = balance(df, strategy="undersample", min_ratio=1.0, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert set(a["row_id"]) != set(c["row_id"])


def test_none_and_already_balanced_are_left_alone():
    df = _imbalanced()
    out, info = balance(df, strategy="none", seed=0)
    pd.testing.assert_frame_equal(out, df)
    assert not info["applied"] and info["rows_after"] == len(df)

    near = _imbalanced(pos_share=0.45)  # ratio 0.82 >= min_ratio 0.5
    for strategy in ("oversample", "undersample"):
        out, info = balance(near, strategy=strategy, target_ratio=1.0, min_ratio=0.5, seed=0)
        pd.testing.assert_frame_equal(out, near)
        assert not info["applied"] and info["ratio_after"] == pytest.approx(45 / 55)
    # ... but a 10% positive frame is below min_ratio 0.5 and gets balanced
    out, info = balance(df, strategy="oversample", target_ratio=1.0, min_ratio=0.5, seed=0)
    assert info["applied"] and class_ratio(out[LABEL]) == pytest.approx(1.0)


def test_balance_rejects_bad_arguments():
    df = _imbalanced()
    with pytest.raises(ValueError, match="smote"):
        balance(df, strategy="smote")
    with pytest.raises(ValueError, match="target_ratio"):
        balance(df, strategy="oversample", target_ratio=0.0)
    with pytest.raises(ValueError, match="target_ratio"):
        balance(df, strategy="oversample", target_ratio=1.5)
