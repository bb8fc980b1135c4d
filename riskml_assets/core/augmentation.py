"""Synthetic augmentation of a scarce TRAIN split (pure module, no dagster).

``augment(train, manifest, methods=..., target_rows=5000)`` adds synthetic rows to the real train rows
of a tenant until the frame has ``target_rows`` rows. It only ever sees the train split: it refuses a
frame with validation/test rows (use ``augment_splits`` on a whole splits frame: validation and test
come back untouched and 100 % real). When the real rows already reach the target nothing is generated.

Methods (combinable; the rows to generate are split between them, see ``allocate``):

- ``smote`` — imbalanced-learn SMOTE on standardised numeric features, SMOTE-NC (``smotenc``) as soon as
  there are categorical features (or missing values, encoded as categorical missing-indicators). The
  minority class is filled up to the majority first, the rest follows the real class shares.
- ``copula`` — a Gaussian copula per class with empirical marginals: ranks (random tie-breaks, missing
  values ranked last so the missing rate and its dependence are kept) -> normal scores -> correlation ->
  sample -> inverse empirical CDF (interpolated between order statistics for continuous features, the
  observed values themselves for integer-valued ones). Labels follow the real class shares; each
  categorical is drawn conditionally on the label and on the binned numeric feature most associated
  with it (Cramér's V), e.g. ``stage`` given ``stage_index``. Features tied by an impossible-combination
  rule (activity recency/counts/engagement, slips, ages) are filled with whole real tuples, matched to
  the sampled scores one slot per real row (``_Copula._block_rows``), so their joint is the empirical one.
- ``rules`` — domain rules written as data (``augmentation_rules.yaml``, ``load_rules``): real rows
  inside a rule's region are resampled evenly, continuous features jittered, and labelled lost with
  the rule's ``p_lost``.

Every generated row is repaired (integer features rounded, values clipped to the real range, exact
dependencies seen in the real rows — a column equal to another, a number fixed by a category —
re-imposed) and rejected if it still has an impossible combination
(``synthetic_quality.IMPOSSIBLE``); rejected rows are replaced by fresh draws.

Synthetic rows carry ``is_synthetic=True``, ``synthetic_method`` (smote|smotenc|copula|rules|<custom>),
``synthetic_rule`` (rules only), ``split="train"`` and a fresh ``opportunity_id`` ("syn-copula-000001")
so grouping never merges them with a real opportunity. Meta columns: ``snapshot_date``/``week``/
``closed_at`` and unknown columns come from a real donor row of the same class, ``outcome`` follows
the label, ``raw_probability = crm_probability``, ``baseline_risk_score = heuristic_risk_score``,
``deal_value = expm1(log_deal_value)``, ``actual_revenue`` is missing (no revenue target is invented).
"""
from __future__ import annotations

import math
import re
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .lazy import lazy_module

np = lazy_module("numpy")
pd = lazy_module("pandas")

stats = lazy_module("scipy.stats")  # imported on first use (code location load time)

from . import synthetic_quality as Q
from .features import LABEL, REGISTRY

METHODS = ("smote", "copula", "rules")
SYNTHETIC_FLAG = "is_synthetic"
METHOD_COLUMN = "synthetic_method"
RULE_COLUMN = "synthetic_rule"
DEFAULT_TARGET_ROWS = 5000
BLOCK_MATCH_ROUNDS = 64  # nearest-slot matching rounds for a constrained block (then random slots)
DEFAULT_METHODS = ("smote", "copula")  # what the pipeline runs by default; rules are opt-in (see README)
RULES_PATH = Path(__file__).with_name("augmentation_rules.yaml")
RULE_OPS = (">=", ">", "<=", "<", "==", "!=", "in", "not_in", "is_null", "not_null")
MIN_REAL_ROWS = 10  # below this there is nothing to learn a distribution from
MIN_RULE_SUPPORT = 3  # real rows in a rule's region needed to resample from it (else rows are moved into it)
RULE_QUALITY_MIN_SUPPORT = Q.MIN_ROWS  # real rows in a region needed to compare marginals for a rule
MAX_ROUNDS = 10

Generator = Callable[["pd.DataFrame", Mapping, int, "np.random.Generator"], "pd.DataFrame"]


# --------------------------------------------------------------------------------------------
# rules as data


def _registry_features() -> set[str]:
    return {name for name, _ in REGISTRY}


def validate_rules(rules: Sequence[Mapping], known_features: set[str] | None = None) -> list[dict]:
    """Check the structure of rules; every feature must be in ``known_features`` (default: the registry).

    Returns normalised copies. Raises ValueError naming the rule (and feature) that is wrong.
    """
    known = _registry_features() if known_features is None else set(known_features)
    out, seen = [], set()
    if not isinstance(rules, Sequence) or isinstance(rules, (str, bytes)):
        raise ValueError("rules must be a list of rule mappings")
    for i, r in enumerate(rules):
        if not isinstance(r, Mapping):
            raise ValueError(f"rule #{i + 1}: expected a mapping, got {type(r).__name__}")
        name = r.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            raise ValueError(f"rule #{i + 1}: 'name' must be an identifier, got {name!r}")
        if name in seen:
            raise ValueError(f"rule {name!r}: defined twice")
        seen.add(name)
        unknown_keys = set(r) - {"name", "description", "when", "p_lost", "share"}
        if unknown_keys:
            raise ValueError(f"rule {name!r}: unknown keys {sorted(unknown_keys)}")
        when = r.get("when")
        if not isinstance(when, Sequence) or isinstance(when, (str, bytes)) or not when:
            raise ValueError(f"rule {name!r}: 'when' must be a non-empty list of conditions")
        conds = []
        for c in when:
            if not isinstance(c, Mapping) or "feature" not in c or "op" not in c:
                raise ValueError(f"rule {name!r}: each condition needs 'feature' and 'op', got {c!r}")
            feat, op = c["feature"], c["op"]
            if feat not in known:
                raise ValueError(f"rule {name!r}: unknown feature {feat!r} (not in the feature registry)")
            if op not in RULE_OPS:
                raise ValueError(f"rule {name!r}: feature {feat!r}: unknown op {op!r}; use one of {RULE_OPS}")
            if op in ("is_null", "not_null"):
                conds.append({"feature": feat, "op": op})
                continue
            if "value" not in c:
                raise ValueError(f"rule {name!r}: feature {feat!r}: op {op!r} needs a 'value'")
            v = c["value"]
            if op in ("in", "not_in") and (not isinstance(v, Sequence) or isinstance(v, (str, bytes))):
                raise ValueError(f"rule {name!r}: feature {feat!r}: op {op!r} needs a list value")
            conds.append({"feature": feat, "op": op, "value": list(v) if op in ("in", "not_in") else v})
        p = r.get("p_lost")
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"rule {name!r}: p_lost must be a number in [0, 1], got {p!r}")
        share = r.get("share", 0.05)
        if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0.0 < float(share) <= 1.0:
            raise ValueError(f"rule {name!r}: share must be a number in (0, 1], got {share!r}")
        out.append({"name": name, "description": str(r.get("description", "")).strip(), "when": conds,
                    "p_lost": float(p), "share": float(share)})
    total = sum(r["share"] for r in out)
    if total > 1.0 + 1e-9:
        raise ValueError(f"rule shares add up to {total:g} > 1")
    return out


def load_rules(path: str | Path | None = None) -> list[dict]:
    """The domain rules of the YAML file at ``path`` (default: the shipped ``augmentation_rules.yaml``)."""
    import yaml

    p = Path(path) if path is not None else RULES_PATH
    data = yaml.safe_load(p.read_text()) or {}
    rules = data.get("rules", []) if isinstance(data, Mapping) else data
    try:
        return validate_rules(rules)
    except ValueError as e:
        raise ValueError(f"{p.name}: {e}") from None


def rule_mask(df: pd.DataFrame, rule: Mapping) -> np.ndarray:
    """True for rows inside the rule's region (all conditions hold; a missing value fails comparisons)."""
    mask = np.ones(len(df), dtype=bool)
    for c in rule["when"]:
        col, op = df[c["feature"]], c["op"]
        if op == "is_null":
            m = col.isna()
        elif op == "not_null":
            m = col.notna()
        elif op in ("in", "not_in"):
            m = col.isin(c["value"]) & col.notna()
            m = m if op == "in" else (~col.isin(c["value"]) & col.notna())
        else:
            v = c["value"]
            numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
            x = pd.to_numeric(col, errors="coerce") if numeric else col
            m = {">=": x >= v, ">": x > v, "<=": x <= v, "<": x < v, "==": x == v, "!=": x != v}[op] & col.notna()
        mask &= np.asarray(m, dtype=bool)
    return mask


# --------------------------------------------------------------------------------------------
# what the real rows look like


def feature_columns(df: pd.DataFrame, manifest: Mapping) -> tuple[list[str], list[str]]:
    """(numeric, categorical) manifest features present in ``df``, in manifest order."""
    feats = [c for c in manifest if c in df.columns]
    return ([c for c in feats if manifest[c]["kind"] == "numeric"],
            [c for c in feats if manifest[c]["kind"] == "categorical"])


@dataclass
class Profile:
    """Facts about the real rows that every generated row must respect."""

    manifest: Mapping
    numeric: list[str]
    categorical: list[str]
    integer: set[str] = field(default_factory=set)
    lo: dict[str, float] = field(default_factory=dict)
    hi: dict[str, float] = field(default_factory=dict)
    same_as: dict[str, str] = field(default_factory=dict)  # numeric b -> a: b == a on every real row
    derived: dict[str, tuple[str, dict]] = field(default_factory=dict)  # numeric b -> (categorical a, {a: b})
    categories: dict[str, list[str]] = field(default_factory=dict)
    support: dict[str, np.ndarray] = field(default_factory=dict)  # integer feature -> sorted observed values
    atoms: dict[str, np.ndarray] = field(default_factory=dict)  # continuous feature -> values seen more than once
    blocks: list[list[str]] = field(default_factory=list)  # numeric features tied by an impossible-combination rule
    encoded_by: dict[str, tuple[str, dict]] = field(default_factory=dict)  # categorical a -> (numeric b, {b: a}), one-to-one


def constraint_blocks(numeric: Sequence[str], manifest: Mapping | None) -> list[list[str]]:
    """Groups of numeric features that appear together in an applicable cross-feature rule of
    ``synthetic_quality.IMPOSSIBLE`` (connected components), e.g. the activity recency/count/engagement
    features, or stage age and opportunity age. Singletons are left out."""
    parent = {c: c for c in numeric}

    def find(c):
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    cols = set(numeric)
    for rule in Q.IMPOSSIBLE:
        feats = [c for c in rule.requires if c in cols]
        if len(feats) < 2:
            continue
        if rule.versions and (manifest is None or any(
                int(manifest.get(f, {}).get("version", -1)) != v for f, v in rule.versions.items())):
            continue
        for f in feats[1:]:
            parent[find(f)] = find(feats[0])
    groups: dict[str, list[str]] = {}
    for c in numeric:
        groups.setdefault(find(c), []).append(c)
    return [g for g in groups.values() if len(g) > 1]


def profile(real: pd.DataFrame, manifest: Mapping) -> Profile:
    numeric, categorical = feature_columns(real, manifest)
    prof = Profile(manifest, numeric, categorical)
    vals = {c: pd.to_numeric(real[c], errors="coerce").astype("float64") for c in numeric}
    for c, v in vals.items():
        obs = v.dropna()
        if obs.empty:
            continue
        prof.lo[c], prof.hi[c] = float(obs.min()), float(obs.max())
        if np.all(np.abs(obs - np.round(obs)) < 1e-9):
            prof.integer.add(c)
            prof.support[c] = np.unique(obs.to_numpy())
        else:
            vc = obs.value_counts()  # a value seen twice is a point mass (e.g. no change, or one opportunity's
            prof.atoms[c] = np.sort(vc[vc >= 2].index.to_numpy(dtype="float64"))  # weekly snapshots)
    for j, b in enumerate(numeric):
        for a in numeric[:j]:
            if a in prof.same_as:
                continue
            va, vb = vals[a], vals[b]
            if va.isna().equals(vb.isna()) and np.allclose(va.dropna(), vb.dropna(), rtol=0, atol=1e-12):
                prof.same_as[b] = a
                break
    for b in numeric:
        if b in prof.same_as or vals[b].nunique() < 2:
            continue
        for a in categorical:
            n_cat = real[a].nunique()
            if not 2 <= n_cat <= len(real) / 5:  # a dependency needs several rows per category to be believed
                continue
            g = vals[b].groupby(real[a].astype(str)).nunique(dropna=False)
            if (g <= 1).all():
                mapping = vals[b].groupby(real[a].astype(str)).first().to_dict()
                prof.derived[b] = (a, mapping)
                if len(set(mapping.values())) == len(mapping) and a not in prof.encoded_by:
                    prof.encoded_by[a] = (b, {v: k for k, v in mapping.items()})
                break
    for c in categorical:
        prof.categories[c] = sorted(real[c].astype(str).unique())
    prof.blocks = constraint_blocks([c for c in numeric if c in prof.lo], manifest)
    return prof


def _snap(v: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Each value replaced by the nearest value of ``support`` (sorted); missing stays missing."""
    idx = np.clip(np.searchsorted(support, v), 1, len(support) - 1) if len(support) > 1 else np.zeros(len(v), int)
    lo, hi = support[idx - 1] if len(support) > 1 else support[idx], support[idx]
    out = np.where(np.abs(v - lo) <= np.abs(hi - v), lo, hi)
    return np.where(np.isnan(v), np.nan, out)


def repair(df: pd.DataFrame, prof: Profile) -> pd.DataFrame:
    """Snap integer features to their observed values, clip to the real range, re-impose the exact dependencies of the real rows."""
    out = df.copy()
    for c in prof.numeric:
        if c not in out.columns or c not in prof.lo:
            continue
        v = pd.to_numeric(out[c], errors="coerce").to_numpy(dtype="float64")
        if c in prof.integer:
            v = _snap(v, prof.support[c])
        out[c] = np.clip(v, prof.lo[c], prof.hi[c])
    for b, a in prof.same_as.items():
        if a in out.columns:
            out[b] = out[a]
    for b, (a, mapping) in prof.derived.items():
        if a in out.columns:
            mapped = out[a].astype(str).map(mapping)
            out[b] = mapped.where(mapped.notna(), out[b]).astype("float64")
    return out


def _generate_valid(make: Callable[[int, np.random.Generator], pd.DataFrame], n: int, prof: Profile,
                    rng: np.random.Generator, keep: Callable[[pd.DataFrame], np.ndarray] | None = None) -> tuple[pd.DataFrame, dict]:
    """Draw batches from ``make`` until ``n`` repaired, possible rows (and ``keep`` rows) are collected."""
    parts, got, asked, rejected, factor = [], 0, 0, 0, 1.25
    for _ in range(MAX_ROUNDS):
        if got >= n:
            break
        k = int(math.ceil((n - got) * factor)) + 8
        batch = repair(make(k, rng), prof)
        ok = ~Q.impossible_mask(batch, prof.manifest)
        if keep is not None:
            ok &= keep(batch)
        asked += k
        rejected += int((~ok).sum())
        batch = batch[ok].iloc[: n - got]
        parts.append(batch)
        got += len(batch)
        factor = min(20.0, 1.1 * asked / max(asked - rejected, 1))
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return out, {"drawn": asked, "rejected": rejected, "shortfall": int(max(0, n - len(out)))}


def _class_counts(y: np.ndarray, n: int) -> dict[int, int]:
    """Split ``n`` rows between the classes in the real proportions (largest remainder)."""
    classes, counts = np.unique(y, return_counts=True)
    return {int(c): int(k) for c, k in zip(classes, _split_largest_remainder(n, counts))}


def _split_largest_remainder(n: int, weights: Sequence[float]) -> list[int]:
    w = np.asarray(weights, float)
    if n <= 0 or w.sum() <= 0:
        return [0] * len(w)
    exact = n * w / w.sum()
    base = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - base), kind="stable")[: n - base.sum()]:
        base[i] += 1
    return base.tolist()


# --------------------------------------------------------------------------------------------
# SMOTE / SMOTE-NC


def _quantile_maps(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct observed values, their mid-rank normal scores): a monotone map both ways."""
    obs = v[~np.isnan(v)]
    vals, counts = np.unique(obs, return_counts=True)
    mid = (np.cumsum(counts) - counts / 2.0) / len(obs)
    return vals, stats.norm.ppf(np.clip(mid, 1e-6, 1 - 1e-6))


def _smote_encode(real: pd.DataFrame, prof: Profile):
    """Numeric features as normal scores of their empirical CDF (SMOTE interpolates between quantiles, so
    skewed features keep their shape), missing values as categorical indicators, categoricals as strings."""
    num = [c for c in prof.numeric if c in prof.lo]  # all-missing columns stay missing
    X = pd.DataFrame(index=range(len(real)))
    maps, na_cols = {}, []
    for c in num:
        v = pd.to_numeric(real[c], errors="coerce").to_numpy(dtype="float64")
        vals, scores = _quantile_maps(v)
        maps[c] = (vals, scores)
        isna = np.isnan(v)
        z = np.interp(v, vals, scores) if len(vals) > 1 else np.zeros(len(v))
        X[c] = np.where(isna, 0.0, z)
        if isna.any():
            X[f"__isna__{c}"] = np.where(isna, "1", "0")
            na_cols.append(c)
    # a categorical that is a one-to-one function of a numeric feature (stage <-> stage_index) is not given
    # twice: SMOTE-NC's majority vote would sharpen its frequencies; it is derived back after decoding
    cats = [c for c in prof.categorical if not (c in prof.encoded_by and prof.encoded_by[c][0] in num)]
    for c in cats:
        X[c] = real[c].astype(str).to_numpy()
    cat_cols = cats + [f"__isna__{c}" for c in na_cols]
    return X, {"num": num, "maps": maps, "na": na_cols, "cat": cat_cols, "cats": cats}


def _smote_decode(Xn: pd.DataFrame, enc: dict, prof: Profile) -> pd.DataFrame:
    out = pd.DataFrame(index=range(len(Xn)))
    for c in prof.numeric:
        if c in enc["num"]:
            vals, scores = enc["maps"][c]
            z = pd.to_numeric(Xn[c]).to_numpy(dtype="float64")
            v = np.interp(z, scores, vals) if len(vals) > 1 else np.full(len(z), vals[0])
            if c in enc["na"]:
                v = np.where(Xn[f"__isna__{c}"].astype(str).to_numpy() == "1", np.nan, v)
            out[c] = v
        else:
            out[c] = np.nan
    for c in prof.categorical:
        if c in enc["cats"]:
            out[c] = Xn[c].astype(str).to_numpy()
        else:
            b, inverse = prof.encoded_by[c]
            v = _snap(out[b].to_numpy(dtype="float64"), prof.support[b]) if b in prof.support else out[b].to_numpy()
            out[c] = pd.Series(v).map(inverse).astype("object").to_numpy()
    return out


def smote_generate(real: pd.DataFrame, prof: Profile, counts: Mapping[int, int], seed: int,
                   k_neighbors: int = 5) -> tuple[pd.DataFrame, dict]:
    """``counts[c]`` new rows of class c by SMOTE (SMOTE-NC with categoricals or missing values).

    Returns (features + label frame, info with the algorithm used and per-class rejection counts).
    """
    from imblearn.over_sampling import SMOTE, SMOTENC

    X, enc = _smote_encode(real, prof)
    y = real[LABEL].to_numpy(dtype=int)
    have = {int(c): int((y == c).sum()) for c in np.unique(y)}
    algo = "smotenc" if enc["cat"] else "smote"
    if not enc["num"]:
        raise ValueError("SMOTE needs at least one numeric feature")
    parts, info = [], {"algorithm": algo, "classes": {}}
    for cls, n in sorted(counts.items()):
        if n <= 0:
            continue
        if have.get(cls, 0) < 2:
            info["classes"][cls] = {"requested": n, "generated": 0, "reason": "fewer than 2 real rows of the class"}
            continue
        kn = max(1, min(k_neighbors, have[cls] - 1))

        def make(k: int, rng: np.random.Generator, cls=cls, kn=kn) -> pd.DataFrame:
            strategy = {cls: have[cls] + k}
            rs = int(rng.integers(0, 2**31 - 1))
            sampler = (SMOTENC(categorical_features=enc["cat"], sampling_strategy=strategy, random_state=rs,
                               k_neighbors=kn) if enc["cat"] else
                       SMOTE(sampling_strategy=strategy, random_state=rs, k_neighbors=kn))
            if len(have) < 2:  # imbalanced-learn needs two classes: add a throw-away copy with another label
                Xf = pd.concat([X, X.iloc[:1]], ignore_index=True)
                yf = np.concatenate([y, [1 - cls]])
            else:
                Xf, yf = X, y
            Xr, yr = sampler.fit_resample(Xf, yf)
            new = Xr.iloc[len(Xf):].reset_index(drop=True)
            out = _smote_decode(new, enc, prof)
            out[LABEL] = cls
            return out

        rng = np.random.default_rng([seed, cls])
        rows, gen_info = _generate_valid(make, n, prof, rng)
        parts.append(rows)
        info["classes"][cls] = {"requested": n, "generated": int(len(rows)), **gen_info}
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*prof.numeric, *prof.categorical, LABEL])
    return out, info


def smote_counts(y: np.ndarray, n: int) -> dict[int, int]:
    """Minority first: fill the minority class up to the majority, split the rest by the real class shares."""
    classes, counts = np.unique(np.asarray(y, int), return_counts=True)
    if len(classes) < 2:
        return {int(classes[0]): n} if len(classes) else {}
    mi, ma = int(classes[np.argmin(counts)]), int(classes[np.argmax(counts)])
    gap = min(n, int(counts.max() - counts.min()))
    out = {mi: gap, ma: 0}
    for c, k in _class_counts(np.asarray(y, int), n - gap).items():
        out[c] += k
    return out


# --------------------------------------------------------------------------------------------
# Gaussian copula with empirical marginals


def _normal_scores(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Normal scores of the ranks; ties broken at random; missing values ranked last."""
    n = len(v)
    key = np.where(np.isnan(v), np.inf, v)
    order = np.lexsort((rng.random(n), key))
    ranks = np.empty(n)
    ranks[order] = np.arange(n)
    return stats.norm.ppf((ranks + 0.5) / n)


def _nearest_correlation(R: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    R = np.nan_to_num((R + R.T) / 2.0)
    np.fill_diagonal(R, 1.0)
    w, V = np.linalg.eigh(R)
    R = (V * np.maximum(w, eps)) @ V.T
    d = np.sqrt(np.diag(R))
    return R / np.outer(d, d)


@dataclass
class _Copula:
    columns: list[str]
    sorted_obs: list[np.ndarray]
    n_rows: int
    chol: np.ndarray
    integer: list[bool]
    blocks: list[list[int]]
    scores: np.ndarray  # normal scores of the real rows (n_rows x p)
    values: np.ndarray  # the real values (n_rows x p)

    def _block_rows(self, block: list[int], Z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Real rows whose whole tuples fill a constrained block. The real rows are first dealt out as
        ``n`` slots (each row ``n // n_real`` times, the remainder to a random subset), then the synthetic
        rows are matched to the slots by nearest neighbour in the block's normal-score space, one slot per
        row. A plain nearest-neighbour snap favours isolated tuples (large Voronoi cells) and regions where
        the Gaussian model has more mass than the data, which shifted the marginals and the missing rate of
        skewed, tied, partly missing features (the KS gate failed on the sample tenant); with the slots
        every real tuple is used equally often (the block's distribution is the empirical one), while each
        synthetic row still gets a tuple near its own scores (the block's dependence on the rest)."""
        from scipy.spatial import cKDTree

        n = len(Z)
        left = np.full(self.n_rows, n // self.n_rows)  # remaining slots per real row
        left[rng.choice(self.n_rows, n % self.n_rows, replace=False)] += 1
        out = np.full(n, -1)
        todo = rng.permutation(n)
        pts = self.scores[:, block]
        for _ in range(BLOCK_MATCH_ROUNDS):
            if not len(todo):
                break
            avail = np.flatnonzero(left > 0)
            _, near = cKDTree(pts[avail]).query(Z[todo][:, block])
            want = avail[near]
            order = np.argsort(want, kind="stable")  # requests grouped per real row, in random order
            w_sorted = want[order]
            first = np.searchsorted(w_sorted, w_sorted, side="left")
            rank = np.arange(len(order)) - first  # position of each request within its real row
            ok = np.zeros(len(todo), bool)
            ok[order] = rank < left[w_sorted]
            out[todo[ok]] = want[ok]
            np.subtract.at(left, want[ok], 1)
            todo = todo[~ok]
        if len(todo):  # the last few rows take the remaining slots in random order
            out[todo] = rng.permutation(np.repeat(np.arange(self.n_rows), left))
        return out

    def sample(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        p = len(self.columns)
        Z = rng.standard_normal((n, p)) @ self.chol.T if p else np.zeros((n, 0))
        snapped = {}
        for block in self.blocks:  # hard-constrained features: one whole real tuple, see _block_rows
            rows = self._block_rows(block, Z, rng)
            for j in block:
                snapped[j] = self.values[rows, j]
        U = stats.norm.cdf(Z)
        out = {}
        for j, c in enumerate(self.columns):
            s, n_obs = self.sorted_obs[j], len(self.sorted_obs[j])
            k = U[:, j] * self.n_rows  # position in the full sorted column (missing values at the end)
            if j in snapped:
                out[c] = snapped[j]
                continue
            if n_obs == 0:
                out[c] = np.full(n, np.nan)
                continue
            if self.integer[j]:
                vals = s[np.clip(np.floor(k).astype(int), 0, n_obs - 1)]
            else:
                vals = np.interp(k - 0.5, np.arange(n_obs), s)
            out[c] = np.where(k >= n_obs, np.nan, vals)
        return pd.DataFrame(out)


def _fit_copula(X: pd.DataFrame, prof: Profile, rng: np.random.Generator) -> _Copula:
    cols = list(X.columns)
    V = X.apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64")
    n = len(V)
    Z = np.column_stack([_normal_scores(V[:, j], rng) for j in range(len(cols))]) if cols else np.zeros((n, 0))
    R = np.corrcoef(Z, rowvar=False) if len(cols) > 1 else np.ones((len(cols), len(cols)))
    R = _nearest_correlation(np.atleast_2d(R)) if cols else R
    chol = np.linalg.cholesky(R) if cols else R
    sorted_obs = [np.sort(V[~np.isnan(V[:, j]), j]) for j in range(len(cols))]
    pos = {c: j for j, c in enumerate(cols)}
    blocks = [[pos[c] for c in b if c in pos] for b in prof.blocks]
    return _Copula(cols, sorted_obs, n, chol, [c in prof.integer for c in cols], [b for b in blocks if len(b) > 1],
                   Z, V)


def _bins(v: pd.Series, n_bins: int = 5) -> tuple[pd.Series, np.ndarray | None]:
    """Bin labels of a numeric column: its values when it has few, else quantile bins; missing is a bin."""
    x = pd.to_numeric(v, errors="coerce")
    if x.nunique() <= 10:
        return x.astype(str), None
    edges = np.unique(np.nanquantile(x, np.linspace(0, 1, n_bins + 1)[1:-1]))
    return _apply_bins(x, edges), edges


def _apply_bins(x: pd.Series, edges: np.ndarray | None) -> pd.Series:
    x = pd.to_numeric(x, errors="coerce")
    if edges is None:
        return x.astype(str)
    b = np.searchsorted(edges, x.to_numpy(), side="right").astype(str)
    return pd.Series(np.where(x.isna(), "nan", b), index=x.index)


def _cramers_v(a: pd.Series, b: pd.Series) -> float:
    t = pd.crosstab(a, b)
    if t.shape[0] < 2 or t.shape[1] < 2:
        return 0.0
    chi2 = stats.chi2_contingency(t.to_numpy(), correction=False)[0]
    return float(math.sqrt(chi2 / (t.to_numpy().sum() * (min(t.shape) - 1))))


def _anchors(real: pd.DataFrame, prof: Profile, min_v: float = 0.1) -> dict[str, tuple[str, np.ndarray | None] | None]:
    """For each categorical, the numeric feature whose bins are most associated with it (or None)."""
    out = {}
    binned = {c: _bins(real[c]) for c in prof.numeric if c in prof.lo}
    for cat in prof.categorical:
        best, best_v = None, min_v
        for c, (b, _) in binned.items():
            v = _cramers_v(real[cat].astype(str), b)
            if v > best_v + 1e-12:
                best, best_v = c, v
        out[cat] = (best, binned[best][1]) if best else None
    return out


def copula_generate(real: pd.DataFrame, prof: Profile, n: int, seed: int) -> tuple[pd.DataFrame, dict]:
    """``n`` rows from per-class Gaussian copulas (see the module docstring)."""
    y = real[LABEL].to_numpy(dtype=int)
    counts = _class_counts(y, n)
    num = list(prof.numeric)
    anchors = _anchors(real, prof)
    parts, info = [], {"classes": {}, "anchors": {k: (v[0] if v else None) for k, v in anchors.items()}}
    for cls, k_cls in counts.items():
        if k_cls <= 0:
            continue
        rc = real[y == cls]
        rng = np.random.default_rng([seed, cls])
        cop = _fit_copula(rc[num], prof, rng)
        # categorical frequency tables given (label, anchor bin)
        tables = {}
        for cat in prof.categorical:
            overall = rc[cat].astype(str).value_counts(normalize=True)
            cells = {}
            if anchors[cat] is not None:
                anchor, edges = anchors[cat]
                keys = _apply_bins(rc[anchor], edges)
                for key, grp in rc[cat].astype(str).groupby(keys.to_numpy()):
                    if len(grp) >= 5:
                        cells[key] = grp.value_counts(normalize=True)
            tables[cat] = (overall, cells)

        def make(k: int, rng: np.random.Generator, cls=cls, cop=cop, tables=tables) -> pd.DataFrame:
            out = cop.sample(k, rng)
            for cat in prof.categorical:
                overall, cells = tables[cat]
                vals = np.empty(k, dtype=object)
                keys = (_apply_bins(out[anchors[cat][0]], anchors[cat][1]).to_numpy()
                        if anchors[cat] is not None else np.full(k, ""))
                for key in pd.unique(keys):
                    idx = np.flatnonzero(keys == key)
                    freq = cells.get(key, overall)
                    vals[idx] = rng.choice(freq.index.to_numpy(), size=len(idx), p=freq.to_numpy())
                out[cat] = vals
            out[LABEL] = cls
            return out

        rows, gen_info = _generate_valid(make, k_cls, prof, rng)
        parts.append(rows)
        info["classes"][cls] = {"requested": k_cls, "generated": int(len(rows)), **gen_info}
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*num, *prof.categorical, LABEL])
    return out, info


# --------------------------------------------------------------------------------------------
# rule-based generation


def rules_generate(real: pd.DataFrame, prof: Profile, n_per_rule: Mapping[str, int], rules: Sequence[Mapping],
                   seed: int, jitter: float = 0.05) -> tuple[pd.DataFrame, dict]:
    """Rows inside each rule's region, labelled lost with the rule's ``p_lost`` (see the module docstring)."""
    parts, info = [], {"rules": {}}
    cont = [c for c in prof.numeric if c in prof.lo and c not in prof.integer]
    feats = [*prof.numeric, *prof.categorical]
    for rule in rules:
        n = int(n_per_rule.get(rule["name"], 0))
        if n <= 0:
            continue
        inside = np.flatnonzero(rule_mask(real, rule))
        region = real.iloc[inside]
        sd = {c: _std(region[c]) for c in cont}
        sd = {c: (v if v > 0 else _std(real[c])) for c, v in sd.items()}
        rng = np.random.default_rng([seed, zlib.crc32(rule["name"].encode())])
        mode = "resample" if len(inside) >= MIN_RULE_SUPPORT else "move_into_region"

        def make(k: int, rng: np.random.Generator, rule=rule, inside=inside, sd=sd, mode=mode) -> pd.DataFrame:
            if mode == "resample":  # every region row used equally often: the region's marginals are kept
                reps = np.tile(inside, k // len(inside))
                idx = np.concatenate([reps, rng.choice(inside, k - len(reps), replace=False)])
                rng.shuffle(idx)
            else:
                idx = rng.integers(0, len(real), k)
            out = real.iloc[idx][feats].reset_index(drop=True)
            for c in cont:  # jitter continuous values, never a point mass (e.g. "no value change" = 0)
                v = pd.to_numeric(out[c], errors="coerce").to_numpy(dtype="float64")
                atom = np.isin(v, prof.atoms.get(c, np.empty(0)))
                out[c] = np.where(atom, v, v + rng.normal(0.0, jitter * sd[c], k))
            if mode != "resample":
                _move_into_region(out, real, rule, rng)
            out[LABEL] = (rng.random(k) < rule["p_lost"]).astype(int)
            out["_donor"] = idx
            return out

        rows, gen_info = _generate_valid(make, n, prof, rng, keep=lambda b, rule=rule: rule_mask(b, rule))
        rows[RULE_COLUMN] = rule["name"]
        parts.append(rows)
        info["rules"][rule["name"]] = {"requested": n, "generated": int(len(rows)), "support": int(len(inside)),
                                       "mode": mode, **gen_info}
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*feats, LABEL, RULE_COLUMN])
    return out, info


def _std(col: pd.Series) -> float:
    v = pd.to_numeric(col, errors="coerce").dropna()
    return float(v.std(ddof=0)) if len(v) > 1 else 0.0


def _move_into_region(out: pd.DataFrame, real: pd.DataFrame, rule: Mapping, rng: np.random.Generator) -> None:
    """Set every unmet condition's feature to a real value that meets it (or to the boundary)."""
    for c in rule["when"]:
        single = {"when": [c]}
        bad = ~rule_mask(out, single)
        if not bad.any():
            continue
        f, op = c["feature"], c["op"]
        if op == "is_null":
            out.loc[bad, f] = np.nan
            continue
        donors = real.loc[rule_mask(real, single), f].dropna().to_numpy()
        if len(donors):
            out.loc[bad, f] = rng.choice(donors, int(bad.sum()))
        elif op in ("in", "==", ">=", "<="):
            out.loc[bad, f] = c["value"][0] if op == "in" else c["value"]


# --------------------------------------------------------------------------------------------
# assembling synthetic rows


def _mark_real(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    if SYNTHETIC_FLAG not in out.columns:
        out[SYNTHETIC_FLAG] = False
    out[SYNTHETIC_FLAG] = out[SYNTHETIC_FLAG].fillna(False).astype(bool)
    for c in (METHOD_COLUMN, RULE_COLUMN):
        if c not in out.columns:
            out[c] = None
        out[c] = out[c].astype("object")
    return out


def finalise(real: pd.DataFrame, gen: pd.DataFrame, method: str, prof: Profile, rng: np.random.Generator,
             id_prefix: str | None = None) -> pd.DataFrame:
    """Full synthetic rows (every column of ``real``) from generated features + label, with meta filled in."""
    n = len(gen)
    if n == 0:
        return real.iloc[0:0].copy()
    y = gen[LABEL].to_numpy(dtype=int)
    if "_donor" in gen.columns:
        donors = gen["_donor"].to_numpy(dtype=int)
    else:
        ry = real[LABEL].to_numpy(dtype=int)
        donors = np.empty(n, dtype=int)
        for cls in np.unique(y):
            pool = np.flatnonzero(ry == cls)
            pool = pool if len(pool) else np.arange(len(real))
            donors[y == cls] = rng.choice(pool, int((y == cls).sum()))
    out = real.iloc[donors].reset_index(drop=True).copy()
    for c in [*prof.numeric, *prof.categorical]:
        if c in gen.columns:
            out[c] = gen[c].to_numpy()
    out[LABEL] = pd.Series(y).astype(real[LABEL].dtype).to_numpy()
    prefix = id_prefix or f"syn-{method}"
    out["opportunity_id"] = [f"{prefix}-{i:06d}" for i in range(1, n + 1)]
    if "outcome" in out.columns:
        out["outcome"] = np.where(y == 1, "lost", "won")
    if "actual_revenue" in out.columns:
        out["actual_revenue"] = np.nan
    if "log_deal_value" in gen.columns and "deal_value" in out.columns:
        out["deal_value"] = np.round(np.expm1(pd.to_numeric(gen["log_deal_value"]).to_numpy(dtype="float64")), 2)
    if "crm_probability" in gen.columns and "raw_probability" in out.columns:
        out["raw_probability"] = pd.to_numeric(gen["crm_probability"]).to_numpy(dtype="float64")
    if "heuristic_risk_score" in gen.columns and "baseline_risk_score" in out.columns:
        out["baseline_risk_score"] = pd.to_numeric(gen["heuristic_risk_score"]).to_numpy(dtype="float64")
    if "sample_weight" in out.columns:
        out["sample_weight"] = 1.0
    out["split"] = "train"
    out[SYNTHETIC_FLAG] = True
    out[METHOD_COLUMN] = method
    out[RULE_COLUMN] = gen[RULE_COLUMN].to_numpy() if RULE_COLUMN in gen.columns else None
    return out


def allocate(n_synthetic: int, methods: Sequence[str], rules: Sequence[Mapping]) -> dict[str, int | dict]:
    """Rows per method: each active rule takes ``share`` of all synthetic rows, the other methods split the
    rest equally; ``rules`` alone splits all rows between its rules by ``share``.
    Returns ``{method: rows}`` plus ``"rules_per_rule": {rule: rows}``."""
    others = [m for m in methods if m != "rules"]
    per_rule: dict[str, int] = {}
    n_rules = 0
    if "rules" in methods and rules:
        shares = [r["share"] for r in rules]
        n_rules = n_synthetic if not others else min(n_synthetic, int(round(sum(shares) * n_synthetic)))
        per_rule = dict(zip([r["name"] for r in rules], _split_largest_remainder(n_rules, shares)))
    out: dict = dict(zip(others, _split_largest_remainder(n_synthetic - n_rules, [1.0] * len(others))))
    if "rules" in methods:
        out["rules"] = n_rules
        out["rules_per_rule"] = per_rule
    return out


def _check_train_only(train: pd.DataFrame) -> None:
    if "split" in train.columns:
        other = train["split"].astype(str) != "train"
        if other.any():
            counts = train.loc[other, "split"].astype(str).value_counts().to_dict()
            raise ValueError(f"augment() takes the real train split only, got {int(other.sum())} other rows "
                             f"{counts}: synthetic rows must never reach validation/test (use augment_splits)")
    if SYNTHETIC_FLAG in train.columns and train[SYNTHETIC_FLAG].fillna(False).astype(bool).any():
        raise ValueError("augment() takes real rows only: the input already has synthetic rows")
    if LABEL not in train.columns:
        raise ValueError(f"augment() needs the label column {LABEL!r}")


def _seed_for(seed: int, name: str) -> int:
    return int(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]).generate_state(1)[0])


def augment(train: pd.DataFrame, manifest: Mapping, *, methods: Sequence[str] = METHODS,
            target_rows: int = DEFAULT_TARGET_ROWS, seed: int = 0, rules: Sequence[Mapping] | str | Path | None = None,
            generators: Mapping[str, Generator] | None = None, validate: bool = True, on_fail: str = "keep",
            quality_thresholds: Mapping[str, float] | None = None) -> tuple[pd.DataFrame, dict]:
    """Real train rows + synthetic rows up to ``target_rows`` (see the module docstring).

    ``rules``: rule dicts, a YAML path, or None for the shipped rules. ``generators``: extra methods by
    name, ``fn(real_train, manifest, n, rng) -> frame of features + label`` (their output is taken as is:
    no repair, no rejection — the quality gates judge it). ``validate``: compute the quality gates of
    every method's rows (``info["quality"]``); ``on_fail``: what to do with the rows of a method that
    fails them — ``keep`` (report only; the Dagster check blocks), ``drop`` or ``raise``.
    Returns (frame, info) with info keys ``skipped``, ``reason``, ``real_rows``, ``synthetic_rows``,
    ``target_rows``, ``methods`` (per method: rows, seconds, details), ``quality``, ``rules``.
    """
    _check_train_only(train)
    if on_fail not in ("keep", "drop", "raise"):
        raise ValueError(f"on_fail must be keep, drop or raise, got {on_fail!r}")
    generators = dict(generators or {})
    methods = list(dict.fromkeys(methods))
    for m in methods:
        if m not in METHODS and m not in generators:
            raise ValueError(f"unknown augmentation method {m!r}: use {METHODS} or pass it in generators")
    for g in generators:
        if g in METHODS or g == "smotenc":
            raise ValueError(f"a custom generator cannot be called {g!r}")
    real = _mark_real(train)
    real["split"] = "train"
    real = real.reset_index(drop=True)
    n_real = len(real)
    info: dict = {"skipped": False, "reason": "", "real_rows": n_real, "target_rows": int(target_rows),
                  "synthetic_rows": 0, "methods": {}, "quality": {}, "rules": {}}

    def skip(reason: str):
        info.update(skipped=True, reason=reason)
        return real, info

    if not methods:
        return skip("no augmentation method configured")
    if n_real >= target_rows:
        return skip(f"{n_real} real train rows already reach the target of {target_rows}: no synthetic rows")
    if n_real < MIN_REAL_ROWS:
        return skip(f"only {n_real} real train rows: too few to learn a distribution from (minimum {MIN_REAL_ROWS})")

    prof = profile(real, manifest)
    active_rules: list[dict] = []
    if "rules" in methods:
        rule_list = (load_rules(rules) if isinstance(rules, (str, Path)) or rules is None else validate_rules(rules))
        present = set(prof.numeric) | set(prof.categorical)
        for r in rule_list:
            missing = sorted({c["feature"] for c in r["when"]} - present)
            if missing:
                info["rules"][r["name"]] = {"skipped": True,
                                            "reason": f"features not available for this tenant: {missing}"}
            else:
                active_rules.append(r)
        if not active_rules:
            methods = [m for m in methods if m != "rules"]
            info["methods"]["rules"] = {"rows": 0, "seconds": 0.0, "reason": "no applicable rule"}
            if not methods:
                return skip("no applicable augmentation rule and no other method")
    n_syn = int(target_rows) - n_real
    budget = allocate(n_syn, methods, active_rules)
    y = real[LABEL].to_numpy(dtype=int)
    pieces = []
    for m in methods:
        n_m = int(budget[m])
        rng = np.random.default_rng(_seed_for(seed, m))
        t0 = time.perf_counter()
        details: dict = {}
        if n_m <= 0:
            gen, name = pd.DataFrame(), m
        elif m == "smote":
            gen, details = smote_generate(real, prof, smote_counts(y, n_m), _seed_for(seed, "smote-gen"))
            name = details["algorithm"]
        elif m == "copula":
            gen, details = copula_generate(real, prof, n_m, _seed_for(seed, "copula-gen"))
            name = "copula"
        elif m == "rules":
            gen, details = rules_generate(real, prof, budget["rules_per_rule"], active_rules, _seed_for(seed, "rules-gen"))
            name = "rules"
            for rname, rinfo in details["rules"].items():
                info["rules"][rname] = rinfo
        else:
            gen = generators[m](real.copy(), manifest, n_m, rng)
            name = m
        rows = finalise(real, gen, name, prof, rng) if len(gen) else real.iloc[0:0].copy()
        seconds = time.perf_counter() - t0
        info["methods"][m] = {"method": name, "rows_requested": n_m, "rows": int(len(rows)), "seconds": seconds,
                              **({k: v for k, v in details.items() if k != "rules"})}
        if m == "smote" and len(rows):
            info["methods"][m]["class_counts"] = {int(k): int(v) for k, v in rows[LABEL].value_counts().items()}
        pieces.append((m, rows))
    if validate:
        thresholds = dict(quality_thresholds or {})
        kept = []
        for m, rows in pieces:
            if not len(rows):
                kept.append((m, rows))
                continue
            q = method_quality(real, rows, manifest, rules=active_rules, **thresholds)
            info["quality"][m] = q["evaluation"]
            if not q["evaluation"]["passed"]:
                msg = f"synthetic rows of {m!r} fail the quality gates: " + "; ".join(q["evaluation"]["failures"])
                if on_fail == "raise":
                    raise ValueError(msg)
                if on_fail == "drop":
                    info["methods"][m]["dropped"] = msg
                    continue
            kept.append((m, rows))
        pieces = kept
    syn = [rows for _, rows in pieces if len(rows)]
    out = pd.concat([real, *syn], ignore_index=True) if syn else real
    info["synthetic_rows"] = int(sum(len(r) for r in syn))
    info["shortfall"] = int(target_rows) - n_real - info["synthetic_rows"]  # rows short of the target (not generated, or dropped by on_fail="drop")
    info["rows"] = int(len(out))
    info["lost_rate_real"] = float(real[LABEL].mean())
    info["lost_rate_out"] = float(out[LABEL].mean())
    return out, info


def method_quality(real: pd.DataFrame, synthetic: pd.DataFrame, manifest: Mapping, *,
                   rules: Sequence[Mapping] | None = None, ks_max: float = Q.DEFAULT_KS_MAX,
                   corr_max: float = Q.DEFAULT_CORR_MAX, cat_max: float = Q.DEFAULT_CAT_MAX,
                   null_max: float = Q.DEFAULT_NULL_MAX) -> dict:
    """Quality of one method's synthetic rows against the real train rows they were made from.

    SMOTE/copula/custom rows are compared class by class with all real rows. Rule rows are compared,
    per rule and without the label (the rule sets it), with the real rows inside the rule's region
    — a rule deliberately generates only there; a region with fewer than ``RULE_QUALITY_MIN_SUPPORT``
    real rows is only checked for impossible combinations. The worst rule decides.
    Returns ``{"report": ..., "evaluation": ..., "per_rule": {...}}``.
    """
    thr = {"ks_max": ks_max, "corr_max": corr_max, "cat_max": cat_max, "null_max": null_max}
    is_rules = RULE_COLUMN in synthetic.columns and synthetic[RULE_COLUMN].notna().any()
    if not is_rules:
        rep = Q.quality_report(real, synthetic, manifest, by_label=True)
        return {"report": rep, "evaluation": Q.evaluate_quality(rep, **thr), "per_rule": {}}
    rule_by_name = {r["name"]: r for r in (rules if rules is not None else load_rules())}
    per_rule = {}
    for name, rows in synthetic.groupby(RULE_COLUMN, sort=True):
        region = real[rule_mask(real, rule_by_name[name])] if name in rule_by_name else real.iloc[0:0]
        rep = Q.quality_report(region, rows, manifest, by_label=False)
        if len(region) < RULE_QUALITY_MIN_SUPPORT:  # nothing to compare marginals with: impossible rows only
            rep["features"], rep["corr_distance"] = [], float("nan")
        ev = Q.evaluate_quality(rep, **thr)
        ev["region_rows"] = int(len(region))
        per_rule[name] = {"report": rep, "evaluation": ev}
    evs = {n: pr["evaluation"] for n, pr in per_rule.items()}
    evaluation = {k: max(ev[k] for ev in evs.values())
                  for k in ("max_ks", "max_category_tvd", "corr_distance", "max_null_rate_diff")}
    evaluation["impossible_rows"] = int(sum(ev["impossible_rows"] for ev in evs.values()))
    evaluation["gates"] = {g: all(ev["gates"][g] for ev in evs.values()) for g in next(iter(evs.values()))["gates"]}
    evaluation["failures"] = [f"rule {n}: {f}" for n, ev in evs.items() for f in ev["failures"]]
    evaluation["warnings"] = [f"rule {n}: {w}" for n, ev in evs.items() for w in ev["warnings"]]
    evaluation["passed"] = not evaluation["failures"]
    evaluation["per_rule"] = {n: {k: ev[k] for k in ("max_ks", "max_ks_feature", "max_category_tvd", "corr_distance",
                                                     "impossible_rows", "passed", "region_rows")}
                              for n, ev in evs.items()}
    worst = min(per_rule, key=lambda n: (evs[n]["passed"], -evs[n]["max_ks"]))
    return {"report": per_rule[worst]["report"], "evaluation": evaluation, "per_rule": per_rule}


def augment_splits(splits_df: pd.DataFrame, manifest: Mapping, **kwargs) -> tuple[pd.DataFrame, dict]:
    """Augment the train rows of a whole splits frame; validation/test rows come back untouched and real.

    Every input row is kept (in its order, marked ``is_synthetic=False``); synthetic train rows follow.
    """
    if "split" not in splits_df.columns:
        raise ValueError("augment_splits() needs a 'split' column (train/validation/test)")
    marked = _mark_real(splits_df).reset_index(drop=True)
    train = marked[marked["split"].astype(str) == "train"]
    aug, info = augment(train, manifest, **kwargs)
    syn = aug[aug[SYNTHETIC_FLAG]]
    out = pd.concat([marked, syn], ignore_index=True) if len(syn) else marked
    info["rows"] = int(len(out))
    return out, info
