"""Tests of the deterministic CRM simulator (pure module, no dagster)."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from riskml_assets.core import contract
from riskml_assets.core import simulator as sim_mod
from riskml_assets.core.simulator import (
    DEFAULT_END,
    DEFAULT_TENANTS,
    TenantSpec,
    generate,
    main,
    parse_tenants,
    simulate_tenant,
    summarize,
    write_tenant,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
END_TS = pd.Timestamp(DEFAULT_END)
SPECS = {t.name: t for t in DEFAULT_TENANTS}


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    """Rank AUC (ties averaged), P(score of a positive > score of a negative)."""
    score, label = np.asarray(score, float), np.asarray(label, bool)
    ranks = pd.Series(score).rank(method="average").to_numpy()
    n_pos, n_neg = label.sum(), (~label).sum()
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@pytest.fixture(scope="module")
def acme():
    return simulate_tenant(SPECS["acme"])


@pytest.fixture(scope="module")
def small():
    return simulate_tenant(TenantSpec("small", 12.0, 5), weeks=16)


@pytest.fixture(scope="module")
def acme_features(acme):
    """Point-in-time features per snapshot row, computed only from what was known that Friday."""
    snap = acme.snapshots.sort_values(["opportunity_id", "snapshot_date"]).reset_index(drop=True)
    act = acme.activities.merge(snap[["opportunity_id", "snapshot_date"]], on="opportunity_id")
    act = act[(act["occurred_at"] < act["snapshot_date"])
              & (act["occurred_at"] >= act["snapshot_date"] - pd.Timedelta(days=30))]
    counts = act.groupby(["opportunity_id", "snapshot_date"]).size().rename("act30")
    snap = snap.join(counts, on=["opportunity_id", "snapshot_date"])
    snap["act30"] = snap["act30"].fillna(0)
    g = snap.groupby("opportunity_id")["close_date"]
    snap["slips_so_far"] = (g.diff().dt.days > 0).groupby(snap["opportunity_id"]).cumsum()
    snap["seen_weeks"] = snap.groupby("opportunity_id").cumcount()
    snap["days_since_activity"] = (
        (snap["snapshot_date"] - snap["last_activity_at"]).dt.days.fillna(60).clip(upper=60)
    )
    return snap.merge(acme.truth[["opportunity_id", "p_lost_true", "engaged", "slip_prone", "created_at"]],
                      on="opportunity_id")


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_identical_frames_and_files(tmp_path):
    spec = SPECS["globex"]
    a = simulate_tenant(spec, weeks=20, seed=11)
    b = simulate_tenant(spec, weeks=20, seed=11)
    for kind in ("snapshots", "outcomes", "activities", "truth"):
        pd.testing.assert_frame_equal(getattr(a, kind), getattr(b, kind), check_exact=True)
    fa = write_tenant(a, tmp_path / "a" / "in", tmp_path / "a" / "oracle")
    fb = write_tenant(b, tmp_path / "b" / "in", tmp_path / "b" / "oracle")
    assert [p.name for p in fa] == [p.name for p in fb]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(fa, fb))


def test_different_seed_or_offset_gives_different_data():
    spec = SPECS["globex"]
    base = simulate_tenant(spec, weeks=20, seed=11)
    other_seed = simulate_tenant(spec, weeks=20, seed=12)
    other_offset = simulate_tenant(TenantSpec("globex", 18.0, 9), weeks=20, seed=11)
    for other in (other_seed, other_offset):
        assert not base.snapshots.equals(other.snapshots)
        assert not np.allclose(base.truth["p_lost_true"].to_numpy()[:100], other.truth["p_lost_true"].to_numpy()[:100])


# ---------------------------------------------------------------- sizes


def test_default_sizes():
    summ = {t.name: summarize(simulate_tenant(t)) for t in DEFAULT_TENANTS}
    assert summ["acme"]["labelled_rows"] >= 20_000
    assert summ["acme"]["weeks"] == 60
    assert summ["initech"]["labelled_rows"] < 2_000
    assert summ["initech"]["labelled_rows"] > 300  # small, but not empty
    assert summ["initech"]["labelled_rows"] < summ["globex"]["labelled_rows"] < summ["acme"]["labelled_rows"]
    for name, s in summ.items():
        assert 0.35 <= s["lost_rate"] <= 0.55, (name, s["lost_rate"])
        assert s["labelled_rows"] <= s["snapshot_rows"]
    # acme: about 60 a week over 80 simulated weeks (20 of them warm-up)
    assert 4_300 <= summ["acme"]["opportunities"] <= 5_300


def test_opportunities_override_sets_total():
    s = simulate_tenant(SPECS["acme"], weeks=10, opportunities=600)
    assert 500 <= len(s.truth) <= 700


def test_weekly_files_for_defaults(acme, tmp_path):
    files = write_tenant(acme, tmp_path / "incoming", tmp_path / "oracle")
    kinds = [contract.parse_incoming_name(p.name)[0] for p in files[:-1]]
    assert kinds.count("snapshots") == 60 >= 52
    assert kinds.count("outcomes") >= 55
    assert kinds.count("activities") == 60
    good, bad = contract.scan_incoming(tmp_path / "incoming")
    assert bad == [] and len(good) == len(files) - 1
    assert {f.tenant for f in good} == {"acme"}
    assert all(f.date.weekday() == 4 and f.date <= DEFAULT_END for f in good)
    assert max(f.date for f in good) == DEFAULT_END
    assert not list((tmp_path / "incoming").rglob(".*"))  # no temporary files left
    assert files[-1] == tmp_path / "oracle" / "acme" / "truth.parquet"


# ---------------------------------------------------------------- contract


def test_snapshot_columns_types_and_ranges(acme):
    s = acme.snapshots
    assert tuple(s.columns) == (*contract.SNAPSHOT_REQUIRED, *contract.SNAPSHOT_OPTIONAL)
    for col in ("snapshot_date", "close_date", "last_activity_at"):
        assert str(s[col].dtype) == "datetime64[ns]", col
    assert s["opportunity_id"].str.fullmatch(r"acme-\d{6}").all()
    assert (s["deal_value"] > 0).all()
    assert s["probability"].between(0, 100).all()
    assert (s["probability"] == s["probability"].round()).all()
    assert set(s["stage"]) == set(contract.OPEN_STAGES)
    assert set(s["currency"]) == {"USD", "EUR", "GBP"}
    assert 0.75 <= (s["currency"] == "USD").mean() <= 0.85
    assert set(s["industry"]) == set(sim_mod.INDUSTRIES)
    assert set(s["region"]) == set(sim_mod.REGIONS)
    assert set(s["product_line"]) == set(sim_mod.PRODUCT_LINES)
    score_cols = ["risk_score", *(f"risk_{c}" for c in contract.RISK_CATEGORIES)]
    assert s[score_cols].notna().all().all()
    assert ((s[score_cols] >= 0) & (s[score_cols] <= 1)).all().all()
    np.testing.assert_allclose(s["revenue_at_risk"], s["deal_value"] * s["risk_score"], atol=0.01)
    # snapshots on Fridays at 00:00, never after the end, one row per (opportunity, date)
    assert (s["snapshot_date"].dt.weekday == 4).all()
    assert (s["snapshot_date"] == s["snapshot_date"].dt.normalize()).all()
    assert s["snapshot_date"].max() == END_TS
    assert s["snapshot_date"].nunique() == 60
    assert not s.duplicated(["opportunity_id", "snapshot_date"]).any()
    assert (s["close_date"] > s["snapshot_date"]).all()
    la = s["last_activity_at"]
    assert la.isna().any() and la.notna().mean() > 0.8
    assert (la.dropna() < s.loc[la.notna(), "snapshot_date"]).all()
    # about n/40 owners
    n = s["opportunity_id"].nunique()
    assert 0.6 * n / 40 <= s["owner_id"].nunique() <= 1.4 * n / 40


def test_stage_probability_follows_stage_defaults(acme):
    med = acme.snapshots.groupby("stage")["probability"].median()
    for stage, default in sim_mod.STAGE_DEFAULT_PROBABILITY.items():
        assert abs(med[stage] - default) <= 5, (stage, med[stage])


def test_outcome_and_activity_columns(acme):
    o, a = acme.outcomes, acme.activities
    assert tuple(o.columns) == (*contract.OUTCOME_REQUIRED, *contract.OUTCOME_OPTIONAL)
    assert tuple(a.columns) == contract.ACTIVITY_REQUIRED
    assert set(o["outcome"]) == {"won", "lost"}
    assert not o["opportunity_id"].duplicated().any()
    assert (o.loc[o["outcome"] == "lost", "actual_revenue"] == 0).all()
    assert (o.loc[o["outcome"] == "won", "actual_revenue"] > 0).all()
    me = o["mitigation_effectiveness"]
    assert me.isna().any() and me.dropna().between(0, 1).all()
    assert str(o["closed_at"].dtype) == "datetime64[ns]" and str(a["occurred_at"].dtype) == "datetime64[ns]"
    assert set(a["activity_type"]) <= set(contract.ACTIVITY_TYPES)
    # nothing is in the future, and activities carry a time of day
    assert o["closed_at"].max() <= END_TS and a["occurred_at"].max() <= END_TS
    assert (a["occurred_at"] != a["occurred_at"].dt.normalize()).mean() > 0.99
    first_friday = acme.fridays[0]
    assert o["closed_at"].min() >= pd.Timestamp(first_friday) - pd.Timedelta(days=4)


def test_won_revenue_is_close_to_last_deal_value(acme):
    last = acme.snapshots.sort_values("snapshot_date").groupby("opportunity_id").tail(1)
    won = acme.outcomes[acme.outcomes["outcome"] == "won"].merge(last, on="opportunity_id")
    ratio = won["actual_revenue"] / won["deal_value"]
    assert len(won) > 1000
    assert ratio.between(0.85 - 1e-6, 1.1 + 1e-6).all()  # deal values only change at snapshot time


def test_closed_at_after_last_snapshot_and_in_close_week(acme):
    last = (acme.snapshots.sort_values("snapshot_date").groupby("opportunity_id")
            .tail(1)[["opportunity_id", "snapshot_date", "close_date"]])
    m = acme.outcomes.merge(last, on="opportunity_id", how="left")
    seen = m["snapshot_date"].notna()
    assert seen.mean() > 0.9
    assert (~seen).sum() > 0  # outcomes for opportunities never seen in a written snapshot exist
    m = m[seen]
    assert (m["closed_at"] > m["snapshot_date"]).all()
    # closes in the week of its last expected close date (Monday–Thursday)
    week = lambda t: t.dt.normalize() - pd.to_timedelta(t.dt.weekday, unit="D")  # noqa: E731
    assert (week(m["closed_at"]) == week(m["close_date"])).all()
    assert (m["closed_at"].dt.weekday <= 3).all()
    # an opportunity never appears in a snapshot after it closed
    snaps = acme.snapshots.merge(acme.outcomes[["opportunity_id", "closed_at"]], on="opportunity_id")
    assert (snaps["snapshot_date"] < snaps["closed_at"]).all()


def test_censored_opportunities_have_no_outcome(acme):
    open_last = set(acme.snapshots.loc[acme.snapshots["snapshot_date"] == END_TS, "opportunity_id"])
    assert len(open_last) > 100
    assert not open_last & set(acme.outcomes["opportunity_id"])
    t = acme.truth.set_index("opportunity_id")
    assert t.loc[sorted(open_last), "closed_at"].isna().all()
    assert set(t.index[t["outcome_written"]]) == set(acme.outcomes["opportunity_id"])


# ---------------------------------------------------------------- ground truth


def test_truth_matches_written_outcomes_and_formula(acme):
    t = acme.truth
    assert set(sim_mod.TRUTH_COLUMNS) <= set(t.columns)
    merged = acme.outcomes.merge(t, on="opportunity_id", suffixes=("", "_true"))
    assert (merged["outcome"] == merged["outcome_true"]).all()
    # p_lost_true is the documented logistic function of latents and first-seen observables
    first_monday = pd.Timestamp(acme.fridays[0]) - pd.Timedelta(days=4)
    created_in_window = t.loc[t["created_at"] >= first_monday, "opportunity_id"]
    first = (acme.snapshots[acme.snapshots["opportunity_id"].isin(created_in_window)]
             .sort_values("snapshot_date").groupby("opportunity_id").head(1)
             .merge(t, on="opportunity_id"))
    assert len(first) > 3000
    logit = (sim_mod.LOGIT_INTERCEPT + sim_mod.LOGIT_NOT_ENGAGED * (~first["engaged"])
             + sim_mod.LOGIT_SLIP_PRONE * first["slip_prone"]
             + sim_mod.LOGIT_LOG_VALUE * np.log(first["deal_value"] / sim_mod.MEDIAN_DEAL_VALUE)
             + first["industry"].map(sim_mod.INDUSTRY_EFFECT) + first["region"].map(sim_mod.REGION_EFFECT))
    np.testing.assert_allclose(first["p_lost_true"], 1 / (1 + np.exp(-logit)), rtol=1e-9)
    assert 0.5 <= first["engaged"].mean() <= 0.7 and 0.22 <= first["slip_prone"].mean() <= 0.38


def test_lost_rate_matches_mean_true_probability(acme):
    t = acme.truth
    lost = (t["outcome"] == "lost").to_numpy()
    p = t["p_lost_true"].to_numpy()
    se = np.sqrt((p * (1 - p)).sum()) / len(p)
    assert abs(lost.mean() - p.mean()) < 4 * se
    assert 0.35 <= lost.mean() <= 0.5
    # calibrated in every quintile of the true probability
    bins = pd.qcut(p, 5, labels=False)
    for b in range(5):
        sel = bins == b
        se_b = np.sqrt((p[sel] * (1 - p[sel])).sum()) / sel.sum()
        assert abs(lost[sel].mean() - p[sel].mean()) < 4 * se_b + 0.01, b


def test_engagement_is_visible_in_recent_activity(acme_features):
    f = acme_features
    mature = f[f["snapshot_date"] - f["created_at"] >= pd.Timedelta(days=14)]
    by = mature.groupby("engaged")["act30"].mean()
    assert by[True] >= 4 * by[False], by
    assert _auc(mature["act30"], mature["engaged"]) > 0.9
    # already visible at the second snapshot of a deal
    second = f[f["seen_weeks"] == 1]
    assert _auc(second["act30"], second["engaged"]) > 0.8


def test_slips_are_visible_and_tied_to_slip_prone(acme_features):
    f = acme_features[acme_features["seen_weeks"] >= 3]
    by = f.groupby("slip_prone")["slips_so_far"].mean()
    assert by[True] >= 4 * by[False], by
    by_t = f.groupby("slip_prone")["risk_timeline"].mean()
    assert by_t[True] > by_t[False] + 0.1
    by_r = acme_features.groupby("engaged")["risk_relationship"].mean()
    assert by_r[False] > by_r[True] + 0.15


def test_observables_do_not_depend_on_outcome_given_latents(acme_features, acme):
    f = acme_features.merge(acme.outcomes[["opportunity_id", "outcome"]], on="opportunity_id")
    f = f[f["seen_weeks"] >= 4]
    for engaged in (True, False):
        g = f[f["engaged"] == engaged].groupby("outcome")["act30"].mean()
        assert abs(g["won"] - g["lost"]) / g.mean() < 0.15, (engaged, g)
    for prone in (True, False):
        g = f[f["slip_prone"] == prone].groupby("outcome")["slips_so_far"].mean()
        assert abs(g["won"] - g["lost"]) < 0.25, (prone, g)


def test_point_in_time_model_approaches_oracle(acme_features, acme):
    from sklearn.linear_model import LogisticRegression

    f = acme_features.merge(acme.outcomes[["opportunity_id", "outcome"]], on="opportunity_id")
    y = (f["outcome"] == "lost").to_numpy()
    X = pd.get_dummies(f[["industry", "region"]]).astype(float)
    X["log_value"] = np.log(f["deal_value"])
    X["log_act30"] = np.log1p(f["act30"])
    X["slips"] = f["slips_so_far"].clip(upper=3)
    X["days_since_activity"] = f["days_since_activity"]
    X["seen_weeks"] = f["seen_weeks"].clip(upper=4)
    train = (f["opportunity_id"].str[-6:].astype(int) % 2 == 0).to_numpy()
    model = LogisticRegression(max_iter=2000).fit(X[train], y[train])
    auc_model = _auc(model.predict_proba(X[~train])[:, 1], y[~train])
    auc_oracle = _auc(f.loc[~train, "p_lost_true"], y[~train])
    auc_heuristic = _auc(f.loc[~train, "risk_score"], y[~train])
    assert auc_oracle > 0.74
    assert auc_model >= auc_oracle - 0.06, (auc_model, auc_oracle)
    assert auc_heuristic < auc_oracle - 0.03  # the CRM's own score is informative but noisy
    assert auc_heuristic > 0.6


# ---------------------------------------------------------------- writing and CLI


def test_write_tenant_parquet_round_trip(small, tmp_path):
    files = write_tenant(small, tmp_path / "in", tmp_path / "oracle")
    snaps = sorted(p for p in files if p.name.startswith("snapshots-"))
    assert len(snaps) == 16
    kind, date = contract.parse_incoming_name(snaps[3].name)
    back = pd.read_parquet(snaps[3])
    expected = small.snapshots[small.snapshots["snapshot_date"] == pd.Timestamp(date)].reset_index(drop=True)
    pd.testing.assert_frame_equal(back, expected)
    all_out = pd.concat([pd.read_parquet(p) for p in files if p.name.startswith("outcomes-")], ignore_index=True)
    assert len(all_out) == len(small.outcomes)
    for p in (p for p in files if p.name.startswith("outcomes-")):
        _, friday = contract.parse_incoming_name(p.name)
        closed = pd.read_parquet(p)["closed_at"]
        assert (closed.dt.normalize() - pd.to_timedelta(closed.dt.weekday, unit="D")
                == pd.Timestamp(friday) - pd.Timedelta(days=4)).all()
    truth = pd.read_parquet(tmp_path / "oracle" / "small" / "truth.parquet")
    pd.testing.assert_frame_equal(truth, small.truth)


def test_write_tenant_csv(small, tmp_path):
    files = write_tenant(small, tmp_path / "in", tmp_path / "oracle", fmt="csv")
    data = [p for p in files if p.parent == tmp_path / "in" / "small"]
    assert data and all(p.suffix == ".csv" for p in data)
    good, bad = contract.scan_incoming(tmp_path / "in")
    assert bad == [] and len(good) == len(data)
    snap_file = next(p for p in data if p.name.startswith("snapshots-"))
    back = pd.read_csv(snap_file, parse_dates=["snapshot_date", "close_date", "last_activity_at"])
    _, date = contract.parse_incoming_name(snap_file.name)
    expected = small.snapshots[small.snapshots["snapshot_date"] == pd.Timestamp(date)].reset_index(drop=True)
    assert list(back.columns) == list(expected.columns)
    assert (back["opportunity_id"] == expected["opportunity_id"]).all()
    pd.testing.assert_series_equal(back["last_activity_at"], expected["last_activity_at"], check_dtype=False)
    np.testing.assert_allclose(back["deal_value"], expected["deal_value"])
    act_file = next(p for p in data if p.name.startswith("activities-"))
    acts = pd.read_csv(act_file, parse_dates=["occurred_at"])
    assert acts["occurred_at"].notna().all() and set(acts["activity_type"]) <= set(contract.ACTIVITY_TYPES)
    with pytest.raises(ValueError):
        write_tenant(small, tmp_path / "in", tmp_path / "oracle", fmt="json")


def test_generate_summary(tmp_path):
    tenants = (TenantSpec("t1", 8.0, 0), TenantSpec("t2", 2.0, 1))
    out = generate(tmp_path / "in", tmp_path / "oracle", tenants=tenants, weeks=8)
    assert set(out) == {"t1", "t2"}
    for name, s in out.items():
        assert {"opportunities", "snapshot_rows", "labelled_rows", "lost_rate", "weeks", "files"} <= set(s)
        assert s["weeks"] == 8
        assert all(Path(p).exists() for p in s["files"])
        assert (tmp_path / "oracle" / name / "truth.parquet").exists()
    assert out["t1"]["snapshot_rows"] > out["t2"]["snapshot_rows"]
    with pytest.raises(ValueError):
        generate(tmp_path / "in", tmp_path / "oracle", tenants=(tenants[0], tenants[0]), weeks=2)


def test_end_that_is_not_a_friday_uses_the_friday_before():
    wednesday = dt.date(2026, 11, 25)
    s = simulate_tenant(SPECS["initech"], weeks=6, end=wednesday)
    assert s.end == dt.date(2026, 11, 20)
    assert s.snapshots["snapshot_date"].max() == pd.Timestamp("2026-11-20")
    assert s.activities["occurred_at"].max() <= pd.Timestamp("2026-11-20")


def test_tenant_validation_and_parsing():
    with pytest.raises(contract.ContractError):
        TenantSpec("../evil", 1.0)
    with pytest.raises(contract.ContractError):
        parse_tenants("Acme")
    with pytest.raises(ValueError):
        TenantSpec("ok", 0.0)
    with pytest.raises(ValueError):
        parse_tenants("newco")  # unknown name needs a rate
    assert parse_tenants("acme,globex") == DEFAULT_TENANTS[:2]
    specs = parse_tenants("acme:5, newco:2.5")
    assert specs[0] == TenantSpec("acme", 5.0, 0)
    assert specs[1].name == "newco" and specs[1].new_opps_per_week == 2.5
    assert parse_tenants("newco:2.5")[0].seed_offset == specs[1].seed_offset  # stable


def test_main_writes_files_and_prints_summary(tmp_path, capsys):
    rc = main(["--out", str(tmp_path / "in"), "--oracle", str(tmp_path / "or"), "--tenants", "initech,newco:4",
               "--weeks", "6", "--seed", "3", "--format", "csv"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "initech" in printed and "newco" in printed and "labelled_rows" in printed
    assert len(list((tmp_path / "in" / "newco").glob("snapshots-*.csv"))) == 6
    assert (tmp_path / "or" / "initech" / "truth.parquet").exists()
    with pytest.raises(SystemExit):
        main(["--tenants", "Bad!", "--out", str(tmp_path / "x")])


def test_module_help_runs_without_dagster():
    res = subprocess.run([sys.executable, "-m", "riskml_assets.core.simulator", "--help"],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "--opportunities" in res.stdout and "--format" in res.stdout
    res = subprocess.run([sys.executable, "-c", "import sys, riskml_assets.core.simulator; "
                          "print('dagster' in sys.modules)"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "False", res.stderr


# --------------------------------------------------------------------------------------------
# Real export habits (issue 9: history from 2016, outcomes filed by export date, own stages, extra columns)


@pytest.fixture(scope="module")
def habits():
    return simulate_tenant(sim_mod.EXPORT_HABITS_TENANT, export_habits=True)


def test_export_habits_history_stages_and_extra_columns(habits):
    s = habits.snapshots
    assert s["snapshot_date"].min() == pd.Timestamp("2016-01-08")  # the first Friday of 2016's first week
    assert s["snapshot_date"].max() == END_TS and len(habits.fridays) == 568
    assert 15_000 < len(s) < 40_000  # years of history, but a modest row count
    assert set(s["stage"]) == set(sim_mod.EXPORT_STAGES)
    assert not {x.lower() for x in s["stage"]} & set(contract.OPEN_STAGES)  # none is a contract stage
    assert {"lead_score", "lead_source"} <= set(s.columns)
    assert s["lead_score"].dropna().between(0, 100).all()
    assert 0.01 < s["lead_score"].isna().mean() < 0.1 and 0.01 < s["lead_source"].isna().mean() < 0.1
    assert set(s["lead_source"].dropna()) == set(sim_mod.LEAD_SOURCES)
    # the lead columns are fixed per opportunity (read at creation), like a real lead record
    assert (s.groupby("opportunity_id")["lead_source"].nunique(dropna=True) <= 1).all()
    # ... and carry real signal in the ground truth: the lost rate moves with them
    o = habits.outcomes.merge(s.drop_duplicates("opportunity_id")[["opportunity_id", "lead_score", "lead_source"]])
    lost = o["outcome"].eq("lost")
    by_source = lost.groupby(o["lead_source"]).mean()
    assert by_source["outbound"] - by_source["referral"] > 0.15
    assert _auc(-o["lead_score"].fillna(50), lost) > 0.6
    # the CRM's own risk score does not see the lead terms: it ranks worse than the true probability
    truth = habits.truth.set_index("opportunity_id")
    first = s.drop_duplicates("opportunity_id").set_index("opportunity_id").loc[o["opportunity_id"]]
    assert _auc(first["risk_score"], lost) < _auc(truth.loc[o["opportunity_id"], "p_lost_true"], lost) - 0.03


def test_export_habits_outcomes_filed_by_export_date(tmp_path):
    # two years are enough to check the filing (writing all ten years' files takes ~15 s)
    habits = simulate_tenant(sim_mod.EXPORT_HABITS_TENANT, export_habits=True, history_from=dt.date(2024, 11, 4))
    files = write_tenant(habits, tmp_path / "in", tmp_path / "or")
    outs = sorted(p for p in files if p.name.startswith("outcomes-"))
    dates = [contract.parse_incoming_name(p.name)[1] for p in outs]
    assert all(d.weekday() == 0 for d in dates)  # every outcomes file is a Monday export
    assert not any(p.name.startswith("snapshots-") and contract.parse_incoming_name(p.name)[1].weekday() != 4
                   for p in files if p.name.startswith("snapshots-"))
    read = pd.concat([pd.read_parquet(p).assign(_file=d) for p, d in zip(outs, dates)], ignore_index=True)
    assert len(read) == len(habits.outcomes) and read["opportunity_id"].is_unique  # nothing lost or doubled
    file_day = pd.to_datetime(read["_file"])
    age = (file_day - read["closed_at"]).dt.days
    assert (read["closed_at"] < file_day).all()  # filed after the close
    prev_week = (age >= 0) & (age < 7)
    assert len(read) > 400 and 0.90 < prev_week.mean() < 0.99  # most closes fall in the 7 days before the export
    assert ((age >= 7) & (age < 14)).sum() == (~prev_week).sum()  # the rest were filed one export late
    # no outcomes file falls in the same week as its closes: the old per-week contract would quarantine them
    assert all(contract.week_key(d) != contract.week_key(c.date()) for d, c in zip(read["_file"], read["closed_at"]))
    # nothing filed after the as-of Friday; those closes are censored in the truth
    assert max(dates) <= DEFAULT_END
    assert habits.truth["outcome_written"].sum() == len(habits.outcomes)


def test_export_habits_are_deterministic_and_leave_the_default_mode_alone(habits):
    again = simulate_tenant(sim_mod.EXPORT_HABITS_TENANT, export_habits=True)
    pd.testing.assert_frame_equal(again.snapshots, habits.snapshots)
    pd.testing.assert_frame_equal(again.outcomes, habits.outcomes)
    other = simulate_tenant(sim_mod.EXPORT_HABITS_TENANT, export_habits=True, seed=8)
    assert not other.snapshots["lead_score"].equals(habits.snapshots["lead_score"])
    plain = simulate_tenant(SPECS["initech"], weeks=10)
    assert set(plain.snapshots["stage"]) <= set(contract.OPEN_STAGES)
    assert not {"lead_score", "lead_source"} & set(plain.snapshots.columns) and not plain.export_habits
    # a custom history start
    short = simulate_tenant(TenantSpec("shortco", 4.0, 3), export_habits=True, history_from=dt.date(2025, 1, 6))
    assert short.snapshots["snapshot_date"].min() == pd.Timestamp("2025-01-10")


def test_export_habits_cli_flag(tmp_path, capsys):
    rc = main(["--out", str(tmp_path / "in"), "--oracle", str(tmp_path / "or"), "--export-habits",
               "--history-from", "2025-06-02", "--tenants", "northwind"])
    assert rc == 0
    files = sorted((tmp_path / "in" / "northwind").iterdir())
    outs = [p for p in files if p.name.startswith("outcomes-")]
    assert outs and all(contract.parse_incoming_name(p.name)[1].weekday() == 0 for p in outs)
    first = min(contract.parse_incoming_name(p.name)[1] for p in files if p.name.startswith("snapshots-"))
    assert first == dt.date(2025, 6, 6)
    snap = pd.read_parquet(files[-1] if files[-1].name.startswith("snapshots-") else
                           [p for p in files if p.name.startswith("snapshots-")][-1])
    assert {"lead_score", "lead_source"} <= set(snap.columns)
    assert "northwind" in capsys.readouterr().out
