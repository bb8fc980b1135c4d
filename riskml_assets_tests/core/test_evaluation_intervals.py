"""Issue 9 item 9: opportunity-level bootstrap intervals of the test AUC and Brier in the evaluation report."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from riskml_assets.core import evaluation as E
from riskml_assets.core import metrics as M
from riskml_assets.core.features import LABEL


def _test_frame(n_opps=150, snaps=4, seed=0):
    """Opportunities with several weekly snapshots sharing one outcome, and a model with some skill."""
    rng = np.random.default_rng(seed)
    opp_risk = rng.beta(2, 3, n_opps)
    y_opp = (rng.random(n_opps) < opp_risk).astype(int)
    rows = []
    for i in range(n_opps):
        for k in range(snaps):
            p = float(np.clip(opp_risk[i] + rng.normal(0, 0.08), 0.01, 0.99))
            rows.append({"opportunity_id": f"o{i:04d}", "snapshot_date": pd.Timestamp("2026-01-05") + pd.Timedelta(weeks=k),
                         LABEL: y_opp[i], "p": p})
    return pd.DataFrame(rows)


def _report(df, **kw):
    p = df["p"].to_numpy()
    return E.evaluate_risk(df, p, p, threshold=0.5, train_base_rate=0.4, importance={"x": 1.0}, **kw)


def test_grouped_bootstrap_cis_share_resamples_and_match_the_single_metric_version():
    df = _test_frame()
    y, p, g = df[LABEL].to_numpy(), df["p"].to_numpy(), df["opportunity_id"].to_numpy()
    both = M.grouped_bootstrap_cis(y, p, {"auc": M.roc_auc, "brier": M.brier}, g, n_boot=200, seed=3)
    assert both["auc"] == M.grouped_bootstrap_ci(y, p, M.roc_auc, g, n_boot=200, seed=3)
    assert both["brier"] == M.grouped_bootstrap_ci(y, p, M.brier, g, n_boot=200, seed=3)
    lo, hi = both["auc"]
    assert lo < M.roc_auc(y, p) < hi and 0.5 < lo and hi - lo > 0.02
    assert M.grouped_bootstrap_cis(y, p, {"auc": M.roc_auc}, g, n_boot=200, seed=4)["auc"] != both["auc"]
    empty = M.grouped_bootstrap_cis(y[:0], p[:0], {"auc": M.roc_auc}, g[:0])
    assert all(np.isnan(v) for v in empty["auc"])
    with pytest.raises(ValueError, match="groups"):
        M.grouped_bootstrap_cis(y, p, {"auc": M.roc_auc}, g[:-1])


def test_evaluation_report_carries_opportunity_level_intervals_for_auc_and_brier():
    df = _test_frame()
    rep = _report(df)
    c = rep["calibrated"]
    assert rep["ci_level"] == 0.90 and rep["ci_n_boot"] == E.CI_BOOT and rep["ci_groups"] == 150
    assert rep["auc_ci"][0] < c["auc"] < rep["auc_ci"][1]
    assert rep["brier_ci"][0] < c["brier"] < rep["brier_ci"][1]
    assert c["auc_ci"] == rep["auc_ci"] and c["brier_ci"] == rep["brier_ci"]
    json.dumps(rep)  # JSON-able (the report is stored as JSON in MLflow)
    assert _report(df)["auc_ci"] == rep["auc_ci"]  # seeded
    assert _report(df, seed=1)["auc_ci"] != rep["auc_ci"]
    # opportunity-level: repeating every opportunity's snapshots 3 times adds no evidence, so the interval
    # is exactly the same (a row-level bootstrap would shrink it by about sqrt(3))
    tripled = pd.concat([df] * 3, ignore_index=True)
    rep3 = _report(tripled)
    assert rep3["rows"] == 3 * rep["rows"] and rep3["ci_groups"] == rep["ci_groups"]
    assert rep3["auc_ci"] == pytest.approx(rep["auc_ci"]) and rep3["brier_ci"] == pytest.approx(rep["brier_ci"])
    row_level = M.grouped_bootstrap_ci(tripled[LABEL], tripled["p"], M.roc_auc, np.arange(len(tripled)),
                                       n_boot=E.CI_BOOT, level=0.90)
    assert (row_level[1] - row_level[0]) < 0.75 * (rep3["auc_ci"][1] - rep3["auc_ci"][0])


def test_report_markdown_shows_the_intervals_and_the_kept_variant():
    rep = _report(_test_frame())
    rep["kept_variant"] = "baseline"
    rep["kept_variant_reason"] = "as trained refused: it does not help on Brier"
    md = E.report_markdown(rep, "title")
    lo, hi = rep["auc_ci"]
    assert f"AUC [{lo:.4f}, {hi:.4f}]" in md and f"Brier [{rep['brier_ci'][0]:.4f}, {rep['brier_ci'][1]:.4f}]" in md
    assert "90% opportunity-bootstrap intervals on test (1000 resamples of the 150 test opportunities" in md
    assert "**Kept variant: baseline** — as trained refused: it does not help on Brier." in md
