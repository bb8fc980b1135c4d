"""Cleaning of training examples: drop what cannot be trusted, keep and report everything else."""
from __future__ import annotations

from .lazy import lazy_module

np = lazy_module("numpy")
pd = lazy_module("pandas")


from .features import LABEL


def clean_examples(df: pd.DataFrame, manifest: dict, *, critical: tuple[str, ...] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Return (clean rows, dropped rows with a ``drop_reason``, stats).

    Rules, in order (a row is dropped for the first rule it breaks):
    - ``missing_label``: label not 0/1;
    - ``probability_out_of_range``: the CRM probability outside 0-100 (or missing);
    - ``non_finite``: +/-Inf in any numeric feature (NaN is a missing value, Inf is a bug upstream);
    - ``missing_critical``: a critical feature (manifest ``critical``) is missing.
    Remaining NaNs in non-critical numeric features stay NaN (the gradient-boosted models handle missing
    values natively); missing categoricals become the category ``"__missing__"``.
    """
    critical = tuple(critical if critical is not None else [n for n, p in manifest.items() if p.get("critical")])
    features = [c for c in manifest if c in df.columns]
    numeric = [c for c in features if manifest[c]["kind"] == "numeric"]
    categorical = [c for c in features if manifest[c]["kind"] == "categorical"]
    reason = pd.Series(pd.NA, index=df.index, dtype="object")

    def mark(mask: pd.Series, why: str) -> None:
        reason.loc[mask & reason.isna()] = why

    mark(~df[LABEL].isin([0, 1]), "missing_label")
    prob = pd.to_numeric(df.get("raw_probability", df.get("crm_probability")), errors="coerce")
    mark(~prob.between(0, 100), "probability_out_of_range")
    if numeric:
        vals = df[numeric].apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64")
        mark(pd.Series(np.isinf(vals).any(axis=1), index=df.index), "non_finite")
    for c in critical:
        if c in df.columns:
            mark(df[c].isna(), "missing_critical")
        else:
            mark(pd.Series(True, index=df.index), "missing_critical")
    keep = reason.isna()
    clean = df.loc[keep].copy()
    for c in categorical:
        clean[c] = clean[c].astype("object").where(clean[c].notna(), "__missing__").astype(str)
    dropped = df.loc[~keep].copy()
    dropped["drop_reason"] = reason[~keep].astype(str)
    n = len(df)
    stats = {
        "rows_in": int(n),
        "rows_out": int(keep.sum()),
        "rows_dropped": int(n - keep.sum()),
        "drop_share": float((n - keep.sum()) / n) if n else 0.0,
        "drop_reasons": {k: int(v) for k, v in dropped["drop_reason"].value_counts().items()},
        "null_rates": {c: float(clean[c].isna().mean()) for c in numeric} if len(clean) else {},
    }
    return clean, dropped, stats
