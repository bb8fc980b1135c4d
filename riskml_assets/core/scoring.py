"""Batch scoring of open opportunities with the champion (and optionally a challenger share). Pure, no dagster.

A *bundle* is what :meth:`riskml_assets.registry.ModelRegistry.load` returns (tests may build one by hand)::

    {"artifact": <training artifact dict>, "calibrator": <calibrator asset dict or None>,
     "manifest": <pinned feature manifest>, "name": "riskml.acme.risk", "version": "3", "alias": "champion"}

Rules:

- The bundle's pinned manifest is checked against the feature registry **before anything is computed**;
  a feature whose pinned version does not exist or whose definition hash differs fails with a message
  naming the feature, the pinned version/hash and the registry's.
- Features are computed with exactly the pinned versions (``features.build_base_frame`` +
  ``features.extract_features``) on the tenant's snapshot history up to the scored week, so history
  features (slips, stage age, activity counts) are point-in-time.
- A feature the model needs but whose source data is missing fails (never fabricated, never silently NaN),
  unless ``allow_missing_features=True``.
- The traffic split is a stable hash (sha256) of ``salt:opportunity_id``: the same opportunity goes to the
  same model on every run and machine. Every score row names the model (name, version, alias) that made it.
- Same inputs give identical output (sorted by opportunity id).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from .lazy import lazy_module

np = lazy_module("numpy")
pd = lazy_module("pandas")

pl = lazy_module("polars")  # imported on first use (code location load time)

from . import features as F
from .evaluation import apply_calibrator
from .training import predict_raw

DEFAULT_SALT = "riskml-traffic-v1"
SCORE_COLUMNS = ("opportunity_id", "snapshot_date", "p_lost", "p_lost_raw", "model_version", "model_alias",
                 "model_name", "manifest_fingerprint", "threshold", "above_threshold")
_CLOSED_STAGE_WORDS = ("closed", "won", "lost")


class ScoringError(ValueError):
    """The inputs cannot be scored as asked (missing features, empty week, malformed bundle)."""


def _label(bundle: Mapping, role: str) -> str:
    name = bundle.get("name") or "model"
    version = bundle.get("version")
    return f"{role} {name}" + (f" v{version}" if version is not None else "")


def verify_bundle_manifest(bundle: Mapping, role: str = "champion") -> None:
    """Raise FeatureVersionError unless every pinned feature of ``bundle`` exists in the registry with the
    same definition hash, and the model artifact was trained on that same manifest."""
    if "manifest" not in bundle or "artifact" not in bundle:
        raise ScoringError(f"{role} bundle lacks 'manifest' or 'artifact' (keys: {sorted(bundle)})")
    manifest, artifact = bundle["manifest"], bundle["artifact"]
    who = _label(bundle, role)
    problems = []
    for name, pin in manifest.items():
        pv, ph = int(pin["version"]), pin.get("hash")
        fd = F.resolve_pin(name, pin)  # bound to the pinned params for per-tenant features (stage order, x_ columns)
        known = sorted(v for n, v in F.REGISTRY if n == name)
        if fd is None:
            have = ", ".join(f"v{v} (hash {F.REGISTRY[(name, v)].definition_hash})" for v in known) or "none"
            problems.append(f"feature {name!r}: the model pins v{pv} (hash {ph}) but the feature registry has no "
                            f"v{pv}; registry versions: {have}")
        elif fd.definition_hash != ph:
            problems.append(f"feature {name!r}: the model pins v{pv} with hash {ph} but the feature registry's "
                            f"v{pv} has hash {fd.definition_hash} (the definition changed without a new version)")
    missing = [f for f in artifact.get("features", []) if f not in manifest]
    if missing:
        problems.append(f"model features not in the pinned manifest: {missing}")
    trained = artifact.get("manifest")
    if trained is not None:
        for name in artifact.get("features", []):
            a, b = trained.get(name), manifest.get(name)
            if a is not None and b is not None and (int(a["version"]), a.get("hash")) != (int(b["version"]), b.get("hash")):
                problems.append(f"feature {name!r}: the model was trained with v{a['version']} (hash {a.get('hash')}) "
                                f"but the registry entry pins v{b['version']} (hash {b.get('hash')})")
    if problems:
        raise F.FeatureVersionError(f"{who}: feature manifest does not match the feature registry: "
                                    + "; ".join(problems))


def assign_challenger(opportunity_ids: Iterable[Any], share: float, salt: str = DEFAULT_SALT) -> np.ndarray:
    """Boolean mask: True for the ids routed to the challenger.

    ``sha256(salt + ":" + id)`` read as a number in [0, 1) is compared with ``share``, so the assignment is
    stable across runs, processes and machines (unlike Python's ``hash``) and monotone in ``share`` (raising
    the share only moves more ids to the challenger).
    """
    share = float(share)
    if not (0.0 <= share <= 1.0):
        raise ValueError(f"challenger share must be in [0, 1], got {share}")
    ids = [str(i) for i in opportunity_ids]
    if share == 0.0:
        return np.zeros(len(ids), dtype=bool)
    u = np.array([int.from_bytes(hashlib.sha256(f"{salt}:{i}".encode()).digest()[:8], "big") / 2.0 ** 64
                  for i in ids])
    return u < share


def _pandas(df) -> pd.DataFrame:
    if df is None:
        return pd.DataFrame()
    if isinstance(df, pl.DataFrame):
        return df.to_pandas()
    return pd.DataFrame(df)


def _naive_ns(s: pd.Series) -> pd.Series:
    s = pd.to_datetime(s)
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.astype("datetime64[ns]")


def compute_features(snapshots_history, activities, manifest: Mapping[str, Mapping]) -> tuple[pd.DataFrame, dict]:
    """Point-in-time features of every snapshot row with exactly the pinned versions.

    Returns (pandas frame keyed by opportunity_id/snapshot_date, {feature: reason} for unavailable ones).
    """
    feats, unavailable = _features_polars(snapshots_history, activities, manifest)
    return _to_pandas_keys(feats), unavailable


def _features_polars(snapshots_history, activities, manifest, activity_origin=None) -> tuple[pl.DataFrame, dict]:
    base = F.build_base_frame(snapshots_history, activities, activity_origin=activity_origin)
    return F.extract_features(base, manifest)


def _to_pandas_keys(feats: pl.DataFrame) -> pd.DataFrame:
    out = feats.to_pandas()
    out["opportunity_id"] = out["opportunity_id"].astype(str)
    out["snapshot_date"] = _naive_ns(out["snapshot_date"])
    return out


def _rows_to_score(latest_week_snapshots) -> pd.DataFrame:
    latest = _pandas(latest_week_snapshots)
    if latest.empty:
        raise ScoringError("the latest week has no snapshot rows to score")
    latest = latest.copy()
    latest["opportunity_id"] = latest["opportunity_id"].astype(str)
    latest["snapshot_date"] = _naive_ns(latest["snapshot_date"])
    if "stage" in latest.columns:
        stage = latest["stage"].astype(str).str.lower()
        closed = stage.apply(lambda s: any(s.startswith(w) or s == w for w in _CLOSED_STAGE_WORDS))
        latest = latest[~closed]
    # an opportunity is scored once: at its latest snapshot of the week
    latest = latest.sort_values(["opportunity_id", "snapshot_date"], kind="stable")
    return latest.drop_duplicates("opportunity_id", keep="last").reset_index(drop=True)


def _naive_ms_expr(name: str, dtype) -> pl.Expr:
    col = pl.col(name)
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        col = col.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    elif dtype == pl.String:
        col = col.str.to_datetime()
    elif not isinstance(dtype, pl.Datetime):
        col = col.cast(pl.Datetime("ns"))
    return col.cast(pl.Datetime("ms"))


def _keyed(frame: pl.DataFrame) -> pl.DataFrame:
    """``opportunity_id`` as text and ``snapshot_date`` as naive UTC milliseconds (the base frame's keys)."""
    return frame.with_columns(pl.col("opportunity_id").cast(pl.String),
                              _naive_ms_expr("snapshot_date", frame.schema["snapshot_date"]).alias("snapshot_date"))


def _history(snapshots_history, latest: pd.DataFrame, only=None) -> pl.DataFrame:
    """The snapshot rows the scored features look back on: history + the latest week (latest wins on a
    duplicate key), up to the latest scored date, limited to the columns of the latest week and -- with
    ``only`` (opportunity ids) -- to those opportunities' rows. Features are per opportunity, so limiting
    the rows to the scored opportunities changes none of their values (and saves the other 98 %)."""
    lat = _keyed(F._to_polars(latest))
    hist = snapshots_history
    if isinstance(hist, pd.DataFrame) and len(hist):
        if only is not None:  # filter before converting: only the scored opportunities' rows cross over
            hist = hist[hist["opportunity_id"].astype(str).isin(only)]
        hist = hist[[c for c in hist.columns if c in lat.columns]]
    hist = F._to_polars(hist)
    if not hist.is_empty():
        hist = _keyed(hist.select([c for c in hist.columns if c in lat.columns]))
        if only is not None:
            hist = hist.filter(pl.col("opportunity_id").is_in(pl.Series(list(only), dtype=pl.String).implode()))
        both = pl.concat([hist, lat], how="diagonal_relaxed")
    else:
        both = lat
    both = both.unique(["opportunity_id", "snapshot_date"], keep="last", maintain_order=True)
    return both.filter(pl.col("snapshot_date") <= lat["snapshot_date"].max())


def _activity_rows(activities, only) -> tuple[Any, Any]:
    """(the activity events of the ``only`` opportunities, the origin of the decayed sums over *all* events)
    -- the origin is what the full frame would use, so the engagement values stay bit for bit the same."""
    if activities is None:
        return None, None
    if isinstance(activities, pd.DataFrame):
        if not len(activities) or "occurred_at" not in activities.columns:
            return activities, None
        origin = pl.from_pandas(activities["occurred_at"]).cast(pl.Datetime("ms")).min()
        return activities[activities["opportunity_id"].astype(str).isin(only)], origin
    a = F._to_polars(activities)
    if a.is_empty() or "occurred_at" not in a.columns:
        return a, None
    origin = a.select(F._ms("occurred_at").min()).item()
    return a.filter(pl.col("opportunity_id").cast(pl.String).is_in(pl.Series(list(only), dtype=pl.String).implode())), origin


def _scored_features(snapshots_history, activities, latest: pd.DataFrame, manifest) -> tuple[pd.DataFrame, dict]:
    """Features (pinned versions) of the latest rows, computed from the scored opportunities' history only.
    When a feature comes out unavailable on those rows (its source column empty there, no usable value),
    the whole history decides instead, exactly as before the shortcut (it may hold values elsewhere)."""
    only = set(latest["opportunity_id"])
    acts, origin = _activity_rows(activities, only)
    feats, unavailable = _features_polars(_history(snapshots_history, latest, only), acts, manifest,
                                          activity_origin=origin)
    if unavailable:
        feats, unavailable = _features_polars(_history(snapshots_history, latest), activities, manifest)
    keys = _keyed(F._to_polars(latest[["opportunity_id", "snapshot_date"]]))
    rows = keys.join(feats, on=["opportunity_id", "snapshot_date"], how="left", validate="1:1", maintain_order="left")
    return _to_pandas_keys(rows), unavailable


concat_frames = F.concat_frames  # one polars frame from a windowed input's per-partition frames


def rows_between(frame: pl.DataFrame, start, end) -> pl.DataFrame:
    """The rows of ``frame`` whose snapshot_date (naive UTC) is in [start, end)."""
    if frame.is_empty():
        return frame
    t = _naive_ms_expr("snapshot_date", frame.schema["snapshot_date"])
    return frame.filter((t >= pd.Timestamp(start).to_pydatetime()) & (t < pd.Timestamp(end).to_pydatetime()))


def _check_available(bundle: Mapping, role: str, feats: pd.DataFrame, unavailable: Mapping[str, str],
                     allow_missing: bool) -> pd.DataFrame:
    needed = bundle["artifact"]["features"]
    gone = {f: unavailable.get(f, "not computed") for f in needed if f not in feats.columns}
    if gone and not allow_missing:
        detail = "; ".join(f"{f}: {why}" for f, why in gone.items())
        raise ScoringError(f"{_label(bundle, role)} needs features the scoring data cannot provide: {detail}")
    for f in gone:
        feats[f] = np.nan
    return feats


def predict_calibrated(artifact: Mapping, calibrator: Mapping | None, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(calibrated, raw) P(lost) of a model artifact + calibrator on a frame of its pinned feature columns.

    The one prediction path: batch scoring, the champion/challenger comparison and the registered MLflow
    pyfunc (``core.pyfunc``) all call it, so they agree exactly on the same feature rows.
    """
    p_raw = predict_raw(dict(artifact), frame)
    p = apply_calibrator(dict(calibrator), p_raw) if calibrator else p_raw
    return np.asarray(p, dtype="float64"), np.asarray(p_raw, dtype="float64")


def _predict(bundle: Mapping, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return predict_calibrated(bundle["artifact"], bundle.get("calibrator"), frame)


def feature_rows(snapshots_history, activities, latest_week_snapshots, bundle: Mapping, *,
                 allow_missing_features: bool = False) -> pd.DataFrame:
    """The feature rows :func:`score_open_opportunities` scores with ``bundle``: one row per open opportunity
    of the latest week (its latest snapshot), ``opportunity_id``, ``snapshot_date`` and every feature of the
    bundle's pinned manifest, computed point in time with exactly the pinned versions (manifest verified
    first). Sorted by opportunity id. This is the input of the registered pyfunc
    (``mlflow.pyfunc.load_model("models:/riskml.<tenant>.risk@champion").predict(rows)``)."""
    verify_bundle_manifest(bundle, bundle.get("alias") or "champion")
    latest = _rows_to_score(latest_week_snapshots)
    rows, unavailable = _scored_features(snapshots_history, activities, latest, bundle["manifest"])
    rows = _check_available(bundle, bundle.get("alias") or "champion", rows, unavailable, allow_missing_features)
    return rows.sort_values("opportunity_id", kind="stable").reset_index(drop=True)


def score_open_opportunities(snapshots_history, activities, latest_week_snapshots, champion_bundle: Mapping,
                             challenger_bundle: Mapping | None = None, challenger_share: float = 0.0, *,
                             salt: str = DEFAULT_SALT, allow_missing_features: bool = False) -> pd.DataFrame:
    """Score every open opportunity of the latest week (its latest snapshot in the week).

    ``snapshots_history`` holds the tenant's earlier snapshot rows (may also contain the latest week; may be
    empty), ``activities`` the activity events (or None). With ``challenger_bundle`` and
    ``challenger_share > 0`` a stable hash routes that share of the opportunities to the challenger.
    Returns one row per opportunity with the columns of ``SCORE_COLUMNS``, sorted by opportunity id.
    """
    return score_with_features(snapshots_history, activities, latest_week_snapshots, champion_bundle,
                               challenger_bundle, challenger_share, salt=salt,
                               allow_missing_features=allow_missing_features)[0]


def score_with_features(snapshots_history, activities, latest_week_snapshots, champion_bundle: Mapping,
                        challenger_bundle: Mapping | None = None, challenger_share: float = 0.0, *,
                        salt: str = DEFAULT_SALT, allow_missing_features: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`score_open_opportunities` and the champion's feature rows of *every* scored opportunity (the
    rows the drift check compares with the champion's reference), computed once: (scores, feature rows),
    both sorted by opportunity id. Features are computed from the scored opportunities' own history only."""
    share = float(challenger_share)
    if not (0.0 <= share <= 1.0):
        raise ValueError(f"challenger share must be in [0, 1], got {challenger_share}")
    use_challenger = challenger_bundle is not None and share > 0.0
    # verify before computing anything
    verify_bundle_manifest(champion_bundle, champion_bundle.get("alias") or "champion")
    if use_challenger:
        verify_bundle_manifest(challenger_bundle, challenger_bundle.get("alias") or "challenger")

    latest = _rows_to_score(latest_week_snapshots)
    keys = latest[["opportunity_id", "snapshot_date"]]
    to_challenger = assign_challenger(keys["opportunity_id"], share, salt) if use_challenger else np.zeros(len(keys), bool)

    parts = []
    computed: dict[str, tuple[pd.DataFrame, dict]] = {}

    def features_of(bundle) -> tuple[pd.DataFrame, dict]:
        fp = F.manifest_fingerprint(bundle["manifest"])
        if fp not in computed:
            computed[fp] = _scored_features(snapshots_history, activities, latest, bundle["manifest"])
        return computed[fp]

    champion_rows = features_of(champion_bundle)[0]
    for bundle, role, mask in ((champion_bundle, "champion", ~to_challenger),
                               (challenger_bundle, "challenger", to_challenger)):
        if bundle is None or not mask.any():
            continue
        feats, unavailable = features_of(bundle)
        rows = feats[mask].reset_index(drop=True)
        rows = _check_available(bundle, bundle.get("alias") or role, rows, unavailable, allow_missing_features)
        p, p_raw = _predict(bundle, rows)
        cal = bundle.get("calibrator") or {}
        thr = float(cal.get("threshold", 0.5))
        parts.append(pd.DataFrame({
            "opportunity_id": rows["opportunity_id"].to_numpy(),
            "snapshot_date": rows["snapshot_date"].to_numpy(),
            "p_lost": p,
            "p_lost_raw": p_raw,
            "model_version": str(bundle.get("version", "")),
            "model_alias": str(bundle.get("alias") or role),
            "model_name": str(bundle.get("name", "")),
            "manifest_fingerprint": F.manifest_fingerprint(bundle["manifest"]),
            "threshold": thr,
            "above_threshold": p >= thr,
        }))
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(SCORE_COLUMNS))
    scores = out.sort_values("opportunity_id", kind="stable").reset_index(drop=True)[list(SCORE_COLUMNS)]
    return scores, champion_rows.sort_values("opportunity_id", kind="stable").reset_index(drop=True)


def predict_on_examples(bundle: Mapping, examples: pd.DataFrame, examples_manifest: Mapping[str, Mapping] | None = None,
                        snapshots_history=None, activities=None, role: str = "champion") -> tuple[np.ndarray, np.ndarray]:
    """(calibrated, raw) predictions of ``bundle`` on labelled example rows, e.g. the test split of a new run,
    so a champion and a challenger can be compared on the same rows.

    When the examples were extracted with the same versions/hashes the bundle pins for its features
    (``examples_manifest``), they are used as they are; otherwise the bundle's pinned versions are recomputed
    from ``snapshots_history``/``activities`` for the example keys (point in time); either may be a function
    returning the frame, called only then.
    """
    verify_bundle_manifest(bundle, role)
    needed = bundle["artifact"]["features"]
    pins = bundle["manifest"]
    same = examples_manifest is not None and all(
        f in examples.columns and f in examples_manifest
        and (int(examples_manifest[f]["version"]), examples_manifest[f].get("hash"))
        == (int(pins[f]["version"]), pins[f].get("hash"))
        for f in needed)
    if same:
        return _predict(bundle, examples)
    # the history may come as a function that reads it (a caller that has it only on demand): asked only here
    snapshots_history = snapshots_history() if callable(snapshots_history) else snapshots_history
    activities = activities() if callable(activities) else activities
    if snapshots_history is None:
        raise ScoringError(f"{_label(bundle, role)} pins feature versions the examples were not extracted with; "
                           "pass snapshots_history (and activities) to recompute them")
    keys = examples[["opportunity_id", "snapshot_date"]].copy()
    keys["opportunity_id"] = keys["opportunity_id"].astype(str)
    keys["snapshot_date"] = _naive_ns(keys["snapshot_date"])
    # features are per opportunity: the examples' opportunities' rows suffice (same values, see _scored_features)
    only = set(keys["opportunity_id"])
    hist = snapshots_history
    if isinstance(hist, pd.DataFrame) and len(hist):
        hist = hist[hist["opportunity_id"].astype(str).isin(only)]
    elif isinstance(hist, pl.DataFrame) and hist.height:
        hist = hist.filter(pl.col("opportunity_id").cast(pl.String).is_in(pl.Series(list(only), dtype=pl.String).implode()))
    acts, origin = _activity_rows(activities, only)
    feats, unavailable = _features_polars(hist, acts, pins, activity_origin=origin) if len(hist) else (None, {"": ""})
    if unavailable:  # a feature empty on these rows: the whole history decides, as before
        feats, unavailable = _features_polars(snapshots_history, activities, pins)
    feats = _to_pandas_keys(feats)
    rows = keys.merge(feats, on=["opportunity_id", "snapshot_date"], how="left", validate="many_to_one")
    rows = _check_available(bundle, role, rows, unavailable, False)
    return _predict(bundle, rows)
