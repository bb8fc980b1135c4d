"""Class balancing of the train split (imbalanced-learn). Validation and test are never touched.

Strategies: ``undersample`` / ``oversample`` (random, real rows dropped or duplicated) and ``smote``
(new minority rows interpolated between real neighbours: SMOTE, or SMOTE-NC as soon as categorical
features — or missing values — are present; see ``augmentation.smote_generate``). SMOTE rows are
synthetic: ``is_synthetic=True``, ``synthetic_method`` smote|smotenc, ``resampled=True`` and a fresh
``opportunity_id`` ``syn-bal-<method>-NNNNNN``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from .lazy import lazy_module

np = lazy_module("numpy")
pd = lazy_module("pandas")


from .features import LABEL

STRATEGIES = ("none", "undersample", "oversample", "smote")


def class_ratio(y) -> float:
    """minority count / majority count (1.0 = balanced, 0 when one class is missing)."""
    counts = np.bincount(np.asarray(y, dtype=int), minlength=2)
    return float(counts.min() / counts.max()) if counts.max() else 0.0


def _feature_manifest(train: pd.DataFrame, features, kinds: Mapping[str, str] | None) -> dict:
    """A manifest-like ``{name: {"kind": ...}}`` from a manifest or a list of feature names (+ kinds)."""
    if isinstance(features, Mapping):
        man = {n: dict(pin) if isinstance(pin, Mapping) else {"kind": str(pin)} for n, pin in features.items()}
    else:
        man = {}
        for n in features:
            kind = (kinds or {}).get(n)
            if kind is None:
                col = train[n] if n in train.columns else None
                kind = "numeric" if col is not None and pd.api.types.is_numeric_dtype(col) else "categorical"
            man[n] = {"kind": kind}
    bad = {n: p.get("kind") for n, p in man.items() if p.get("kind") not in ("numeric", "categorical")}
    if bad:
        raise ValueError(f"feature kinds must be numeric or categorical, got {bad}")
    return {n: p for n, p in man.items() if n in train.columns and n != LABEL}


def balance(train: pd.DataFrame, *, strategy: str = "none", target_ratio: float = 1.0,
            min_ratio: float = 0.0, seed: int = 0, features: Mapping | Sequence[str] | None = None,
            kinds: Mapping[str, str] | None = None) -> tuple[pd.DataFrame, dict]:
    """Resample ``train`` so that minority/majority reaches ``target_ratio``.

    Nothing happens when the strategy is ``none`` or the data is already at least ``min_ratio`` balanced
    (``min_ratio=1`` balances whenever the classes differ at all).
    Resampled rows are real rows (duplicated or dropped), marked by ``resampled`` for oversampling.
    ``smote`` interpolates feature values, so it needs ``features``: the feature manifest (kinds from its
    ``kind`` fields, version-dependent impossible-combination checks enabled) or a list of feature
    columns (kinds from ``kinds`` or the dtypes). Its new rows are synthetic (see the module docstring);
    every input row is kept. A frame with a ``split`` column must hold train rows only.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown balancing strategy {strategy!r}: use one of {STRATEGIES}")
    if not 0 < target_ratio <= 1:
        raise ValueError(f"target_ratio must be in (0, 1], got {target_ratio}")
    if strategy == "smote" and not features:
        raise ValueError("balancing strategy 'smote' interpolates feature values: pass features= "
                         "(the feature manifest or the list of feature columns)")
    if "split" in train.columns and (train["split"].astype(str) != "train").any():
        raise ValueError("balance() takes the train split only: validation and test are never resampled")
    y = train[LABEL].to_numpy(dtype=int)
    before = class_ratio(y)
    info = {"strategy": strategy, "target_ratio": target_ratio, "ratio_before": before,
            "rows_before": int(len(train)), "applied": False}
    if strategy == "none" or before >= min(min_ratio, target_ratio) or len(np.unique(y)) < 2:
        out = train.copy()
        info.update(ratio_after=before, rows_after=int(len(out)))
        return out, info
    if strategy == "smote":
        return _balance_smote(train, y, target_ratio, seed, _feature_manifest(train, features, kinds), info)
    from imblearn.over_sampling import RandomOverSampler
    from imblearn.under_sampling import RandomUnderSampler

    sampler_cls = RandomUnderSampler if strategy == "undersample" else RandomOverSampler
    sampler = sampler_cls(sampling_strategy=target_ratio, random_state=seed)
    idx = np.arange(len(train)).reshape(-1, 1)
    res_idx, _ = sampler.fit_resample(idx, y)
    res_idx = np.sort(res_idx.ravel(), kind="stable")
    out = train.iloc[res_idx].reset_index(drop=True)
    out["resampled"] = pd.Series(res_idx).duplicated().to_numpy()
    info.update(applied=True, ratio_after=class_ratio(out[LABEL]), rows_after=int(len(out)))
    return out, info


def _balance_smote(train: pd.DataFrame, y: np.ndarray, target_ratio: float, seed: int, manifest: dict,
                   info: dict) -> tuple[pd.DataFrame, dict]:
    from . import augmentation as A

    counts = np.bincount(y, minlength=2)
    minority, majority = int(np.argmin(counts)), int(np.argmax(counts))
    need = int(counts[majority] * target_ratio) - int(counts[minority])  # imbalanced-learn's rounding
    real = A._mark_real(train).reset_index(drop=True)
    if "resampled" not in real.columns:
        real["resampled"] = False
    if need <= 0:
        info.update(ratio_after=class_ratio(y), rows_after=int(len(real)), synthetic_rows=0)
        return real, info
    prof = A.profile(real, manifest)
    gen, ginfo = A.smote_generate(real, prof, {minority: need}, seed)
    method = ginfo["algorithm"]
    rows = A.finalise(real, gen, method, prof, np.random.default_rng(seed), id_prefix=f"syn-bal-{method}")
    rows["resampled"] = True
    out = pd.concat([real, rows], ignore_index=True)
    info.update(applied=True, method=method, synthetic_rows=int(len(rows)),
                shortfall=int(need - len(rows)), ratio_after=class_ratio(out[LABEL]), rows_after=int(len(out)))
    return out, info
