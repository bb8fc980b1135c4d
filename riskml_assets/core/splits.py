"""Train / validation / test splits grouped by opportunity (no opportunity ever lands in two splits).

The default split is **stable across weeks**: an opportunity's split is a function of a hash of
``tenant`` + ``opportunity_id`` (+ ``seed``) alone, so retraining next week puts every opportunity that
was already known back into the split it was in. That keeps next week's test rows out of this week's
train split, which a fair champion/challenger comparison needs (see ``core.promotion.comparison_set``).
"""
from __future__ import annotations

import hashlib

from .lazy import lazy_module

np = lazy_module("numpy")
pd = lazy_module("pandas")


from .features import LABEL

SPLITS = ("train", "validation", "test")
METHODS = ("stratified", "walk_forward")


def stable_unit(tenant: str, ids, seed: int = 0) -> np.ndarray:
    """A uniform number in [0, 1) per id: the first 8 bytes of sha256(``seed|tenant|id``).

    The same (seed, tenant, id) gives the same number in every process, week and library version
    (unlike Python's salted ``hash`` or a seeded shuffle, which depends on the other ids present).
    """
    out = np.empty(len(ids))
    prefix = f"{int(seed)}|{tenant}|".encode()
    for i, oid in enumerate(ids):
        digest = hashlib.sha256(prefix + str(oid).encode()).digest()
        out[i] = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    return out


def split_examples(df: pd.DataFrame, *, method: str = "stratified", fractions=(0.70, 0.15, 0.15),
                   seed: int = 0, group: str = "opportunity_id", tenant: str = "") -> pd.DataFrame:
    """Add a ``split`` column; all snapshots of an opportunity land in one split.

    - ``stratified`` (default, stable): each opportunity gets ``u = stable_unit(tenant, id, seed)`` in
      [0, 1) and goes to train when ``u < f_train``, to validation when ``u < f_train + f_validation``,
      else to test. ``u`` does not depend on the label, so won and lost opportunities are each split
      with the same expected fractions (stratified in expectation: the lost rates of the splits differ
      only by sampling noise; exact per-label counts would need a rank cut, which moves opportunities
      between splits whenever new ones arrive). Because ``u`` depends on the opportunity
      alone, an opportunity keeps its split from week to week — also when its label becomes known
      only later (the hash does not use the label). Changing ``seed`` or ``tenant`` reshuffles.
    - ``walk_forward``: opportunities are ordered by the time their outcome became known (``closed_at``);
      the earliest go to train, then validation, then test, so the model is always tested on the future.
      (Not stable across weeks by design: the newest outcomes are always the test split.)
    """
    if abs(sum(fractions) - 1.0) > 1e-9 or any(f < 0 for f in fractions):
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    if df.empty:
        return df.assign(split=pd.Series(dtype="object"))
    g = df.groupby(group, sort=True).agg(label=(LABEL, "max"), closed_at=("closed_at", "max"))
    assignment = pd.Series(index=g.index, dtype="object")
    cuts = np.cumsum(fractions)[:-1]
    if method == "stratified":
        # one fixed cut of a label-independent hash: every label is split with the same expected fractions
        u = stable_unit(tenant, g.index.to_numpy(), seed)
        assignment[:] = np.array(SPLITS, dtype=object)[np.searchsorted(cuts, u, side="right")]
    elif method == "walk_forward":
        order = g.sort_values(["closed_at"], kind="mergesort").index.to_numpy()
        bounds = np.round(cuts * len(order)).astype(int)
        for name, part in zip(SPLITS, np.split(order, bounds)):
            assignment.loc[part] = name
    else:
        raise ValueError(f"unknown split method {method!r}: use 'stratified' (stable hash) or 'walk_forward'")
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
