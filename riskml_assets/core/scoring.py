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

import numpy as np
import pandas as pd
from .lazy import lazy_module

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
    base = F.build_base_frame(snapshots_history, activities)
    feats, unavailable = F.extract_features(base, manifest)
    out = feats.to_pandas()
    out["opportunity_id"] = out["opportunity_id"].astype(str)
    out["snapshot_date"] = _naive_ns(out["snapshot_date"])
    return out, unavailable


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


def _history(snapshots_history, latest: pd.DataFrame) -> pd.DataFrame:
    hist = _pandas(snapshots_history)
    if not hist.empty:
        hist = hist.copy()
        hist["opportunity_id"] = hist["opportunity_id"].astype(str)
        hist["snapshot_date"] = _naive_ns(hist["snapshot_date"])
        hist = hist[[c for c in hist.columns if c in latest.columns]]
    both = pd.concat([hist, latest], ignore_index=True) if not hist.empty else latest
    both = both.drop_duplicates(["opportunity_id", "snapshot_date"], keep="last")
    return both[both["snapshot_date"] <= latest["snapshot_date"].max()].reset_index(drop=True)


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
    keys = latest[["opportunity_id", "snapshot_date"]]
    feats, unavailable = compute_features(_history(snapshots_history, latest), activities, bundle["manifest"])
    rows = keys.merge(feats, on=["opportunity_id", "snapshot_date"], how="left", validate="one_to_one")
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
    history = _history(snapshots_history, latest)

    parts = []
    computed: dict[str, tuple[pd.DataFrame, dict]] = {}
    for bundle, role, mask in ((champion_bundle, "champion", ~to_challenger),
                               (challenger_bundle, "challenger", to_challenger)):
        if bundle is None or not mask.any():
            continue
        fp = F.manifest_fingerprint(bundle["manifest"])
        if fp not in computed:
            computed[fp] = compute_features(history, activities, bundle["manifest"])
        feats, unavailable = computed[fp]
        rows = keys[mask].merge(feats, on=["opportunity_id", "snapshot_date"], how="left", validate="one_to_one")
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
            "manifest_fingerprint": fp,
            "threshold": thr,
            "above_threshold": p >= thr,
        }))
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(SCORE_COLUMNS))
    return out.sort_values("opportunity_id", kind="stable").reset_index(drop=True)[list(SCORE_COLUMNS)]


def predict_on_examples(bundle: Mapping, examples: pd.DataFrame, examples_manifest: Mapping[str, Mapping] | None = None,
                        snapshots_history=None, activities=None, role: str = "champion") -> tuple[np.ndarray, np.ndarray]:
    """(calibrated, raw) predictions of ``bundle`` on labelled example rows, e.g. the test split of a new run,
    so a champion and a challenger can be compared on the same rows.

    When the examples were extracted with the same versions/hashes the bundle pins for its features
    (``examples_manifest``), they are used as they are; otherwise the bundle's pinned versions are recomputed
    from ``snapshots_history``/``activities`` for the example keys (point in time).
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
    if snapshots_history is None:
        raise ScoringError(f"{_label(bundle, role)} pins feature versions the examples were not extracted with; "
                           "pass snapshots_history (and activities) to recompute them")
    keys = examples[["opportunity_id", "snapshot_date"]].copy()
    keys["opportunity_id"] = keys["opportunity_id"].astype(str)
    keys["snapshot_date"] = _naive_ns(keys["snapshot_date"])
    hist = _pandas(snapshots_history)
    feats, unavailable = compute_features(hist, activities, pins)
    rows = keys.merge(feats, on=["opportunity_id", "snapshot_date"], how="left", validate="many_to_one")
    rows = _check_available(bundle, role, rows, unavailable, False)
    return _predict(bundle, rows)
