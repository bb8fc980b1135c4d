"""Drift of new snapshots against the champion's training data: Population Stability Index per feature.

``PSI = sum_b (a_b - e_b) * ln(a_b / e_b)`` over bins, with ``e`` the expected (reference, training)
shares and ``a`` the actual (new) shares.

- Numeric features: bins are the deciles (``bins`` quantiles) of the *reference* values, the outer edges
  opened to +/-inf, duplicate edges merged (a feature with many ties has fewer bins).
- Categorical features: one bin per category seen in either sample.
- Missing values are a bin of their own in both cases: a feature that suddenly goes missing is drift.
- Empty bins get a share of ``eps`` so the logarithm stays finite (a category that never appeared in
  training and now holds 5 % of the rows gives PSI ~0.3 with the default eps).

Conventional reading: < 0.1 stable, 0.1-0.25 moderate (warn), > 0.25 major shift (fail).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from .lazy import lazy_module

np = lazy_module("numpy")
pd = lazy_module("pandas")


WARN_PSI = 0.1
FAIL_PSI = 0.25
DEFAULT_EPS = 1e-4
MISSING = "__missing__"
STATUSES = ("ok", "warn", "fail")


def _is_categorical(values: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values))


def _psi_from_shares(e: np.ndarray, a: np.ndarray, eps: float) -> float:
    e = np.clip(e, eps, None)
    a = np.clip(a, eps, None)
    return float(np.sum((a - e) * np.log(a / e)))


def psi(expected, actual, bins: int = 10, *, kind: str | None = None, eps: float = DEFAULT_EPS) -> float:
    """Population Stability Index of ``actual`` against ``expected``.

    ``kind`` is "numeric" or "categorical"; by default it follows the dtype of ``expected``.
    Raises ValueError on an empty sample (no rows at all); NaN/None values are counted in a missing bin.
    """
    e = pd.Series(expected).reset_index(drop=True)
    a = pd.Series(actual).reset_index(drop=True)
    if len(e) == 0 or len(a) == 0:
        raise ValueError(f"psi needs rows in both samples (expected {len(e)}, actual {len(a)})")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    kind = kind or ("categorical" if _is_categorical(e) else "numeric")
    if kind == "categorical":
        ec = e.astype("object").where(e.notna(), MISSING).astype(str)
        ac = a.astype("object").where(a.notna(), MISSING).astype(str)
        cats = sorted(set(ec) | set(ac))
        es = ec.value_counts().reindex(cats, fill_value=0).to_numpy(float) / len(ec)
        as_ = ac.value_counts().reindex(cats, fill_value=0).to_numpy(float) / len(ac)
        return _psi_from_shares(es, as_, eps)
    if kind != "numeric":
        raise ValueError(f"kind must be 'numeric' or 'categorical', got {kind!r}")
    ev = pd.to_numeric(e, errors="coerce").to_numpy(float)
    av = pd.to_numeric(a, errors="coerce").to_numpy(float)
    e_ok, a_ok = np.isfinite(ev), np.isfinite(av)
    if e_ok.any():
        edges = np.unique(np.quantile(ev[e_ok], np.linspace(0.0, 1.0, bins + 1)))
        edges = np.concatenate([[-np.inf], edges[1:-1], [np.inf]]) if len(edges) > 1 else np.array([-np.inf, np.inf])
    else:
        edges = np.array([-np.inf, np.inf])
    eh = np.histogram(ev[e_ok], edges)[0].astype(float)
    ah = np.histogram(av[a_ok], edges)[0].astype(float)
    es = np.append(eh, (~e_ok).sum()) / len(ev)
    as_ = np.append(ah, (~a_ok).sum()) / len(av)
    return _psi_from_shares(es, as_, eps)


def status_of(value: float, warn: float = WARN_PSI, fail: float = FAIL_PSI) -> str:
    if not np.isfinite(value) or value > fail:
        return "fail"
    return "warn" if value > warn else "ok"


def expected_noise(n_bins: int, n_reference: int, n_new: int) -> float:
    """PSI expected from sampling alone when nothing drifted: ``(k - 1) * (1/n_ref + 1/n_new)``
    (PSI is, to second order, a chi-square divergence). 184 new rows in 10 bins already give ~0.05."""
    if n_reference <= 0 or n_new <= 0:
        return float("nan")
    return float(max(n_bins - 1, 0) * (1.0 / n_reference + 1.0 / n_new))


def _n_bins(ref: pd.Series, new: pd.Series, kind: str, bins: int) -> int:
    if kind == "categorical":
        return int(pd.concat([ref, new]).astype("object").fillna(MISSING).nunique())
    v = pd.to_numeric(ref, errors="coerce").dropna().to_numpy(float)
    edges = len(np.unique(np.quantile(v, np.linspace(0, 1, bins + 1)))) if len(v) else 1
    return max(edges - 1, 1) + int(ref.isna().any() or new.isna().any())


def drift_report(reference_df: pd.DataFrame, new_df: pd.DataFrame, features: Iterable[str],
                 kinds: Mapping[str, str] | None = None, *, warn: float = WARN_PSI, fail: float = FAIL_PSI,
                 bins: int = 10, eps: float = DEFAULT_EPS, min_rows: int = 0) -> pd.DataFrame:
    """PSI of every feature of ``new_df`` against ``reference_df``, worst first.

    Columns: feature, kind, psi, status (ok|warn|fail), expected_noise (the PSI sampling alone produces at
    these sizes), reference_rows, new_rows, reference_missing_share, new_missing_share, note.
    With fewer than ``min_rows`` new rows PSI is mostly noise: a feature can then warn but not fail.
    A feature absent from ``new_df`` counts as all missing (so it fails unless it was missing in training
    too); a feature absent from the reference has nothing to compare to and is reported as ok with a note.

    The reference registered with a model is its train rows (:func:`reference_from_train`): built once by the
    training run, never recomputed; labelled rows over-represent deals close to their close date a little
    (measured there).
    """
    if not (0 <= warn <= fail):
        raise ValueError(f"thresholds must satisfy 0 <= warn <= fail, got warn={warn}, fail={fail}")
    if len(reference_df) == 0 or len(new_df) == 0:
        raise ValueError(f"drift needs rows in both frames (reference {len(reference_df)}, new {len(new_df)})")
    kinds = dict(kinds or {})
    rows = []
    for f in features:
        kind = kinds.get(f)
        rec = {"feature": f, "kind": kind, "psi": float("nan"), "status": "ok", "expected_noise": float("nan"),
               "reference_rows": len(reference_df),
               "new_rows": len(new_df), "reference_missing_share": float("nan"), "new_missing_share": float("nan"),
               "note": ""}
        if f not in reference_df.columns:
            rec.update(note="feature not in the reference data: nothing to compare")
        else:
            ref = reference_df[f]
            if f in new_df.columns:
                new = new_df[f]
            else:  # the column is gone: every new row is missing, which the missing bin measures
                new = pd.Series([None] * len(new_df), dtype=ref.dtype if not _is_categorical(ref) else "object")
                rec["note"] = "feature missing from the new data (all rows counted as missing)"
            kind = kind or ("categorical" if _is_categorical(ref) else "numeric")
            value = psi(ref, new, bins, kind=kind, eps=eps)
            status = status_of(value, warn, fail)
            if status == "fail" and len(new_df) < min_rows:
                status = "warn"
                rec["note"] = (rec["note"] + "; " if rec["note"] else "") + \
                    f"only {len(new_df)} new rows (< {min_rows}): capped at warn"
            rec.update(kind=kind, psi=value, status=status,
                       expected_noise=expected_noise(_n_bins(ref, new, kind, bins), len(ref), len(new)),
                       reference_missing_share=float(ref.isna().mean()), new_missing_share=float(new.isna().mean()))
        rows.append(rec)
    out = pd.DataFrame(rows, columns=["feature", "kind", "psi", "status", "expected_noise", "reference_rows", "new_rows",
                                      "reference_missing_share", "new_missing_share", "note"])
    order = out["status"].map({"fail": 0, "warn": 1, "ok": 2})
    return (out.assign(_o=order, _p=out["psi"].fillna(-1.0))
               .sort_values(["_o", "_p"], ascending=[True, False], kind="stable")
               .drop(columns=["_o", "_p"]).reset_index(drop=True))


REFERENCE_ROWS = 5000


def reference_from_train(dataset_splits: pd.DataFrame, features: Iterable[str], max_rows: int = REFERENCE_ROWS) -> pd.DataFrame:
    """The drift reference registered with a model: keys and feature columns of the rows it was trained on
    (``split == "train"`` of its dataset splits, which carry the pinned features already: nothing is
    recomputed), a seeded sample of at most ``max_rows`` rows. Features absent from the splits are left out
    (``drift_report`` notes them as not in the reference).

    Labelled rows lean a little towards deals near their close (recent snapshots are labelled only once the deal
    closed): on the simulator's tenants the max PSI of a week's open rows is 0.04 against the train rows and 0.03
    against every snapshot of the window (acme), 0.10 and 0.09 (globex) -- well under the fail threshold.
    """
    if "split" not in dataset_splits.columns:
        raise ValueError(f"dataset splits without a 'split' column (columns: {list(dataset_splits.columns)[:12]})")
    train = dataset_splits[dataset_splits["split"] == "train"]
    if "is_synthetic" in train.columns:  # real rows only
        train = train[~train["is_synthetic"].fillna(False).astype(bool)]
    cols = [c for c in ("opportunity_id", "snapshot_date") if c in train.columns]
    cols += [f for f in features if f in train.columns and f not in cols]
    return train[cols].sample(n=min(len(train), int(max_rows)), random_state=0).reset_index(drop=True)


def drift_summary(report: pd.DataFrame) -> dict:
    """Gate inputs: max_psi, worst_feature, n_warn, n_fail, status (the worst status of any feature)."""
    if report.empty:
        return {"max_psi": 0.0, "worst_feature": None, "n_warn": 0, "n_fail": 0, "n_features": 0, "status": "ok"}
    psis = report["psi"].fillna(-np.inf)
    worst = report.loc[psis.idxmax()]
    n_fail, n_warn = int((report["status"] == "fail").sum()), int((report["status"] == "warn").sum())
    finite = report["psi"].dropna()
    return {
        "max_psi": float(finite.max()) if len(finite) else float("nan"),
        "worst_feature": str(worst["feature"]),
        "n_warn": n_warn,
        "n_fail": n_fail,
        "n_features": int(len(report)),
        "status": "fail" if n_fail else ("warn" if n_warn else "ok"),
    }
