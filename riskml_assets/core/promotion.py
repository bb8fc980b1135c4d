"""Champion/challenger: should a newly trained model replace the tenant's champion? (pure, no dagster)

The rule, for every family:

1. A challenger whose run failed a blocking gate is **never** deployed.
2. Its metrics on the test rows must meet the absolute **floors** from config (e.g. ``min_auc``).
3. With no champion yet (the tenant's first model), 1 and 2 are enough.
4. Otherwise it must beat the champion **on the same real test rows** by a statistically significant
   margin of the family's primary metric: the two-sided ``1 - alpha`` paired-bootstrap interval of
   ``challenger - champion`` lies entirely on the improving side of ``min_improvement``
   (Brier for risk, mean pinball loss for forecast, NDCG@k for ranking). For the risk family DeLong's
   test on AUC is computed too, and the challenger is refused when its AUC is significantly *worse*
   (``auc_policy="not_worse"``, the default), or unless it is significantly better
   (``auc_policy="better"``).

Rows are not independent when an opportunity has several weekly snapshots in the test split (they
share one outcome). Pass ``groups`` (opportunity ids; query ids for ranking) and the bootstrap
resamples whole groups, which gives an honest interval; DeLong's variance assumes independent rows
and is reported as a secondary guard.

The bootstrap itself is :func:`riskml_assets.core.metrics.paired_bootstrap_delta` (the one metrics
module); this module only decides.

**The comparison set.** Both models are scored only on opportunities *neither* of them trained on:
:func:`comparison_set` drops from the challenger's test split every opportunity in the champion's
train/validation splits (recorded with each registered version) or in the challenger's own. Scoring the
champion on rows it was fitted or calibrated on would flatter it and bias the test towards the incumbent.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .lazy import lazy_module

np = lazy_module("numpy")
pd = lazy_module("pandas")


from . import metrics as M

FAMILIES = ("risk", "forecast", "ranking")
AUC_POLICIES = ("not_worse", "better", "ignore")

#: primary metric of each family: (name, higher_is_better)
PRIMARY_METRIC = {"risk": ("brier", False), "forecast": ("pinball", False), "ranking": ("ndcg", True)}

#: floors an operator may set per family (``min_<metric>`` / ``max_<metric>``); the defaults are lenient
DEFAULT_FLOORS = {
    "risk": {"min_auc": 0.55},
    "forecast": {},
    "ranking": {},
}


class PromotionConfigError(ValueError):
    """A floor or option of the promotion rule is malformed (a configuration error, never a 'no')."""


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def _gates(gates_passed: bool | Mapping[str, bool]) -> tuple[bool, list[str]]:
    if isinstance(gates_passed, Mapping):
        failed = sorted(str(k) for k, v in gates_passed.items() if not bool(v))
        return not failed, failed
    return bool(gates_passed), ([] if gates_passed else ["(unnamed)"])


def check_floors(values: Mapping[str, float], floors: Mapping[str, float] | None) -> dict[str, dict]:
    """Evaluate ``{"min_auc": 0.6, "max_brier": 0.25, ...}`` against ``values`` (``{"auc": .., "brier": ..}``).

    Returns ``{floor: {"metric", "op", "threshold", "value", "passed"}}``. A floor naming a metric that
    was not computed raises PromotionConfigError (a typo must not silently pass); a NaN value fails.
    """
    out: dict[str, dict] = {}
    for key, thr in (floors or {}).items():
        if key.startswith("min_"):
            metric, op = key[4:], ">="
        elif key.startswith("max_"):
            metric, op = key[4:], "<="
        else:
            raise PromotionConfigError(f"floor {key!r} must be named min_<metric> or max_<metric>")
        if metric not in values:
            raise PromotionConfigError(
                f"floor {key!r} names metric {metric!r}, which is not available; available: {sorted(values)}")
        try:
            threshold = float(thr)
        except (TypeError, ValueError):
            raise PromotionConfigError(f"floor {key!r}: threshold must be a number, got {thr!r}") from None
        v = values[metric]
        v = float("nan") if v is None else float(v)
        passed = math.isfinite(v) and (v >= threshold if op == ">=" else v <= threshold)
        out[key] = {"metric": metric, "op": op, "threshold": threshold, "value": v, "passed": bool(passed)}
    return out


def _fmt(x: float) -> str:
    return "nan" if x is None or not math.isfinite(float(x)) else f"{float(x):.4g}"


def _grouped_metric(metric_fn: Callable[[np.ndarray, np.ndarray], float], y: np.ndarray,
                    preds: Sequence[np.ndarray], groups) -> tuple[np.ndarray, np.ndarray, np.ndarray, Callable]:
    """Adapt a row metric to a cluster bootstrap through ``metrics.paired_bootstrap_delta``.

    The bootstrap resamples entries of its ``y`` argument; here those entries are *group codes* and the
    "predictions" are model selectors (all 0 = champion, all 1 = challenger). The metric maps a resample
    of group codes back to the rows of those groups (each row repeated as often as its group was drawn)
    and evaluates the selected model on them. On the full set of codes this is exactly the row metric.
    """
    codes, _ = pd.factorize(pd.Series(np.asarray(groups)).astype(str))
    if len(codes) != len(y):
        raise ValueError(f"groups has {len(codes)} entries, y has {len(y)}")
    n_groups = int(codes.max()) + 1
    rows = np.arange(len(y))

    def fn(group_draw: np.ndarray, selector: np.ndarray) -> float:
        counts = np.bincount(group_draw.astype(np.int64), minlength=n_groups)
        idx = np.repeat(rows, counts[codes])
        return float(metric_fn(y[idx], preds[int(selector[0])][idx]))

    draw = np.arange(n_groups, dtype=float)
    return draw, np.zeros(n_groups), np.ones(n_groups), fn


def _bootstrap(metric_fn, y, pred_champion, pred_challenger, groups, n_boot, seed, alpha) -> dict:
    """Paired (optionally cluster) bootstrap of ``metric(challenger) - metric(champion)``."""
    if groups is None and (np.ndim(pred_champion) > 1 or np.ndim(pred_challenger) > 1):
        groups = np.arange(len(y))  # matrices (forecast quantiles): resample rows through the adapter
    if groups is None:
        return M.paired_bootstrap_delta(y, pred_champion, pred_challenger, metric_fn, n_boot=n_boot, seed=seed,
                                        ci=1.0 - alpha)
    draw, sel_a, sel_b, fn = _grouped_metric(metric_fn, np.asarray(y), [np.asarray(pred_champion),
                                                                           np.asarray(pred_challenger)], groups)
    return M.paired_bootstrap_delta(draw, sel_a, sel_b, fn, n_boot=n_boot, seed=seed, ci=1.0 - alpha)


# --------------------------------------------------------------------------------------------
# the comparison set
# --------------------------------------------------------------------------------------------

def comparison_set(test: pd.DataFrame, champion_trained: Sequence | set | None,
                   challenger_trained: Sequence | set | None = None,
                   group: str = "opportunity_id") -> tuple[pd.DataFrame, dict[str, Any]]:
    """The rows of ``test`` whose opportunity neither model trained (or was calibrated) on.

    ``champion_trained`` / ``challenger_trained``: the opportunity ids of each model's train and
    validation splits (None = unknown: nothing can be excluded for that model, which ``info`` says).
    Returns the restricted rows (index reset) and ``{"test_rows", "test_opportunities", "rows",
    "opportunities", "excluded_opportunities", "excluded_rows", "excluded_champion",
    "excluded_challenger", "champion_trained_known", "challenger_trained_known"}``.
    """
    ids = test[group].astype(str)
    champ = None if champion_trained is None else {str(x) for x in champion_trained}
    chall = None if challenger_trained is None else {str(x) for x in challenger_trained}
    in_champ = ids.isin(champ) if champ is not None else pd.Series(False, index=test.index)
    in_chall = ids.isin(chall) if chall is not None else pd.Series(False, index=test.index)
    keep = ~(in_champ | in_chall)
    out = test[keep.to_numpy()].reset_index(drop=True)
    info = {
        "test_rows": int(len(test)), "test_opportunities": int(ids.nunique()),
        "rows": int(len(out)), "opportunities": int(out[group].nunique()) if len(out) else 0,
        "excluded_rows": int((~keep).sum()), "excluded_opportunities": int(ids[~keep].nunique()),
        "excluded_champion": int(ids[in_champ].nunique()), "excluded_challenger": int(ids[in_chall].nunique()),
        "champion_trained_known": champ is not None, "challenger_trained_known": chall is not None,
    }
    return out, info


def comparison_text(info: Mapping[str, Any] | None) -> str:
    """One sentence on the comparison set (for reasons and reports)."""
    if not info:
        return ""
    text = (f"comparison set: {info['opportunities']} opportunities ({info['rows']} rows) of the "
            f"{info['test_opportunities']} test opportunities that neither model trained on")
    if info.get("excluded_opportunities"):
        text += (f"; {info['excluded_opportunities']} excluded ({info['excluded_champion']} in the champion's "
                 f"train/validation, {info['excluded_challenger']} in the challenger's)")
    if not info.get("champion_trained_known", True):
        text += "; the champion's training opportunities are not recorded (registered before they were), so none " \
                "could be excluded for it"
    return text


# --------------------------------------------------------------------------------------------
# the decision
# --------------------------------------------------------------------------------------------

def decide_with_metric(y, pred_champion, pred_challenger, *, metric_fn: Callable[[np.ndarray, np.ndarray], float],
                       primary_metric: str, higher_is_better: bool, gates_passed: bool | Mapping[str, bool],
                       floors: Mapping[str, float] | None = None, floor_values: Mapping[str, float] | None = None,
                       groups=None, alpha: float = 0.05, n_boot: int = 1000, seed: int = 0,
                       min_improvement: float = 0.0, family: str = "custom",
                       extra_guard: Callable[[], tuple[bool, str, dict]] | None = None) -> dict[str, Any]:
    """The general rule for any metric ``metric_fn(y, pred) -> float`` (see the module docstring).

    ``pred_champion`` is None for the tenant's first model. ``floor_values`` are the challenger's metric
    values the floors are checked against (the primary metric is added under its name). ``extra_guard``
    (risk: DeLong) returns (ok, reason, details) and can only veto.
    """
    if not (0.0 < alpha < 1.0):
        raise PromotionConfigError(f"alpha must be in (0, 1), got {alpha!r}")
    if min_improvement < 0:
        raise PromotionConfigError(f"min_improvement must be >= 0, got {min_improvement!r}")
    ok_gates, failed_gates = _gates(gates_passed)
    y_arr = np.asarray(y)
    challenger_metric = float(metric_fn(y_arr, np.asarray(pred_challenger)))
    values = {primary_metric: challenger_metric, **dict(floor_values or {})}
    floor_results = check_floors(values, floors)
    out: dict[str, Any] = {
        "family": family, "primary_metric": primary_metric, "higher_is_better": bool(higher_is_better),
        "first_model": pred_champion is None, "gates_passed": ok_gates, "failed_gates": failed_gates,
        "floors": floor_results, "floors_met": all(f["passed"] for f in floor_results.values()),
        "challenger_metric": challenger_metric, "champion_metric": float("nan"), "delta": float("nan"),
        "ci_low": float("nan"), "ci_high": float("nan"), "ci_level": 1.0 - alpha, "p_value": float("nan"),
        "alpha": alpha, "n_boot": 0, "min_improvement": float(min_improvement), "significant": False,
        "n_rows": int(len(y_arr)),
        "n_groups": int(pd.Series(np.asarray(groups)).nunique()) if groups is not None else int(len(y_arr)),
        "delong": None,
    }
    direction = "higher" if higher_is_better else "lower"

    def done(deploy: bool, reason: str) -> dict:
        out["should_deploy"], out["reason"] = bool(deploy), reason
        return out

    if not ok_gates:
        return done(False, "blocking gates failed (" + ", ".join(failed_gates) + "): a challenger whose run failed a "
                           "blocking gate is never promoted")
    if not out["floors_met"]:
        bad = [f"{f['metric']} {_fmt(f['value'])} (must be {f['op']} {f['threshold']:g})"
               for f in floor_results.values() if not f["passed"]]
        return done(False, "absolute floors not met: " + "; ".join(bad))
    if pred_champion is None:
        return done(True, f"first model of the tenant: gates passed and floors met ({primary_metric} "
                          f"{_fmt(challenger_metric)})")

    boot = _bootstrap(metric_fn, y_arr, pred_champion, pred_challenger, groups, n_boot, seed, alpha)
    out.update(champion_metric=boot["metric_a"], challenger_metric=boot["metric_b"], delta=boot["delta"],
               ci_low=boot["ci_low"], ci_high=boot["ci_high"], p_value=boot["p_value"], n_boot=boot["n_boot"])
    if higher_is_better:
        significant = math.isfinite(boot["ci_low"]) and boot["ci_low"] > min_improvement
    else:
        significant = math.isfinite(boot["ci_high"]) and boot["ci_high"] < -min_improvement
    out["significant"] = bool(significant)
    ci = (f"{100 * (1 - alpha):g}% CI [{_fmt(boot['ci_low'])}, {_fmt(boot['ci_high'])}], p={_fmt(boot['p_value'])}, "
          f"{out['n_groups']} {'groups' if groups is not None else 'rows'}")
    summary = (f"{primary_metric} {_fmt(boot['metric_a'])} -> {_fmt(boot['metric_b'])} "
               f"(delta {_fmt(boot['delta'])}, {ci})")
    if not significant:
        margin = f" by more than {min_improvement:g}" if min_improvement else ""
        return done(False, f"not significantly better than the champion ({direction} is better{margin}): {summary}")
    if extra_guard is not None:
        ok, why, details = extra_guard()
        out.update(details)
        if not ok:
            return done(False, f"{primary_metric} significantly better ({summary}) but {why}")
        summary += f"; {why}"
    return done(True, f"significantly better than the champion: {summary}")


def decide_promotion(y, p_champion, p_challenger, *, family: str, gates_passed: bool | Mapping[str, bool],
                     floors: Mapping[str, float] | None = None, alpha: float = 0.05, n_boot: int = 1000,
                     seed: int = 0, groups=None, min_improvement: float = 0.0, auc_policy: str = "not_worse",
                     alphas: Sequence[float] = (0.1, 0.5, 0.9), k: int = 10,
                     extra_metrics: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Decide whether the challenger replaces the champion; ``p_champion=None`` for the first model.

    - ``family="risk"``: ``y`` 0/1 (1 = lost), predictions calibrated P(lost); primary metric Brier
      (lower is better); DeLong on AUC as a guard (``auc_policy``); floors may use ``auc``, ``brier``,
      ``log_loss``, ``ece``.
    - ``family="forecast"``: ``y`` the actual values, predictions ``(n, len(alphas))`` quantile matrices;
      primary metric the mean pinball loss over the quantiles (lower is better); floors may use
      ``pinball`` and ``coverage`` (outermost interval).
    - ``family="ranking"``: ``y`` graded relevance, predictions scores, ``groups`` the query ids (required);
      primary metric the mean NDCG@k over queries (higher is better), bootstrap over queries; floors may use
      ``ndcg``.

    ``extra_metrics`` adds externally computed challenger values floors may name (e.g. ``brier_skill``).
    Returns a JSON-able dict: should_deploy, reason, primary_metric, delta (challenger - champion), ci_low,
    ci_high, p_value, champion_metric, challenger_metric, delong (risk), floors, significant, ...
    """
    if family not in FAMILIES:
        raise PromotionConfigError(f"unknown family {family!r}: use one of {FAMILIES}")
    if auc_policy not in AUC_POLICIES:
        raise PromotionConfigError(f"auc_policy must be one of {AUC_POLICIES}, got {auc_policy!r}")
    primary, higher = PRIMARY_METRIC[family]
    extra = dict(extra_metrics or {})
    common = dict(primary_metric=primary, higher_is_better=higher, gates_passed=gates_passed, floors=floors,
                  alpha=alpha, n_boot=n_boot, seed=seed, min_improvement=min_improvement, family=family)

    if family == "risk":
        y_arr = np.asarray(y, dtype=float)
        p_new = np.asarray(p_challenger, dtype=float)
        values = {"auc": M.roc_auc(y_arr, p_new), "brier": M.brier(y_arr, p_new),
                  "log_loss": M.log_loss(y_arr, p_new), "ece": M.ece(y_arr, p_new), **extra}
        guard = None
        if p_champion is not None:
            p_old = np.asarray(p_champion, dtype=float)

            def guard() -> tuple[bool, str, dict]:
                d = M.delong_test(y_arr, p_old, p_new)
                details = {"delong": d, "auc_champion": d["auc_a"], "auc_challenger": d["auc_b"]}
                sig = math.isfinite(d["p_value"]) and d["p_value"] < alpha
                text = f"AUC {_fmt(d['auc_a'])} -> {_fmt(d['auc_b'])} (DeLong z={_fmt(d['z'])}, p={_fmt(d['p_value'])})"
                if auc_policy == "not_worse" and sig and d["delta"] < 0:
                    return False, f"AUC is significantly worse: {text}", details
                if auc_policy == "better" and not (sig and d["delta"] > 0):
                    return False, f"AUC is not significantly better: {text}", details
                return True, text, details
        out = decide_with_metric(y_arr, p_champion, p_new, metric_fn=M.brier, floor_values=values, groups=groups,
                                 extra_guard=guard, **common)
        if p_champion is not None and out["delong"] is None:  # the guard did not run: still report DeLong
            d = M.delong_test(y_arr, np.asarray(p_champion, dtype=float), p_new)
            out.update(delong=d, auc_champion=d["auc_a"], auc_challenger=d["auc_b"])
        out["challenger_auc"] = values["auc"]
        return out

    if family == "forecast":
        al = [float(a) for a in alphas]
        y_arr = np.asarray(y, dtype=float)

        def matrix(q, name):
            q = np.asarray(q, dtype=float)
            if q.ndim == 1 and len(al) == 1:
                q = q.reshape(-1, 1)
            if q.ndim != 2 or q.shape != (len(y_arr), len(al)):
                raise ValueError(f"{name} must be an (n_rows, {len(al)}) quantile matrix, got shape {q.shape}")
            return q

        q_new = matrix(p_challenger, "p_challenger")
        q_old = None if p_champion is None else matrix(p_champion, "p_champion")

        def mean_pinball(yy: np.ndarray, q: np.ndarray) -> float:
            return float(np.mean([M.pinball_loss(yy, q[:, j], a) for j, a in enumerate(al)]))

        rep = M.quantile_report(y_arr, q_new, al)
        values = {"coverage": rep.get("coverage", float("nan")), "crossing_rate": rep["crossing_rate"], **extra}
        return decide_with_metric(y_arr, q_old, q_new, metric_fn=mean_pinball, floor_values=values, groups=groups,
                                  **common)

    # ranking
    if groups is None:
        raise ValueError("ranking decisions need groups= the query id of every row")
    rel = np.asarray(y, dtype=float)
    keys, rels, s_new = M.group_by_query(groups, rel, np.asarray(p_challenger, dtype=float))
    s_old = None if p_champion is None else M.group_by_query(groups, rel, np.asarray(p_champion, dtype=float))[2]
    per_new = np.array([M.ndcg_at_k([r], [s], k) for r, s in zip(rels, s_new)])
    per_old = None if s_old is None else np.array([M.ndcg_at_k([r], [s], k) for r, s in zip(rels, s_old)])
    out = decide_from_unit_values(per_old, per_new, primary_metric="ndcg", higher_is_better=True,
                                  gates_passed=gates_passed, floors=floors, floor_values=extra, alpha=alpha,
                                  n_boot=n_boot, seed=seed, min_improvement=min_improvement, family="ranking")
    out["k"] = int(k)
    out["n_queries"] = len(keys)
    return out


def decide_from_unit_values(champion_values, challenger_values, *, primary_metric: str, higher_is_better: bool,
                            gates_passed: bool | Mapping[str, bool], floors: Mapping[str, float] | None = None,
                            floor_values: Mapping[str, float] | None = None, groups=None, alpha: float = 0.05,
                            n_boot: int = 1000, seed: int = 0, min_improvement: float = 0.0,
                            family: str = "custom") -> dict[str, Any]:
    """The rule on per-unit values whose mean is the metric: per-row losses (forecast pinball, lower is
    better) or per-query scores (ranking NDCG, higher is better). ``champion_values=None`` for the first
    model. The bootstrap resamples units (or ``groups`` of units)."""
    new = np.asarray(challenger_values, dtype=float)
    old = None if champion_values is None else np.asarray(champion_values, dtype=float)
    if old is not None and old.shape != new.shape:
        raise ValueError(f"champion_values has shape {old.shape}, challenger_values {new.shape}")
    dummy = np.zeros(len(new))
    return decide_with_metric(dummy, old, new, metric_fn=lambda _y, v: float(np.mean(v)),
                              primary_metric=primary_metric, higher_is_better=higher_is_better,
                              gates_passed=gates_passed, floors=floors, floor_values=floor_values, groups=groups,
                              alpha=alpha, n_boot=n_boot, seed=seed, min_improvement=min_improvement, family=family)


# --------------------------------------------------------------------------------------------
# choosing among champion candidates of one tenant-week (same rows, same rule)
# --------------------------------------------------------------------------------------------

CANDIDATE_RULE = ("start from the simplest available candidate ({order}); walk the more complex ones in that "
                  "order; one replaces the current choice only when the {level:g}% paired opportunity-bootstrap "
                  "interval of Brier(candidate) - Brier(current choice) lies below -{margin:g} (significantly "
                  "better); otherwise the simpler choice stays")


def choose_candidate(y, preds: Mapping[str, Any], groups, *, order: Sequence[str], alpha: float = 0.05,
                     n_boot: int = 1000, seed: int = 0, min_improvement: float = 0.0) -> dict[str, Any]:
    """The simplest candidate unless a more complex one is significantly better on the same rows.

    ``preds``: calibrated P(lost) of each available candidate on the same rows ``y`` (candidates absent from
    ``preds`` are skipped); ``order``: every candidate name, simplest first; ``groups``: opportunity ids (the
    bootstrap resamples whole opportunities, as :func:`decide_promotion` does). The rule is fixed before any
    metric is seen (:data:`CANDIDATE_RULE`), so applying it to the test rows does not tune on them.

    Returns ``{"chosen", "rule", "reason", "steps": [{candidate, against, delta, ci_low, ci_high, p_value,
    significant}], "alpha", "n_boot"}``. Raises ValueError when no candidate is available.
    """
    if not (0.0 < alpha < 1.0):
        raise PromotionConfigError(f"alpha must be in (0, 1), got {alpha!r}")
    if min_improvement < 0:
        raise PromotionConfigError(f"min_improvement must be >= 0, got {min_improvement!r}")
    unknown = sorted(set(preds) - set(order))
    if unknown:
        raise PromotionConfigError(f"candidates {unknown} are not in the declared order {list(order)}")
    avail = [name for name in order if name in preds and preds[name] is not None]
    if not avail:
        raise ValueError("no champion candidate is available")
    y_arr = np.asarray(y, dtype=float)
    rule = CANDIDATE_RULE.format(order=" < ".join(order), level=100 * (1 - alpha), margin=min_improvement)
    current, steps = avail[0], []
    for name in avail[1:]:
        boot = _bootstrap(M.brier, y_arr, np.asarray(preds[current], float), np.asarray(preds[name], float),
                          groups, n_boot, seed, alpha)
        sig = math.isfinite(boot["ci_high"]) and boot["ci_high"] < -min_improvement
        steps.append({"candidate": name, "against": current, "brier_candidate": boot["metric_b"],
                      "brier_against": boot["metric_a"], "delta": boot["delta"], "ci_low": boot["ci_low"],
                      "ci_high": boot["ci_high"], "p_value": boot["p_value"], "significant": bool(sig)})
        if sig:
            current = name
    if current == avail[0]:
        beaten = "; ".join(f"{s['candidate']} Brier delta {_fmt(s['delta'])} "
                           f"[{_fmt(s['ci_low'])}, {_fmt(s['ci_high'])}]" for s in steps)
        reason = (f"{current} is the simplest available candidate and no more complex one is significantly better"
                  + (f" ({beaten})" if beaten else " (the only candidate)"))
    else:
        s = next(s for s in reversed(steps) if s["candidate"] == current)
        reason = (f"{current} is significantly better than {s['against']}: Brier {_fmt(s['brier_against'])} -> "
                  f"{_fmt(s['brier_candidate'])} (delta {_fmt(s['delta'])}, {100 * (1 - alpha):g}% CI "
                  f"[{_fmt(s['ci_low'])}, {_fmt(s['ci_high'])}], p={_fmt(s['p_value'])})")
    return {"chosen": current, "rule": rule, "reason": reason, "steps": steps, "available": avail,
            "alpha": float(alpha), "n_boot": int(n_boot), "min_improvement": float(min_improvement)}


CHOOSE_ON = ("test", "validation")


def evaluate_candidates(candidates: Mapping[str, dict], test: pd.DataFrame, valid: pd.DataFrame | None = None, *,
                        order: Sequence[str] | None = None, choose_on: str = "test", alpha: float = 0.05,
                        n_boot: int = 1000, seed: int = 0, min_improvement: float = 0.0,
                        label: str = "label", group: str = "opportunity_id") -> tuple[dict, dict, dict]:
    """Score every available candidate on the same test rows and choose the champion.

    ``candidates``: ``{name: {"available": bool, "reason": str, "model": artifact, "calibrator": calibrator
    dict}}`` (names from ``order``, default ``evaluation.CANDIDATE_SOURCES``, simplest first). Each available
    one gets ``"test"``: AUC/Brier/ECE with 90% opportunity-bootstrap intervals (:func:`evaluation.candidate_metrics`);
    one that cannot predict the test rows becomes unavailable with the error as its reason.

    ``choose_on``: ``"test"`` = :func:`choose_candidate`'s pre-declared rule on the test rows (the same
    held-out opportunities promotion compares on); ``"validation"`` = the same rule on the validation rows with
    out-of-fold calibrated predictions (each candidate's calibrator method, re-fitted within 5 folds), so the
    test rows only report.
    Returns ``(candidates with "test" filled in, choice, {name: calibrated test predictions})``.
    """
    from .evaluation import CANDIDATE_SOURCES, apply_calibrator, candidate_metrics, oof_calibrated
    from .training import predict_raw

    if choose_on not in CHOOSE_ON:
        raise PromotionConfigError(f"choose_on must be one of {CHOOSE_ON}, got {choose_on!r}")
    order = tuple(order or CANDIDATE_SOURCES)
    y = test[label].to_numpy(int)
    groups = test[group].to_numpy()
    out: dict[str, dict] = {}
    p_test: dict[str, np.ndarray] = {}
    for name, cand in candidates.items():
        c = dict(cand)
        if c.get("available"):
            try:
                p_test[name] = np.asarray(apply_calibrator(c["calibrator"], predict_raw(c["model"], test)), float)
                c["test"] = candidate_metrics(y, p_test[name], groups, seed=seed)
            except (KeyError, ValueError) as exc:
                c.update(available=False, reason=f"cannot score the test rows: {exc}")
                p_test.pop(name, None)
        out[name] = c
    if choose_on == "test":
        choice = choose_candidate(y, p_test, groups, order=order, alpha=alpha, n_boot=n_boot, seed=seed,
                                  min_improvement=min_improvement)
        choice["chosen_on"] = "test rows, pre-declared rule"
    else:
        if valid is None or not len(valid):
            raise ValueError("choose_on='validation' needs the validation rows")
        y_va = valid[label].to_numpy(int)
        p_va = {name: oof_calibrated(predict_raw(out[name]["model"], valid), y_va,
                                     out[name]["calibrator"].get("method", "platt"), seed=seed)
                for name in p_test}
        choice = choose_candidate(y_va, p_va, valid[group].to_numpy(), order=order, alpha=alpha, n_boot=n_boot,
                                  seed=seed, min_improvement=min_improvement)
        choice["chosen_on"] = "validation rows, out-of-fold calibrated, pre-declared rule"
    return out, choice, p_test


def candidate_summary(candidates: Mapping[str, dict], choice: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-able summary (no models) for reports, registry tags and the oracle benchmark."""
    return {"chosen": choice.get("chosen"), "chosen_on": choice.get("chosen_on"), "reason": choice.get("reason"),
            "rule": choice.get("rule"), "steps": list(choice.get("steps") or []),
            "candidates": {name: {"available": bool(c.get("available")), "reason": c.get("reason", ""),
                                  "algorithm": (c.get("model") or {}).get("algorithm"),
                                  **({"test": c["test"]} if c.get("test") else {})}
                           for name, c in candidates.items()}}


# --------------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------------

def decision_tags(decision: Mapping[str, Any], prefix: str = "riskml.decision.") -> dict[str, str]:
    """Flat string tags of a decision for MLflow (should_deploy, reason, p-value, interval, ...)."""
    keys = ("should_deploy", "reason", "primary_metric", "delta", "ci_low", "ci_high", "ci_level", "p_value",
            "champion_metric", "challenger_metric", "significant", "first_model", "gates_passed", "n_rows",
            "n_groups")
    tags = {f"{prefix}{k}": str(decision.get(k)) for k in keys if k in decision}
    comp = decision.get("comparison")
    if comp:
        tags[f"{prefix}comparison_opportunities"] = str(comp.get("opportunities"))
        tags[f"{prefix}comparison_rows"] = str(comp.get("rows"))
        tags[f"{prefix}comparison_excluded_opportunities"] = str(comp.get("excluded_opportunities"))
    d = decision.get("delong")
    if d:
        tags[f"{prefix}delong_p_value"] = str(d.get("p_value"))
        tags[f"{prefix}delong_auc_delta"] = str(d.get("delta"))
    tags[f"{prefix}reason"] = str(decision.get("reason", ""))[:4000]
    return tags


def decision_markdown(decision: Mapping[str, Any], champion_version: str | int | None = None,
                      challenger_version: str | int | None = None) -> str:
    """A short markdown section for the evaluation report."""
    verdict = "**deploy** (becomes champion)" if decision.get("should_deploy") else "**do not deploy** (stays challenger)"
    lines = ["## Champion / challenger decision", "",
             f"Decision: {verdict}", "", f"Reason: {decision.get('reason', '')}", ""]
    if decision.get("comparison"):
        lines += [f"Compared on the {comparison_text(decision['comparison'])}.", ""]
    if not decision.get("first_model") and math.isfinite(float(decision.get("delta", float("nan")))):
        pm = decision.get("primary_metric")
        rows = [("champion" + (f" (v{champion_version})" if champion_version is not None else ""),
                 decision.get("champion_metric")),
                ("challenger" + (f" (v{challenger_version})" if challenger_version is not None else ""),
                 decision.get("challenger_metric"))]
        lines += [f"| model | {pm} |", "|---|---|"] + [f"| {n} | {_fmt(v)} |" for n, v in rows] + [""]
        lines.append(f"Delta (challenger - champion) {_fmt(decision['delta'])}, "
                     f"{100 * decision.get('ci_level', 0.95):g}% paired-bootstrap CI "
                     f"[{_fmt(decision['ci_low'])}, {_fmt(decision['ci_high'])}], p = {_fmt(decision['p_value'])}, "
                     f"{decision.get('n_boot', 0)} resamples over {decision.get('n_groups')} units.")
        d = decision.get("delong")
        if d:
            lines.append(f"DeLong: AUC {_fmt(d['auc_a'])} -> {_fmt(d['auc_b'])}, z = {_fmt(d['z'])}, "
                         f"p = {_fmt(d['p_value'])}.")
        lines.append("")
    if decision.get("floors"):
        lines += ["| floor | value | threshold | passed |", "|---|---|---|---|"]
        lines += [f"| {k} | {_fmt(f['value'])} | {f['op']} {f['threshold']:g} | {f['passed']} |"
                  for k, f in decision["floors"].items()]
        lines.append("")
    return "\n".join(lines)
