"""The feature registry: versioned, point-in-time features computed from snapshots and activity events.

Every feature is a ``FeatureDef`` (name, version, kind, the sources it needs and a polars expression
over the *base frame*). A model pins ``{name: version + definition hash}`` in a manifest; extraction
computes exactly the pinned versions, and scoring later refuses a manifest whose hash differs from the
registry's definition of the same version.

Point-in-time rule: a feature of a snapshot taken at ``snapshot_date`` only uses snapshot rows of the
same opportunity at or before ``snapshot_date`` and activity events that occurred at or before it.

Parametric (per-tenant) features
--------------------------------
Some definitions depend on the tenant: the *stage order* behind ``stage_index`` (v2) and the tenant's
own *extra snapshot columns* (``x_<column>``). Their parameters are decided once, when the manifest is
built (:func:`build_manifest` with the tenant's snapshots and config), and pinned in the manifest entry
(``params``); the definition hash covers the code **and** the parameters, so scoring recomputes exactly
the mapping the model was trained with, and a changed mapping is a different pin. The lock file holds
the hash of the parametric *template* (the code, without parameters).

Stage order (``stage_index`` v2), first rule that applies:

1. ``declared``: the tenant config lists its ordered open stages (``stages: [...]``);
2. ``contract``: every open stage seen is one of the contract's funnel stages -> the contract order;
3. ``learnt``: otherwise from the data. For every pair of stages (a, b), count the opportunities whose
   first snapshot in a precedes their first snapshot in b; a stage's score is the number of stages it
   precedes by majority minus the number that precede it (Copeland). Stages are ordered by score
   (descending), ties by the median position of the stage in its opportunities' stage sequence, then
   by name. Deterministic, and only pairs seen in the same opportunity count (deals first seen
   mid-funnel do not bias it).

Stages are compared stripped and lower-cased (ingestion lower-cases them); closed-looking stages
(``closed*``, ``won*``, ``lost*``) are never part of the open order; a stage outside the order is null.

Extra columns (``x_<column>``): snapshot columns beyond the contract become features — automatically
(default) when a column has a value in at least ``min_non_null_share`` of the rows, is not id-like (name
ending ``_id``/``id``/``_key``/``uuid``/``guid``, unique per row, or an integer unique per opportunity),
its name does not suggest the outcome (``won``, ``lost``, ``outcome``, ...: leakage), and, for text
columns, has at most ``max_levels`` levels; or only the columns the tenant config lists
(``extra_features: {mode: listed, columns: [...]}``). A column whose non-empty values parse as numbers
(98 %) is numeric, else categorical. Every decision (kept or skipped, with the reason) is reported.

No usable values: a feature whose values are all null after extraction (e.g. every stage outside the
pinned order, a column that is always empty) is reported unavailable with the reason and left out —
never handed to training as an all-null column.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .lazy import lazy_module

np = lazy_module("numpy")
pd = lazy_module("pandas")

pl = lazy_module("polars")  # imported on first use (code location load time)

from .contract import OPEN_STAGES, RISK_CATEGORIES, SNAPSHOT_OPTIONAL, SNAPSHOT_REQUIRED

ENGAGEMENT_HALF_LIFE_DAYS = 14.0
DAY_MS = 86_400_000


def _canon(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class FeatureDef:
    name: str
    version: int
    kind: str  # "numeric" | "categorical"
    description: str
    sources: tuple[str, ...]  # data the feature needs: "snapshots", "activities", or a snapshot column "col:<name>"
    expr: Callable[..., pl.Expr] = field(repr=False)
    critical: bool = False  # a row without it cannot be scored (cleaning drops it)
    parametric: bool = False  # the expression takes the parameters pinned in the manifest (``params``)
    params: str | None = None  # canonical JSON of the bound parameters (None: a template or a plain feature)

    def _hash(self, with_params: bool) -> str:
        try:
            code = inspect.getsource(self.expr)
        except (OSError, TypeError):  # pragma: no cover - source not available
            code = repr(self.expr)
        payload = {"name": self.name, "version": self.version, "kind": self.kind, "sources": list(self.sources),
                   "code": " ".join(code.split())}
        if with_params and self.params is not None:
            payload["params"] = self.params
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def definition_hash(self) -> str:
        """Hash of everything that defines the feature's values: its metadata, the code of its expression
        and, for a bound parametric feature, its parameters (e.g. the pinned stage order)."""
        return self._hash(with_params=True)

    @property
    def template_hash(self) -> str:
        """Hash of the code alone (what the lock file pins for a parametric feature)."""
        return self._hash(with_params=False)

    def bind(self, params: Mapping[str, Any], *, name: str | None = None,
             sources: tuple[str, ...] | None = None) -> "FeatureDef":
        if not self.parametric:
            raise FeatureVersionError(f"feature {self.name} v{self.version} takes no parameters")
        return dataclasses.replace(self, name=name or self.name, params=_canon(params),
                                   sources=tuple(sources) if sources is not None else self.sources)

    @property
    def param_values(self) -> dict | None:
        return json.loads(self.params) if self.params is not None else None

    def polars_expr(self) -> pl.Expr:
        if not self.parametric:
            return self.expr()
        if self.params is None:
            raise FeatureVersionError(f"feature {self.name} v{self.version} needs parameters pinned in the manifest")
        return self.expr(json.loads(self.params))


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


def _stage_index_v2(p):
    order = [str(s) for s in p["order"]]
    if not order:
        return pl.lit(None, pl.Float64)
    stage = pl.col("stage").cast(pl.String).str.strip_chars().str.to_lowercase()
    return stage.replace_strict(order, [float(i) for i in range(len(order))], default=None, return_dtype=pl.Float64)


register(FeatureDef("stage_index", 2, "numeric",
                    "Position of the stage in the tenant's stage order pinned in the manifest (declared in the "
                    "tenant config, the contract funnel, or learnt from the data); stages outside it: null.",
                    ("snapshots",), _stage_index_v2, parametric=True))


def _extra_numeric_v1(p):
    x = pl.col(p["column"]).cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
    return pl.when(x.is_finite()).then(x).otherwise(None)


def _extra_categorical_v1(p):
    x = pl.col(p["column"]).cast(pl.String).str.strip_chars()
    return pl.when(x == "").then(None).otherwise(x)


EXTRA_PREFIX = "x_"
#: templates of the tenant's extra-column features, by (kind, version); bound per column in the manifest
EXTRA_TEMPLATES: dict[tuple[str, int], FeatureDef] = {
    ("numeric", 1): FeatureDef("x_<numeric>", 1, "numeric", "The tenant's own numeric snapshot column.",
                               (), _extra_numeric_v1, parametric=True),
    ("categorical", 1): FeatureDef("x_<categorical>", 1, "categorical", "The tenant's own categorical snapshot column.",
                                   (), _extra_categorical_v1, parametric=True),
}


def lock_entries() -> dict[str, str]:
    """What the lock file pins: ``name@version`` -> hash (the template hash for parametric features)."""
    out = {f"{n}@{v}": (fd.template_hash if fd.parametric else fd.definition_hash) for (n, v), fd in REGISTRY.items()}
    out.update({f"{fd.name}@{v}": fd.template_hash for (_, v), fd in EXTRA_TEMPLATES.items()})
    return out


def lock_key(name: str, pin: Mapping) -> tuple[str, str]:
    """(lock file key, hash to compare) of a manifest entry."""
    v = int(pin["version"])
    if name.startswith(EXTRA_PREFIX) and (name, v) not in REGISTRY and (pin.get("kind"), v) in EXTRA_TEMPLATES:
        return f"{EXTRA_TEMPLATES[(pin['kind'], v)].name}@{v}", pin.get("template_hash", pin["hash"])
    return f"{name}@{v}", pin.get("template_hash", pin["hash"])


def resolve_pin(name: str, pin: Mapping) -> FeatureDef | None:
    """The definition a manifest entry pins (bound to its ``params`` for parametric features), or None
    when the registry has no such feature/version or the entry lacks the parameters it needs."""
    v = int(pin["version"])
    params = pin.get("params")
    fd = REGISTRY.get((name, v))
    if fd is None and name.startswith(EXTRA_PREFIX):
        tpl = EXTRA_TEMPLATES.get((pin.get("kind"), v))
        if tpl is None or not isinstance(params, Mapping) or not isinstance(params.get("column"), str):
            return None
        return tpl.bind(params, name=name, sources=(f"col:{params['column']}",))
    if fd is None:
        return None
    if fd.parametric:
        return fd.bind(params) if isinstance(params, Mapping) else None
    return fd


def latest_versions() -> dict[str, int]:
    out: dict[str, int] = {}
    for name, version in REGISTRY:
        out[name] = max(version, out.get(name, 0))
    return dict(sorted(out.items()))


# --- per-tenant feature configuration --------------------------------------------------------------
CLOSED_STAGE_WORDS = ("closed", "won", "lost")
EXTRA_MODES = ("auto", "listed", "off")
CONTRACT_SNAPSHOT_COLUMNS = frozenset((*SNAPSHOT_REQUIRED, *SNAPSHOT_OPTIONAL))
NOT_FEATURE_COLUMNS = frozenset(("source_file", "tenant", "week"))  # added by ingestion / the platform
_ID_NAME = re.compile(r"(^|[_\s.-])(id|key|uuid|guid)$|^(uuid|guid)", re.IGNORECASE)
_ID_CAMEL = re.compile(r"[a-z0-9](Id|ID|Key|Uuid|UUID|Guid|GUID)$")  # AccountId, dealKey (case matters here)
_OUTCOME_NAME = re.compile(r"(^|_)(outcome|won|lost|win|loss|closed|close_reason|result|label|churn(ed)?)(_|$)",
                           re.IGNORECASE)
NUMERIC_PARSE_SHARE = 0.98


@dataclass(frozen=True)
class ExtraFeatureConfig:
    """Which extra snapshot columns become ``x_<column>`` features (see the module doc)."""

    mode: str = "auto"  # auto | listed | off
    columns: Mapping[str, str | None] = field(default_factory=dict)  # listed columns -> kind (None: infer)
    exclude: tuple[str, ...] = ()
    max_levels: int = 50
    min_non_null_share: float = 0.5


@dataclass(frozen=True)
class TenantFeatureConfig:
    """The feature part of a tenant's config file (``config/tenants/<tenant>.yaml``)."""

    stages: tuple[str, ...] | None = None  # the ordered open stages; None: contract order or learnt
    extra: ExtraFeatureConfig = field(default_factory=ExtraFeatureConfig)


class TenantConfigError(ValueError):
    """A tenant config file that does not parse into a feature configuration (names the key)."""


def normalise_stage(stage: Any) -> str:
    return str(stage).strip().lower()


def _is_closed_stage(stage: str) -> bool:
    return any(stage.startswith(w) for w in CLOSED_STAGE_WORDS)


def parse_tenant_config(raw: Mapping | None, where: str = "tenant config") -> TenantFeatureConfig:
    """Validate a tenant's config mapping (from YAML) into a TenantFeatureConfig; TenantConfigError names
    the offending key. Keys: ``stages`` (list of the ordered open stages), ``extra_features`` (``mode``:
    auto|listed|off, ``columns``: list or {column: numeric|categorical}, ``exclude``, ``max_levels``,
    ``min_non_null_share``). Other top-level keys are allowed (other parts of the platform may read them)."""
    if raw is None:
        return TenantFeatureConfig()
    if not isinstance(raw, Mapping):
        raise TenantConfigError(f"{where}: expected a mapping at the top level, got {type(raw).__name__}")
    stages = raw.get("stages")
    if stages is not None:
        if isinstance(stages, (str, bytes)) or not isinstance(stages, (list, tuple)) or not stages:
            raise TenantConfigError(f"{where}: 'stages' must be a non-empty list of stage names in funnel order")
        norm = [normalise_stage(s) for s in stages]
        if any(not s for s in norm) or any(not isinstance(s, (str, int)) for s in stages):
            raise TenantConfigError(f"{where}: 'stages' holds an empty or non-text stage name: {list(stages)!r}")
        dups = sorted({s for s in norm if norm.count(s) > 1})
        if dups:
            raise TenantConfigError(f"{where}: 'stages' lists {dups} more than once (compared lower-cased)")
        closed = [s for s in norm if _is_closed_stage(s)]
        if closed:
            raise TenantConfigError(f"{where}: 'stages' lists open stages only; {closed} look closed")
        stages = tuple(norm)
    ex = raw.get("extra_features") or {}
    if not isinstance(ex, Mapping):
        raise TenantConfigError(f"{where}: 'extra_features' must be a mapping")
    unknown = sorted(set(ex) - {"mode", "columns", "exclude", "max_levels", "min_non_null_share"})
    if unknown:
        raise TenantConfigError(f"{where}: unknown key(s) under 'extra_features': {unknown}")
    mode = ex.get("mode", "listed" if ex.get("columns") else "auto")
    if mode not in EXTRA_MODES:
        raise TenantConfigError(f"{where}: extra_features.mode must be one of {EXTRA_MODES}, got {mode!r}")
    cols = ex.get("columns") or {}
    if isinstance(cols, (list, tuple)):
        cols = {str(c): None for c in cols}
    if not isinstance(cols, Mapping):
        raise TenantConfigError(f"{where}: extra_features.columns must be a list or a mapping column -> kind")
    for c, k in cols.items():
        if k not in (None, "numeric", "categorical"):
            raise TenantConfigError(f"{where}: extra_features.columns.{c}: kind must be numeric or categorical, got {k!r}")
    exclude = ex.get("exclude") or []
    if isinstance(exclude, (str, bytes)) or not isinstance(exclude, (list, tuple)):
        raise TenantConfigError(f"{where}: extra_features.exclude must be a list of column names")
    try:
        max_levels = int(ex.get("max_levels", 50))
        share = float(ex.get("min_non_null_share", 0.5))
    except (TypeError, ValueError):
        raise TenantConfigError(f"{where}: extra_features.max_levels / min_non_null_share must be numbers") from None
    if max_levels < 2 or not (0.0 <= share <= 1.0):
        raise TenantConfigError(f"{where}: extra_features.max_levels must be >= 2 and min_non_null_share in [0, 1]")
    return TenantFeatureConfig(stages=stages, extra=ExtraFeatureConfig(
        mode=mode, columns={str(c): k for c, k in cols.items()}, exclude=tuple(str(c) for c in exclude),
        max_levels=max_levels, min_non_null_share=share))


def learn_stage_order(snapshots) -> list[str]:
    """The open-stage order learnt from snapshot histories (rule in the module doc). Deterministic."""
    s = _to_polars(snapshots)
    if s.is_empty() or "stage" not in s.columns:
        return []
    first = (
        s.select(pl.col("opportunity_id").cast(pl.String), _ms("snapshot_date").alias("t"),
                 pl.col("stage").cast(pl.String).str.strip_chars().str.to_lowercase().alias("stage"))
        .drop_nulls()
        .filter(pl.col("stage") != "")
        .group_by("opportunity_id", "stage").agg(pl.col("t").min())
    )
    stages = sorted(x for x in first["stage"].unique().to_list() if not _is_closed_stage(x))
    if not stages:
        return []
    first = first.filter(pl.col("stage").is_in(stages))
    wide = first.pivot(on="stage", index="opportunity_id", values="t").sort("opportunity_id")
    mat = np.column_stack([wide[st].cast(pl.Int64).to_numpy().astype("float64") if st in wide.columns
                           else np.full(wide.height, np.nan) for st in stages])
    k = len(stages)
    before = np.zeros((k, k))
    for a in range(k):
        before[a] = np.sum(mat[:, [a]] < mat, axis=0)  # NaN compares False: only pairs seen together count
    score = np.sign(before - before.T).sum(axis=1)
    pos = first.with_columns(pl.col("t").rank("ordinal").over("opportunity_id").alias("pos")) \
        .group_by("stage").agg(pl.col("pos").median()).sort("stage")
    med = dict(zip(pos["stage"].to_list(), pos["pos"].to_list()))
    return sorted(stages, key=lambda st: (-score[stages.index(st)], med.get(st, 0.0), st))


def stage_order(snapshots=None, declared: tuple[str, ...] | None = None) -> tuple[list[str], str, list[str]]:
    """(order, source, open stages seen outside the order) for ``stage_index`` v2 (rule in the module doc)."""
    seen: list[str] = []
    s = _to_polars(snapshots) if snapshots is not None else pl.DataFrame()
    if not s.is_empty() and "stage" in s.columns:
        seen = sorted({normalise_stage(x) for x in s["stage"].drop_nulls().to_list()} - {""})
        seen = [x for x in seen if not _is_closed_stage(x)]
    if declared:
        order, source = [normalise_stage(x) for x in declared], "declared"
    elif not seen or set(seen) <= set(OPEN_STAGES):
        order, source = list(OPEN_STAGES), "contract"
    else:
        order, source = learn_stage_order(s), "learnt"
    return order, source, [x for x in seen if x not in order]


def _slug(column: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", str(column).lower()).strip("_")[:56] or "col"


def extra_feature_name(column: str, taken: set[str] = frozenset()) -> str:
    base = EXTRA_PREFIX + _slug(column)
    name, i = base, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name


def _present(values: pd.Series) -> pd.Series:
    v = values.astype("object")
    return v.notna() & ~v.map(lambda x: isinstance(x, str) and not x.strip())


def select_extra_columns(snapshots, cfg: ExtraFeatureConfig | None = None) -> tuple[list[dict], dict[str, str]]:
    """Decide which extra snapshot columns become features: ([{"column", "kind", "non_null_share",
    "levels"}...] in column-name order, {column: why skipped}). Rules in the module doc."""
    cfg = cfg or ExtraFeatureConfig()
    if snapshots is None:
        return [], {}
    df = snapshots.to_pandas() if isinstance(snapshots, pl.DataFrame) else pd.DataFrame(snapshots)
    extras = sorted(c for c in df.columns if isinstance(c, str) and c not in CONTRACT_SNAPSHOT_COLUMNS
                    and c not in NOT_FEATURE_COLUMNS and not c.startswith("_"))
    skipped: dict[str, str] = {}
    if cfg.mode == "off":
        return [], {c: "extra features are off in the tenant config" for c in extras}
    if cfg.mode == "listed":
        for c in sorted(set(cfg.columns) - set(extras)):
            skipped[c] = "listed in the tenant config but not in the snapshots" + (
                " (a contract column)" if c in CONTRACT_SNAPSHOT_COLUMNS else "")
    kept: list[dict] = []
    n = len(df)
    n_opps = int(df["opportunity_id"].nunique()) if "opportunity_id" in df.columns else 0
    for c in extras:
        listed = c in cfg.columns
        if c in cfg.exclude:
            skipped[c] = "excluded in the tenant config"
            continue
        if cfg.mode == "listed" and not listed:
            skipped[c] = "not listed in the tenant config (extra_features.mode: listed)"
            continue
        col = df[c]
        if pd.api.types.is_datetime64_any_dtype(col) or pd.api.types.is_timedelta64_dtype(col):
            skipped[c] = "a date/time column (not a feature by itself)"
            continue
        present = _present(col)
        share = float(present.mean()) if n else 0.0
        vals = col[present]
        if not len(vals):
            skipped[c] = "no values"
            continue
        declared_kind = cfg.columns.get(c) if listed else None
        nums = pd.to_numeric(vals.astype("object").map(lambda x: x.strip() if isinstance(x, str) else x),
                             errors="coerce") if not pd.api.types.is_bool_dtype(col) else pd.Series(dtype=float)
        parse_share = float(nums.notna().mean()) if len(nums) else 0.0
        kind = declared_kind or ("numeric" if parse_share >= NUMERIC_PARSE_SHARE else "categorical")
        levels = int(vals.astype(str).str.strip().nunique())
        if not listed:
            if share < cfg.min_non_null_share:
                skipped[c] = f"only {share:.0%} of the rows have a value (< {cfg.min_non_null_share:.0%})"
                continue
            if _ID_NAME.search(c) or _ID_CAMEL.search(c):
                skipped[c] = "id-like name (ends with id/key/uuid/guid)"
                continue
            if _OUTCOME_NAME.search(c):
                skipped[c] = "the name suggests outcome information (leakage risk); list it in the tenant config to use it"
                continue
            if levels <= 1:
                skipped[c] = "constant (one value)"
                continue
            if len(vals) >= 20 and levels == len(vals) and (kind == "categorical" or bool((nums.dropna() % 1 == 0).all())):
                skipped[c] = "id-like: a different value on every row"
                continue
            if kind == "numeric" and n_opps >= 20 and bool((nums.dropna() % 1 == 0).all()):
                per_opp = df.loc[present, ["opportunity_id"]].assign(_v=nums.to_numpy()).drop_duplicates()
                if per_opp["_v"].nunique() == n_opps and len(per_opp) == n_opps:
                    skipped[c] = "id-like: an integer unique per opportunity"
                    continue
            if kind == "categorical" and levels > cfg.max_levels:
                skipped[c] = f"{levels} levels > {cfg.max_levels} (extra_features.max_levels)"
                continue
        elif kind == "numeric" and parse_share < NUMERIC_PARSE_SHARE:
            skipped[c] = f"listed as numeric but only {parse_share:.0%} of its values are numbers"
            continue
        kept.append({"column": c, "kind": kind, "non_null_share": round(share, 4),
                     "levels": levels if kind == "categorical" else None})
    return kept, skipped


def _pin(fd: FeatureDef, template: FeatureDef | None = None, **extra) -> dict:
    pin = {"version": fd.version, "hash": fd.definition_hash, "kind": fd.kind, "sources": list(fd.sources),
           "critical": fd.critical, "description": fd.description}
    if fd.parametric:
        pin.update(params=fd.param_values, template_hash=(template or fd).template_hash, **extra)
    return pin


def build_manifest(overrides: Mapping[str, int] | None = None, exclude: tuple[str, ...] = (), *,
                   snapshots=None, tenant_config: TenantFeatureConfig | Mapping | None = None,
                   report: dict | None = None) -> dict[str, dict]:
    """Pin one version of every feature: the latest unless ``overrides`` names another.

    ``snapshots`` (the tenant's snapshot history up to the partition) and ``tenant_config`` decide the
    per-tenant parameters: the stage order of ``stage_index`` v2 and the ``x_<column>`` features (module
    doc). Without them the contract's stage order is pinned and no extra column is used.
    Returns ``{name: {"version", "hash", "kind", "sources", "critical", "description"[, "params",
    "template_hash", "params_source"]}}``; ``report`` (a dict, optional) receives the decisions:
    ``stage_order``, ``stage_order_source``, ``stages_outside_order``, ``extra_features``, ``extra_columns_skipped``.
    """
    cfg = tenant_config if isinstance(tenant_config, TenantFeatureConfig) else parse_tenant_config(tenant_config)
    versions = latest_versions()
    for name, v in (overrides or {}).items():
        if (name, int(v)) not in REGISTRY:
            known = sorted(ver for n, ver in REGISTRY if n == name)
            raise FeatureVersionError(
                f"feature {name!r} has no version {v}" + (f" (known: {known})" if known else " (unknown feature)")
            )
        versions[name] = int(v)
    rep = report if report is not None else {}
    manifest = {}
    for name, v in versions.items():
        if name in exclude:
            continue
        fd = REGISTRY[(name, v)]
        if fd.parametric and name == "stage_index":
            order, source, outside = stage_order(snapshots, cfg.stages)
            rep.update(stage_order=order, stage_order_source=source, stages_outside_order=outside)
            manifest[name] = _pin(fd.bind({"order": order}), params_source=source)
        elif fd.parametric:  # pragma: no cover - every parametric registry feature is handled above
            raise FeatureVersionError(f"no rule decides the parameters of {name} v{v}")
        else:
            manifest[name] = _pin(fd)
    kept, skipped = select_extra_columns(snapshots, cfg.extra)
    rep.update(extra_features={}, extra_columns_skipped=skipped)
    taken = set(manifest) | _registry_names()
    for item in kept:
        name = extra_feature_name(item["column"], taken)
        taken.add(name)
        if name in exclude:
            continue
        tpl = EXTRA_TEMPLATES[(item["kind"], 1)]
        fd = tpl.bind({"column": item["column"]}, name=name, sources=(f"col:{item['column']}",))
        manifest[name] = _pin(fd, tpl, params_source="config" if item["column"] in cfg.extra.columns else "auto")
        rep["extra_features"][name] = item
    return manifest


def _registry_names() -> set[str]:
    return {n for n, _ in REGISTRY}


def verify_manifest(manifest: Mapping[str, Mapping]) -> None:
    """Raise FeatureVersionError naming every feature whose pinned version/hash the registry does not match."""
    problems = []
    for name, pin in manifest.items():
        fd = resolve_pin(name, pin)
        if fd is None:
            base = REGISTRY.get((name, int(pin["version"])))
            if base is not None and base.parametric:
                problems.append(f"{name}: pinned v{pin['version']} lacks the parameters it needs ('params')")
            else:
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
    try:
        return pl.from_pandas(df)
    except Exception:  # noqa: BLE001 - e.g. an extra column mixing numbers and text across weekly files
        df = df.copy()
        for c in df.columns:
            if df[c].dtype == object:
                df[c] = df[c].map(lambda x: x if x is None or isinstance(x, str) or (isinstance(x, float) and x != x)
                                  else str(x))
        return pl.from_pandas(df)


def concat_frames(frames) -> pl.DataFrame:
    """One polars frame from a windowed input's per-partition frames (a frame, a list, or {partition: frame},
    None for a missing partition), in partition order. Columns missing from a week are null there; differing
    dtypes across weeks take their common supertype (text when numbers and text mix)."""
    if frames is None:
        return pl.DataFrame()
    if isinstance(frames, dict):
        frames = [v for _, v in sorted(frames.items())]
    elif isinstance(frames, (pl.DataFrame, pd.DataFrame)):
        frames = [frames]
    parts = [_to_polars(f) for f in frames if f is not None and len(f)]
    if not parts:
        return pl.DataFrame()
    try:
        return pl.concat(parts, how="diagonal_relaxed")
    except (pl.exceptions.PolarsError, TypeError):  # e.g. a text column that is a date in another week
        return _to_polars(pd.concat([p.to_pandas() for p in parts], ignore_index=True))


def _ms(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.Datetime("ms"))


def snapshots_before(snapshots, partition_end) -> pl.DataFrame:
    """The snapshot rows dated before ``partition_end`` (an ISO string or datetime): the history a partition may
    look back on, as a polars frame. The one rule for ``feature_manifest`` and ``build_training_examples``."""
    import datetime as _dt

    s = _to_polars(snapshots)
    if "snapshot_date" not in s.columns:
        return s
    return s.filter(_ms("snapshot_date") < pl.lit(_dt.datetime.fromisoformat(str(partition_end))).cast(pl.Datetime("ms")))


def build_base_frame(snapshots, activities=None, *, activity_origin=None) -> pl.DataFrame:
    """Snapshots plus the point-in-time intermediates every feature is computed from.

    ``snapshots`` holds every snapshot row of the tenant the features may look back on (history first);
    ``activities`` the activity events (or None/empty when the tenant has no activity log).
    Each output row is one input snapshot row, sorted by (opportunity, date) -- not in input order.

    One sort of the snapshots: afterwards an opportunity's rows are one run of consecutive rows, numbered
    by ``_opp``, so every per-opportunity window is computed over that integer (no string hashing, no
    nested windows, no re-sort). The activity intermediates (count of events at or before the snapshot,
    in the last 30/90 days, the last event and the decayed sum) are binary searches of the snapshots'
    (opportunity, time) keys in the events' sorted keys: no as-of join, no re-sort of the snapshots.

    ``activity_origin``: the instant the decayed sums are measured from (default: the earliest event of
    ``activities``). A caller that passes only some opportunities' events passes the origin of all of them,
    so the values stay bit for bit those of the whole frame.
    """
    s = _to_polars(snapshots)
    if s.is_empty():
        raise ValueError("no snapshot rows to build features from")
    by = "opportunity_id"
    s = s.with_columns(
        _ms("snapshot_date").alias("snapshot_date"),
        _ms("close_date").alias("close_date"),
        (_ms("last_activity_at") if "last_activity_at" in s.columns else pl.lit(None, pl.Datetime("ms"))).alias("last_activity_at"),
        pl.col(by).cast(pl.String),
    ).sort(by, "snapshot_date")
    first_row = pl.col(by).ne_missing(pl.col(by).shift(1)) | (pl.int_range(pl.len()) == 0)
    s = s.with_columns(_opp=first_row.cum_sum().cast(pl.Int64) - 1, _new=first_row)
    prev_close = pl.when(~pl.col("_new")).then(pl.col("close_date").shift(1))
    slipped = pl.col("close_date") > prev_close
    stage_changed = pl.col("_new") | (pl.col("stage") != pl.col("stage").shift(1)).fill_null(True)
    s = s.with_columns(
        _first_seen=pl.col("snapshot_date").min().over("_opp"),
        _first_value=pl.col("deal_value").first().over("_opp"),
        _slips=pl.when(slipped).then(1).otherwise(0).cum_sum().over("_opp"),
        _slip_days=pl.when(slipped).then((pl.col("close_date") - prev_close).dt.total_milliseconds()
                                         .cast(pl.Float64) / DAY_MS).otherwise(0.0).cum_sum().over("_opp"),
        _stage_since=pl.when(stage_changed).then(pl.col("snapshot_date")).otherwise(None).forward_fill().over("_opp"),
    )
    a = _to_polars(activities)
    if a.is_empty() or "occurred_at" not in a.columns:
        return s.drop("_opp", "_new").with_columns(
            _last_event_at=pl.lit(None, pl.Datetime("ms")), _n_30d=pl.lit(None, pl.Int64),
            _n_90d=pl.lit(None, pl.Int64), _decayed=pl.lit(None, pl.Float64), _has_activity_log=pl.lit(False),
        )
    return s.drop("_opp", "_new").hstack(_activity_intermediates(s, a, activity_origin))


def _activity_intermediates(s: pl.DataFrame, a: pl.DataFrame, t0=None) -> pl.DataFrame:
    """``_last_event_at``, ``_n_30d``, ``_n_90d``, ``_decayed``, ``_has_activity_log`` for every row of ``s``
    (sorted by opportunity and date, numbered ``_opp``), from the activity events ``a``.

    Each event and snapshot gets the key ``_opp * span + time``, so the events of one opportunity form one
    sorted block and "events of this opportunity at or before t" is the stretch of its block before the
    binary-search position of the snapshot's key. Times are ms offsets from 91 days before the earliest
    instant (t - 90 days never reaches the previous block); when ``n_opportunities * span`` would not fit
    in 63 bits, times are replaced by their rank among all instants (same order, no overflow).
    """
    by = "opportunity_id"
    tau_ms = ENGAGEMENT_HALF_LIFE_DAYS / math.log(2) * DAY_MS
    if t0 is None:
        t0 = a.select(_ms("occurred_at").min()).item()
    ev = (
        a.select(pl.col(by).cast(pl.String), _ms("occurred_at").alias("t"))
        .drop_nulls()
        .join(s.filter(pl.col("_new")).select(by, "_opp"), on=by, how="inner")  # events of unknown deals: unused
        .select("_opp", "t")
    )
    snap_t = s["snapshot_date"].to_physical()
    windows = {"": 0, "30": 30 * DAY_MS, "90": 90 * DAY_MS}
    ev_t = ev["t"].to_physical()
    lo = min(x for x in (ev_t.min(), snap_t.min()) if x is not None) - 91 * DAY_MS
    hi = max(x for x in (ev_t.max(), snap_t.max()) if x is not None)
    n_opps = int(s["_opp"].max()) + 1
    span = hi - lo + 1
    if n_opps * span < _MAX_KEY:
        ev_off = ev_t - lo
        snap_off = {w: (snap_t - d - lo).fill_null(0) for w, d in windows.items()}  # null date: before every event
    else:  # ranks keep the order of the instants and need only as many values as there are instants
        grid = pl.concat([ev_t, *(snap_t - d for d in windows.values())]).drop_nulls().unique().sort()
        span = grid.len() + 1
        ev_off = grid.search_sorted(ev_t, side="left") + 1
        snap_off = {w: (grid.search_sorted(snap_t - d, side="left").cast(pl.Int64) + 1)
                    .set(snap_t.is_null(), 0) for w, d in windows.items()}
    ev = ev.with_columns(_key=pl.col("_opp") * span + ev_off.cast(pl.Int64)).sort("_key").with_columns(
        # decayed sum as of each event, stored in a shifted exponent to stay finite
        _cumexp=((pl.col("t") - pl.lit(t0)).dt.total_milliseconds().cast(pl.Float64) / tau_ms).exp()
        .cum_sum().over("_opp"),
    )
    keys = ev["_key"]
    block = s["_opp"] * span
    start = keys.search_sorted(block, side="left").cast(pl.Int64)
    pos = {w: keys.search_sorted(block + snap_off[w].cast(pl.Int64), side="right").cast(pl.Int64)
           for w in windows}
    has = pos[""] > start
    at = (pos[""] - 1).clip(lower_bound=0)
    age = (pl.col("snapshot_date") - pl.lit(t0)).dt.total_milliseconds().cast(pl.Float64) / tau_ms
    last = ev["t"].gather(at) if ev.height else pl.Series([None] * s.height, dtype=pl.Datetime("ms"))
    cumexp = ev["_cumexp"].gather(at) if ev.height else pl.Series([None] * s.height, dtype=pl.Float64)
    return pl.DataFrame({"snapshot_date": s["snapshot_date"], "_has": has, "_last": last, "_cumexp": cumexp,
                         "_n_30d": pos[""] - pos["30"], "_n_90d": pos[""] - pos["90"]}).select(
        pl.when(pl.col("_has")).then(pl.col("_last")).otherwise(None).alias("_last_event_at"),
        "_n_30d", "_n_90d",
        (pl.when(pl.col("_has")).then(pl.col("_cumexp")).otherwise(None) * (-age).exp()).fill_null(0.0).alias("_decayed"),
        pl.lit(True).alias("_has_activity_log"),
    )


_MAX_KEY = 2 ** 62  # opportunity-time keys above this use ranked times (see _activity_intermediates)


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
        fd = resolve_pin(name, pin)
        missing = [src for src in fd.sources if not _source_available(base, src)]
        if missing:
            unavailable[name] = "missing source data: " + ", ".join(m.replace("col:", "column ") for m in missing)
            continue
        exprs.append(fd.polars_expr().alias(name))
    out = base.select("opportunity_id", "snapshot_date", *exprs)
    empty = _all_null_features(out, [c for c in out.columns if c not in ("opportunity_id", "snapshot_date")])
    for name in empty:
        unavailable[name] = NO_USABLE_VALUES + (f" (the stage order pinned for this tenant matches none of its stages)"
                                                if name == "stage_index" else "")
    return out.drop(empty), unavailable


NO_USABLE_VALUES = "no usable values: every row is null after extraction"


def _all_null_features(frame: pl.DataFrame, cols: list[str]) -> list[str]:
    """Feature columns with no usable value (null, or NaN for floats) on any row of ``frame``."""
    out = []
    for c in cols:
        s = frame[c]
        bad = s.is_null()
        if s.dtype in (pl.Float32, pl.Float64):
            bad = bad | s.is_nan().fill_null(True)
        if frame.height == 0 or bool(bad.all()):
            out.append(c)
    return out


def feature_kinds(manifest: Mapping[str, Mapping]) -> dict[str, str]:
    return {name: pin["kind"] for name, pin in manifest.items()}


# --- training examples -----------------------------------------------------------------------------
LABEL = "label"  # 1 = lost, 0 = won
META_COLUMNS = ("opportunity_id", "snapshot_date", "week", "closed_at", "outcome", "actual_revenue", LABEL,
                "deal_value", "raw_probability", "baseline_risk_score")


CONFLICTING_OUTCOME = "conflicting_outcome"
CONFLICT_COLUMNS = ("opportunity_id", "outcome", "closed_at", "actual_revenue", "source_file", "reason_code", "reason")


def resolve_outcomes(outcomes, partition_end) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """The outcome of each opportunity known at ``partition_end``, and the rows that contradict each other.

    Rule (documented, deliberate): an opportunity whose outcome rows known before ``partition_end``
    disagree on ``outcome`` (won in one week's file, lost in a later one, or the other way round) is
    **excluded** from the labels — none of its rows is used — and every one of its outcome rows is
    returned in ``conflicts`` with reason code ``conflicting_outcome``. Why not "the latest filing wins":
    a later row may be a correction, but it may as well be a reopened deal closed again, a merge of two
    records or a mistaken edit; the export does not say which, and training on a guessed label is silent
    label noise that also makes the label of the same snapshot differ between two training partitions
    (so champion and challenger would be judged on different truths). Excluding costs a handful of
    opportunities, is visible (count in the stats, rows in a table) and is reversed by fixing the data.
    Rows that agree on the outcome are not a conflict: identical re-filings are merged, and a re-filing
    with another ``closed_at``/``actual_revenue`` keeps the latest ``closed_at`` (as before).
    Returns (resolved: one row per opportunity, conflicts: rows with ``CONFLICT_COLUMNS``, counts).
    """
    import datetime as _dt

    end = pl.lit(_dt.datetime.fromisoformat(str(partition_end))).cast(pl.Datetime("ms"))
    o = _to_polars(outcomes)
    if o.is_empty():
        o = pl.DataFrame(schema={"opportunity_id": pl.String, "outcome": pl.String, "closed_at": pl.Datetime("ms"),
                                 "actual_revenue": pl.Float64})
    o = o.select(pl.col("opportunity_id").cast(pl.String),
                 pl.col("outcome").cast(pl.String).str.strip_chars().str.to_lowercase(),
                 _ms("closed_at").alias("closed_at"), pl.col("actual_revenue").cast(pl.Float64),
                 (pl.col("source_file").cast(pl.String) if "source_file" in o.columns
                  else pl.lit(None, pl.String)).alias("source_file"))
    o = o.filter(pl.col("closed_at") < end)
    n_rows = o.height
    o = o.unique(["opportunity_id", "outcome", "closed_at", "actual_revenue"], keep="first", maintain_order=True)
    conflicted = (o.group_by("opportunity_id").agg(pl.col("outcome").n_unique().alias("n"))
                  .filter(pl.col("n") > 1)["opportunity_id"])
    bad = o.filter(pl.col("opportunity_id").is_in(conflicted.implode())).sort("opportunity_id", "closed_at")
    if bad.height:
        detail = (bad.group_by("opportunity_id", maintain_order=True).agg(
            pl.format("{} (closed {}{})", pl.col("outcome"), pl.col("closed_at").dt.strftime("%Y-%m-%d"),
                      pl.when(pl.col("source_file").is_not_null()).then(pl.lit(", ") + pl.col("source_file"))
                      .otherwise(pl.lit(""))).str.join(" then ").alias("_what")))
        bad = bad.join(detail, on="opportunity_id", how="left").with_columns(
            pl.lit(CONFLICTING_OUTCOME).alias("reason_code"),
            pl.format("opportunity {} has outcome rows that disagree: {}; excluded from training examples "
                      "(rule: conflicting outcomes are not labels)", pl.col("opportunity_id"), pl.col("_what"))
            .alias("reason"),
        ).drop("_what")
    else:
        bad = bad.with_columns(pl.lit(None, pl.String).alias("reason_code"), pl.lit(None, pl.String).alias("reason"))
    resolved = (o.filter(~pl.col("opportunity_id").is_in(conflicted.implode()))
                .sort("closed_at").unique("opportunity_id", keep="last", maintain_order=True)
                .drop("source_file"))
    counts = {"outcome_rows_known": int(n_rows), "conflicting_outcome_opportunities": int(conflicted.len()),
              "conflicting_outcome_rows": int(bad.height)}
    return resolved, bad.select(*CONFLICT_COLUMNS), counts


def build_training_examples(snapshots, outcomes, activities, manifest: Mapping[str, Mapping], *,
                            partition_end, window_weeks: int) -> tuple[pd.DataFrame, dict]:
    """Point-in-time features for every labelled snapshot in the ``window_weeks`` weeks before ``partition_end``.

    A snapshot is labelled only by an outcome that closed strictly after the snapshot and strictly before
    ``partition_end`` (the label must have been known when the partition ended). ``snapshots`` may hold
    older history than the window: it feeds the point-in-time history features.
    Opportunities with conflicting outcomes are left out (rule: :func:`resolve_outcomes`); their rows are
    in ``stats["conflicts"]`` (a polars frame) and counted in ``stats["conflicting_outcome_opportunities"]``.
    A feature with no usable value in the labelled rows is left out and listed in ``unavailable_features``.
    """
    import datetime as _dt

    end = pl.lit(_dt.datetime.fromisoformat(str(partition_end))).cast(pl.Datetime("ms"))
    start = pl.lit(_dt.datetime.fromisoformat(str(partition_end)) - _dt.timedelta(weeks=window_weeks)).cast(pl.Datetime("ms"))
    s = snapshots_before(snapshots, partition_end)
    base = build_base_frame(s, activities)
    feats, unavailable = extract_features(base, manifest)
    extras = base.select(
        "opportunity_id", "snapshot_date",
        pl.col("deal_value").cast(pl.Float64),
        pl.col("probability").cast(pl.Float64).alias("raw_probability"),
        (pl.col("risk_score").cast(pl.Float64) if "risk_score" in base.columns
         else pl.lit(None, pl.Float64)).alias("baseline_risk_score"),
    )
    rows = feats.hstack(extras.drop("opportunity_id", "snapshot_date"))  # row-aligned with base: no join
    in_window = rows.filter((pl.col("snapshot_date") >= start) & (pl.col("snapshot_date") < end))
    o, conflicts, conflict_counts = resolve_outcomes(outcomes, partition_end)
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
    if labelled.height:
        for name in _all_null_features(labelled, feature_cols):
            unavailable[name] = "no usable values in this partition's labelled rows (all null)"
            feature_cols.remove(name)
    conflicted_rows = int(in_window.filter(pl.col("opportunity_id").is_in(conflicts["opportunity_id"].implode())).height)
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
        **conflict_counts,
        "snapshot_rows_excluded_conflicting_outcome": conflicted_rows,
        "conflicts": conflicts,
    }
    return out, stats
