"""The one metrics module of riskml: classification, regression, quantile, ranking and significance.

Every function takes array-likes (lists, numpy arrays, pandas Series), validates them and returns
plain python floats (counts as python ints, reports as dicts of those). Invalid input raises a
``ValueError`` naming the argument: different lengths, empty arrays, NaN/inf, labels that are not
0/1, probabilities outside [0, 1].

Conventions that matter when reading numbers:

* Undefined metrics are ``nan`` rather than an arbitrary number: AUC with one class only, R^2 when
  ``y`` is constant, MAPE when every ``|y| < eps``, a ranking mean over zero eligible queries.
* A row is predicted positive when ``p >= threshold``.
* NDCG averages over tied scores (scikit-learn's ``ndcg_score``); precision@k, recall@k and MAP break
  ties by the stable order of the input (the item that comes first in the input ranks higher).

What scikit-learn / scipy compute is computed by them (imported inside the functions, so importing this
module stays cheap): ``roc_auc_score``, ``log_loss``, ``brier_score_loss``, ``confusion_matrix``,
``precision_recall_curve``, ``calibration_curve``, ``mean_squared_error``, ``mean_absolute_error``,
``r2_score``, ``mean_pinball_loss``, ``ndcg_score`` and ``scipy.stats.ks_2samp``. Hand-written code is
kept where no library does the job: the grouped (opportunity) bootstrap, DeLong's test, the ECE noise
floor, per-query precision/recall/MAP with their conventions, and one vectorised AUC/Brier used only
inside the bootstrap (see :func:`grouped_bootstrap_cis`; tested equal to scikit-learn).
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .lazy import lazy_module

np = lazy_module("numpy")
pd = lazy_module("pandas")

stats = lazy_module("scipy.stats")  # imported on first use (code location load time)

__all__ = [
    # classification
    "roc_auc", "log_loss", "brier", "ece", "reliability_table", "threshold_metrics",
    "best_f1_threshold", "classification_report",
    # regression
    "mse", "mae", "rmse", "r2", "mape", "regression_report",
    # quantiles
    "pinball_loss", "interval_coverage", "quantile_crossing_rate", "quantile_report", "alpha_tag",
    # ranking
    "group_by_query", "ndcg_at_k", "precision_at_k", "recall_at_k", "mean_average_precision",
    "ranking_report",
    # significance
    "paired_bootstrap_delta", "delong_test", "ks_statistic",
]

BIN_STRATEGIES = ("uniform", "quantile")

# Inside the resampling loops (grouped/paired bootstrap, ECE noise floor) AUC, log loss, Brier and ECE are
# computed by the vectorised numpy code below instead of scikit-learn: the same numbers (tested against
# scikit-learn on random inputs with ties and one-class draws), without scikit-learn's per-call input checks,
# which made a 1000-resample bootstrap of ~5k rows about 8x slower. Everywhere else the library computes.
_RESAMPLING = contextvars.ContextVar("riskml_metrics_resampling", default=False)


@contextlib.contextmanager
def _resampling():
    token = _RESAMPLING.set(True)
    try:
        yield
    finally:
        _RESAMPLING.reset(token)


def _auc_ranks(y: np.ndarray, p: np.ndarray) -> float:
    """AUC by the Mann-Whitney U statistic on midranks (both classes present)."""
    n_pos = float(y.sum())
    ranks = stats.rankdata(p)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * (len(y) - n_pos)))


def _ece_bincount(y: np.ndarray, p: np.ndarray, n_bins: int, strategy: str) -> float:
    edges = _bin_edges(p, n_bins, strategy)
    nb = len(edges) - 1
    idx = _bin_index(p, edges)
    count = np.bincount(idx, minlength=nb)
    gap = np.abs(np.bincount(idx, weights=y, minlength=nb) - np.bincount(idx, weights=p, minlength=nb))
    return float(gap.sum() / len(y))  # sum_b n_b/N * |sum_y/n_b - sum_p/n_b|


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------

def _arr(x: Any, name: str, *, allow_empty: bool = False) -> np.ndarray:
    """A finite one-dimensional float array, or a ValueError naming ``name``."""
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    if a.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty")
    bad = ~np.isfinite(a)
    if bad.any():
        raise ValueError(f"{name} contains {int(bad.sum())} non-finite value(s) (NaN or inf)")
    return a


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{k}={n}" for k, n in lengths.items())
        raise ValueError(f"arrays must have the same length, got {desc}")


def _binary(y: np.ndarray, name: str = "y") -> np.ndarray:
    bad = (y != 0) & (y != 1)
    if bad.any():
        examples = np.unique(y[bad])[:5].tolist()
        raise ValueError(f"{name} must contain only 0 and 1, found {examples}")
    return y


def _probs(p: np.ndarray, name: str = "p") -> np.ndarray:
    if p.min() < 0.0 or p.max() > 1.0:
        raise ValueError(f"{name} must be probabilities in [0, 1], got range [{p.min():g}, {p.max():g}]")
    return p


def _yp(y: Any, p: Any, *, probs: bool = True, p_name: str = "p") -> tuple[np.ndarray, np.ndarray]:
    """Validated binary labels and scores of equal length."""
    y = _binary(_arr(y, "y"))
    p = _arr(p, p_name)
    _same_length(y=y, **{p_name: p})
    if probs:
        _probs(p, p_name)
    return y, p


def _pos_int(k: Any, name: str) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{name} must be a positive integer, got {k!r}")
    return int(k)


def _reg(y: Any, yhat: Any, yhat_name: str = "yhat") -> tuple[np.ndarray, np.ndarray]:
    y = _arr(y, "y")
    yhat = _arr(yhat, yhat_name)
    _same_length(y=y, **{yhat_name: yhat})
    return y, yhat


# --------------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------------

def roc_auc(y: Any, p: Any) -> float:
    """Area under the ROC curve; tied scores count one half (as sklearn). ``nan`` with one class only.

    ``p`` may be any finite score, not only a probability.
    """
    y, p = _yp(y, p, probs=False)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        return float("nan")
    if _RESAMPLING.get():
        return _auc_ranks(y, p)
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y.astype(int), p))


def log_loss(y: Any, p: Any, eps: float = 1e-15) -> float:
    """Mean negative log-likelihood, with ``p`` clipped to ``[eps, 1 - eps]``."""
    y, p = _yp(y, p)
    if not (0.0 < eps < 0.5):
        raise ValueError(f"eps must be in (0, 0.5), got {eps!r}")
    if _RESAMPLING.get():
        p = np.clip(p, eps, 1.0 - eps)
        return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))
    from sklearn.metrics import log_loss as _sk_log_loss

    return float(_sk_log_loss(y.astype(int), np.clip(p, eps, 1.0 - eps), labels=[0, 1]))


def brier(y: Any, p: Any) -> float:
    """Brier score: mean of ``(p - y)^2``."""
    y, p = _yp(y, p)
    if _RESAMPLING.get():
        return float(np.mean((p - y) ** 2))
    from sklearn.metrics import brier_score_loss

    return float(brier_score_loss(y.astype(int), p, labels=[0, 1]))


def _bin_edges(p: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    n_bins = _pos_int(n_bins, "n_bins")
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    if strategy == "quantile":
        # calibration_curve's edges, duplicates kept (a zero-width first bin holds the values equal to its edge)
        return np.percentile(p, np.linspace(0.0, 1.0, n_bins + 1) * 100)
    raise ValueError(f"strategy must be one of {BIN_STRATEGIES}, got {strategy!r}")


def _bin_index(p: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # scikit-learn's calibration_curve binning: bins are (lower, upper], the first one also holds its lower edge
    return np.searchsorted(edges[1:-1], p, side="left")


def reliability_table(y: Any, p: Any, n_bins: int = 10, strategy: str = "uniform") -> pd.DataFrame:
    """Per-bin calibration table with columns bin, lower, upper, count, mean_pred, frac_pos.

    ``strategy="uniform"`` uses ``n_bins`` equal-width bins on [0, 1]; ``"quantile"`` uses quantiles
    of ``p`` as edges (duplicate edges kept, so some bins have zero width). Bins are
    ``(lower, upper]``, the first one closed (scikit-learn's ``calibration_curve``, which computes
    mean_pred and frac_pos of the non-empty bins). Empty bins are listed with count 0 and NaN means.
    """
    from sklearn.calibration import calibration_curve

    y, p = _yp(y, p)
    edges = _bin_edges(p, n_bins, strategy)
    nb = len(edges) - 1
    count = np.bincount(_bin_index(p, edges), minlength=nb)
    frac, pred = calibration_curve(y.astype(int), p, n_bins=_pos_int(n_bins, "n_bins"), strategy=strategy)
    nonempty = count > 0
    if len(frac) != int(nonempty.sum()):  # pragma: no cover - the two binnings are the same by construction
        raise RuntimeError("reliability_table: bins disagree with sklearn.calibration.calibration_curve")
    mean_pred, frac_pos = np.full(nb, np.nan), np.full(nb, np.nan)
    mean_pred[nonempty], frac_pos[nonempty] = pred, frac
    return pd.DataFrame({
        "bin": np.arange(nb, dtype=int),
        "lower": edges[:-1],
        "upper": edges[1:],
        "count": count.astype(int),
        "mean_pred": mean_pred,
        "frac_pos": frac_pos,
    })


def ece(y: Any, p: Any, n_bins: int = 10, strategy: str = "uniform") -> float:
    """Expected calibration error: ``sum_b (n_b / N) * |mean(y_b) - mean(p_b)|`` over non-empty bins.

    Binning as in :func:`reliability_table`.
    """
    if _RESAMPLING.get():
        y, p = _yp(y, p)
        if strategy not in BIN_STRATEGIES:
            raise ValueError(f"strategy must be one of {BIN_STRATEGIES}, got {strategy!r}")
        return _ece_bincount(y, p, n_bins, strategy)
    t = reliability_table(y, p, n_bins=n_bins, strategy=strategy)
    t = t[t["count"] > 0]
    n = t["count"].sum()
    return float((t["count"] / n * (t["frac_pos"] - t["mean_pred"]).abs()).sum())


def threshold_metrics(y: Any, p: Any, threshold: float = 0.5) -> dict[str, Any]:
    """Confusion counts and precision/recall/F1/accuracy when ``p >= threshold`` predicts positive.

    Conventions: precision is 0 when nothing is predicted positive, recall is 0 when there is no
    positive row, F1 is 0 when precision + recall is 0.
    """
    y, p = _yp(y, p, probs=False)
    threshold = float(threshold)
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    from sklearn.metrics import confusion_matrix

    (tn, fp), (fn, tp) = confusion_matrix(y.astype(int), (p >= threshold).astype(int), labels=[0, 1]).tolist()
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "threshold": threshold, "precision": float(precision), "recall": float(recall),
        "f1": float(f1), "accuracy": float((tp + tn) / len(y)),
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }


def best_f1_threshold(y: Any, p: Any) -> float:
    """The threshold (one of the observed scores) that maximises F1 under ``p >= threshold``.

    Among equally good thresholds the highest one is returned. With no positive row F1 is 0
    everywhere and 0.5 is returned by convention.
    """
    y, p = _yp(y, p, probs=False)
    if y.sum() == 0:
        return 0.5
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y.astype(int), p)  # thresholds ascending
    precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)  # equal up to rounding: the highest threshold
    return float(thresholds[best[-1]])


def classification_report(y: Any, p: Any, threshold: float = 0.5, n_bins: int = 10) -> dict[str, Any]:
    """All classification metrics of probabilities ``p`` against 0/1 labels ``y``.

    Keys: n, positives, base_rate, auc, log_loss, brier, ece (uniform bins), threshold, precision,
    recall, f1, accuracy, and the "probability as regression" metrics mse, mae, rmse, r2 of ``p``
    against ``y`` (mse equals brier).
    """
    y, p = _yp(y, p)
    tm = threshold_metrics(y, p, threshold)
    reg = regression_report(y, p)
    return {
        "n": int(len(y)),
        "positives": int(y.sum()),
        "base_rate": float(y.mean()),
        "auc": roc_auc(y, p),
        "log_loss": log_loss(y, p),
        "brier": brier(y, p),
        "ece": ece(y, p, n_bins=n_bins),
        "threshold": tm["threshold"],
        "precision": tm["precision"],
        "recall": tm["recall"],
        "f1": tm["f1"],
        "accuracy": tm["accuracy"],
        "mse": reg["mse"],
        "mae": reg["mae"],
        "rmse": reg["rmse"],
        "r2": reg["r2"],
    }


# --------------------------------------------------------------------------------------------
# regression
# --------------------------------------------------------------------------------------------

def mse(y: Any, yhat: Any) -> float:
    """Mean squared error."""
    y, yhat = _reg(y, yhat)
    from sklearn.metrics import mean_squared_error

    return float(mean_squared_error(y, yhat))


def mae(y: Any, yhat: Any) -> float:
    """Mean absolute error."""
    y, yhat = _reg(y, yhat)
    from sklearn.metrics import mean_absolute_error

    return float(mean_absolute_error(y, yhat))


def rmse(y: Any, yhat: Any) -> float:
    """Root mean squared error."""
    return float(math.sqrt(mse(y, yhat)))


def r2(y: Any, yhat: Any) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot``; ``nan`` when ``y`` is constant."""
    y, yhat = _reg(y, yhat)
    if np.all(y == y[0]):
        return float("nan")
    from sklearn.metrics import r2_score

    return float(r2_score(y, yhat))


def mape(y: Any, yhat: Any, eps: float = 1e-8) -> float:
    """Mean absolute percentage error as a fraction (0.1 = 10 %).

    Rows with ``|y| < eps`` are ignored (the ratio is meaningless there); ``nan`` if none is left.
    """
    y, yhat = _reg(y, yhat)
    keep = np.abs(y) >= eps
    if not keep.any():
        return float("nan")
    return float(np.mean(np.abs(y[keep] - yhat[keep]) / np.abs(y[keep])))


def regression_report(y: Any, yhat: Any) -> dict[str, Any]:
    """Keys: n, mse, mae, rmse, r2, mape, bias (mean of ``yhat - y``)."""
    y, yhat = _reg(y, yhat)
    m = mse(y, yhat)
    return {
        "n": int(len(y)),
        "mse": m,
        "mae": mae(y, yhat),
        "rmse": float(math.sqrt(m)),
        "r2": r2(y, yhat),
        "mape": mape(y, yhat),
        "bias": float(np.mean(yhat - y)),
    }


# --------------------------------------------------------------------------------------------
# quantiles
# --------------------------------------------------------------------------------------------

def _alpha(alpha: Any) -> float:
    a = float(alpha)
    if not (0.0 < a < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return a


def alpha_tag(alpha: float) -> str:
    """Short name of a quantile level for metric keys: 0.1 -> 'p10', 0.5 -> 'p50', 0.025 -> 'p2.5'."""
    return f"p{round(100.0 * _alpha(alpha), 6):g}"


def pinball_loss(y: Any, q_pred: Any, alpha: float) -> float:
    """Mean pinball (quantile) loss ``max(alpha * (y - q), (alpha - 1) * (y - q))`` at level alpha."""
    y, q = _reg(y, q_pred, "q_pred")
    a = _alpha(alpha)
    from sklearn.metrics import mean_pinball_loss

    return float(mean_pinball_loss(y, q, alpha=a))


def interval_coverage(y: Any, lo: Any, hi: Any) -> float:
    """Share of rows with ``lo <= y <= hi`` (a row with ``lo > hi`` is never covered)."""
    y = _arr(y, "y")
    lo = _arr(lo, "lo")
    hi = _arr(hi, "hi")
    _same_length(y=y, lo=lo, hi=hi)
    return float(np.mean((lo <= y) & (y <= hi)))


def _qmatrix(Q: Any) -> np.ndarray:
    try:
        q = np.asarray(Q, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Q must be numeric: {exc}") from None
    if q.ndim != 2 or q.shape[0] == 0 or q.shape[1] == 0:
        raise ValueError(f"Q must be a non-empty (n_rows, n_quantiles) matrix, got shape {q.shape}")
    if not np.all(np.isfinite(q)):
        raise ValueError(f"Q contains {int((~np.isfinite(q)).sum())} non-finite value(s) (NaN or inf)")
    return q


def quantile_crossing_rate(Q: Any) -> float:
    """Share of rows of the (n, k) quantile matrix (columns in increasing alpha) that are not sorted."""
    q = _qmatrix(Q)
    if q.shape[1] < 2:
        return 0.0
    return float(np.mean(np.any(np.diff(q, axis=1) < 0, axis=1)))


def quantile_report(y: Any, Q: Any, alphas: Sequence[float]) -> dict[str, Any]:
    """Metrics of an (n, k) matrix of predicted quantiles at strictly increasing levels ``alphas``.

    Keys: n, crossing_rate, mean_pinball, per level ``pinball_<tag>`` and ``below_<tag>`` (share of
    ``y <= q``, ideally alpha) with tags from :func:`alpha_tag`, and with k >= 2 the outermost
    interval's ``coverage`` and ``nominal_coverage`` (``alphas[-1] - alphas[0]``).
    """
    y = _arr(y, "y")
    q = _qmatrix(Q)
    al = [_alpha(a) for a in alphas]
    if q.shape[0] != len(y):
        raise ValueError(f"Q has {q.shape[0]} rows but y has {len(y)}")
    if q.shape[1] != len(al):
        raise ValueError(f"Q has {q.shape[1]} columns but {len(al)} alphas were given")
    if any(b <= a for a, b in zip(al, al[1:])):
        raise ValueError(f"alphas must be strictly increasing, got {al}")
    out: dict[str, Any] = {"n": int(len(y)), "crossing_rate": quantile_crossing_rate(q)}
    losses = []
    for j, a in enumerate(al):
        tag = alpha_tag(a)
        loss = pinball_loss(y, q[:, j], a)
        losses.append(loss)
        out[f"pinball_{tag}"] = loss
        out[f"below_{tag}"] = float(np.mean(y <= q[:, j]))
    out["mean_pinball"] = float(np.mean(losses))
    if len(al) >= 2:
        out["coverage"] = interval_coverage(y, q[:, 0], q[:, -1])
        out["nominal_coverage"] = float(al[-1] - al[0])
    return out


# --------------------------------------------------------------------------------------------
# ranking
# --------------------------------------------------------------------------------------------

def group_by_query(query_ids: Any, relevance: Any, scores: Any) -> tuple[list[Any], list[np.ndarray], list[np.ndarray]]:
    """Split flat arrays into per-query arrays.

    Returns ``(query_keys, relevance_by_query, scores_by_query)``; queries in order of first
    appearance and items inside a query in input order (which is what breaks score ties).
    """
    qid = np.asarray(query_ids)
    if qid.ndim != 1:
        raise ValueError(f"query_ids must be one-dimensional, got shape {qid.shape}")
    rel = _arr(relevance, "relevance")
    sc = _arr(scores, "scores")
    _same_length(query_ids=qid, relevance=rel, scores=sc)
    codes, uniques = pd.factorize(qid, use_na_sentinel=True)
    if (codes < 0).any():
        raise ValueError(f"query_ids contains {int((codes < 0).sum())} missing value(s)")
    order = np.argsort(codes, kind="stable")
    cuts = np.flatnonzero(np.diff(codes[order])) + 1
    parts = np.split(order, cuts)
    keys = [u.item() if hasattr(u, "item") else u for u in uniques]
    return keys, [rel[i] for i in parts], [sc[i] for i in parts]


def _queries(relevance_by_query: Any, scores_by_query: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs (relevance, scores) per query from two sequences or two mappings with the same keys."""
    if isinstance(relevance_by_query, Mapping):
        if not isinstance(scores_by_query, Mapping):
            raise ValueError("relevance_by_query is a mapping, so scores_by_query must be one too")
        missing = set(relevance_by_query) ^ set(scores_by_query)
        if missing:
            raise ValueError(f"relevance and scores have different query keys, e.g. {sorted(map(str, missing))[:5]}")
        keys = list(relevance_by_query)
        pairs = [(k, relevance_by_query[k], scores_by_query[k]) for k in keys]
    else:
        rels, scs = list(relevance_by_query), list(scores_by_query)
        if len(rels) != len(scs):
            raise ValueError(f"got relevance for {len(rels)} queries but scores for {len(scs)}")
        pairs = [(i, r, s) for i, (r, s) in enumerate(zip(rels, scs))]
    out = []
    for key, r, s in pairs:
        r = _arr(r, f"relevance of query {key!r}", allow_empty=True)
        s = _arr(s, f"scores of query {key!r}", allow_empty=True)
        if len(r) != len(s):
            raise ValueError(f"query {key!r}: {len(r)} relevance values but {len(s)} scores")
        if (r < 0).any():
            raise ValueError(f"query {key!r}: relevance must be >= 0")
        out.append((r, s))
    return out


def _ranked(rel: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Relevance in ranked order: score descending, ties kept in input order (stable sort)."""
    return rel[np.argsort(-score, kind="stable")]


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def ndcg_at_k(relevance_by_query: Any, scores_by_query: Any, k: int, skip_empty: bool = False) -> float:
    """Mean NDCG@k over queries with graded gains ``(2^rel - 1) / log2(rank + 1)``, rank from 1.

    Inputs are per-query arrays: two equally long sequences, or two mappings with the same keys
    (see :func:`group_by_query` for flat arrays). Computed by scikit-learn's ``ndcg_score`` (gains
    ``2^rel - 1``), which averages the gains over tied scores (every ordering of a tie equally likely).

    A query without any relevant item (all relevance 0, or no items) has no ideal DCG. By default it
    contributes NDCG 0 and is counted in the mean; with ``skip_empty=True`` it is left out.
    ``nan`` when no query is counted.
    """
    k = _pos_int(k, "k")
    counted, total, scored = 0, 0.0, []
    for rel, sc in _queries(relevance_by_query, scores_by_query):
        if not (rel > 0).any():
            if not skip_empty:
                counted += 1  # NDCG 0
            continue
        counted += 1
        if len(rel) == 1:  # one relevant item is always in first place
            total += 1.0
        else:
            scored.append((rel, sc))
    if scored:  # one call: queries padded to one width with gain 0 below every real score
        from sklearn.metrics import ndcg_score

        width = max(len(r) for r, _ in scored)
        gains, scores = np.zeros((len(scored), width)), np.empty((len(scored), width))
        for i, (rel, sc) in enumerate(scored):
            gains[i, : len(rel)] = np.power(2.0, rel) - 1.0
            scores[i, : len(sc)] = sc
            scores[i, len(sc):] = sc.min() - max(1.0, abs(sc.min()))
        total += float(ndcg_score(gains, scores, k=k)) * len(scored)
    return total / counted if counted else float("nan")


def precision_at_k(relevance_by_query: Any, scores_by_query: Any, k: int,
                   skip_empty: bool = False, adaptive_k: bool = False) -> float:
    """Mean over queries of (relevant items in the top k) / k; relevant means relevance > 0.

    The denominator is k even when a query has fewer than k items (the standard definition), unless
    ``adaptive_k=True``, which divides by ``min(k, n_items)``. A query with no relevant item counts
    as precision 0 by default, or is left out with ``skip_empty=True``. Ties as in :func:`ndcg_at_k`.
    """
    k = _pos_int(k, "k")
    vals = []
    for rel, sc in _queries(relevance_by_query, scores_by_query):
        n_rel = int((rel > 0).sum())
        if n_rel == 0 and skip_empty:
            continue
        if len(rel) == 0:
            vals.append(0.0)
            continue
        hits = int((_ranked(rel, sc)[:k] > 0).sum())
        vals.append(hits / (min(k, len(rel)) if adaptive_k else k))
    return _mean(vals)


def recall_at_k(relevance_by_query: Any, scores_by_query: Any, k: int) -> float:
    """Mean over queries of (relevant items in the top k) / (relevant items of the query).

    Queries without a relevant item have no recall and are always skipped; ``nan`` if none is left.
    Ties as in :func:`ndcg_at_k`.
    """
    k = _pos_int(k, "k")
    vals = []
    for rel, sc in _queries(relevance_by_query, scores_by_query):
        n_rel = int((rel > 0).sum())
        if n_rel == 0:
            continue
        vals.append(int((_ranked(rel, sc)[:k] > 0).sum()) / n_rel)
    return _mean(vals)


def mean_average_precision(relevance_by_query: Any, scores_by_query: Any, k: int | None = None,
                           skip_empty: bool = True) -> float:
    """MAP: mean over queries of average precision, relevance > 0 counting as relevant.

    AP = (1/R) * sum over ranks i holding a relevant item of precision@i, R the number of relevant
    items of the query. With ``k`` only the top k ranks count and R becomes ``min(R, k)``.
    A query without a relevant item has no AP: skipped by default, counted as 0 with
    ``skip_empty=False``. Ties as in :func:`ndcg_at_k`.
    """
    if k is not None:
        k = _pos_int(k, "k")
    vals = []
    for rel, sc in _queries(relevance_by_query, scores_by_query):
        n_rel = int((rel > 0).sum())
        if n_rel == 0:
            if not skip_empty:
                vals.append(0.0)
            continue
        hit = (_ranked(rel, sc) > 0)
        denom = n_rel
        if k is not None:
            hit = hit[:k]
            denom = min(n_rel, k)
        ranks = np.flatnonzero(hit) + 1
        prec_at_hits = np.arange(1, len(ranks) + 1) / ranks
        vals.append(float(prec_at_hits.sum() / denom))
    return _mean(vals)


def ranking_report(query_ids: Any, relevance: Any, scores: Any, ks: Sequence[int] = (5, 10),
                   skip_empty: bool = False) -> dict[str, Any]:
    """Ranking metrics from flat arrays grouped by ``query_ids`` (the main entry point).

    Keys: n_queries, n_items, n_queries_with_relevant, map, and for each k ``ndcg_at_<k>``,
    ``precision_at_<k>``, ``recall_at_<k>``. ``skip_empty`` applies to NDCG and precision as in
    :func:`ndcg_at_k`; recall and MAP always skip queries without a relevant item.
    """
    _, rels, scs = group_by_query(query_ids, relevance, scores)
    ks = [_pos_int(k, "k") for k in ks]
    out: dict[str, Any] = {
        "n_queries": len(rels),
        "n_items": int(sum(len(r) for r in rels)),
        "n_queries_with_relevant": int(sum(bool((r > 0).any()) for r in rels)),
        "map": mean_average_precision(rels, scs),
    }
    for k in ks:
        out[f"ndcg_at_{k}"] = ndcg_at_k(rels, scs, k, skip_empty=skip_empty)
        out[f"precision_at_{k}"] = precision_at_k(rels, scs, k, skip_empty=skip_empty)
        out[f"recall_at_{k}"] = recall_at_k(rels, scs, k)
    return out


# --------------------------------------------------------------------------------------------
# significance
# --------------------------------------------------------------------------------------------

def paired_bootstrap_delta(y: Any, p_a: Any, p_b: Any, metric_fn: Callable[[np.ndarray, np.ndarray], float],
                           n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> dict[str, Any]:
    """Paired bootstrap of ``metric_fn(y, p_b) - metric_fn(y, p_a)`` (same resampled rows for both).

    Returns delta (on all rows), metric_a, metric_b, ci_low/ci_high (percentile interval at level
    ``ci``), p_value and n_boot (resamples with a finite delta; resamples where the metric is NaN,
    e.g. AUC of a one-class resample, are dropped). p_value is two-sided: twice the share of
    bootstrap deltas on the other side of zero from the observed delta (zeros included, so identical
    models give 1), clipped to 1. Whether a positive delta is good depends on the metric (AUC: yes,
    log loss / Brier: no).
    """
    y = _arr(y, "y")
    p_a = _arr(p_a, "p_a")
    p_b = _arr(p_b, "p_b")
    _same_length(y=y, p_a=p_a, p_b=p_b)
    n_boot = _pos_int(n_boot, "n_boot")
    if not (0.0 < ci < 1.0):
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    m_a = float(metric_fn(y, p_a))
    m_b = float(metric_fn(y, p_b))
    delta = m_b - m_a
    rng = np.random.default_rng(seed)
    n = len(y)
    deltas = np.empty(n_boot)
    with _resampling():
        for i in range(n_boot):
            idx = rng.integers(0, n, size=n)
            yi = y[idx]
            deltas[i] = float(metric_fn(yi, p_b[idx])) - float(metric_fn(yi, p_a[idx]))
    deltas = deltas[np.isfinite(deltas)]
    out = {"delta": delta, "metric_a": m_a, "metric_b": m_b, "n_boot": int(len(deltas))}
    if len(deltas) == 0 or not math.isfinite(delta):
        out.update(ci_low=float("nan"), ci_high=float("nan"), p_value=float("nan"))
        return out
    tail = (1.0 - ci) / 2.0
    lo, hi = np.quantile(deltas, [tail, 1.0 - tail])
    if delta > 0:
        opposite = np.mean(deltas <= 0)
    elif delta < 0:
        opposite = np.mean(deltas >= 0)
    else:
        opposite = 0.5
    out.update(ci_low=float(lo), ci_high=float(hi), p_value=float(min(1.0, 2.0 * opposite)))
    return out


def delong_test(y: Any, p_a: Any, p_b: Any) -> dict[str, Any]:
    """DeLong's test for two correlated AUCs on the same rows (fast version of Sun & Xu, midranks).

    Returns auc_a, auc_b, delta (auc_b - auc_a), z and the two-sided p_value. With fewer than two
    rows of either class z and p_value are NaN. When the variance of the difference is zero
    (e.g. identical scores) z is 0 and p_value 1 if the AUCs are equal.
    """
    y = _binary(_arr(y, "y"))
    p_a = _arr(p_a, "p_a")
    p_b = _arr(p_b, "p_b")
    _same_length(y=y, p_a=p_a, p_b=p_b)
    pos, neg = y == 1, y == 0
    m, n = int(pos.sum()), int(neg.sum())
    nan = float("nan")
    if m == 0 or n == 0:
        return {"auc_a": nan, "auc_b": nan, "delta": nan, "z": nan, "p_value": nan}
    aucs, v01, v10 = [], [], []
    for p in (p_a, p_b):
        x, yy = p[pos], p[neg]
        tx, ty = stats.rankdata(x), stats.rankdata(yy)
        tz = stats.rankdata(np.concatenate([x, yy]))
        aucs.append(float((tz[:m].sum() - m * (m + 1) / 2.0) / (m * n)))
        v01.append((tz[:m] - tx) / n)        # structural components of the positives
        v10.append(1.0 - (tz[m:] - ty) / m)  # structural components of the negatives
    delta = aucs[1] - aucs[0]
    out = {"auc_a": aucs[0], "auc_b": aucs[1], "delta": delta}
    if m < 2 or n < 2:
        out.update(z=nan, p_value=nan)
        return out
    cov = np.cov(np.vstack(v01)) / m + np.cov(np.vstack(v10)) / n
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    if not var > 1e-300:
        if delta == 0.0:
            out.update(z=0.0, p_value=1.0)
        else:
            out.update(z=math.copysign(math.inf, delta), p_value=0.0)
        return out
    z = delta / math.sqrt(var)
    out.update(z=float(z), p_value=float(2.0 * stats.norm.sf(abs(z))))
    return out


def ks_statistic(a: Any, b: Any) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (sup distance of the empirical CDFs) of the non-missing
    values of ``a`` and ``b`` (``scipy.stats.ks_2samp``); ``nan`` when either side has no value."""
    a, b = np.asarray(a, dtype="float64").ravel(), np.asarray(b, dtype="float64").ravel()
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return float(stats.ks_2samp(a, b).statistic)


def ece_noise_floor(p: Any, n_bins: int = 10, strategy: str = "uniform", n_sim: int = 200, seed: int = 0,
                    groups: Any = None) -> float:
    """Mean ECE of a *perfectly calibrated* model with these predictions: labels drawn as Bernoulli(p).

    ECE is biased upwards on small samples; ``ece - ece_noise_floor`` is the miscalibration beyond what
    sampling noise alone produces, which makes one ECE gate usable for small and large tenants alike.
    With ``groups`` (e.g. opportunity ids: all snapshots of an opportunity share one outcome) one label is
    drawn per group, from the group's mean prediction, so the floor reflects the effective sample size.
    """
    p = _probs(_arr(p, "p"))
    rng = np.random.default_rng(seed)
    if groups is None:
        with _resampling():
            sims = [ece((rng.random(len(p)) < p).astype(int), p, n_bins=n_bins, strategy=strategy)
                    for _ in range(n_sim)]
    else:
        codes, uniq = pd.factorize(pd.Series(np.asarray(groups)))
        if len(codes) != len(p):
            raise ValueError(f"groups has {len(codes)} entries, p has {len(p)}")
        gp = np.bincount(codes, weights=p) / np.bincount(codes)
        with _resampling():
            sims = [ece((rng.random(len(gp)) < gp).astype(int)[codes], p, n_bins=n_bins, strategy=strategy)
                    for _ in range(n_sim)]
    return float(np.mean(sims))


def grouped_bootstrap_cis(y: Any, p: Any, metric_fns: Mapping[str, Callable[[np.ndarray, np.ndarray], float]],
                          groups: Any, n_boot: int = 300, level: float = 0.90,
                          seed: int = 0) -> dict[str, tuple[float, float]]:
    """Two-sided ``level`` percentile intervals of several metrics from the SAME group resamples.

    Rows of one group (the snapshots of one opportunity) share an outcome, so resampling rows would
    overstate the evidence; resampling whole opportunities gives an honest interval. Every metric is
    evaluated on every resample (seeded by ``seed``); a resample where a metric is NaN (e.g. AUC of a
    one-class draw) is dropped for that metric only. ``p`` may be a matrix (one column per model) for
    paired differences. Returns ``{name: (low, high)}`` (NaN, NaN when no resample gave a value).

    :func:`roc_auc`, :func:`brier` and :func:`ece` (its defaults) of a one-dimensional ``p`` are evaluated on all
    resamples at once, as weighted metrics: a resample is the rows repeated as often as their group was drawn,
    so each metric equals the same function on the concatenated rows (tested); other functions run per resample.
    """
    y, p = np.asarray(y), np.asarray(p, dtype=float)
    if not (0.0 < level < 1.0):
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    n_boot = _pos_int(n_boot, "n_boot")
    codes, _ = pd.factorize(pd.Series(np.asarray(groups)))
    if len(codes) != len(y):
        raise ValueError(f"groups has {len(codes)} entries, y has {len(y)}")
    if len(y) == 0:
        return {name: (float("nan"), float("nan")) for name in metric_fns}
    n_groups = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    vals: dict[str, list[float]] = {name: [] for name in metric_fns}
    weighted = {name: _WEIGHTED.get(fn) for name, fn in metric_fns.items()}
    if p.ndim == 1 and all(weighted.values()):
        y, p = _yp(y, p, probs=any(fn is not roc_auc for fn in metric_fns.values()))  # AUC takes any score
        prepared = {name: prep(y, p, codes, n_groups) for name, (prep, _) in weighted.items()}
        block = max(1, _BOOT_BLOCK_CELLS // len(y))
        for start in range(0, n_boot, block):
            # how often each group was drawn, one row per resample: the same draws as one rng.integers call per
            # resample in the loop below (same seed, same order)
            counts = np.stack([np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
                               for _ in range(min(block, n_boot - start))]).astype(float)
            for name, (_, many) in weighted.items():
                v = many(counts, prepared[name])
                vals[name].extend(v[v == v].tolist())
    else:
        order = np.argsort(codes, kind="stable")
        starts = np.searchsorted(codes[order], np.arange(n_groups))
        members = np.split(order, starts[1:])
        with _resampling():
            for _ in range(n_boot):
                pick = rng.integers(0, len(members), len(members))
                idx = np.concatenate([members[i] for i in pick])
                for name, fn in metric_fns.items():
                    v = fn(y[idx], p[idx])
                    if v == v:
                        vals[name].append(v)
    tail = (1 - level) / 2 * 100
    return {name: ((float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))) if v
                   else (float("nan"), float("nan"))) for name, v in vals.items()}


# the bootstrap's row-weight matrices (resamples x rows) hold at most this many cells at a time (8 bytes each)
_BOOT_BLOCK_CELLS = 2_000_000


def _per_group(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Column sums of ``values`` (rows x k, or rows) within each group: groups x k (or groups)."""
    if values.ndim == 1:
        return np.bincount(codes, weights=values, minlength=n_groups)
    return np.stack([np.bincount(codes, weights=col, minlength=n_groups) for col in values.T], axis=1)


def _auc_prepare(y: np.ndarray, p: np.ndarray, codes: np.ndarray, n_groups: int) -> dict:
    order = np.argsort(p, kind="stable")
    ps = p[order]
    ends = np.flatnonzero(np.r_[ps[1:] != ps[:-1], True])  # last row of each distinct score, ascending
    return {"codes": codes[order], "ends": ends, "pos": (y[order] == 1).astype(float)}


def _auc_many(counts: np.ndarray, prep: dict) -> np.ndarray:
    """AUC (ties count one half) of each resample (a row of group ``counts``): the Mann-Whitney statistic of the
    rows weighted by how often their group was drawn, NaN where a resample holds one class only. All sums are
    of whole numbers, so they are exact."""
    w = counts[:, prep["codes"]]  # row weights, rows sorted by score
    w_pos = w * prep["pos"]
    cum_pos = np.cumsum(w_pos, axis=1)[:, prep["ends"]]  # up to and including each distinct score
    cum_neg = np.cumsum(w - w_pos, axis=1)[:, prep["ends"]]
    at_pos = np.diff(cum_pos, axis=1, prepend=0.0)  # at each distinct score
    at_neg = np.diff(cum_neg, axis=1, prepend=0.0)
    n_pos, n_neg = cum_pos[:, -1], cum_neg[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (at_pos * (cum_neg - 0.5 * at_neg)).sum(axis=1) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def _brier_prepare(y: np.ndarray, p: np.ndarray, codes: np.ndarray, n_groups: int) -> dict:
    return {"sq": _per_group((p - y) ** 2, codes, n_groups), "rows": np.bincount(codes, minlength=n_groups)}


def _brier_many(counts: np.ndarray, prep: dict) -> np.ndarray:
    return (counts @ prep["sq"]) / (counts @ prep["rows"])


def _ece_prepare(y: np.ndarray, p: np.ndarray, codes: np.ndarray, n_groups: int) -> dict:
    edges = _bin_edges(p, 10, "uniform")  # ece's defaults (uniform bins do not depend on the resample)
    onehot = np.zeros((len(p), len(edges) - 1))
    onehot[np.arange(len(p)), _bin_index(p, edges)] = 1.0
    return {"gap": _per_group(onehot * (y - p)[:, None], codes, n_groups),  # per group and bin: sum(y) - sum(p)
            "rows": np.bincount(codes, minlength=n_groups)}


def _ece_many(counts: np.ndarray, prep: dict) -> np.ndarray:
    return np.abs(counts @ prep["gap"]).sum(axis=1) / (counts @ prep["rows"])


def grouped_bootstrap_ci(y: Any, p: Any, metric_fn: Callable[[np.ndarray, np.ndarray], float], groups: Any,
                         n_boot: int = 300, level: float = 0.90, seed: int = 0) -> tuple[float, float]:
    """Two-sided ``level`` percentile interval of ``metric_fn(y, p)``, resampling whole groups
    (one metric of :func:`grouped_bootstrap_cis`)."""
    return grouped_bootstrap_cis(y, p, {"m": metric_fn}, groups, n_boot=n_boot, level=level, seed=seed)["m"]


# metric function -> (prepare(y, p), evaluate(weights, prepared)): the bootstrap's vectorized metrics
_WEIGHTED = {roc_auc: (_auc_prepare, _auc_many), brier: (_brier_prepare, _brier_many), ece: (_ece_prepare, _ece_many)}
