"""The feature registry: versioned, point-in-time features computed from snapshots and activity events.

Every feature is a ``FeatureDef`` (name, version, kind, the sources it needs and a polars expression
over the *base frame*). A model pins ``{name: version + definition hash}`` in a manifest; extraction
computes exactly the pinned versions, and scoring later refuses a manifest whose hash differs from the
registry's definition of the same version.

Point-in-time rule: a feature of a snapshot taken at ``snapshot_date`` only uses snapshot rows of the
same opportunity at or before ``snapshot_date`` and activity events that occurred at or before it.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import pandas as pd
import polars as pl

from .contract import OPEN_STAGES, RISK_CATEGORIES

ENGAGEMENT_HALF_LIFE_DAYS = 14.0
DAY_MS = 86_400_000


@dataclass(frozen=True)
class FeatureDef:
    name: str
    version: int
    kind: str  # "numeric" | "categorical"
    description: str
    sources: tuple[str, ...]  # data the feature needs: "snapshots", "activities", or a snapshot column "col:<name>"
    expr: Callable[[], pl.Expr] = field(repr=False)
    critical: bool = False  # a row without it cannot be scored (cleaning drops it)

    @property
    def definition_hash(self) -> str:
        """Hash of everything that defines the feature's values: its metadata and the code of its expression."""
        try:
            code = inspect.getsource(self.expr)
        except (OSError, TypeError):  # pragma: no cover - source not available
            code = repr(self.expr)
        payload = json.dumps(
            {"name": self.name, "version": self.version, "kind": self.kind, "sources": list(self.sources),
             "code": " ".join(code.split())},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class FeatureVersionError(ValueError):
    """A requested feature version does not exist, or a pinned manifest no longer matches the registry."""


REGISTRY: dict[tuple[str, int], FeatureDef] = {}


def register(fd: FeatureDef) -> FeatureDef:
    key = (fd.name, fd.version)
    if key in REGISTRY:
        raise FeatureVersionError(f"feature {fd.name} v{fd.version} is registered twice")
    REGISTRY[key] = fd
    return fd


def _days(a: str, b: str) -> pl.Expr:
    """(a - b) in fractional days."""
    return (pl.col(a) - pl.col(b)).dt.total_milliseconds().cast(pl.Float64) / DAY_MS


# --- the features ---------------------------------------------------------------------------------
register(FeatureDef("days_to_close", 1, "numeric", "Days from the snapshot to the expected close date (negative: overdue).",
                    ("snapshots",), lambda: _days("close_date", "snapshot_date"), critical=True))
register(FeatureDef("log_deal_value", 1, "numeric", "log1p of the deal value in its currency.",
                    ("snapshots",), lambda: pl.col("deal_value").log1p(), critical=True))
register(FeatureDef("crm_probability", 1, "numeric", "Win probability typed in the CRM, 0-100.",
                    ("snapshots",), lambda: pl.col("probability").cast(pl.Float64), critical=True))
register(FeatureDef("stage", 1, "categorical", "Pipeline stage at the snapshot.",
                    ("snapshots",), lambda: pl.col("stage").cast(pl.String), critical=True))
register(FeatureDef("stage_index", 1, "numeric", "Position of the stage in the standard funnel (unknown stages: null).",
                    ("snapshots",),
                    lambda: pl.col("stage").replace_strict(list(OPEN_STAGES), list(range(len(OPEN_STAGES))),
                                                           default=None, return_dtype=pl.Float64)))
register(FeatureDef("opportunity_age_days", 1, "numeric", "Days since the opportunity's first snapshot.",
                    ("snapshots",), lambda: _days("snapshot_date", "_first_seen")))
register(FeatureDef("stage_age_days", 1, "numeric", "Days since the stage last changed (first snapshot of the stage).",
                    ("snapshots",), lambda: _days("snapshot_date", "_stage_since")))
register(FeatureDef("close_date_slips", 1, "numeric", "How many times the expected close date moved later so far.",
                    ("snapshots",), lambda: pl.col("_slips").cast(pl.Float64)))
register(FeatureDef("close_date_slip_days", 1, "numeric", "Total days the close date moved later so far.",
                    ("snapshots",), lambda: pl.col("_slip_days").cast(pl.Float64)))
register(FeatureDef("deal_value_change", 1, "numeric", "Relative change of the deal value since the first snapshot.",
                    ("snapshots",), lambda: pl.col("deal_value") / pl.col("_first_value") - 1.0))
register(FeatureDef("days_since_last_activity", 1, "numeric",
                    "Days since the CRM's last_activity_at field (null when the CRM has none).",
                    ("col:last_activity_at",), lambda: _days("snapshot_date", "last_activity_at")))
register(FeatureDef("days_since_last_activity", 2, "numeric",
                    "Days since the last logged activity event at or before the snapshot (point in time).",
                    ("activities",), lambda: _days("snapshot_date", "_last_event_at")))
register(FeatureDef("activity_count_30d", 1, "numeric", "Activity events in the 30 days up to the snapshot.",
                    ("activities",), lambda: pl.col("_n_30d").cast(pl.Float64)))
register(FeatureDef("activity_count_90d", 1, "numeric", "Activity events in the 90 days up to the snapshot.",
                    ("activities",), lambda: pl.col("_n_90d").cast(pl.Float64)))
register(FeatureDef("engagement", 1, "numeric", "Engagement = activity events in the last 30 days.",
                    ("activities",), lambda: pl.col("_n_30d").cast(pl.Float64)))
register(FeatureDef("engagement", 2, "numeric",
                    f"Exponentially decayed engagement: sum of exp(-age/tau) over events, half-life "
                    f"{ENGAGEMENT_HALF_LIFE_DAYS:g} days.",
                    ("activities",), lambda: pl.col("_decayed")))
register(FeatureDef("heuristic_risk_score", 1, "numeric", "Today's rule/LLM risk score from the CRM (0-1).",
                    ("col:risk_score",), lambda: pl.col("risk_score").cast(pl.Float64)))
for _cat in RISK_CATEGORIES:
    register(FeatureDef(f"risk_{_cat}", 1, "numeric", f"Heuristic {_cat} risk score from the CRM (0-1).",
                        (f"col:risk_{_cat}",), (lambda c=_cat: pl.col(f"risk_{c}").cast(pl.Float64))))
for _col in ("industry", "region", "product_line", "currency"):
    register(FeatureDef(_col, 1, "categorical", f"The opportunity's {_col.replace('_', ' ')}.",
                        (f"col:{_col}",), (lambda c=_col: pl.col(c).cast(pl.String))))


def latest_versions() -> dict[str, int]:
    out: dict[str, int] = {}
    for name, version in REGISTRY:
        out[name] = max(version, out.get(name, 0))
    return dict(sorted(out.items()))


def build_manifest(overrides: Mapping[str, int] | None = None, exclude: tuple[str, ...] = ()) -> dict[str, dict]:
    """Pin one version of every feature: the latest unless ``overrides`` names another.

    Returns ``{name: {"version", "hash", "kind", "sources", "critical", "description"}}``.
    """
    versions = latest_versions()
    for name, v in (overrides or {}).items():
        if (name, int(v)) not in REGISTRY:
            known = sorted(ver for n, ver in REGISTRY if n == name)
            raise FeatureVersionError(
                f"feature {name!r} has no version {v}" + (f" (known: {known})" if known else " (unknown feature)")
            )
        versions[name] = int(v)
    manifest = {}
    for name, v in versions.items():
        if name in exclude:
            continue
        fd = REGISTRY[(name, v)]
        manifest[name] = {"version": v, "hash": fd.definition_hash, "kind": fd.kind, "sources": list(fd.sources),
                          "critical": fd.critical, "description": fd.description}
    return manifest


def verify_manifest(manifest: Mapping[str, Mapping]) -> None:
    """Raise FeatureVersionError naming every feature whose pinned version/hash the registry does not match."""
    problems = []
    for name, pin in manifest.items():
        fd = REGISTRY.get((name, int(pin["version"])))
        if fd is None:
            problems.append(f"{name}: pinned v{pin['version']} does not exist in the registry")
        elif fd.definition_hash != pin["hash"]:
            problems.append(
                f"{name}: pinned v{pin['version']} hash {pin['hash']} != registry v{fd.version} hash {fd.definition_hash}"
            )
    if problems:
        raise FeatureVersionError("feature manifest does not match the registry: " + "; ".join(problems))


def manifest_fingerprint(manifest: Mapping[str, Mapping]) -> str:
    payload = json.dumps({k: [v["version"], v["hash"]] for k, v in sorted(manifest.items())})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# --- point-in-time base frame ----------------------------------------------------------------------
def _to_polars(df) -> pl.DataFrame:
    if isinstance(df, pl.DataFrame):
        return df
    if df is None:
        return pl.DataFrame()
    return pl.from_pandas(df)


def _ms(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.Datetime("ms"))


def build_base_frame(snapshots, activities=None) -> pl.DataFrame:
    """Snapshots plus the point-in-time intermediates every feature is computed from.

    ``snapshots`` holds every snapshot row of the tenant the features may look back on (history first);
    ``activities`` the activity events (or None/empty when the tenant has no activity log).
    Each output row is one input snapshot row, in input order is not guaranteed (sorted by opportunity, date).
    """
    s = _to_polars(snapshots)
    if s.is_empty():
        raise ValueError("no snapshot rows to build features from")
    s = s.with_columns(
        _ms("snapshot_date").alias("snapshot_date"),
        _ms("close_date").alias("close_date"),
        (_ms("last_activity_at") if "last_activity_at" in s.columns else pl.lit(None, pl.Datetime("ms"))).alias("last_activity_at"),
        pl.col("opportunity_id").cast(pl.String),
    ).sort("opportunity_id", "snapshot_date")
    by = "opportunity_id"
    prev_close = pl.col("close_date").shift(1).over(by)
    slip = pl.when(pl.col("close_date") > prev_close).then(1).otherwise(0)
    slip_days = pl.when(pl.col("close_date") > prev_close).then(_days("close_date", "_prev_close")).otherwise(0.0)
    stage_changed = (pl.col("stage") != pl.col("stage").shift(1).over(by)).fill_null(True)
    s = (
        s.with_columns(_prev_close=prev_close, _stage_changed=stage_changed)
        .with_columns(
            _first_seen=pl.col("snapshot_date").min().over(by),
            _first_value=pl.col("deal_value").first().over(by),
            _slips=slip.cum_sum().over(by),
            _slip_days=slip_days.cum_sum().over(by),
            _stage_since=pl.when(pl.col("_stage_changed")).then(pl.col("snapshot_date")).otherwise(None)
            .forward_fill().over(by),
        )
        .drop("_prev_close", "_stage_changed")
    )
    a = _to_polars(activities)
    if a.is_empty() or "occurred_at" not in a.columns:
        return s.with_columns(
            _last_event_at=pl.lit(None, pl.Datetime("ms")), _n_30d=pl.lit(None, pl.Int64),
            _n_90d=pl.lit(None, pl.Int64), _decayed=pl.lit(None, pl.Float64), _has_activity_log=pl.lit(False),
        )
    tau_ms = ENGAGEMENT_HALF_LIFE_DAYS / math.log(2) * DAY_MS
    t0 = a.select(_ms("occurred_at").min()).item()
    ev = (
        a.select(pl.col("opportunity_id").cast(pl.String), _ms("occurred_at").alias("t"))
        .drop_nulls()
        .sort(by, "t")
        .with_columns(
            _cum=pl.int_range(1, pl.len() + 1).over(by),
            # decayed sum as of each event, stored in a shifted exponent to stay finite
            _cumexp=((pl.col("t") - pl.lit(t0)).dt.total_milliseconds().cast(pl.Float64) / tau_ms).exp().cum_sum().over(by),
        )
        .sort("t")
    )
    s = s.sort("snapshot_date")
    out = s.join_asof(ev.select(by, pl.col("t").alias("snapshot_date"), pl.col("t").alias("_last_event_at"),
                                "_cum", "_cumexp"),
                      on="snapshot_date", by=by, strategy="backward", check_sortedness=False)
    for days in (30, 90):
        key = f"_t{days}"
        out = out.with_columns((pl.col("snapshot_date") - pl.duration(days=days)).alias(key)).sort(key)
        out = out.join_asof(ev.select(by, pl.col("t").alias(key), pl.col("_cum").alias(f"_cum{days}")),
                            on=key, by=by, strategy="backward", check_sortedness=False)
        out = out.with_columns(
            (pl.col("_cum").fill_null(0) - pl.col(f"_cum{days}").fill_null(0)).alias(f"_n_{days}d")
        ).drop(key, f"_cum{days}")
    age = (pl.col("snapshot_date") - pl.lit(t0)).dt.total_milliseconds().cast(pl.Float64) / tau_ms
    out = out.with_columns(
        _decayed=(pl.col("_cumexp") * (-age).exp()).fill_null(0.0),
        _has_activity_log=pl.lit(True),
    ).drop("_cum", "_cumexp")
    return out.sort(by, "snapshot_date")


def _source_available(base: pl.DataFrame, source: str) -> bool:
    if source == "snapshots":
        return True
    if source == "activities":
        return bool(base["_has_activity_log"].any()) if "_has_activity_log" in base.columns else False
    if source.startswith("col:"):
        col = source[4:]
        return col in base.columns and base[col].null_count() < base.height
    raise FeatureVersionError(f"unknown feature source {source!r}")


def extract_features(base: pl.DataFrame, manifest: Mapping[str, Mapping]) -> tuple[pl.DataFrame, dict[str, str]]:
    """Compute exactly the pinned versions of ``manifest`` on a base frame.

    Returns (frame with opportunity_id, snapshot_date and one column per available feature,
    {feature: reason} for the features whose source data is missing — reported, never fabricated).
    """
    verify_manifest(manifest)
    exprs, unavailable = [], {}
    for name, pin in manifest.items():
        fd = REGISTRY[(name, int(pin["version"]))]
        missing = [src for src in fd.sources if not _source_available(base, src)]
        if missing:
            unavailable[name] = "missing source data: " + ", ".join(m.replace("col:", "column ") for m in missing)
            continue
        exprs.append(fd.expr().alias(name))
    return base.select("opportunity_id", "snapshot_date", *exprs), unavailable


def feature_kinds(manifest: Mapping[str, Mapping]) -> dict[str, str]:
    return {name: pin["kind"] for name, pin in manifest.items()}


# --- training examples -----------------------------------------------------------------------------
LABEL = "label"  # 1 = lost, 0 = won
META_COLUMNS = ("opportunity_id", "snapshot_date", "week", "closed_at", "outcome", "actual_revenue", LABEL,
                "deal_value", "raw_probability", "baseline_risk_score")


def build_training_examples(snapshots, outcomes, activities, manifest: Mapping[str, Mapping], *,
                            partition_end, window_weeks: int) -> tuple[pd.DataFrame, dict]:
    """Point-in-time features for every labelled snapshot in the ``window_weeks`` weeks before ``partition_end``.

    A snapshot is labelled only by an outcome that closed strictly after the snapshot and strictly before
    ``partition_end`` (the label must have been known when the partition ended). ``snapshots`` may hold
    older history than the window: it feeds the point-in-time history features.
    """
    import datetime as _dt

    end = pl.lit(_dt.datetime.fromisoformat(str(partition_end))).cast(pl.Datetime("ms"))
    start = pl.lit(_dt.datetime.fromisoformat(str(partition_end)) - _dt.timedelta(weeks=window_weeks)).cast(pl.Datetime("ms"))
    s = _to_polars(snapshots)
    s = s.filter(_ms("snapshot_date") < end)
    base = build_base_frame(s, activities)
    feats, unavailable = extract_features(base, manifest)
    extras = base.select(
        "opportunity_id", "snapshot_date",
        pl.col("deal_value").cast(pl.Float64),
        pl.col("probability").cast(pl.Float64).alias("raw_probability"),
        (pl.col("risk_score").cast(pl.Float64) if "risk_score" in base.columns
         else pl.lit(None, pl.Float64)).alias("baseline_risk_score"),
    )
    rows = feats.join(extras, on=["opportunity_id", "snapshot_date"], how="left")
    in_window = rows.filter((pl.col("snapshot_date") >= start) & (pl.col("snapshot_date") < end))
    o = _to_polars(outcomes)
    if o.is_empty():
        o = pl.DataFrame(schema={"opportunity_id": pl.String, "outcome": pl.String, "closed_at": pl.Datetime("ms"),
                                 "actual_revenue": pl.Float64})
    o = (o.select(pl.col("opportunity_id").cast(pl.String), pl.col("outcome").cast(pl.String),
                  _ms("closed_at").alias("closed_at"), pl.col("actual_revenue").cast(pl.Float64))
         .filter(pl.col("closed_at") < end)
         .sort("closed_at").unique("opportunity_id", keep="last", maintain_order=True))
    seen = set(rows["opportunity_id"].unique().to_list())
    outcomes_without_snapshot = int((~o["opportunity_id"].is_in(list(seen))).sum()) if o.height else 0
    labelled = (
        in_window.join(o, on="opportunity_id", how="inner")
        .filter(pl.col("closed_at") > pl.col("snapshot_date"))
        .with_columns(
            pl.when(pl.col("outcome") == "lost").then(1).otherwise(0).cast(pl.Int8).alias(LABEL),
            pl.col("snapshot_date").dt.truncate("1w").dt.date().cast(pl.String).alias("week"),
        )
    )
    feature_cols = [c for c in feats.columns if c not in ("opportunity_id", "snapshot_date")]
    out = labelled.select(*META_COLUMNS, *feature_cols).sort("snapshot_date", "opportunity_id").to_pandas()
    stats = {
        "snapshot_rows_history": int(s.height),
        "snapshot_rows_in_window": int(in_window.height),
        "labelled_rows": int(len(out)),
        "unlabelled_rows": int(in_window.height - len(out)),
        "outcomes_without_snapshot": outcomes_without_snapshot,
        "opportunities": int(out["opportunity_id"].nunique()) if len(out) else 0,
        "lost_rate": float(out[LABEL].mean()) if len(out) else float("nan"),
        "features": feature_cols,
        "unavailable_features": unavailable,
    }
    return out, stats
