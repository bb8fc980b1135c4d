"""Synthetic augmentation of the train split and SMOTE balancing (pure modules, no dagster)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from riskml_assets.core import augmentation as A
from riskml_assets.core import features as F
from riskml_assets.core import simulator
from riskml_assets.core import synthetic_quality as Q
from riskml_assets.core.balancing import balance, class_ratio
from riskml_assets.core.cleaning import clean_examples
from riskml_assets.core.splits import split_examples

LABEL = F.LABEL
TARGET = 3000  # enough rows to judge the quality of each method, small enough to keep the suite fast


@pytest.fixture(scope="module")
def splits_df(initech_splits):
    return initech_splits


@pytest.fixture(scope="module")
def train(splits_df):
    return splits_df[splits_df["split"] == "train"].reset_index(drop=True)


@pytest.fixture(scope="module")
def by_method(train, manifest):
    return {m: A.augment(train, manifest, methods=[m], target_rows=TARGET, seed=0) for m in A.METHODS}


def _features(manifest, df):
    num = [c for c in manifest if c in df.columns and manifest[c]["kind"] == "numeric"]
    cat = [c for c in manifest if c in df.columns and manifest[c]["kind"] == "categorical"]
    return num, cat


def _shuffled(real, manifest, n, rng):
    num, cat = _features(manifest, real)
    out = real.sample(n, replace=True, random_state=1).reset_index(drop=True)[num + cat + [LABEL]]
    for c in num + cat:
        out[c] = rng.permutation(out[c].to_numpy())
    return out


def _swapped(real, manifest, n, rng):
    num, cat = _features(manifest, real)
    out = real.sample(n, replace=True, random_state=1).reset_index(drop=True)[num + cat + [LABEL]]
    out["risk_commercial"], out["risk_timeline"] = out["risk_timeline"].to_numpy(), out["risk_commercial"].to_numpy()
    return out


# --------------------------------------------------------------------------------------------
# synthetic rows never reach validation / test


def test_augment_refuses_non_train_rows(splits_df, manifest):
    with pytest.raises(ValueError, match="train split only"):
        A.augment(splits_df, manifest, target_rows=TARGET)
    with pytest.raises(ValueError, match="real rows only"):
        A.augment(splits_df[splits_df["split"] == "train"].assign(is_synthetic=True), manifest)
    with pytest.raises(ValueError, match="train split only"):
        balance(splits_df, strategy="smote", features=manifest, min_ratio=1.0)


CONFIGS = [
    {"methods": ["smote"]}, {"methods": ["copula"]}, {"methods": ["rules"]},
    {"methods": list(A.METHODS)}, {"methods": ["copula", "rules"], "target_rows": 1500},
    {"methods": ["broken"], "generators": {"broken": _shuffled}},
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "+".join(c["methods"]))
def test_validation_and_test_stay_real_whatever_the_config(splits_df, manifest, config):
    kwargs = {"target_rows": TARGET, "seed": 0, **config}
    out, info = A.augment_splits(splits_df, manifest, **kwargs)
    n_train = int((splits_df["split"] == "train").sum())
    assert info["synthetic_rows"] == kwargs["target_rows"] - n_train > 0
    held_out = out[out["split"] != "train"]
    assert not held_out["is_synthetic"].any()
    assert held_out[A.METHOD_COLUMN].isna().all()
    # validation and test are exactly the input rows
    ref = splits_df[splits_df["split"] != "train"].reset_index(drop=True)
    pd.testing.assert_frame_equal(held_out[ref.columns].reset_index(drop=True), ref)
    syn = out[out["is_synthetic"]]
    assert len(syn) == info["synthetic_rows"] and (syn["split"] == "train").all()
    assert not set(syn["opportunity_id"]) & set(splits_df["opportunity_id"])
    # ... and balancing afterwards still only adds train rows
    bal, binfo = balance(out[out["split"] == "train"], strategy="smote", features=manifest, min_ratio=1.0, seed=0)
    assert (bal["split"] == "train").all()


def test_skip_when_real_rows_reach_the_target(train, manifest):
    out, info = A.augment(train, manifest, target_rows=len(train), seed=0)
    assert info["skipped"] and "already reach the target" in info["reason"]
    assert info["synthetic_rows"] == 0 and not out["is_synthetic"].any()
    pd.testing.assert_frame_equal(out[train.columns], train)
    out, info = A.augment(train, manifest, target_rows=len(train) + 1, methods=["copula"], seed=0)
    assert not info["skipped"] and info["synthetic_rows"] == 1


# --------------------------------------------------------------------------------------------
# each method: right rows, flagged, passing the quality gates


@pytest.mark.parametrize("method", A.METHODS)
def test_each_method_passes_the_quality_gates(by_method, train, manifest, method):
    out, info = by_method[method]
    assert len(out) == TARGET and info["synthetic_rows"] == TARGET - len(train)
    real, syn = out[~out["is_synthetic"]], out[out["is_synthetic"]]
    pd.testing.assert_frame_equal(real[train.columns], train)  # real rows untouched
    expected = {"smote": {"smotenc"}, "copula": {"copula"}, "rules": {"rules"}}[method]
    assert set(syn[A.METHOD_COLUMN]) == expected
    assert syn["opportunity_id"].is_unique and syn["opportunity_id"].str.startswith("syn-").all()
    assert set(syn[LABEL].unique()) <= {0, 1}
    q = info["quality"][method]
    assert q["passed"], q["failures"]
    assert q["impossible_rows"] == 0 and Q.impossible_combinations(syn, manifest) == []
    assert q["max_ks"] <= Q.DEFAULT_KS_MAX and q["max_category_tvd"] <= Q.DEFAULT_CAT_MAX
    assert q["corr_distance"] <= Q.DEFAULT_CORR_MAX
    # the same verdict recomputed independently
    again = A.method_quality(real, syn, manifest, rules=A.load_rules())["evaluation"]
    assert again["passed"] and again["max_ks"] == pytest.approx(q["max_ks"])
    assert info["methods"][method]["seconds"] > 0


def test_constrained_block_keeps_its_empirical_marginals():
    """A block tied by impossible-combination rules is filled with whole real tuples. Every real tuple
    must be about equally likely: a nearest-neighbour snap in normal-score space favours isolated tuples
    and shifted the marginals of skewed, tied, partly missing features (it failed the KS gate on the
    committed sample tenant)."""
    rng = np.random.default_rng(3)
    n = 1500
    days = np.where(rng.random(n) < 0.2, np.nan, np.floor(rng.exponential(12, n)))  # skewed, tied, missing
    c30 = np.where(np.isnan(days), 0, np.where(days < 30, rng.integers(1, 6, n), 0)).astype(float)
    eng = np.where(np.isnan(days), 0.0, rng.gamma(2.0, 1.0, n) + 0.01)
    other = rng.normal(size=n) + np.nan_to_num(days, nan=60) / 20
    X = pd.DataFrame({"days_since_last_activity": days, "activity_count_30d": c30, "engagement": eng, "other": other})
    prof = A.Profile({}, list(X.columns), [])
    prof.integer = {"days_since_last_activity", "activity_count_30d"}
    prof.blocks = [["days_since_last_activity", "activity_count_30d", "engagement"]]
    cop = A._fit_copula(X, prof, np.random.default_rng(0))
    syn = cop.sample(60_000, np.random.default_rng(1))
    from scipy import stats
    for c in ("days_since_last_activity", "activity_count_30d", "engagement"):
        real_v, syn_v = X[c].fillna(-1).to_numpy(), syn[c].fillna(-1).to_numpy()
        assert stats.ks_2samp(real_v, syn_v).statistic < 0.035, c  # sampling noise alone ~0.035 at n=1500
        assert abs(np.isnan(syn[c]).mean() - X[c].isna().mean()) < 0.02, c
    few = cop.sample(600, np.random.default_rng(2))  # fewer synthetic than real rows: still unbiased
    for c in ("days_since_last_activity", "engagement"):
        assert abs(few[c].isna().mean() - X[c].isna().mean()) < 0.04, c
        assert stats.ks_2samp(X[c].fillna(-1), few[c].fillna(-1)).statistic < 0.08, c
    # whole tuples: every synthetic (days, count, engagement) triple exists among the real rows
    real_t = set(map(tuple, X[["days_since_last_activity", "activity_count_30d", "engagement"]].fillna(-1).to_numpy()))
    syn_t = set(map(tuple, syn[["days_since_last_activity", "activity_count_30d", "engagement"]].fillna(-1).to_numpy()))
    assert syn_t <= real_t
    # and the block still moves with the rest: its dependence on `other` keeps its sign and most of its size
    r_real = stats.spearmanr(X["other"], X["days_since_last_activity"].fillna(60)).statistic
    r_syn = stats.spearmanr(syn["other"], syn["days_since_last_activity"].fillna(60)).statistic
    assert r_real > 0.3 and r_syn > 0.6 * r_real


def test_default_methods_pass_the_gates_on_the_committed_sample_tenant(manifest):
    import glob
    from pathlib import Path
    d = Path(__file__).resolve().parents[2] / "data" / "sample" / "incoming" / "demo"
    load = lambda kind: pd.concat([pd.read_parquet(f) for f in sorted(glob.glob(str(d / f"{kind}-*.parquet")))],
                                  ignore_index=True)
    ex, _ = F.build_training_examples(load("snapshots"), load("outcomes"), load("activities"), manifest,
                                      partition_end="2026-11-23", window_weeks=52)
    clean, _, _ = clean_examples(ex, manifest)
    sp = split_examples(clean, seed=0)
    train = sp[sp["split"] == "train"].reset_index(drop=True)
    assert len(train) < A.DEFAULT_TARGET_ROWS
    _, info = A.augment(train, manifest, methods=A.DEFAULT_METHODS, seed=0)
    assert info["synthetic_rows"] > 0
    for method, q in info["quality"].items():
        assert q["passed"], (method, q["failures"])


def test_meta_columns_of_synthetic_rows_are_consistent(by_method):
    out, _ = by_method["copula"]
    syn = out[out["is_synthetic"]]
    np.testing.assert_array_equal(syn["raw_probability"], syn["crm_probability"])
    np.testing.assert_array_equal(syn["baseline_risk_score"], syn["heuristic_risk_score"])
    np.testing.assert_allclose(syn["deal_value"], np.expm1(syn["log_deal_value"]), atol=0.01)
    assert ((syn[LABEL] == 1) == (syn["outcome"] == "lost")).all()
    assert syn["actual_revenue"].isna().all()  # no revenue target is invented
    assert syn["snapshot_date"].notna().all() and (syn["closed_at"] > syn["snapshot_date"]).all()
    assert syn["opportunity_id"].iloc[0] == "syn-copula-000001"
    stage_pos = {s: i for i, s in enumerate(("prospecting", "qualification", "proposal", "negotiation", "commit"))}
    assert (syn["stage"].map(stage_pos) == syn["stage_index"]).all()


def test_copula_keeps_class_shares_and_missing_rate(by_method, train):
    out, _ = by_method["copula"]
    syn = out[out["is_synthetic"]]
    assert syn[LABEL].mean() == pytest.approx(train[LABEL].mean(), abs=1 / len(syn))
    assert syn["days_since_last_activity"].isna().mean() == pytest.approx(
        train["days_since_last_activity"].isna().mean(), abs=0.04)
    assert syn["days_since_last_activity"].isna().mean() > 0.05
    # integer features keep integer values; the activity features form one block of real tuples
    assert (syn["activity_count_30d"] % 1 == 0).all() and (syn["close_date_slips"] % 1 == 0).all()


def test_smote_fills_the_minority_first(manifest, train):
    lost = train[train[LABEL] == 1]
    skewed = pd.concat([train[train[LABEL] == 0], lost.iloc[: len(lost) // 3]], ignore_index=True)
    n0, n1 = int((skewed[LABEL] == 0).sum()), int((skewed[LABEL] == 1).sum())
    out, info = A.augment(skewed, manifest, methods=["smote"], target_rows=len(skewed) + (n0 - n1) + 100, seed=0)
    syn = out[out["is_synthetic"]]
    assert int((syn[LABEL] == 1).sum()) >= n0 - n1  # the gap is filled with minority rows
    counts = out[LABEL].value_counts()
    assert abs(counts[0] - counts[1]) <= 100


@pytest.mark.parametrize("method", ["smote", "copula"])
def test_synthetic_rows_never_invent_a_category(by_method, train, manifest, method):
    out, _ = by_method[method]
    syn = out[out["is_synthetic"]]
    _, cat = _features(manifest, train)
    assert len(cat) == 5
    for c in cat:
        assert set(syn[c]) <= set(train[c]), c
        if method == "smote":
            assert set(syn.loc[syn[LABEL] == 1, c]) <= set(train[c])


def test_smotenc_keeps_a_rare_category_rare_and_invents_none(train, manifest):
    rare = train.copy()
    rare.loc[rare.index[:6], "industry"] = "aerospace"  # a category of six rows
    out, info = A.augment(rare, manifest, methods=["smote"], target_rows=2500, seed=0)
    syn = out[out["is_synthetic"]]
    for c in ("industry", "region", "product_line", "currency", "stage"):
        assert set(syn[c]) <= set(rare[c])
    assert (syn["industry"] == "aerospace").mean() < 0.02


def test_augmentation_is_deterministic(train, manifest):
    a, _ = A.augment(train, manifest, target_rows=1600, seed=5, validate=False)
    b, _ = A.augment(train, manifest, target_rows=1600, seed=5, validate=False)
    c, _ = A.augment(train, manifest, target_rows=1600, seed=6, validate=False)
    pd.testing.assert_frame_equal(a, b)
    syn_a, syn_c = a[a["is_synthetic"]], c[c["is_synthetic"]]
    assert not np.allclose(syn_a["days_to_close"].to_numpy(), syn_c["days_to_close"].to_numpy())


def test_allocation_between_methods():
    rules = A.load_rules()
    alloc = A.allocate(1000, ["smote", "copula", "rules"], rules)
    assert alloc["rules"] == round(sum(r["share"] for r in rules) * 1000) == 150
    assert alloc["smote"] + alloc["copula"] + alloc["rules"] == 1000 and abs(alloc["smote"] - alloc["copula"]) <= 1
    assert sum(alloc["rules_per_rule"].values()) == 150
    alone = A.allocate(999, ["rules"], rules)
    assert alone["rules"] == 999 and sorted(alone["rules_per_rule"].values()) == [333, 333, 333]


# --------------------------------------------------------------------------------------------
# broken generators are stopped by the gates


def test_broken_generators_fail_the_gates(train, manifest):
    out, info = A.augment(train, manifest, methods=["shuffled", "swapped"], target_rows=TARGET, seed=0,
                          generators={"shuffled": _shuffled, "swapped": _swapped})
    sh, sw = info["quality"]["shuffled"], info["quality"]["swapped"]
    assert not sh["passed"] and not sw["passed"]
    assert sh["corr_distance"] > 2 * Q.DEFAULT_CORR_MAX and sh["impossible_rows"] > 0
    assert sh["max_ks"] > Q.DEFAULT_KS_MAX  # the link to the label is gone as well
    assert sw["max_ks"] > 2 * Q.DEFAULT_KS_MAX and sw["max_ks_feature"] in ("risk_commercial", "risk_timeline")
    assert sw["impossible_rows"] == 0  # no impossible row, but the marginals give it away
    # refused rows can be dropped or stop the run
    dropped, dinfo = A.augment(train, manifest, methods=["copula", "swapped"], target_rows=TARGET, seed=0,
                               generators={"swapped": _swapped}, on_fail="drop")
    assert set(dropped.loc[dropped["is_synthetic"], A.METHOD_COLUMN]) == {"copula"}
    assert "dropped" in dinfo["methods"]["swapped"]
    with pytest.raises(ValueError, match="swapped.*fail the quality gates"):
        A.augment(train, manifest, methods=["swapped"], target_rows=TARGET, seed=0,
                  generators={"swapped": _swapped}, on_fail="raise")


# --------------------------------------------------------------------------------------------
# rules as data


def test_default_rules_load_and_generate_inside_their_region(by_method, train):
    rules = A.load_rules()
    assert [r["name"] for r in rules] == ["stalled_deal", "engaged_late_stage", "never_engaged"]
    stalled = rules[0]
    assert {c["feature"] for c in stalled["when"]} == {"days_since_last_activity", "close_date_slips"}
    out, info = by_method["rules"]
    syn = out[out["is_synthetic"]]
    for r in rules:
        rows = syn[syn[A.RULE_COLUMN] == r["name"]]
        assert len(rows) > 300 and A.rule_mask(rows, r).all()
        assert rows[LABEL].mean() == pytest.approx(r["p_lost"], abs=0.06)
        assert info["rules"][r["name"]]["support"] == int(A.rule_mask(train, r).sum()) >= 20


def test_an_analyst_can_change_a_rule(train, manifest, tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        "  - name: stalled_deal\n"
        "    description: no activity for 21 days - always lost\n"
        "    when:\n"
        "      - {feature: days_since_last_activity, op: '>=', value: 21}\n"
        "    p_lost: 1.0\n"
        "    share: 0.5\n"
        "  - name: healthy_commit\n"
        "    when:\n"
        "      - {feature: stage, op: in, value: [commit]}\n"
        "      - {feature: activity_count_30d, op: '>=', value: 4}\n"
        "    p_lost: 0.0\n"
        "    share: 0.5\n")
    out, info = A.augment(train, manifest, methods=["rules"], rules=path, target_rows=2000, seed=0)
    syn = out[out["is_synthetic"]]
    stalled = syn[syn[A.RULE_COLUMN] == "stalled_deal"]
    healthy = syn[syn[A.RULE_COLUMN] == "healthy_commit"]
    assert (stalled[LABEL] == 1).all() and (stalled["days_since_last_activity"] >= 21).all()
    assert (healthy[LABEL] == 0).all() and (healthy["stage"] == "commit").all()
    assert len(stalled) + len(healthy) == 2000 - len(train)


@pytest.mark.parametrize("rule, match", [
    ({"name": "r1", "when": [{"feature": "days_without_love", "op": ">=", "value": 3}], "p_lost": 0.9},
     "rule 'r1': unknown feature 'days_without_love'"),
    ({"name": "r2", "when": [{"feature": "close_date_slips", "op": "~", "value": 3}], "p_lost": 0.9}, "unknown op"),
    ({"name": "r3", "when": [{"feature": "close_date_slips", "op": ">=", "value": 3}], "p_lost": 1.5}, "p_lost"),
    ({"name": "r4", "when": [], "p_lost": 0.5}, "non-empty list"),
    ({"name": "r5", "when": [{"feature": "stage", "op": "in", "value": "commit"}], "p_lost": 0.5}, "list value"),
    ({"name": "r6", "when": [{"feature": "stage", "op": ">="}], "p_lost": 0.5}, "needs a 'value'"),
])
def test_bad_rules_are_refused_with_a_clear_message(train, manifest, rule, match):
    with pytest.raises(ValueError, match=match):
        A.augment(train, manifest, methods=["rules"], rules=[rule], target_rows=TARGET)


def test_rules_needing_unavailable_features_are_skipped(train, manifest):
    no_log = train.drop(columns=["days_since_last_activity", "activity_count_30d", "activity_count_90d", "engagement"])
    out, info = A.augment(no_log, manifest, methods=["rules"], target_rows=TARGET, seed=0)
    assert info["skipped"] and "no applicable augmentation rule" in info["reason"]
    assert all(r["skipped"] and "days_since_last_activity" in r["reason"] for r in info["rules"].values())
    out, info = A.augment(no_log, manifest, methods=["copula", "rules"], target_rows=TARGET, seed=0)
    assert not info["skipped"] and info["methods"]["copula"]["rows"] == TARGET - len(train)
    assert info["quality"]["copula"]["passed"]


# --------------------------------------------------------------------------------------------
# balancing with SMOTE (train split only)


def _skewed(train, keep_lost=0.25):
    lost = train[train[LABEL] == 1]
    return pd.concat([train[train[LABEL] == 0], lost.iloc[: int(len(lost) * keep_lost)]], ignore_index=True)


@pytest.mark.parametrize("target", [1.0, 0.5])
def test_smote_balancing_reaches_the_target_ratio(train, manifest, target):
    df = _skewed(train)
    n_neg = int((df[LABEL] == 0).sum())
    out, info = balance(df, strategy="smote", target_ratio=target, min_ratio=1.0, seed=0, features=manifest)
    assert info["applied"] and info["method"] == "smotenc"
    assert info["ratio_after"] == pytest.approx(target, abs=1 / n_neg)
    assert class_ratio(out[LABEL]) == pytest.approx(target, abs=1 / n_neg)
    assert int((out[LABEL] == 0).sum()) == n_neg  # the majority is untouched
    new = out[out["resampled"]]
    assert len(new) == info["synthetic_rows"] == len(out) - len(df)
    assert new["is_synthetic"].all() and (new[LABEL] == 1).all() and set(new[A.METHOD_COLUMN]) == {"smotenc"}
    assert new["opportunity_id"].str.startswith("syn-bal-smotenc-").all()
    pd.testing.assert_frame_equal(out.loc[~out["resampled"], df.columns].reset_index(drop=True), df)
    _, cat = _features(manifest, df)
    for c in cat:  # SMOTE-NC never invents a category
        assert set(new[c]) <= set(df[c]), c
    assert Q.impossible_combinations(new, manifest) == []


def test_smote_balancing_numeric_only_uses_plain_smote():
    rng = np.random.default_rng(0)
    n = 600
    y = (rng.random(n) < 0.15).astype("int8")
    df = pd.DataFrame({"opportunity_id": [f"o{i}" for i in range(n)], "x1": rng.normal(size=n) + y,
                       "x2": rng.normal(size=n), LABEL: y})
    out, info = balance(df, strategy="smote", min_ratio=1.0, seed=0, features=["x1", "x2"])
    assert info["method"] == "smote" and class_ratio(out[LABEL]) == pytest.approx(1.0, abs=1 / n)
    new = out[out["resampled"]]
    assert new["x1"].between(df["x1"].min(), df["x1"].max()).all()
    again, _ = balance(df, strategy="smote", min_ratio=1.0, seed=0, features=["x1", "x2"])
    pd.testing.assert_frame_equal(out, again)
