"""Probability calibrators that serialise to plain JSON-able dicts (never pickle).

A calibrator maps raw model probabilities ``p_raw`` in [0, 1] to calibrated probabilities in
[0, 1], monotone non-decreasing in ``p_raw``. All share the interface::

    cal = PlattCalibrator().fit(p_raw, y)
    cal.predict(p_raw)            # np.ndarray in [0, 1]
    d = cal.to_dict()             # {"method": "platt", "a": ..., "b": ...}; json.dumps-able
    calibrator_from_dict(d)       # an equal calibrator, identical predictions

:func:`fit_calibrator` chooses a method ("auto": Platt vs isotonic by cross-validated Brier score
inside the given rows) and refits it on all of them.
"""
from __future__ import annotations

import math
from typing import Any

from .lazy import lazy_attr, lazy_module

np = lazy_module("numpy")

# imported on first use (code location load time)
optimize = lazy_module("scipy.optimize")
IsotonicRegression = lazy_attr("sklearn.isotonic", "IsotonicRegression")
StratifiedKFold = lazy_attr("sklearn.model_selection", "StratifiedKFold")

from .metrics import _arr, _binary, _probs, _same_length

__all__ = [
    "Calibrator", "PlattCalibrator", "IsotonicCalibrator", "IdentityCalibrator",
    "calibrator_from_dict", "fit_calibrator", "CALIBRATION_METHODS", "ISOTONIC_MIN_ROWS",
]

CALIBRATION_METHODS = ("auto", "platt", "isotonic", "none")
ISOTONIC_MIN_ROWS = 500  # "auto" considers isotonic only from this many rows on
_LOGIT_EPS = 1e-12       # p_raw is clipped to [eps, 1 - eps] before the logit
_PROB_TOL = 1e-9         # p_raw this far outside [0, 1] is clipped instead of refused


def _p_raw(p_raw: Any) -> np.ndarray:
    p = _arr(p_raw, "p_raw")
    if p.min() < -_PROB_TOL or p.max() > 1.0 + _PROB_TOL:
        _probs(p, "p_raw")  # raises with the range
    return np.clip(p, 0.0, 1.0)


def _fit_inputs(p_raw: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _p_raw(p_raw)
    yy = _binary(_arr(y, "y"))
    _same_length(p_raw=p, y=yy)
    return p, yy


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _LOGIT_EPS, 1.0 - _LOGIT_EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _finite_float(d: dict, key: str) -> float:
    if key not in d:
        raise ValueError(f"calibrator dict is missing {key!r}")
    try:
        v = float(d[key])
    except (TypeError, ValueError):
        raise ValueError(f"calibrator dict: {key!r} must be a number, got {d[key]!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"calibrator dict: {key!r} must be finite, got {v!r}")
    return v


class Calibrator:
    """Base class: ``fit(p_raw, y) -> self``, ``predict(p_raw)``, ``to_dict()``, ``method``."""

    method: str = ""

    def fit(self, p_raw: Any, y: Any) -> "Calibrator":  # pragma: no cover - interface
        raise NotImplementedError

    def predict(self, p_raw: Any) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - interface
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Calibrator":  # pragma: no cover - interface
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict() if self._fitted() else 'unfitted'})"

    def _fitted(self) -> bool:
        return True

    def _check_fitted(self) -> None:
        if not self._fitted():
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")


class IdentityCalibrator(Calibrator):
    """Leaves probabilities as they are (method "none")."""

    method = "none"

    def fit(self, p_raw: Any, y: Any) -> "IdentityCalibrator":
        _fit_inputs(p_raw, y)
        return self

    def predict(self, p_raw: Any) -> np.ndarray:
        return _p_raw(p_raw)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "IdentityCalibrator":
        return cls()


class PlattCalibrator(Calibrator):
    """Platt scaling: ``p = sigmoid(a * logit(p_raw) + b)``.

    Fitted by maximum likelihood (scipy L-BFGS-B, no regularisation) with Platt's smoothed targets
    ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)``, which keeps ``a`` and ``b`` finite even on
    separable data. ``a`` is bounded to ``a >= 0`` so the map never reverses the ranking.
    ``p_raw`` is clipped to ``[1e-12, 1 - 1e-12]`` before the logit.
    """

    method = "platt"

    def __init__(self, a: float | None = None, b: float | None = None):
        self.a = None if a is None else float(a)
        self.b = None if b is None else float(b)

    def _fitted(self) -> bool:
        return self.a is not None and self.b is not None

    def fit(self, p_raw: Any, y: Any) -> "PlattCalibrator":
        p, yy = _fit_inputs(p_raw, y)
        x = _logit(p)
        n_pos = float(yy.sum())
        n_neg = float(len(yy) - n_pos)
        t = np.where(yy == 1, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

        def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
            z = w[0] * x + w[1]
            # cross-entropy with soft targets: log(1 + e^z) - t * z, computed stably
            val = np.sum(np.logaddexp(0.0, z) - t * z)
            r = _sigmoid(z) - t
            return float(val), np.array([np.dot(r, x), r.sum()])

        res = optimize.minimize(loss, x0=np.array([1.0, 0.0]), jac=True, method="L-BFGS-B",
                                bounds=[(0.0, None), (None, None)], options={"maxiter": 500})
        a, b = (float(v) for v in res.x)
        if not (math.isfinite(a) and math.isfinite(b)):
            raise RuntimeError(f"Platt fit did not converge: {res.message}")
        self.a, self.b = a, b
        return self

    def predict(self, p_raw: Any) -> np.ndarray:
        self._check_fitted()
        return _sigmoid(self.a * _logit(_p_raw(p_raw)) + self.b)

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {"method": self.method, "a": self.a, "b": self.b}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PlattCalibrator":
        a = _finite_float(d, "a")
        if a < 0:
            raise ValueError(f"calibrator dict: Platt slope 'a' must be >= 0, got {a}")
        return cls(a=a, b=_finite_float(d, "b"))


class IsotonicCalibrator(Calibrator):
    """Isotonic regression of ``y`` on ``p_raw``, stored as its step points.

    Fitted with sklearn ``IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1)``; only the
    thresholds ``x`` (= ``X_thresholds_``) and ``y`` (= ``y_thresholds_``) are kept and predictions
    are ``np.interp(p_raw, x, y)`` (linear between points, constant beyond the ends), which is
    what sklearn predicts.
    """

    method = "isotonic"

    def __init__(self, x: Any = None, y: Any = None):
        self.x = None if x is None else np.asarray(x, dtype=float)
        self.y = None if y is None else np.asarray(y, dtype=float)

    def _fitted(self) -> bool:
        return self.x is not None and self.y is not None

    def fit(self, p_raw: Any, y: Any) -> "IsotonicCalibrator":
        p, yy = _fit_inputs(p_raw, y)
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0, increasing=True)
        iso.fit(p, yy)
        self.x = np.asarray(iso.X_thresholds_, dtype=float)
        self.y = np.clip(np.asarray(iso.y_thresholds_, dtype=float), 0.0, 1.0)
        return self

    def predict(self, p_raw: Any) -> np.ndarray:
        self._check_fitted()
        return np.clip(np.interp(_p_raw(p_raw), self.x, self.y), 0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {"method": self.method, "x": self.x.tolist(), "y": self.y.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "IsotonicCalibrator":
        for key in ("x", "y"):
            if key not in d:
                raise ValueError(f"calibrator dict is missing {key!r}")
        try:
            x = np.asarray(d["x"], dtype=float)
            y = np.asarray(d["y"], dtype=float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"calibrator dict: isotonic 'x'/'y' must be lists of numbers: {exc}") from None
        if x.ndim != 1 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
            raise ValueError("calibrator dict: isotonic 'x' and 'y' must be non-empty lists of equal length")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise ValueError("calibrator dict: isotonic 'x'/'y' contain non-finite values")
        if np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
            raise ValueError("calibrator dict: isotonic 'x' and 'y' must be non-decreasing")
        if y.min() < 0 or y.max() > 1:
            raise ValueError("calibrator dict: isotonic 'y' must lie in [0, 1]")
        return cls(x=x, y=y)


_CLASSES: dict[str, type[Calibrator]] = {
    "platt": PlattCalibrator,
    "isotonic": IsotonicCalibrator,
    "none": IdentityCalibrator,
}


def calibrator_from_dict(d: dict[str, Any]) -> Calibrator:
    """Rebuild a calibrator from :meth:`Calibrator.to_dict` output (after a JSON round trip too)."""
    if not isinstance(d, dict) or "method" not in d:
        raise ValueError(f"calibrator dict must be a dict with a 'method' key, got {d!r:.200}")
    method = d["method"]
    if method not in _CLASSES:
        raise ValueError(f"unknown calibration method {method!r}; expected one of {sorted(_CLASSES)}")
    return _CLASSES[method].from_dict(d)


def _make(method: str) -> Calibrator:
    return _CLASSES[method]()


def _cv_brier(p: np.ndarray, y: np.ndarray, methods: list[str], n_folds: int, seed: int) -> dict[str, float]:
    """Brier score of each method's out-of-fold predictions (stratified k-fold within the rows)."""
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    oof = {m: np.empty(len(y)) for m in methods}
    for train, test in skf.split(p.reshape(-1, 1), y):
        for m in methods:
            oof[m][test] = _make(m).fit(p[train], y[train]).predict(p[test])
    return {m: float(np.mean((oof[m] - y) ** 2)) for m in methods}


def fit_calibrator(p_raw: Any, y: Any, method: str = "auto", n_folds: int = 5,
                   seed: int = 0) -> tuple[Calibrator, dict[str, Any]]:
    """Fit a calibrator on the given (validation) rows; returns ``(calibrator, selection_info)``.

    ``method`` is "platt", "isotonic", "none" or "auto". With "auto" the candidates (Platt, plus
    isotonic when there are at least ``ISOTONIC_MIN_ROWS`` rows) are scored by stratified k-fold
    Brier score within these rows (fit on k-1 folds, predict the held-out fold); the lowest wins
    (Platt on a tie) and is refitted on all rows. With a single candidate no CV is run. When ``y``
    holds one class only nothing can be learned and the identity calibrator is returned.

    selection_info: method, cv_brier (method -> out-of-fold Brier, empty when no CV ran),
    raw_brier (Brier of the uncalibrated scores on these rows), n_rows, n_folds (0 without CV),
    reason.
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method must be one of {CALIBRATION_METHODS}, got {method!r}")
    p, yy = _fit_inputs(p_raw, y)
    n = len(yy)
    info: dict[str, Any] = {
        "method": None, "cv_brier": {}, "raw_brier": float(np.mean((p - yy) ** 2)),
        "n_rows": int(n), "n_folds": 0, "reason": "",
    }
    n_pos = int(yy.sum())
    if n_pos == 0 or n_pos == n:
        cal = IdentityCalibrator()
        info.update(method=cal.method, reason=f"y has a single class in all {n} rows; left uncalibrated")
        return cal, info
    if method != "auto":
        cal = _make(method).fit(p, yy)
        info.update(method=cal.method, reason=f"method {method!r} requested")
        return cal, info

    if n < ISOTONIC_MIN_ROWS:
        cal = PlattCalibrator().fit(p, yy)
        info.update(method=cal.method,
                    reason=f"auto: {n} rows < {ISOTONIC_MIN_ROWS}, isotonic not considered; platt")
        return cal, info
    n_folds = int(n_folds)
    folds = min(n_folds, n_pos, n - n_pos)
    if folds < 2:
        cal = PlattCalibrator().fit(p, yy)
        info.update(method=cal.method,
                    reason=f"auto: too few rows of the minority class ({min(n_pos, n - n_pos)}) to cross-validate; platt")
        return cal, info
    scores = _cv_brier(p, yy, ["platt", "isotonic"], folds, seed)
    best = "isotonic" if scores["isotonic"] < scores["platt"] else "platt"
    cal = _make(best).fit(p, yy)
    info.update(
        method=best, cv_brier=scores, n_folds=folds,
        reason=(f"auto: lowest {folds}-fold CV Brier on {n} rows "
                f"(platt {scores['platt']:.6f}, isotonic {scores['isotonic']:.6f})"),
    )
    return cal, info
