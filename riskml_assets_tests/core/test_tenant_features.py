"""Per-tenant features (issue 9, items 3, 4 and 11): the tenant's own stage names, extra snapshot columns
as pinned features, features without usable values, and conflicting outcomes. Pure core, no dagster."""
from __future__ import annotations

import copy
import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from riskml_assets.core import features as F
from riskml_assets.core import scoring
from riskml_assets.core import simulator as S
from riskml_assets.core.cleaning import clean_examples
from riskml_assets.core.gates import DEFAULT_GATES
from riskml_assets.core.training import XGBParams, predict_raw, train_xgb_classifier

END = "2026-11-23"  # the Monday after the simulator's last Friday
OWN_STAGES = [s.lower() for s in S.EXPORT_STAGES]  # ingestion stores stages lower-cased
NULL_GATE = next(g for g in DEFAULT_GATES if g.name == "training_examples_max_null_rate").threshold


@pytest.fixture(scope="module")
def habits():
    """The export-habit tenant as ingestion hands it over (stages lower-cased)."""
    sim = S.simulate_tenant(S.EXPORT_HABITS_TENANT, export_habits=True)
    sim.snapshots["stage"] = sim.snapshots["stage"].str.lower()
    return sim


def _max_null_rate(ex: pd.DataFrame, stats: dict) -> float:
    """What the training_examples asset feeds its null-rate gate."""
    return max(float(ex[c].isna().mean()) for c in stats["features"])


# --------------------------------------------------------------------------------------------
# Item 3: the tenant's own stage names


def test_unknown_stages_train_with_a_stage_index_learnt_from_the_data(habits):
    report: dict = {}
    m = F.build_manifest(snapshots=habits.snapshots, report=report)
    assert report["stage_order_source"] == "learnt"
    assert m["stage_index"]["params"] == {"order": OWN_STAGES} and m["stage_index"]["params_source"] == "learnt"
    ex, stats = F.build_training_examples(habits.snapshots, habits.outcomes, habits.activities, m,
                                          partition_end=END, window_weeks=52)
    assert "stage_index" in stats["features"] and "stage_index" not in stats["unavailable_features"]
    assert ex["stage_index"].notna().all()
    np.testing.assert_array_equal(ex["stage_index"], ex["stage"].map({s: i for i, s in enumerate(OWN_STAGES)}))
    assert _max_null_rate(ex, stats) <= NULL_GATE

    # before the fix: the contract's stage order (v1) maps every one of these stages to null
    old = F.build_manifest({"stage_index": 1})
    feats, unavailable = F.extract_features(F.build_base_frame(habits.snapshots, habits.activities), old)
    assert "stage_index" not in feats.columns and unavailable["stage_index"].startswith("no usable values")


def test_learnt_order_counts_only_pairs_seen_in_the_same_opportunity():
    """Deals first seen mid-funnel would put late stages early under a naive 'median position' rule."""
    rows, day = [], pd.Timestamp("2025-01-03")
    funnel = ["lead", "demo", "trial", "quote"]
    for k in range(30):  # full journeys
        rows += [(f"full-{k}", day + pd.Timedelta(weeks=w), st) for w, st in enumerate(funnel)]
    for k in range(80):  # deals entering at 'trial' (imported mid-funnel): 'trial' is their position 0
        rows += [(f"mid-{k}", day + pd.Timedelta(weeks=w), st) for w, st in enumerate(["trial", "quote"])]
    for k in range(10):  # a closed stage never enters the open order
        rows += [(f"closed-{k}", day, "quote"), (f"closed-{k}", day + pd.Timedelta(weeks=1), "Closed Won")]
    snaps = pd.DataFrame(rows, columns=["opportunity_id", "snapshot_date", "stage"])
    assert F.learn_stage_order(snaps) == funnel
    naive = (snaps.assign(pos=snaps.groupby("opportunity_id").cumcount())
             .loc[~snaps["stage"].str.startswith("Closed")].groupby("stage")["pos"].median().sort_values())
    assert list(naive.index) != funnel  # the naive rule would get it wrong on the same data
    # deterministic: row order does not matter
    assert F.learn_stage_order(snaps.sample(frac=1.0, random_state=3)) == funnel


def test_declared_stage_order_is_used_and_pinned(habits):
    declared = ["Verbal Commit", "Discovery", "Solutioning", "Business Case"]  # deliberately odd, one stage missing
    report: dict = {}
    m = F.build_manifest(snapshots=habits.snapshots, tenant_config={"stages": declared}, report=report)
    assert m["stage_index"]["params"]["order"] == [s.lower() for s in declared]
    assert report["stage_order_source"] == "declared"
    assert report["stages_outside_order"] == ["negotiation & review"]
    feats, _ = F.extract_features(F.build_base_frame(habits.snapshots), m)
    df = feats.to_pandas().merge(habits.snapshots[["opportunity_id", "snapshot_date", "stage"]])
    expected = df["stage"].map({s.lower(): float(i) for i, s in enumerate(declared)})
    pd.testing.assert_series_equal(df["stage_index"], expected, check_names=False)
    # the order is part of the definition: another order is another pin (scoring cannot mix them up)
    learnt = F.build_manifest(snapshots=habits.snapshots)
    assert learnt["stage_index"]["hash"] != m["stage_index"]["hash"]
    assert learnt["stage_index"]["template_hash"] == m["stage_index"]["template_hash"]
    tampered = copy.deepcopy(m)
    tampered["stage_index"]["params"]["order"] = OWN_STAGES
    with pytest.raises(F.FeatureVersionError, match="stage_index.*hash"):
        F.verify_manifest(tampered)
    # a tenant on the contract's own stages keeps the contract order
    contract_tenant = S.simulate_tenant(S.TenantSpec("plain", 5.0, 1), weeks=6)
    assert F.build_manifest(snapshots=contract_tenant.snapshots)["stage_index"]["params_source"] == "contract"


def test_bad_tenant_config_is_refused_naming_the_key():
    with pytest.raises(F.TenantConfigError, match="'stages' lists \\['a'\\] more than once"):
        F.parse_tenant_config({"stages": ["A", "a "]})
    with pytest.raises(F.TenantConfigError, match="open stages only"):
        F.parse_tenant_config({"stages": ["lead", "Closed Won"]})
    with pytest.raises(F.TenantConfigError, match="extra_features.mode"):
        F.parse_tenant_config({"extra_features": {"mode": "sometimes"}})
    with pytest.raises(F.TenantConfigError, match="unknown key"):
        F.parse_tenant_config({"extra_features": {"colums": ["x"]}})


def test_a_feature_without_usable_values_is_unavailable_not_a_gate_failure(habits):
    snaps = habits.snapshots.copy()
    snaps["risk_timeline"] = np.nan  # an optional contract column the CRM left empty this time
    m = F.build_manifest({"stage_index": 1}, snapshots=snaps)  # v1: contract order, null for these stages
    ex, stats = F.build_training_examples(snaps, habits.outcomes, habits.activities, m, partition_end=END,
                                          window_weeks=52)
    assert {"stage_index", "risk_timeline"} <= set(stats["unavailable_features"])
    assert "no usable values" in stats["unavailable_features"]["stage_index"]
    assert not {"stage_index", "risk_timeline"} & set(ex.columns) & set(stats["features"])
    assert "stage_index" not in ex.columns
    assert _max_null_rate(ex, stats) <= NULL_GATE  # before the fix: 1.0, a blocked tenant
    # a feature that is all null only in the labelled rows of the window is left out as well
    snaps2 = habits.snapshots.copy()
    snaps2.loc[snaps2["snapshot_date"] >= pd.Timestamp(END) - pd.Timedelta(weeks=52), "lead_score"] = np.nan
    m2 = F.build_manifest(snapshots=habits.snapshots)  # pinned while the column still had values
    ex2, stats2 = F.build_training_examples(snaps2, habits.outcomes, habits.activities, m2, partition_end=END,
                                            window_weeks=52)
    assert "x_lead_score" not in ex2.columns and "labelled rows" in stats2["unavailable_features"]["x_lead_score"]


# --------------------------------------------------------------------------------------------
# Item 4: extra columns become pinned features


def test_extra_columns_become_pinned_versioned_features(habits):
    report: dict = {}
    m = F.build_manifest(snapshots=habits.snapshots, report=report)
    assert m["x_lead_score"]["kind"] == "numeric" and m["x_lead_source"]["kind"] == "categorical"
    for name, col in (("x_lead_score", "lead_score"), ("x_lead_source", "lead_source")):
        pin = m[name]
        assert pin["version"] == 1 and pin["params"] == {"column": col} and pin["sources"] == [f"col:{col}"]
        assert F.resolve_pin(name, pin).definition_hash == pin["hash"]
    assert report["extra_features"]["x_lead_source"]["levels"] == len(S.LEAD_SOURCES)
    F.verify_manifest(m)
    # the lock file pins the code of every per-tenant feature (the template), whatever its parameters
    lock = json.loads((Path(F.__file__).parent / "feature_lock.json").read_text())
    for name, pin in m.items():
        key, h = F.lock_key(name, pin)
        assert lock[key] == h, name
    assert F.lock_key("x_lead_score", m["x_lead_score"])[0] == "x_<numeric>@1"
    feats, unavailable = F.extract_features(F.build_base_frame(habits.snapshots), m)
    got = feats.to_pandas().merge(habits.snapshots[["opportunity_id", "snapshot_date", "lead_score", "lead_source"]])
    np.testing.assert_array_equal(got["x_lead_score"].to_numpy(), got["lead_score"].to_numpy())
    assert (got["x_lead_source"].fillna("-") == got["lead_source"].fillna("-")).all()
    # point in time: a value typed after the snapshot never reaches it
    later = habits.snapshots.copy()
    later.loc[later["snapshot_date"] > pd.Timestamp("2026-06-01"), "lead_score"] = 999.0
    early = F.extract_features(F.build_base_frame(later), m)[0].filter(pl.col("snapshot_date") <= pd.Timestamp("2026-06-01"))
    assert early["x_lead_score"].max() <= 100
    # off / listed modes
    assert not [k for k in F.build_manifest(snapshots=habits.snapshots,
                                            tenant_config={"extra_features": {"mode": "off"}}) if k.startswith("x_")]
    listed = F.build_manifest(snapshots=habits.snapshots, tenant_config={"extra_features": {"columns": ["lead_source"]}})
    assert [k for k in listed if k.startswith("x_")] == ["x_lead_source"]


def test_auto_selection_skips_id_like_sparse_wide_and_leaky_columns(habits):
    s = habits.snapshots.head(3000).copy()
    rng = np.random.default_rng(0)
    s["partner_id"] = rng.integers(0, 20, len(s)).astype(str)  # id-like name
    s["row_ref"] = [f"r{i}" for i in range(len(s))]  # unique per row
    s["AccountId"] = rng.integers(0, 30, len(s)).astype(str)  # camelCase id name
    s["amount_paid"] = rng.normal(100.0, 10.0, len(s))  # ends with "id" as letters, not an id
    s["crm_number"] = s["opportunity_id"].str.slice(-6).astype(int)  # an integer unique per opportunity
    s["notes"] = [f"free text {i % 400}" for i in range(len(s))]  # 400 levels
    s["mostly_empty"] = np.where(rng.random(len(s)) < 0.9, None, "x")
    s["is_won"] = rng.integers(0, 2, len(s))  # the name says outcome: leakage risk
    s["csv_score"] = s["lead_score"].map(lambda v: "" if v != v else f" {v:g} ")  # numbers read from CSV as text
    s["source_file"] = "snapshots-2026-01-02.csv"  # added by ingestion
    kept, skipped = F.select_extra_columns(s)
    assert {k["column"] for k in kept} == {"lead_score", "lead_source", "csv_score", "amount_paid"}
    assert next(k for k in kept if k["column"] == "csv_score")["kind"] == "numeric"
    assert "id-like name" in skipped["partner_id"] and "every row" in skipped["row_ref"]
    assert "id-like name" in skipped["AccountId"]
    assert "unique per opportunity" in skipped["crm_number"] and "levels > 50" in skipped["notes"]
    assert "have a value" in skipped["mostly_empty"] and "leakage" in skipped["is_won"]
    assert "source_file" not in skipped and "source_file" not in {k["column"] for k in kept}
    m = F.build_manifest(snapshots=s)
    feats, _ = F.extract_features(F.build_base_frame(s), m)
    a = feats.sort("opportunity_id", "snapshot_date")
    assert a["x_csv_score"].to_list() == a["x_lead_score"].to_list()  # text numbers parse to the same values


def test_extra_columns_carry_signal_on_the_export_habit_tenant(habits):
    """AUC with and without the tenant's two extra columns, same rows, same model, same split."""
    m = F.build_manifest(snapshots=habits.snapshots)
    ex, stats = F.build_training_examples(habits.snapshots, habits.outcomes, habits.activities, m,
                                          partition_end=END, window_weeks=520)
    clean, _, _ = clean_examples(ex, m)
    bucket = clean["opportunity_id"].map(lambda s: zlib.crc32(s.encode()) % 5)
    train, valid, test = clean[bucket >= 2], clean[bucket == 1], clean[bucket == 0]
    auc = {}
    for variant, man in (("with", m), ("without", {k: v for k, v in m.items() if not k.startswith("x_")})):
        art = train_xgb_classifier(train, valid, man, XGBParams(n_threads=1, n_estimators=400))
        assert ("x_lead_score" in art["features"]) is (variant == "with")
        auc[variant] = roc_auc_score(test["label"], predict_raw(art, test))
    print(f"export-habit tenant: test AUC with extra columns {auc['with']:.4f}, without {auc['without']:.4f}")
    assert auc["with"] - auc["without"] > 0.03


def test_scoring_recomputes_tenant_features_from_the_champions_manifest(habits):
    m = F.build_manifest(snapshots=habits.snapshots)
    ex, _ = F.build_training_examples(habits.snapshots, habits.outcomes, habits.activities, m,
                                      partition_end=END, window_weeks=52)
    clean, _, _ = clean_examples(ex, m)
    art = train_xgb_classifier(clean.iloc[: len(clean) * 4 // 5], clean.iloc[len(clean) * 4 // 5:], m,
                               XGBParams(n_threads=1, n_estimators=60))
    assert {"x_lead_score", "x_lead_source", "stage_index"} <= set(art["features"])
    bundle = {"artifact": art, "manifest": m, "calibrator": None, "name": "riskml.northwind.risk", "version": "1",
              "alias": "champion"}
    last = habits.snapshots["snapshot_date"].max()
    latest = habits.snapshots[habits.snapshots["snapshot_date"] == last]
    scores = scoring.score_open_opportunities(habits.snapshots, habits.activities, latest, bundle)
    assert len(scores) == latest["opportunity_id"].nunique() and scores["p_lost"].between(0, 1).all()
    # the scored features are exactly those the manifest pins: a different stage order changes the scores
    feats, _ = scoring.compute_features(habits.snapshots, habits.activities, m)
    assert feats.loc[feats["snapshot_date"] == last, "stage_index"].notna().all()
    tampered = copy.deepcopy(bundle)
    tampered["manifest"]["x_lead_score"]["params"] = {"column": "probability"}
    with pytest.raises(F.FeatureVersionError, match="x_lead_score"):
        scoring.score_open_opportunities(habits.snapshots, habits.activities, latest, tampered)
    # a scoring week without the extra column cannot silently score without it
    with pytest.raises(scoring.ScoringError, match="x_lead_score"):
        scoring.score_open_opportunities(habits.snapshots.drop(columns=["lead_score"]), habits.activities,
                                         latest.drop(columns=["lead_score"]), bundle)


# --------------------------------------------------------------------------------------------
# Item 11: conflicting outcomes


def _one_snapshot_per_week(opps: list[str], weeks: int = 6) -> pd.DataFrame:
    days = pd.date_range("2026-09-04", periods=weeks, freq="7D")
    return pd.DataFrame([{"opportunity_id": o, "snapshot_date": d, "deal_value": 1000.0, "currency": "USD",
                          "probability": 50.0, "stage": "proposal", "close_date": pd.Timestamp("2026-12-01"),
                          "last_activity_at": d - pd.Timedelta(days=1)} for o in opps for d in days])


def test_conflicting_outcomes_are_excluded_and_reported_identical_refilings_are_not():
    snaps = _one_snapshot_per_week(["flip", "same", "plain", "late-fix"])
    t = pd.Timestamp
    outcomes = pd.DataFrame([
        ("flip", "won", t("2026-10-20"), 1000.0, "outcomes-2026-10-26.csv"),
        ("flip", "lost", t("2026-10-28"), 0.0, "outcomes-2026-11-02.csv"),      # won, then lost a week later
        ("same", "lost", t("2026-10-21"), 0.0, "outcomes-2026-10-26.csv"),
        ("same", "lost", t("2026-10-21"), 0.0, "outcomes-2026-11-02.csv"),      # identical re-filing
        ("plain", "won", t("2026-10-22"), 900.0, "outcomes-2026-10-26.csv"),
        ("late-fix", "won", t("2026-10-22"), 900.0, "outcomes-2026-10-26.csv"),
        ("late-fix", "lost", t("2026-11-30"), 0.0, "outcomes-2026-12-07.csv"),  # after the partition end
    ], columns=["opportunity_id", "outcome", "closed_at", "actual_revenue", "source_file"])
    m = {k: v for k, v in F.build_manifest().items() if k in ("days_to_close", "log_deal_value", "crm_probability")}
    ex, stats = F.build_training_examples(snaps, outcomes, None, m, partition_end="2026-11-16", window_weeks=12)
    labels = ex.groupby("opportunity_id")["label"].agg(["min", "max", "size"])
    assert "flip" not in labels.index  # no silently flipped label
    assert labels.loc["same"].tolist() == [1, 1, 6]  # one label, every snapshot before its close
    assert labels.loc["plain", "max"] == 0 and labels.loc["late-fix", "max"] == 0  # the later row was not known yet
    assert stats["conflicting_outcome_opportunities"] == 1 and stats["conflicting_outcome_rows"] == 2
    c = stats["conflicts"].to_pandas()
    assert c["opportunity_id"].tolist() == ["flip", "flip"] and set(c["reason_code"]) == {"conflicting_outcome"}
    assert c["source_file"].tolist() == ["outcomes-2026-10-26.csv", "outcomes-2026-11-02.csv"]
    assert "won (closed 2026-10-20, outcomes-2026-10-26.csv) then lost (closed 2026-10-28" in c["reason"].iloc[0]
    assert stats["snapshot_rows_excluded_conflicting_outcome"] == 6
    # once the correction of 'late-fix' is known (a later partition), it is a conflict too
    _, later = F.build_training_examples(snaps, outcomes, None, m, partition_end="2026-12-14", window_weeks=16)
    assert sorted(later["conflicts"]["opportunity_id"].unique().to_list()) == ["flip", "late-fix"]
