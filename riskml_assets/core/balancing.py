"""Class balancing of the train split (imbalanced-learn). Validation and test are never touched."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .features import LABEL

STRATEGIES = ("none", "undersample", "oversample")


def class_ratio(y) -> float:
    """minority count / majority count (1.0 = balanced, 0 when one class is missing)."""
    counts = np.bincount(np.asarray(y, dtype=int), minlength=2)
    return float(counts.min() / counts.max()) if counts.max() else 0.0


def balance(train: pd.DataFrame, *, strategy: str = "none", target_ratio: float = 1.0,
            min_ratio: float = 0.0, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Resample ``train`` so that minority/majority reaches ``target_ratio``.

    Nothing happens when the strategy is ``none`` or the data is already at least ``min_ratio`` balanced
    (``min_ratio=1`` balances whenever the classes differ at all).
    Resampled rows are real rows (duplicated or dropped), marked by ``resampled`` for oversampling.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown balancing strategy {strategy!r}: use one of {STRATEGIES}")
    if not 0 < target_ratio <= 1:
        raise ValueError(f"target_ratio must be in (0, 1], got {target_ratio}")
    y = train[LABEL].to_numpy(dtype=int)
    before = class_ratio(y)
    info = {"strategy": strategy, "target_ratio": target_ratio, "ratio_before": before,
            "rows_before": int(len(train)), "applied": False}
    if strategy == "none" or before >= min(min_ratio, target_ratio) or len(np.unique(y)) < 2:
        out = train.copy()
        info.update(ratio_after=before, rows_after=int(len(out)))
        return out, info
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
