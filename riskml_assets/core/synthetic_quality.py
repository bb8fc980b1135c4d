"""Quality of synthetic training rows: do they look like the real rows they stand in for?

Three families of checks, each a number an operator can gate on (see ``QUALITY_GATES``):

- **marginals** — per numeric feature the two-sample Kolmogorov–Smirnov statistic between real and
  synthetic values (missing values excluded, the missing rates compared separately); per categorical
  feature the total-variation distance (half the L1 distance) between the category frequencies.
  By default both are *class-conditional*: real rows of label c are compared with synthetic rows of
  label c, and the feature's value is the largest over the classes that have at least ``min_rows``
  rows on both sides. A generator that keeps the marginals but loses the link to the label (e.g. one
  that shuffles features independently of the label) therefore fails too. Without enough rows of any
  class (or with ``by_label=False``) the comparison is unconditional.
- **dependence** — ``corr_distance``: the root-mean-square difference of the off-diagonal entries of the
  Spearman correlation matrices of real and synthetic rows over the numeric features plus the label,
  i.e. ``||C_real - C_syn||_F / sqrt(p (p - 1))``. It is on the scale of a correlation (0 = identical
  dependence, a generator that destroys all dependence scores the RMS of the real correlations).
  Columns constant in the real rows are left out; an undefined synthetic correlation counts as 0.
- **impossible combinations** — ``IMPOSSIBLE``: feature combinations no real training example can have
  (a probability outside 0–100, a stage index that contradicts the stage, more activities in 30 days
  than in 90, a stage older than its opportunity, a slip count without slip days, ...). Every rule only
  applies when the frame has its columns (and, for version-dependent ones, the pinned feature version
  matches). The list of violated rules with counts must be empty.

Pure module: no dagster.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from .lazy import lazy_module

np = lazy_module("numpy")
pd = lazy_module("pandas")


from .contract import OPEN_STAGES, RISK_CATEGORIES
from .features import LABEL
from .gates import Gate

DEFAULT_KS_MAX = 0.10
DEFAULT_CORR_MAX = 0.10
DEFAULT_CAT_MAX = 0.10
DEFAULT_NULL_MAX = 0.05
MIN_ROWS = 20  # rows of a class on each side for a class-conditional comparison

# Gates as data (same shape as gates.DEFAULT_GATES; the Dagster layer may merge them there).
QUALITY_GATES: tuple[Gate, ...] = (
    Gate("augmented_examples_ks", "max_ks", "<=", DEFAULT_KS_MAX, "fail",
         "largest per-feature two-sample KS statistic, synthetic vs real train rows (class-conditional)"),
    Gate("augmented_examples_corr_distance", "corr_distance", "<=", DEFAULT_CORR_MAX, "fail",
         "RMS difference of the off-diagonal Spearman correlations (numeric features + label)"),
    Gate("augmented_examples_category_distance", "max_category_tvd", "<=", DEFAULT_CAT_MAX, "fail",
         "largest total-variation distance of category frequencies (class-conditional)"),
    Gate("augmented_examples_impossible", "impossible_rows", "<=", 0, "fail",
         "synthetic rows with an impossible feature combination"),
    Gate("augmented_examples_null_rate", "max_null_rate_diff", "<=", DEFAULT_NULL_MAX, "warn",
         "largest difference of a numeric feature's missing rate, synthetic vs real"),
)


# --------------------------------------------------------------------------------------------
# impossible combinations


@dataclass(frozen=True)
class Impossible:
    name: str
    description: str
    requires: tuple[str, ...]  # columns that must be present for the rule to apply
    check: Callable[[pd.DataFrame], pd.Series]  # True where the row is impossible
    versions: Mapping[str, int] | None = None  # pinned feature versions the rule assumes (None: any)


def _num(df: pd.DataFrame, col: str) -> pd.Series:
    return pd.to_numeric(df[col], errors="coerce").astype("float64")


def _outside(df: pd.DataFrame, col: str, lo: float, hi: float) -> pd.Series:
    v = _num(df, col)
    return v.notna() & ((v < lo) | (v > hi))


def _non_integer(v: pd.Series) -> pd.Series:
    return v.notna() & (np.abs(v - np.round(v)) > 1e-9)


def _negative(df: pd.DataFrame, col: str) -> pd.Series:
    v = _num(df, col)
    return v.notna() & (v < 0)


_STAGE_INDEX = {s: i for i, s in enumerate(OPEN_STAGES)}
_WON_STAGES = {"closed_won", "closedwon", "won", "closed won"}
_LOST_STAGES = {"closed_lost", "closedlost", "lost", "closed lost"}


def _stage_index_mismatch(df: pd.DataFrame) -> pd.Series:
    expected = df["stage"].map(_STAGE_INDEX)
    actual = _num(df, "stage_index")
    known = expected.notna()
    return known & ~(actual == expected)


def _stage_contradicts_label(df: pd.DataFrame) -> pd.Series:
    st = df["stage"].astype(str).str.lower()
    y = _num(df, LABEL)
    return (st.isin(_WON_STAGES) & (y == 1)) | (st.isin(_LOST_STAGES) & (y == 0))


def _slip_mismatch(df: pd.DataFrame) -> pd.Series:
    n, d = _num(df, "close_date_slips"), _num(df, "close_date_slip_days")
    return ((n == 0) & (d > 0)) | ((n > 0) & (d == 0))


def _recency_window(days: int) -> Callable[[pd.DataFrame], pd.Series]:
    col = f"activity_count_{days}d"

    def check(df: pd.DataFrame) -> pd.Series:
        ds, c = _num(df, "days_since_last_activity"), _num(df, col)
        # the last event lies inside the window exactly when it is less than `days` days old
        return ((ds < days) & (c == 0)) | ((ds >= days) & (c > 0)) | (ds.isna() & (c > 0))
    return check


def _engagement_mismatch(df: pd.DataFrame) -> pd.Series:
    ds, e = _num(df, "days_since_last_activity"), _num(df, "engagement")
    return (ds.isna() & (e > 0)) | (ds.notna() & (e <= 0))


def _label_outcome_mismatch(df: pd.DataFrame) -> pd.Series:
    y, o = _num(df, LABEL), df["outcome"].astype(str)
    return ((y == 1) & (o == "won")) | ((y == 0) & (o == "lost"))


def _score_out_of_range(df: pd.DataFrame) -> pd.Series:
    cols = [c for c in ("heuristic_risk_score", "baseline_risk_score", *(f"risk_{k}" for k in RISK_CATEGORIES))
            if c in df.columns]
    out = pd.Series(False, index=df.index)
    for c in cols:
        out |= _outside(df, c, 0.0, 1.0)
    return out


IMPOSSIBLE: tuple[Impossible, ...] = (
    Impossible("label_not_binary", "label other than 0 (won) / 1 (lost)", (LABEL,),
               lambda d: ~_num(d, LABEL).isin([0.0, 1.0])),
    Impossible("label_contradicts_outcome", "label 1 (lost) with outcome 'won' or label 0 with 'lost'",
               (LABEL, "outcome"), _label_outcome_mismatch),
    Impossible("probability_out_of_range", "CRM probability outside 0-100", ("crm_probability",),
               lambda d: _outside(d, "crm_probability", 0, 100)),
    Impossible("raw_probability_out_of_range", "raw CRM probability outside 0-100", ("raw_probability",),
               lambda d: _outside(d, "raw_probability", 0, 100)),
    Impossible("probability_feature_differs_from_raw", "crm_probability differs from the raw CRM probability",
               ("crm_probability", "raw_probability"),
               lambda d: (_num(d, "crm_probability") - _num(d, "raw_probability")).abs() > 1e-9),
    Impossible("stage_index_out_of_range", "stage index not one of 0-4", ("stage_index",),
               lambda d: _outside(d, "stage_index", 0, len(OPEN_STAGES) - 1) | _non_integer(_num(d, "stage_index"))),
    Impossible("stage_index_contradicts_stage", "stage index is not the funnel position of the stage",
               ("stage", "stage_index"), _stage_index_mismatch),
    Impossible("closed_stage_contradicts_label", "a won stage on a lost example or a lost stage on a won one",
               ("stage", LABEL), _stage_contradicts_label),
    Impossible("negative_activity_count_30d", "negative or fractional activity count (30 days)", ("activity_count_30d",),
               lambda d: _negative(d, "activity_count_30d") | _non_integer(_num(d, "activity_count_30d"))),
    Impossible("negative_activity_count_90d", "negative or fractional activity count (90 days)", ("activity_count_90d",),
               lambda d: _negative(d, "activity_count_90d") | _non_integer(_num(d, "activity_count_90d"))),
    Impossible("activity_30d_exceeds_90d", "more activities in 30 days than in 90 days",
               ("activity_count_30d", "activity_count_90d"),
               lambda d: _num(d, "activity_count_30d") > _num(d, "activity_count_90d")),
    Impossible("negative_engagement", "negative engagement", ("engagement",), lambda d: _negative(d, "engagement")),
    Impossible("negative_days_since_last_activity", "last activity after the snapshot",
               ("days_since_last_activity",), lambda d: _negative(d, "days_since_last_activity")),
    Impossible("activity_recency_contradicts_count_30d",
               "last activity less than 30 days ago but no activity in 30 days (or the reverse)",
               ("days_since_last_activity", "activity_count_30d"), _recency_window(30),
               versions={"days_since_last_activity": 2}),
    Impossible("activity_recency_contradicts_count_90d",
               "last activity less than 90 days ago but no activity in 90 days (or the reverse)",
               ("days_since_last_activity", "activity_count_90d"), _recency_window(90),
               versions={"days_since_last_activity": 2}),
    Impossible("engagement_without_activity", "engagement without any activity (or activity without engagement)",
               ("days_since_last_activity", "engagement"), _engagement_mismatch,
               versions={"days_since_last_activity": 2, "engagement": 2}),
    Impossible("negative_opportunity_age", "opportunity younger than 0 days", ("opportunity_age_days",),
               lambda d: _negative(d, "opportunity_age_days")),
    Impossible("negative_stage_age", "stage younger than 0 days", ("stage_age_days",),
               lambda d: _negative(d, "stage_age_days")),
    Impossible("stage_older_than_opportunity", "stage age greater than the opportunity's age",
               ("stage_age_days", "opportunity_age_days"),
               lambda d: _num(d, "stage_age_days") > _num(d, "opportunity_age_days") + 1e-9),
    Impossible("invalid_slip_count", "negative or fractional number of close-date slips", ("close_date_slips",),
               lambda d: _negative(d, "close_date_slips") | _non_integer(_num(d, "close_date_slips"))),
    Impossible("negative_slip_days", "close date moved later by a negative number of days", ("close_date_slip_days",),
               lambda d: _negative(d, "close_date_slip_days")),
    Impossible("slip_count_contradicts_slip_days", "slips without slip days, or slip days without a slip",
               ("close_date_slips", "close_date_slip_days"), _slip_mismatch),
    Impossible("deal_value_not_positive", "deal value change implying a value <= 0", ("deal_value_change",),
               lambda d: _num(d, "deal_value_change") <= -1),
    Impossible("deal_value_not_positive_raw", "deal value <= 0", ("deal_value",), lambda d: _num(d, "deal_value") <= 0),
    Impossible("risk_score_out_of_range", "a heuristic risk score outside 0-1", (), _score_out_of_range),
)
# Not applicable to training examples (documented for the list): "open stage with an outcome" —
# every example is a snapshot of a deal that was open then and closed later, so the combination is the
# definition of an example, not an error; "negative days to close for a won deal" — a snapshot may be
# overdue (days_to_close < 0) and still be won later.


def _applies(rule: Impossible, df: pd.DataFrame, manifest: Mapping | None) -> bool:
    if any(c not in df.columns for c in rule.requires):
        return False
    if rule.versions:
        if manifest is None:
            return False
        for name, version in rule.versions.items():
            pin = manifest.get(name)
            if pin is None or int(pin.get("version", -1)) != version:
                return False
    return True


def impossible_masks(df: pd.DataFrame, manifest: Mapping | None = None) -> dict[str, np.ndarray]:
    """{rule name: boolean mask of the rows breaking it} for every rule that applies to ``df``."""
    out = {}
    for rule in IMPOSSIBLE:
        if _applies(rule, df, manifest):
            out[rule.name] = rule.check(df).fillna(False).to_numpy(dtype=bool)
    return out


def impossible_mask(df: pd.DataFrame, manifest: Mapping | None = None) -> np.ndarray:
    """True for every row with at least one impossible combination."""
    masks = impossible_masks(df, manifest)
    out = np.zeros(len(df), dtype=bool)
    for m in masks.values():
        out |= m
    return out


def impossible_combinations(df: pd.DataFrame, manifest: Mapping | None = None) -> list[dict]:
    """Violated rules with their row counts (empty when every row is possible)."""
    desc = {r.name: r.description for r in IMPOSSIBLE}
    return [{"rule": name, "description": desc[name], "rows": int(m.sum())}
            for name, m in impossible_masks(df, manifest).items() if m.any()]


# --------------------------------------------------------------------------------------------
# distances


def ks_statistic(a, b) -> float:
    """Two-sample KS statistic (sup distance of the empirical CDFs) of the non-missing values
    (``metrics.ks_statistic``: ``scipy.stats.ks_2samp``)."""
    from .metrics import ks_statistic as _ks

    return _ks(a, b)


def tv_distance(a, b) -> float:
    """Total-variation distance of the category frequencies (missing is a category of its own)."""
    pa = pd.Series(a).astype("object").fillna("__missing__").astype(str).value_counts(normalize=True)
    pb = pd.Series(b).astype("object").fillna("__missing__").astype(str).value_counts(normalize=True)
    if pa.empty or pb.empty:
        return float("nan")
    keys = pa.index.union(pb.index)
    return float(0.5 * np.abs(pa.reindex(keys, fill_value=0.0) - pb.reindex(keys, fill_value=0.0)).sum())


def _spearman(df: pd.DataFrame, cols: list[str]) -> np.ndarray:
    if not cols:
        return np.zeros((0, 0))
    c = df[cols].apply(pd.to_numeric, errors="coerce").astype("float64").corr(method="spearman").to_numpy()
    return np.nan_to_num(c, nan=0.0)


def corr_distance(real: pd.DataFrame, synthetic: pd.DataFrame, cols: Sequence[str]) -> dict:
    """RMS difference of the off-diagonal Spearman correlations over ``cols`` (constant-in-real columns dropped)."""
    cols = [c for c in cols if c in real.columns and c in synthetic.columns
            and pd.to_numeric(real[c], errors="coerce").nunique(dropna=True) > 1]
    p = len(cols)
    if p < 2 or len(synthetic) < 3:
        return {"corr_distance": float("nan"), "columns": cols, "worst_pair": None, "worst_diff": float("nan")}
    d = _spearman(real, cols) - _spearman(synthetic, cols)
    np.fill_diagonal(d, 0.0)
    rms = float(np.sqrt((d ** 2).sum() / (p * (p - 1))))
    i, j = np.unravel_index(np.argmax(np.abs(d)), d.shape)
    return {"corr_distance": rms, "columns": cols, "worst_pair": [cols[i], cols[j]], "worst_diff": float(d[i, j])}


# --------------------------------------------------------------------------------------------
# the report


def _feature_kinds(df_cols, manifest: Mapping) -> tuple[list[str], list[str]]:
    feats = [c for c in manifest if c in df_cols]
    num = [c for c in feats if manifest[c]["kind"] == "numeric"]
    cat = [c for c in feats if manifest[c]["kind"] == "categorical"]
    return num, cat


def quality_report(real: pd.DataFrame, synthetic: pd.DataFrame, manifest: Mapping, *, by_label: bool = True,
                   min_rows: int = MIN_ROWS) -> dict:
    """Compare ``synthetic`` rows with ``real`` rows feature by feature (see the module docstring).

    Returns ``{"features": [row per feature], "corr_distance", "corr_worst_pair", "impossible": [...],
    "impossible_rows", "classes_compared", "rows_real", "rows_synthetic"}``; ``features`` rows carry
    ``feature, kind, metric ('ks'|'tvd'), value`` (the gated value: max over compared classes),
    ``value_overall`` (unconditional), ``value_by_class``, null rates and row counts.
    """
    num, cat = _feature_kinds(set(real.columns) & set(synthetic.columns), manifest)
    classes: list = []
    if by_label and LABEL in real.columns and LABEL in synthetic.columns:
        yr, ys = _num(real, LABEL), _num(synthetic, LABEL)
        classes = [c for c in (0.0, 1.0) if (yr == c).sum() >= min_rows and (ys == c).sum() >= min_rows]
    parts = ([("all", real, synthetic)] if not classes else
             [(int(c), real[_num(real, LABEL) == c], synthetic[_num(synthetic, LABEL) == c]) for c in classes])
    rows = []
    for f in num + cat:
        kind = "numeric" if f in num else "categorical"
        fn = ks_statistic if kind == "numeric" else tv_distance
        by_class = {str(k): fn(r[f], s[f]) for k, r, s in parts}
        finite = [v for v in by_class.values() if v == v]
        nr_real = float(real[f].isna().mean()) if len(real) else float("nan")
        nr_syn = float(synthetic[f].isna().mean()) if len(synthetic) else float("nan")
        rows.append({
            "feature": f, "kind": kind, "metric": "ks" if kind == "numeric" else "tvd",
            "value": max(finite) if finite else float("nan"),
            "value_overall": fn(real[f], synthetic[f]),
            "value_by_class": by_class,
            "null_rate_real": nr_real, "null_rate_synthetic": nr_syn,
            "null_rate_diff": abs(nr_real - nr_syn) if kind == "numeric" else 0.0,
            "rows_real": int(len(real)), "rows_synthetic": int(len(synthetic)),
        })
    corr_cols = list(num) + ([LABEL] if by_label and LABEL in real.columns and LABEL in synthetic.columns else [])
    cd = corr_distance(real, synthetic, corr_cols)
    imp = impossible_combinations(synthetic, manifest)
    return {
        "features": rows,
        "corr_distance": cd["corr_distance"],
        "corr_worst_pair": cd["worst_pair"],
        "corr_worst_diff": cd["worst_diff"],
        "impossible": imp,
        "impossible_rows": int(impossible_mask(synthetic, manifest).sum()),
        "classes_compared": [str(k) for k, _, _ in parts],
        "rows_real": int(len(real)),
        "rows_synthetic": int(len(synthetic)),
    }


def feature_table(report: Mapping) -> pd.DataFrame:
    """The per-feature rows of a report as a DataFrame (one row per feature)."""
    df = pd.DataFrame(report["features"])
    if df.empty:
        return df
    return df.drop(columns=["value_by_class"]).assign(
        by_class=[", ".join(f"{k}: {v:.3f}" for k, v in d.items()) for d in df["value_by_class"]])


def quality_metrics(report: Mapping) -> dict:
    """The gate metrics of a report: max_ks, max_category_tvd, corr_distance, impossible_rows, max_null_rate_diff."""
    feats = report["features"]

    def worst(kind: str, key: str) -> tuple[float, str | None]:
        vals = [(r[key], r["feature"]) for r in feats if r["kind"] == kind and r[key] == r[key]]
        return max(vals) if vals else (0.0, None)

    ks, ks_f = worst("numeric", "value")
    tvd, tvd_f = worst("categorical", "value")
    nrd, nrd_f = worst("numeric", "null_rate_diff")
    cd = report["corr_distance"]
    return {
        "max_ks": float(ks), "max_ks_feature": ks_f,
        "max_category_tvd": float(tvd), "max_category_tvd_feature": tvd_f,
        "corr_distance": float(cd) if cd == cd else 0.0,
        "impossible_rows": int(report["impossible_rows"]),
        "max_null_rate_diff": float(nrd), "max_null_rate_diff_feature": nrd_f,
    }


def evaluate_quality(report: Mapping, ks_max: float = DEFAULT_KS_MAX, corr_max: float = DEFAULT_CORR_MAX,
                     cat_max: float = DEFAULT_CAT_MAX, null_max: float = DEFAULT_NULL_MAX,
                     gates: Sequence[Gate] | Mapping[str, Gate] | None = None) -> dict:
    """Gate a quality report. Returns the metric values plus ``passed`` (no failing ``fail`` gate),
    ``failures`` and ``warnings`` (gate descriptions) and ``gates`` (name -> passed).

    The thresholds come from ``gates`` when given (e.g. ``gates.load_gates()`` after an operator's override),
    else from ``QUALITY_GATES`` with ``ks_max``/``corr_max``/``cat_max``/``null_max`` substituted.
    """
    metrics = quality_metrics(report)
    if gates is None:
        override = {"max_ks": ks_max, "corr_distance": corr_max, "max_category_tvd": cat_max,
                    "max_null_rate_diff": null_max}
        gate_list = [Gate(g.name, g.metric, g.op, float(override.get(g.metric, g.threshold)), g.action, g.description)
                     for g in QUALITY_GATES]
    else:
        gate_list = list(gates.values()) if isinstance(gates, Mapping) else list(gates)
        gate_list = [g for g in gate_list if g.metric in metrics]
    results = [g.evaluate(metrics[g.metric]) for g in gate_list]
    out = dict(metrics)
    out["gates"] = {r.gate.name: r.passed for r in results}
    out["failures"] = [r.describe() for r in results if r.blocks]
    out["warnings"] = [r.describe() for r in results if not r.passed and not r.blocks]
    out["passed"] = not out["failures"]
    return out


def report_markdown(report: Mapping, title: str = "Synthetic data quality") -> str:
    m = quality_metrics(report)
    lines = [f"## {title}", "",
             f"{report['rows_synthetic']} synthetic vs {report['rows_real']} real rows; classes compared: "
             f"{', '.join(report['classes_compared'])}.", "",
             f"max KS {m['max_ks']:.3f} ({m['max_ks_feature']}), max category TVD {m['max_category_tvd']:.3f} "
             f"({m['max_category_tvd_feature']}), correlation distance {m['corr_distance']:.3f}, "
             f"impossible rows {m['impossible_rows']}.", ""]
    table = feature_table(report)
    if not table.empty:
        lines += [table[["feature", "kind", "metric", "value", "value_overall", "null_rate_real",
                         "null_rate_synthetic"]].to_markdown(index=False, floatfmt=".3f"), ""]
    if report["impossible"]:
        lines += ["Impossible combinations:", pd.DataFrame(report["impossible"]).to_markdown(index=False), ""]
    return "\n".join(lines)
