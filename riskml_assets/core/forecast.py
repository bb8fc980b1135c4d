"""The revenue forecast: P10/P50/P90 of the revenue an open opportunity will realise.

Target: for every labelled open snapshot, the opportunity's realised revenue (``actual_revenue`` of
its outcome; 0 when lost), so the conditional distribution is a point mass at 0 (lost) plus a
continuous part around the deal value (won).

Two modes, chosen in config:

- ``multi_quantile`` (default): one XGBoost model with ``reg:quantileerror`` and several
  ``quantile_alpha`` (one tree ensemble per alpha internally, shared early stopping on the validation
  mean pinball loss). LightGBM (one quantile regressor per alpha) is the other candidate of model
  selection. Optional ``calibration="cqr"``: conformalized quantile regression on the validation
  split (the outer band is widened/narrowed by the same amount until it covers
  ``alphas[-1] - alphas[0]`` of the validation rows).
- ``two_head``: a point model of the conditional mean (squared error) plus an uncertainty model of the
  spread (squared error on ``log |y - mean|`` with out-of-fold residuals, cross-fitted by opportunity);
  quantiles are ``mean + c_alpha * spread`` where ``c_alpha`` are the empirical alpha-quantiles of the
  standardised residuals on the validation split (a location-scale split-conformal model). It cannot
  cross because the ``c_alpha`` are sorted and the spread is positive.

Whatever the mode, returned quantiles are sorted per row (monotone rearrangement, which never raises
pinball loss) and clipped to the training target's range (revenue is never negative), so they never cross.

Coverage on a zero-inflated target. The band ``[P10, P90]`` is closed, and for nearly every deal
P(lost) > 10 % makes the true P10 exactly 0; every lost deal is then covered, and the band of a
perfect model covers ``P(y <= P90) ~ 0.9``, not 0.8 (0.87 for the simulator's oracle on acme, because
deal values still change after the snapshot). Coverage gates must therefore be read against the oracle
and allow for it (see ``families.py``); ``below_pXX`` (share of ``y <= PXX``) is the per-level check.

Point mass. When the training target has a point mass at its minimum (>= 5 % of rows exactly 0),
predicted quantiles closer to it than half the 1st percentile of the positive targets are snapped onto
it (see :func:`_point_mass`): XGBoost's P10 otherwise scatters by a few hundred around 0 and a P10 of
a few dollars leaves a lost deal (revenue exactly 0) outside the band (acme: coverage 0.74 -> 0.86).

Baselines (from the CRM alone): ``naive_expected`` puts every quantile at deal_value x
probability / 100 (the classic weighted pipeline); ``crm_distribution`` takes the CRM's probability at
face value, revenue = deal_value with probability p and 0 otherwise, so its alpha-quantile is
deal_value when alpha > 1 - p and 0 otherwise. Gates compare the model with the better of the two.

Point forecast and tenant sums. ``P50`` is the point forecast for MAE/RMSE/R2/MAPE (the median is
MAE-optimal). Sums over a tenant's pipeline need the mean: the two-head mode has it; for
multi-quantile P10/P50/P90 the Swanson approximation ``0.3 P10 + 0.4 P50 + 0.3 P90`` is used.

Nothing here imports dagster.
"""
from __future__ import annotations

import time
from typing import Mapping, Sequence

from .lazy import lazy_module

np = lazy_module("numpy")
pd = lazy_module("pandas")


from . import metrics as M
from .selection import make_folds, make_model, model_from_dict
from .training import design_matrix, model_features

TARGET = "target_revenue"
ALPHAS = (0.1, 0.5, 0.9)
MODES = ("multi_quantile", "two_head")
CALIBRATIONS = ("none", "cqr")
DEFAULT_FORECAST_PARAMS = {"n_estimators": 600, "max_depth": 5, "learning_rate": 0.05, "min_child_weight": 5.0,
                           "subsample": 0.8, "colsample_bytree": 0.8, "reg_lambda": 1.0}
SWANSON = {(0.1, 0.5, 0.9): (0.3, 0.4, 0.3)}


def build_forecast_examples(examples: pd.DataFrame) -> pd.DataFrame:
    """Forecast rows from labelled examples (``features.build_training_examples`` output, possibly
    cleaned and split): adds ``target_revenue`` = ``actual_revenue`` (0 when lost). Rows without an
    outcome are not examples; rows without a positive deal value or a CRM probability are dropped."""
    need = {"actual_revenue", "deal_value", "raw_probability", "outcome"}
    missing = need - set(examples.columns)
    if missing:
        raise ValueError(f"examples lack columns {sorted(missing)}")
    df = examples[examples["outcome"].isin(["won", "lost"])].copy()
    rev = pd.to_numeric(df["actual_revenue"], errors="coerce")
    df[TARGET] = np.where(df["outcome"] == "lost", 0.0, rev.fillna(0.0)).astype(float)
    ok = (pd.to_numeric(df["deal_value"], errors="coerce") > 0) & pd.to_numeric(df["raw_probability"], errors="coerce").between(0, 100)
    return df.loc[ok].reset_index(drop=True)


def _check_alphas(alphas) -> list[float]:
    al = [float(a) for a in alphas]
    if len(al) < 2 or any(not (0 < a < 1) for a in al) or any(b <= a for a, b in zip(al, al[1:])):
        raise ValueError(f"alphas must be >= 2 strictly increasing levels in (0, 1), got {alphas}")
    return al


def naive_point(df: pd.DataFrame) -> np.ndarray:
    """deal_value x CRM probability / 100 (the weighted-pipeline forecast)."""
    return df["deal_value"].to_numpy(float) * df["raw_probability"].to_numpy(float) / 100.0


def naive_quantiles(df: pd.DataFrame, alphas: Sequence[float] = ALPHAS, kind: str = "crm_distribution") -> np.ndarray:
    """Baseline quantiles from the CRM alone (see the module doc): ``naive_expected`` or ``crm_distribution``."""
    al = _check_alphas(alphas)
    v = df["deal_value"].to_numpy(float)
    p = np.clip(df["raw_probability"].to_numpy(float) / 100.0, 0.0, 1.0)
    if kind == "naive_expected":
        return np.repeat((v * p)[:, None], len(al), axis=1)
    if kind == "crm_distribution":
        return np.column_stack([np.where(a > 1.0 - p, v, 0.0) for a in al])
    raise ValueError(f"unknown baseline {kind!r}")


def expected_from_quantiles(Q: np.ndarray, alphas: Sequence[float]) -> np.ndarray:
    """Mean estimate from quantiles: Swanson's 0.3/0.4/0.3 rule for P10/P50/P90, else the median column
    (or the mean of the columns when there is no 0.5)."""
    al = tuple(round(float(a), 6) for a in alphas)
    Q = np.asarray(Q, float)
    if al in SWANSON:
        return Q @ np.asarray(SWANSON[al])
    return Q[:, al.index(0.5)] if 0.5 in al else Q.mean(axis=1)


def _xy(df, features, kinds, cats):
    return design_matrix(df, features, kinds, cats), df[TARGET].to_numpy(float)


def train_quantile_forecaster(train: pd.DataFrame, valid: pd.DataFrame, manifest: Mapping, *,
                              alphas: Sequence[float] = ALPHAS, mode: str = "multi_quantile",
                              params: Mapping | None = None, algorithm: str = "xgboost",
                              calibration: str = "none", n_threads: int = 1, seed: int = 0,
                              early_stopping_rounds: int = 50) -> dict:
    """Fit the forecaster on ``train`` (early stopping and calibration on ``valid``); JSON-able artifact.

    ``train``/``valid`` are :func:`build_forecast_examples` rows; ``params`` override
    :data:`DEFAULT_FORECAST_PARAMS` (xgboost) or the algorithm's own defaults (lightgbm).
    """
    al = _check_alphas(alphas)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {MODES}")
    if calibration not in CALIBRATIONS:
        raise ValueError(f"unknown calibration {calibration!r}: use one of {CALIBRATIONS}")
    if mode == "two_head" and calibration != "none":
        raise ValueError("the two-head mode is always calibrated on validation; calibration applies to multi_quantile")
    if not len(valid):
        raise ValueError("the forecaster needs validation rows (early stopping and calibration)")
    features, kinds = model_features(train, dict(manifest))
    if not features:
        raise ValueError("no features available to train on")
    cats = {c: sorted(set(train[c].astype(str)) | {"__missing__"}) for c in features if kinds[c] == "categorical"}
    Xtr, ytr = _xy(train, features, kinds, cats)
    Xva, yva = _xy(valid, features, kinds, cats)
    p = {**DEFAULT_FORECAST_PARAMS, **(params or {})} if algorithm == "xgboost" else dict(params or {})
    t0 = time.perf_counter()
    art: dict = {
        "family": "revenue_forecast", "mode": mode, "algorithm": algorithm, "alphas": al, "features": features,
        "feature_kinds": kinds, "categories": cats, "manifest": dict(manifest), "params": p,
        "calibration": calibration if mode == "multi_quantile" else "location_scale_conformal",
        "clip": [float(ytr.min()), float(ytr.max())], "train_rows": int(len(train)),
        "point_mass": _point_mass(ytr),
    }
    fit_kw = dict(eval_set=(Xva, yva), early_stopping_rounds=early_stopping_rounds)
    if mode == "multi_quantile":
        m = make_model(algorithm, "quantile", p, n_threads=n_threads, seed=seed, alphas=al).fit(Xtr, ytr, **fit_kw)
        art["models"] = {"quantiles": m.to_dict()}
        art["best_iteration"] = m.best_iteration
        raw = m.predict_unsorted(Xva)
        art["validation_raw_crossing_rate"] = M.quantile_crossing_rate(raw)
        art["cqr_offset"] = 0.0
        if calibration == "cqr":
            Q = predict_quantiles(art, valid)
            E = np.maximum(Q[:, 0] - yva, yva - Q[:, -1])
            level = min(1.0, (al[-1] - al[0]) * (1 + 1 / len(E)))
            art["cqr_offset"] = float(np.quantile(E, level, method="higher"))
    else:
        point = make_model(algorithm, "regression", p, n_threads=n_threads, seed=seed).fit(Xtr, ytr, **fit_kw)
        # out-of-fold residuals on train (2 folds by opportunity) so the spread is not shrunk by overfitting
        oof = np.empty(len(ytr))
        fixed = {**p, "n_estimators": int(point.best_iteration) + 1}
        for tr, te in make_folds(train["opportunity_id"].to_numpy(), 2, seed=seed):
            mm = make_model(algorithm, "regression", fixed, n_threads=n_threads, seed=seed).fit(Xtr.iloc[tr], ytr[tr])
            oof[te] = mm.predict(Xtr.iloc[te])
        eps = max(1e-6, 0.01 * float(np.mean(np.abs(ytr))))
        ls = np.log(np.abs(ytr - oof) + eps)
        mu_va = point.predict(Xva)
        ls_va = np.log(np.abs(yva - mu_va) + eps)
        scale = make_model(algorithm, "regression", p, n_threads=n_threads, seed=seed).fit(
            Xtr, ls, eval_set=(Xva, ls_va), early_stopping_rounds=early_stopping_rounds)
        sd_va = np.exp(scale.predict(Xva))
        z = (yva - mu_va) / sd_va
        offsets = np.sort(np.quantile(z, al, method="linear"))
        art["models"] = {"point": point.to_dict(), "scale": scale.to_dict()}
        art["offsets"] = [float(o) for o in offsets]
        art["eps"] = eps
        art["best_iteration"] = {"point": point.best_iteration, "scale": scale.best_iteration}
        art["validation_raw_crossing_rate"] = 0.0
    art["train_seconds"] = time.perf_counter() - t0
    Qv = predict_quantiles(art, valid)
    art["validation"] = M.quantile_report(yva, Qv, al)
    return art


def predict_quantiles(artifact: Mapping, df: pd.DataFrame) -> np.ndarray:
    """(n, len(alphas)) predicted quantiles, sorted per row and clipped to the training target's range."""
    X = design_matrix(df, artifact["features"], artifact["feature_kinds"], artifact["categories"])
    if artifact["mode"] == "multi_quantile":
        Q = model_from_dict(artifact["models"]["quantiles"]).predict(X)
        q = float(artifact.get("cqr_offset", 0.0))
        if q:
            Q = Q.copy()
            Q[:, 0] -= q
            Q[:, -1] += q
    else:
        mu = model_from_dict(artifact["models"]["point"]).predict(X)
        sd = np.exp(model_from_dict(artifact["models"]["scale"]).predict(X))
        Q = mu[:, None] + np.asarray(artifact["offsets"])[None, :] * sd[:, None]
    lo, hi = artifact["clip"]
    Q = np.clip(Q, lo, hi)
    pm = artifact.get("point_mass")
    if pm:
        Q = np.where(np.abs(Q - pm["value"]) < pm["snap_within"], pm["value"], Q)
    return np.sort(Q, axis=1)


def _point_mass(y: np.ndarray, min_share: float = 0.05) -> dict | None:
    """The target's point mass at its minimum (lost deals realise exactly 0), if it holds >= ``min_share``
    of the training rows: ``{"value", "share", "snap_within"}``.

    The target has (almost) no mass just above it, so a predicted quantile closer to it than half the
    1st percentile of the other targets is tree-ensemble noise around the mass (XGBoost's P10 scatters
    by a few hundred around 0) and is snapped onto it. Without the snap a P10 of 0.01 would leave every
    lost deal outside a closed [P10, P90] band. Snapping lowers pinball loss for rows at the mass and
    raises it by at most alpha x snap_within elsewhere.
    """
    y = np.asarray(y, float)
    if not len(y):
        return None
    m = float(y.min())
    at = np.isclose(y, m, rtol=0.0, atol=1e-9)
    share = float(at.mean())
    if share < min_share or at.all():
        return None
    return {"value": m, "share": share, "snap_within": float(0.5 * (np.quantile(y[~at], 0.01) - m))}


def predict_expected(artifact: Mapping, df: pd.DataFrame, Q: np.ndarray | None = None) -> np.ndarray:
    """Expected realised revenue per row: the mean head (two-head) or the Swanson estimate."""
    if artifact["mode"] == "two_head":
        X = design_matrix(df, artifact["features"], artifact["feature_kinds"], artifact["categories"])
        lo, hi = artifact["clip"]
        return np.clip(model_from_dict(artifact["models"]["point"]).predict(X), lo, hi)
    Q = predict_quantiles(artifact, df) if Q is None else Q
    return expected_from_quantiles(Q, artifact["alphas"])


def _tenant_sums(df: pd.DataFrame, y: np.ndarray, forecasts: Mapping[str, np.ndarray]) -> dict:
    """Per snapshot date: sum of each forecast over the open deals vs the revenue they went on to close."""
    frame = pd.DataFrame({"date": pd.to_datetime(df["snapshot_date"]).to_numpy(), "actual": y,
                          **{k: np.asarray(v, float) for k, v in forecasts.items()}})
    weekly = frame.groupby("date").sum()
    out = {"weeks": int(len(weekly)), "actual_total": float(weekly["actual"].sum())}
    for k in forecasts:
        tot = float(weekly[k].sum())
        err = (weekly[k] - weekly["actual"]).abs() / weekly["actual"].where(weekly["actual"] > 0)
        out[k] = {"forecast_total": tot, "ratio_to_actual": tot / out["actual_total"] if out["actual_total"] else float("nan"),
                  "weekly_abs_pct_error_mean": float(err.mean())}
    return out


def evaluate_forecast(test: pd.DataFrame, Q: np.ndarray, alphas: Sequence[float] = ALPHAS, *,
                      expected: np.ndarray | None = None, oracle_Q: np.ndarray | None = None) -> dict:
    """Forecast metrics on ``test`` (:func:`build_forecast_examples` rows) next to the CRM baselines.

    Keys: ``model``/``naive_expected``/``crm_distribution``/``oracle`` quantile reports (pinball per
    level, below_pXX, coverage, crossing rate); ``point`` (P50: MAE, RMSE, R2, bias, ``mape_won`` on won
    deals) and ``naive_point`` likewise; ``pinball_skill`` = 1 - mean pinball / the better baseline's;
    ``p50_pinball_skill`` against deal_value x probability; ``coverage_gap_to_oracle`` when the oracle is
    given; ``tenant_sums`` per snapshot date (expected forecast, P50 and naive vs what closed).
    """
    al = _check_alphas(alphas)
    y = test[TARGET].to_numpy(float)
    Q = np.asarray(Q, float)
    won = y > 0
    out: dict = {"rows": int(len(y)), "won_rows": int(won.sum()), "alphas": al, "model": M.quantile_report(y, Q, al)}
    base = {k: naive_quantiles(test, al, k) for k in ("naive_expected", "crm_distribution")}
    for k, B in base.items():
        out[k] = M.quantile_report(y, B, al)
    mid = al.index(0.5) if 0.5 in al else len(al) // 2
    npoint = naive_point(test)

    def point_report(pred):
        r = M.regression_report(y, pred)
        r["mape_won"] = M.mape(y[won], pred[won]) if won.any() else float("nan")
        return r

    out["point"] = point_report(Q[:, mid])
    out["naive_point"] = point_report(npoint)
    best_base = min(out["naive_expected"]["mean_pinball"], out["crm_distribution"]["mean_pinball"])
    out["best_baseline_mean_pinball"] = best_base
    out["pinball_skill"] = 1.0 - out["model"]["mean_pinball"] / best_base if best_base > 0 else float("nan")
    p50_base = M.pinball_loss(y, npoint, 0.5)
    out["p50_pinball_skill"] = 1.0 - M.pinball_loss(y, Q[:, mid], 0.5) / p50_base if p50_base > 0 else float("nan")
    out["coverage"] = out["model"].get("coverage")
    out["crossing_rate"] = out["model"]["crossing_rate"]
    if oracle_Q is not None:
        out["oracle"] = M.quantile_report(y, np.asarray(oracle_Q, float), al)
        out["coverage_gap_to_oracle"] = out["model"]["coverage"] - out["oracle"]["coverage"]
    exp = expected_from_quantiles(Q, al) if expected is None else np.asarray(expected, float)
    if "snapshot_date" in test.columns:
        out["tenant_sums"] = _tenant_sums(test, y, {"expected": exp, "p50": Q[:, mid], "naive": npoint})
    return out
