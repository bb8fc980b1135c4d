"""A pooled risk model across the tenants who opt in (issue 12 item 2a): more rows for small tenants.

A tenant opts in with ``pooled: true`` in ``config/tenants/<tenant>.yaml`` (``parse_pooled``). The pooled
model of a target tenant and week is trained on the **train** rows of every opted-in tenant's
``dataset_splits`` of that week, with the tenant as a categorical feature (``TENANT_FEATURE``); early
stopping uses the **target tenant's validation rows only**, and the calibrator is fit on the target's own
validation rows (a per-tenant calibration: no tenant's rows are ever scored with another tenant's labels).
No validation or test row of any tenant is used for training (``pooled_training_rows``), so every tenant's
held-out opportunities stay held out.

A feature is pooled only where it means the same thing: a column of another tenant is used when that
tenant's pinned feature (version and hash, from its feature manifest) equals the target's; otherwise the
column is set to missing for that tenant's rows and the decision is recorded (``features_masked``). For
example, ``stage_index`` with a tenant's own stage order has another hash than the contract order.
Columns that another tenant does not have (the target's ``x_`` extra columns) are missing for its rows.

Nothing here imports dagster. The result is a JSON-able dict (see ``train_pooled_model``).
"""
from __future__ import annotations

import hashlib
from typing import Callable, Mapping

from .lazy import lazy_module

np = lazy_module("numpy")
pd = lazy_module("pandas")


from . import metrics as M
from .evaluation import apply_calibrator, fit_risk_calibrator
from .features import LABEL
from .training import XGBParams, predict_raw, train_xgb_classifier

POOLED_KEY = "pooled"  # the tenant config key (a YAML boolean)
TENANT_FEATURE = "tenant"  # the categorical feature that names the tenant of a row
TRAIN, VALIDATION = "train", "validation"


class PooledConfigError(ValueError):
    """A tenant config whose ``pooled`` key is not a boolean (names the file and the value)."""


def parse_pooled(raw: Mapping | None, where: str = "tenant config") -> bool:
    """Has the tenant opted in to the pooled model? ``pooled`` must be a YAML boolean (``true``/``false``);
    absent = not opted in. Anything else (``"yes"``, ``1``, a list) raises PooledConfigError naming ``where``."""
    if raw is None:
        return False
    if not isinstance(raw, Mapping):
        raise PooledConfigError(f"{where}: expected a mapping at the top level, got {type(raw).__name__}")
    if POOLED_KEY not in raw:
        return False
    value = raw[POOLED_KEY]
    if not isinstance(value, bool):
        raise PooledConfigError(f"{where}: '{POOLED_KEY}' must be true or false (a YAML boolean), got {value!r}")
    return value


def unavailable(reason: str, tenants=(), rows_by_tenant=None, **extra) -> dict:
    """The result of a partition without a pooled model (a cheap step: nothing trained)."""
    return {"available": False, "reason": reason, "model": None, "calibrator": None, "tenants": list(tenants),
            "rows_by_tenant": dict(rows_by_tenant or {}), **extra}


def _same_feature(a: Mapping | None, b: Mapping | None) -> bool:
    return bool(a) and bool(b) and a.get("version") == b.get("version") and a.get("hash") == b.get("hash")


def pooled_training_rows(frames: Mapping[str, pd.DataFrame], target: str, manifest: Mapping[str, Mapping],
                         tenants, manifests: Mapping[str, Mapping] | None = None) -> tuple[pd.DataFrame, dict]:
    """The pooled train rows: the ``train`` split of each tenant in ``tenants`` (others' validation and test
    rows never enter), with ``TENANT_FEATURE`` set, the target's features only, and a feature of another tenant
    masked (missing) when its pinned version/hash differs from the target's (``manifests``: {tenant: feature
    manifest}; a tenant without one keeps its columns). Returns (rows, {"features_masked": {tenant: [...]}})."""
    feats = list(manifest)
    parts, masked = [], {}
    for t in sorted(tenants):
        df = frames.get(t)
        if df is None or not len(df):
            continue
        tr = df[df["split"] == TRAIN]
        if not len(tr):
            continue
        cols = ["opportunity_id", "snapshot_date", LABEL, *[c for c in feats if c in tr.columns]]
        if "sample_weight" in tr.columns:
            cols.append("sample_weight")
        part = tr[cols].copy()
        if t != target and manifests is not None and t in manifests:
            bad = [c for c in feats if c in part.columns and not _same_feature(manifests[t].get(c), manifest[c])]
            for c in bad:
                part[c] = np.nan if manifest[c].get("kind") != "categorical" else None
            if bad:
                masked[t] = bad
        part[TENANT_FEATURE] = t
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=["opportunity_id", "snapshot_date", LABEL, TENANT_FEATURE]), {"features_masked": {}}
    out = pd.concat(parts, ignore_index=True)
    for c in feats:  # a target feature another tenant lacks (its x_ columns): missing for that tenant's rows
        if c not in out.columns:
            out[c] = np.nan
    return out, {"features_masked": masked}


def training_fingerprint(rows: pd.DataFrame) -> str:
    """A short hash of the (tenant, opportunity) pairs a model was trained on (recorded in the artifact)."""
    keys = sorted(set(zip(rows[TENANT_FEATURE].astype(str), rows["opportunity_id"].astype(str))))
    return hashlib.sha256("\n".join(f"{t}|{o}" for t, o in keys).encode()).hexdigest()[:16]


def with_tenant(df: pd.DataFrame, tenant: str) -> pd.DataFrame:
    return df.assign(**{TENANT_FEATURE: tenant})


def predict_pooled(artifact: dict, df: pd.DataFrame, tenant: str, calibrator: dict | None = None) -> np.ndarray:
    """P(lost) of the pooled model for rows of ``tenant`` (the tenant feature is set here); calibrated when a
    calibrator (the pooled result's, fit on that tenant's validation rows) is given."""
    p = predict_raw(artifact, with_tenant(df, tenant))
    return apply_calibrator(calibrator, p) if calibrator is not None else p


CALIBRATION_CANDIDATES = ("none", "platt", "isotonic")


def grouped_oof_brier(p_raw: np.ndarray, y: np.ndarray, groups, methods=CALIBRATION_CANDIDATES, n_folds: int = 5,
                      seed: int = 0) -> dict[str, float]:
    """Out-of-fold Brier of each calibration method on these rows, folds grouped by opportunity (the snapshots
    of one opportunity share its outcome: row-level folds let isotonic regression memorise it and look better
    than it is). ``none`` is the raw scores' Brier. Methods that cannot be fit (isotonic on fewer than
    ``calibration.ISOTONIC_MIN_ROWS`` rows) are left out."""
    from sklearn.model_selection import StratifiedGroupKFold

    from .calibration import ISOTONIC_MIN_ROWS, fit_calibrator

    p, y = np.asarray(p_raw, float), np.asarray(y, int)
    g = np.asarray(groups if groups is not None else np.arange(len(y)))
    out = {"none": float(np.mean((p - y) ** 2))} if "none" in methods else {}
    n_groups = len(np.unique(g))
    folds = min(n_folds, n_groups, int(y.sum()), int(len(y) - y.sum()))
    if folds < 2:
        return out
    for method in methods:
        if method == "none" or (method == "isotonic" and len(y) < ISOTONIC_MIN_ROWS):
            continue
        pred = np.empty(len(y))
        for tr, te in StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(p.reshape(-1, 1), y, g):
            cal, _ = fit_calibrator(p[tr], y[tr], method=method, seed=seed)
            pred[te] = cal.predict(p[te])
        out[method] = float(np.mean((np.clip(pred, 1e-3, 1 - 1e-3) - y) ** 2))
    return out


def calibrate_for_tenant(p_raw_val: np.ndarray, y_val: np.ndarray, method: str = "auto", seed: int = 0,
                         groups=None) -> dict:
    """The target tenant's calibrator, fit on its own validation rows (``evaluation.fit_risk_calibrator``).

    With ``method="auto"`` the identity, Platt and isotonic compete by their out-of-fold Brier on those rows with
    folds grouped by opportunity (``grouped_oof_brier``); the lowest wins (the identity on a tie) and is refit on
    all rows. The pooled model is trained with the tenant as a feature, so its raw scores are often calibrated
    already, and a map fit on a small tenant's validation rows can add more noise than it removes. The scores
    and the choice are in ``selection["pooled_choice"]`` and ``selection["grouped_oof_brier"]``."""
    if method != "auto":
        return fit_risk_calibrator(p_raw_val, y_val, method=method, seed=seed, groups=groups)
    scores = grouped_oof_brier(p_raw_val, y_val, groups, seed=seed)
    chosen = min(scores, key=lambda m: (scores[m], CALIBRATION_CANDIDATES.index(m)))
    cal = fit_risk_calibrator(p_raw_val, y_val, method=chosen, seed=seed, groups=groups)
    cal["selection"]["grouped_oof_brier"] = scores
    cal["selection"]["pooled_choice"] = (
        f"{'identity' if chosen == 'none' else chosen} kept: lowest out-of-fold Brier (folds grouped by opportunity) "
        f"on {len(y_val)} validation rows: " + ", ".join(f"{m} {v:.4f}" for m, v in scores.items()))
    return cal


def train_pooled_model(frames: Mapping[str, pd.DataFrame], target: str, manifest: Mapping[str, Mapping],
                       opted_in, *, manifests: Mapping[str, Mapping] | None = None, params: XGBParams | None = None,
                       target_weight: float = 1.0, calibration: str = "auto", seed: int = 0,
                       log: Callable[[str], None] | None = None, return_rows: bool = False):
    """Train the pooled model of ``target`` on the train rows of the opted-in tenants found in ``frames``
    ({tenant: dataset_splits of the week}).

    Returns ``{"available", "reason", "model", "calibrator", "tenants", "rows_by_tenant", "features_masked",
    "metrics", "train_fingerprint"}``: ``model`` is a ``training.train_xgb_classifier`` artifact whose features
    include ``TENANT_FEATURE`` (use ``predict_pooled``), ``calibrator`` an ``evaluation.fit_risk_calibrator``
    dict fit on the target's validation rows. Not available (with the reason, nothing trained) when the target
    has not opted in, no other opted-in tenant has train rows this week, or the target's validation rows cannot
    stop and calibrate (none, or a single class). ``return_rows``: also return the training rows.
    """
    opted = sorted(set(opted_in))
    present = sorted(t for t in opted if frames.get(t) is not None and len(frames[t]))

    def done(res, rows=None):
        return (res, rows if rows is not None else pd.DataFrame()) if return_rows else res

    if target not in opted:
        return done(unavailable(f"{target} has not opted in to the pooled model ('{POOLED_KEY}: true' in its "
                                f"tenant config)", present))
    if frames.get(target) is None or not len(frames[target]):
        return done(unavailable(f"{target} has no dataset_splits for this week", present))
    others = [t for t in present if t != target]
    rows, info = pooled_training_rows(frames, target, manifest, present, manifests)
    rows_by_tenant = {t: int(n) for t, n in rows[TENANT_FEATURE].value_counts().sort_index().items()} if len(rows) else {}
    others_with_rows = [t for t in others if rows_by_tenant.get(t, 0) > 0]
    if not others_with_rows:
        missing = [t for t in opted if t != target and t not in present]
        return done(unavailable(
            f"no other opted-in tenant has train rows for this week (opted in: {opted}; without dataset_splits this "
            f"week: {missing}); materialize dataset_splits for every tenant of the week before the risk step",
            present, rows_by_tenant), rows)
    tgt = frames[target]
    valid = tgt[tgt["split"] == VALIDATION].reset_index(drop=True)
    y_va = valid[LABEL].to_numpy(int) if len(valid) else np.array([], int)
    if len(np.unique(y_va)) < 2:
        return done(unavailable(f"{target}'s validation split has {len(valid)} rows and "
                                f"{len(np.unique(y_va))} class(es): nothing to stop early and calibrate on",
                                present, rows_by_tenant), rows)
    if rows[LABEL].nunique() < 2:
        return done(unavailable("the pooled train rows hold a single class", present, rows_by_tenant), rows)
    train = rows.copy()
    w = train["sample_weight"].to_numpy(float) if "sample_weight" in train.columns else np.ones(len(train))
    w = np.where(np.isfinite(w), w, 1.0) * np.where(train[TENANT_FEATURE].to_numpy() == target, float(target_weight), 1.0)
    train["sample_weight"] = w
    pooled_manifest = {**{k: dict(v) for k, v in manifest.items()},
                       TENANT_FEATURE: {"version": 1, "hash": "pooled-tenant", "kind": "categorical",
                                        "sources": ["platform:tenant"], "critical": False,
                                        "description": "The tenant of the row (pooled model only)."}}
    params = params or XGBParams(seed=seed)
    art = train_xgb_classifier(train, with_tenant(valid, target), pooled_manifest, params, log=log)
    p_va = predict_raw(art, with_tenant(valid, target))
    cal = calibrate_for_tenant(p_va, y_va, calibration, seed=seed, groups=valid["opportunity_id"].to_numpy())
    tr_t = train[train[TENANT_FEATURE] == target]
    p_tr = predict_raw(art, tr_t) if len(tr_t) else np.array([])
    metrics = {"auc_validation": M.roc_auc(y_va, p_va), "brier_validation_raw": M.brier(y_va, p_va),
               "brier_validation_cv": cal["validation"]["brier_cv"], "ece_validation_cv": cal["validation"]["ece_cv"],
               "auc_train_target": M.roc_auc(tr_t[LABEL].to_numpy(int), p_tr) if tr_t[LABEL].nunique() == 2
               else float("nan")}
    fp = training_fingerprint(train)
    art.update(pooled=True, target_tenant=target, tenant_feature=TENANT_FEATURE, tenants=present,
               rows_by_tenant=rows_by_tenant, train_fingerprint=fp, target_weight=float(target_weight),
               metrics=metrics)
    if log:
        log(f"pooled model for {target}: {len(train)} train rows of {present} ({rows_by_tenant}); validation AUC "
            f"{metrics['auc_validation']:.4f}, Brier (calibrated, cross-validated) {metrics['brier_validation_cv']:.4f}")
    res = {"available": True, "reason": f"trained on the train rows of {present}, early stopping and calibration "
                                        f"on {target}'s validation rows",
           "model": art, "calibrator": cal, "tenants": present, "rows_by_tenant": rows_by_tenant,
           "features_masked": info["features_masked"], "metrics": metrics, "train_fingerprint": fp}
    return done(res, train)
