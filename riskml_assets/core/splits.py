"""Train / validation / test splits grouped by opportunity (no opportunity ever lands in two splits)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .features import LABEL

SPLITS = ("train", "validation", "test")


def split_examples(df: pd.DataFrame, *, method: str = "stratified", fractions=(0.70, 0.15, 0.15),
                   seed: int = 0, group: str = "opportunity_id") -> pd.DataFrame:
    """Add a ``split`` column.

    - ``stratified``: opportunities (not rows) are shuffled within each label and cut by ``fractions``,
      so every split has about the same lost rate and all snapshots of an opportunity stay together.
    - ``walk_forward``: opportunities are ordered by the time their outcome became known (``closed_at``);
      the earliest go to train, then validation, then test, so the model is always tested on the future.
    """
    if abs(sum(fractions) - 1.0) > 1e-9 or any(f < 0 for f in fractions):
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    if df.empty:
        return df.assign(split=pd.Series(dtype="object"))
    g = df.groupby(group, sort=True).agg(label=(LABEL, "max"), closed_at=("closed_at", "max"))
    assignment = pd.Series(index=g.index, dtype="object")
    cuts = np.cumsum(fractions)[:-1]
    if method == "stratified":
        rng = np.random.default_rng(seed)
        for _, ids in g.groupby("label").groups.items():
            ids = np.array(sorted(ids))
            rng.shuffle(ids)
            bounds = np.round(cuts * len(ids)).astype(int)
            for name, part in zip(SPLITS, np.split(ids, bounds)):
                assignment.loc[part] = name
    elif method == "walk_forward":
        order = g.sort_values(["closed_at"], kind="mergesort").index.to_numpy()
        bounds = np.round(cuts * len(order)).astype(int)
        for name, part in zip(SPLITS, np.split(order, bounds)):
            assignment.loc[part] = name
    else:
        raise ValueError(f"unknown split method {method!r}: use 'stratified' or 'walk_forward'")
    out = df.copy()
    out["split"] = out[group].map(assignment).astype(str)
    return out


def split_stats(df: pd.DataFrame, group: str = "opportunity_id") -> dict:
    stats: dict = {}
    for name in SPLITS:
        part = df[df["split"] == name]
        stats[name] = {"rows": int(len(part)), "opportunities": int(part[group].nunique()),
                       "lost": int((part[LABEL] == 1).sum()), "won": int((part[LABEL] == 0).sum()),
                       "lost_rate": float(part[LABEL].mean()) if len(part) else float("nan"),
                       "first": str(part["snapshot_date"].min()) if len(part) else None,
                       "last": str(part["snapshot_date"].max()) if len(part) else None}
    owners = df.groupby(group)["split"].nunique()
    stats["opportunities_in_several_splits"] = int((owners > 1).sum())
    return stats
