"""Model families as data: one mechanism trains, selects, checks and evaluates all of them.

A family (``risk``, ``revenue_forecast``, ``action_ranker``) is a :class:`FamilySpec`: its task, its
default config (candidate algorithms with their search spaces, selection budget, family options), and
four pure functions:

- ``prepare(df, ctx) -> (X, y, groups, extra)``: the design matrix for model selection (``extra`` may
  hold ``qid``, ``order_key``, ``sample_weight``);
- ``train(train, valid, ctx, algorithm, params, cfg) -> artifact`` (JSON-able, models as XGBoost JSON,
  LightGBM text or forest node arrays; never pickle);
- ``predict(artifact, df)`` -> what the family's scorer takes (P(lost), (n, k) quantiles, scores);
- ``evaluate(test, artifact, ctx) -> report`` whose flat keys are the gate metrics;

plus its primary metric (and direction) and its gates (metric, operator, threshold, fail|warn).

The shared functions :func:`select_family`, :func:`train_family` and :func:`evaluate_family` do the
rest the same way for every family: Optuna selection by grouped (or time-ordered) cross-validation
when ``algorithm`` is ``"auto"``, the final fit with early stopping on validation, the
train-vs-validation gap of the final model on the family's scorer (the overfitting check), the
evaluation and the gate results. The Dagster layer only reads config and calls these.

``ctx`` carries what a family needs besides rows: ``manifest`` (risk, revenue_forecast), ``features``
and ``feature_kinds`` (action_ranker, from :func:`ranking.build_ranking_examples`), optionally
``split_method`` (``walk_forward`` switches selection to time-ordered folds when ``time_ordered`` is
``"auto"``) and ``oracle`` inputs for tests.

Nothing here imports dagster.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .lazy import lazy_module

np = lazy_module("numpy")
pd = lazy_module("pandas")


from . import forecast as FC
from . import metrics as M
from . import ranking as RK
from .features import LABEL
from .gates import Gate, override_gate
from .selection import SAMPLERS, SelectionResult, get_scorer, model_from_dict, make_model, select_model
from .training import XGBParams, design_matrix, model_features, predict_raw, train_xgb_classifier

# --------------------------------------------------------------------------------------------
# the spec


@dataclass(frozen=True)
class FamilySpec:
    name: str
    task: str
    description: str
    defaults: Mapping[str, Any]
    prepare: Callable
    train: Callable
    predict: Callable
    evaluate: Callable
    primary_metric: str
    greater_is_better: bool
    gates: tuple[Gate, ...] = field(default_factory=tuple)

    def selection_task(self, cfg: Mapping) -> str:
        if self.name == "revenue_forecast" and cfg["options"].get("mode") == "two_head":
            return "regression"  # the two-head mode tunes its point model
        return self.task


COMMON_DEFAULTS: dict[str, Any] = {
    "algorithm": "auto",  # "auto" = choose by cross-validation among the candidates; or a candidate name
    "params": {},  # used when algorithm is fixed (merged over the family's defaults)
    "candidates": None,  # {algorithm: search space or None (= default space)}
    "sampler": "tpe",
    "n_trials": 20,
    "timeout_seconds": 600.0,
    "n_folds": 3,
    "time_ordered": "auto",  # True / False / "auto" (= the split is walk-forward)
    "seed": 0,
    "n_threads": 1,
    "scorer": None,  # default: the task's (auc, mean_pinball, ndcg@10)
    "max_gap": None,  # overfitting threshold of the selection (default 0.10 absolute / 0.30 relative)
    "early_stopping_rounds": 50,
    "options": {},
}


def resolve_config(name: str, overrides: Mapping | None = None) -> dict:
    """The family's config: common defaults, then the family's, then ``overrides`` (validated)."""
    spec = get_family(name)
    cfg = copy.deepcopy(COMMON_DEFAULTS)
    for src in (spec.defaults, overrides or {}):
        for k, v in src.items():
            if k not in COMMON_DEFAULTS:
                raise ValueError(f"family {name}: unknown config key {k!r}; known: {sorted(COMMON_DEFAULTS)}")
            if k == "options" and isinstance(v, Mapping):
                cfg["options"] = {**cfg["options"], **copy.deepcopy(dict(v))}
            else:
                cfg[k] = copy.deepcopy(v)
    if cfg["sampler"] not in SAMPLERS:
        raise ValueError(f"family {name}: sampler must be one of {SAMPLERS}")
    cands = cfg["candidates"] or {}
    if cfg["algorithm"] != "auto" and cfg["algorithm"] not in cands:
        raise ValueError(f"family {name}: algorithm {cfg['algorithm']!r} is not a candidate ({sorted(cands)}) or 'auto'")
    return cfg


# --------------------------------------------------------------------------------------------
# risk (P(lost))


def _manifest_matrix(df: pd.DataFrame, ctx: Mapping):
    features, kinds = model_features(df, dict(ctx["manifest"]))
    cats = {c: sorted(set(df[c].astype(str)) | {"__missing__"}) for c in features if kinds[c] == "categorical"}
    return design_matrix(df, features, kinds, cats), features, kinds, cats


def _order_key(df: pd.DataFrame):
    for c in ("closed_at", "shown_at", "snapshot_date"):
        if c in df.columns:
            return df[c].to_numpy()
    return None


def _prepare_risk(df, ctx):
    X, *_ = _manifest_matrix(df, ctx)
    extra = {"order_key": _order_key(df)}
    if "sample_weight" in df.columns:
        extra["sample_weight"] = df["sample_weight"].to_numpy(float)
    return X, df[LABEL].to_numpy(int), df["opportunity_id"].to_numpy(), extra


def _train_risk(train, valid, ctx, algorithm, params, cfg):
    manifest = dict(ctx["manifest"])
    if algorithm == "xgboost":  # the existing artifact format (training.predict_raw reads it)
        known = set(XGBParams.__dataclass_fields__) - {"extra", "n_threads", "seed"}
        p = XGBParams(**{k: v for k, v in params.items() if k in known},
                      extra={k: v for k, v in params.items() if k not in known},
                      n_threads=int(cfg["n_threads"]), seed=int(cfg["seed"]),
                      early_stopping_rounds=int(cfg["early_stopping_rounds"]))
        return train_xgb_classifier(train, valid, manifest, p)
    X, features, kinds, cats = _manifest_matrix(train, ctx)
    y = train[LABEL].to_numpy(int)
    w = train["sample_weight"].to_numpy(float) if "sample_weight" in train.columns else None
    m = make_model(algorithm, "binary", params, n_threads=int(cfg["n_threads"]), seed=int(cfg["seed"]))
    ev = (design_matrix(valid, features, kinds, cats), valid[LABEL].to_numpy(int)) if len(valid) else None
    m.fit(X, y, sample_weight=w, eval_set=ev, early_stopping_rounds=int(cfg["early_stopping_rounds"]))
    return {"family": "risk", "algorithm": algorithm, "model": m.to_dict(), "best_iteration": m.best_iteration,
            "features": features, "feature_kinds": kinds, "categories": cats, "manifest": manifest,
            "params": dict(params), "train_rows": int(len(train)), "train_lost_rate": float(y.mean())}


def predict_risk(artifact: Mapping, df: pd.DataFrame) -> np.ndarray:
    """Uncalibrated P(lost) of a risk artifact of any algorithm."""
    if "booster_json" in artifact:
        return predict_raw(dict(artifact), df)
    X = design_matrix(df, artifact["features"], artifact["feature_kinds"], artifact["categories"])
    return model_from_dict(artifact["model"]).predict(X)


def _evaluate_risk(test, artifact, ctx):
    y = test[LABEL].to_numpy(int)
    p = predict_risk(artifact, test)
    rate = float(np.clip(artifact.get("train_lost_rate", y.mean()), 1e-6, 1 - 1e-6))
    base = np.full(len(y), rate)
    rep = {"rows": int(len(y)), "model": M.classification_report(y, p), "base_rate": M.classification_report(y, base)}
    rep["auc"], rep["brier"], rep["log_loss"] = rep["model"]["auc"], rep["model"]["brier"], rep["model"]["log_loss"]
    rep["brier_skill"] = 1.0 - rep["brier"] / rep["base_rate"]["brier"] if rep["base_rate"]["brier"] > 0 else float("nan")
    if "baseline_risk_score" in test.columns and test["baseline_risk_score"].notna().all():
        rep["crm_risk_score_auc"] = M.roc_auc(y, test["baseline_risk_score"].to_numpy(float))
    if ctx.get("oracle_p") is not None:
        rep["oracle_auc"] = M.roc_auc(y, ctx["oracle_p"])
    return rep


# --------------------------------------------------------------------------------------------
# revenue_forecast


def _prepare_forecast(df, ctx):
    X, *_ = _manifest_matrix(df, ctx)
    return X, df[FC.TARGET].to_numpy(float), df["opportunity_id"].to_numpy(), {"order_key": _order_key(df)}


def _train_forecast(train, valid, ctx, algorithm, params, cfg):
    o = cfg["options"]
    return FC.train_quantile_forecaster(
        train, valid, ctx["manifest"], alphas=o.get("alphas", FC.ALPHAS), mode=o.get("mode", "multi_quantile"),
        params=params, algorithm=algorithm, calibration=o.get("calibration", "none"),
        n_threads=int(cfg["n_threads"]), seed=int(cfg["seed"]), early_stopping_rounds=int(cfg["early_stopping_rounds"]))


def _evaluate_forecast(test, artifact, ctx):
    Q = FC.predict_quantiles(artifact, test)
    rep = FC.evaluate_forecast(test, Q, artifact["alphas"], expected=FC.predict_expected(artifact, test, Q),
                               oracle_Q=ctx.get("oracle_quantiles"))
    rep["mean_pinball"] = rep["model"]["mean_pinball"]
    # headline numbers (flat, so the asset's metadata and the main job's summary carry them)
    rep["p50_mae"], rep["naive_p50_mae"] = rep["point"]["mae"], rep["naive_point"]["mae"]
    rep["nominal_coverage"] = rep["model"].get("nominal_coverage")
    rep["raw_crossing_rate_validation"] = artifact.get("validation_raw_crossing_rate")
    return rep


# --------------------------------------------------------------------------------------------
# action_ranker


def _ranker_matrix(df, ctx):
    feats = list(ctx["features"])
    kinds = {c: ctx["feature_kinds"][c] for c in feats}
    cats = {c: sorted(set(df[c].astype(str)) | {"__missing__"}) for c in feats if kinds[c] == "categorical"}
    return design_matrix(df, feats, kinds, cats)


def _prepare_ranker(df, ctx):
    return (_ranker_matrix(df, ctx), df["relevance"].to_numpy(int), df["opportunity_id"].to_numpy(),
            {"qid": df["qid"].to_numpy(), "order_key": df["shown_at"].to_numpy()})


def _train_ranker(train, valid, ctx, algorithm, params, cfg):
    o = cfg["options"]
    return RK.train_ranker(train, valid, features=ctx["features"], feature_kinds=ctx["feature_kinds"],
                           objective=o.get("objective", "rank:pairwise"), algorithm=algorithm, params=params,
                           n_threads=int(cfg["n_threads"]), seed=int(cfg["seed"]),
                           early_stopping_rounds=int(cfg["early_stopping_rounds"]), eval_k=int(o.get("eval_k", 10)))


def _evaluate_ranker(test, artifact, ctx):
    ks = tuple(ctx.get("ks", (5, 10)))
    rep = RK.evaluate_ranker(test, RK.predict_ranker(artifact, test),
                             baseline_scores=RK.popularity_baseline(artifact["popularity"], test),
                             oracle_scores=ctx.get("oracle_scores"), ks=ks)
    for k in ks:
        rep[f"ndcg_at_{k}"] = rep["model"][f"ndcg_at_{k}"]
    rep["map"] = rep["model"]["map"]
    return rep


# --------------------------------------------------------------------------------------------
# the registry

FAMILIES: dict[str, FamilySpec] = {
    "risk": FamilySpec(
        name="risk", task="binary",
        description="P(lost) classifier of an open opportunity (calibrated downstream).",
        defaults={"candidates": {"xgboost": None, "lightgbm": None, "random_forest": None}},
        prepare=_prepare_risk, train=_train_risk, predict=predict_risk, evaluate=_evaluate_risk,
        primary_metric="auc", greater_is_better=True,
        gates=(
            Gate("risk_model_selection_not_overfit", "cv_gap", "<=", 0.10, "warn",
                 "train minus validation AUC over the cross-validation folds of the chosen params"),
        ),
    ),
    "revenue_forecast": FamilySpec(
        name="revenue_forecast", task="quantile",
        description="P10/P50/P90 of the revenue an open opportunity will realise (0 when lost).",
        defaults={"candidates": {"xgboost": None, "lightgbm": None}, "n_trials": 20,
                  "options": {"alphas": list(FC.ALPHAS), "mode": "multi_quantile", "calibration": "none"}},
        prepare=_prepare_forecast, train=_train_forecast, predict=FC.predict_quantiles, evaluate=_evaluate_forecast,
        primary_metric="mean_pinball", greater_is_better=False,
        gates=(
            Gate("revenue_forecast_coverage_low", "coverage", ">=", 0.70, "fail",
                 "share of test rows inside [P10, P90] (nominal 0.80; a perfect model scores ~0.87 on a "
                 "zero-inflated target because the closed band covers every lost deal at P10 = 0)"),
            Gate("revenue_forecast_coverage_high", "coverage", "<=", 0.93, "warn",
                 "share of test rows inside [P10, P90]: a band that covers nearly everything says little"),
            Gate("revenue_forecast_no_crossing", "crossing_rate", "<=", 0.0, "fail",
                 "share of test rows whose returned quantiles are not sorted"),
            Gate("revenue_forecast_beats_naive", "pinball_skill", ">=", 0.05, "fail",
                 "1 - mean pinball / mean pinball of the better CRM baseline (deal value x probability, "
                 "or the CRM-implied won/lost distribution)"),
            Gate("revenue_forecast_not_overfit", "fit_gap", "<=", 0.30, "warn",
                 "relative train-vs-validation gap of the final model's mean pinball loss"),
        ),
    ),
    "action_ranker": FamilySpec(
        name="action_ranker", task="ranking",
        description="Ranks mitigation actions for a user and an opportunity from recommendation feedback.",
        defaults={"candidates": {"xgboost": None, "lightgbm": None}, "early_stopping_rounds": 30,
                  "options": {"objective": "rank:pairwise", "eval_k": 10}},
        prepare=_prepare_ranker, train=_train_ranker, predict=RK.predict_ranker, evaluate=_evaluate_ranker,
        primary_metric="ndcg_at_10", greater_is_better=True,
        gates=(
            Gate("action_ranker_beats_popularity", "ndcg_at_10_lift", ">=", 0.02, "fail",
                 "test NDCG@10 of the ranker minus that of the popularity baseline"),
            Gate("action_ranker_min_queries", "queries", ">=", 50, "fail", "test queries (sessions) evaluated"),
            Gate("action_ranker_not_overfit", "fit_gap", "<=", 0.10, "warn",
                 "train minus validation NDCG@10 of the final model"),
        ),
    ),
}
# the risk family's remaining gates (base rate, calibration, Brier skill) live in gates.DEFAULT_GATES


def get_family(name: str) -> FamilySpec:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}: known {sorted(FAMILIES)}")
    return FAMILIES[name]


def family_gates(name: str, overrides: Mapping[str, Mapping] | None = None) -> dict[str, Gate]:
    """The family's gates, each overridable field by field (``{gate: {threshold: .., action: ..}}``)."""
    gates = {g.name: g for g in get_family(name).gates}
    for gname, fields in (overrides or {}).items():
        if gname not in gates:
            continue  # other families' / pipeline gates
        gates[gname] = override_gate(gates[gname], fields)
    return gates


def all_family_gates() -> tuple[Gate, ...]:
    return tuple(g for spec in FAMILIES.values() for g in spec.gates)


# --------------------------------------------------------------------------------------------
# the shared mechanism


def _time_ordered(cfg: Mapping, ctx: Mapping) -> bool:
    t = cfg["time_ordered"]
    return (ctx.get("split_method") == "walk_forward") if t == "auto" else bool(t)


def _task_opts(spec: FamilySpec, cfg: Mapping) -> dict:
    o = cfg["options"]
    if spec.name == "revenue_forecast":
        return {"alphas": list(o.get("alphas", FC.ALPHAS))}
    if spec.name == "action_ranker":
        return {"objective": o.get("objective", "rank:pairwise"), "eval_k": int(o.get("eval_k", 10))}
    return {}


def select_family(name: str, train: pd.DataFrame, ctx: Mapping, config: Mapping | None = None) -> SelectionResult:
    """Run model selection for a family on its training rows (see :func:`selection.select_model`)."""
    spec, cfg = get_family(name), resolve_config(name, config)
    X, y, groups, extra = spec.prepare(train, ctx)
    task = spec.selection_task(cfg)
    opts = _task_opts(spec, cfg)
    tord = _time_ordered(cfg, ctx)
    return select_model(
        X, y, groups, task=task, candidates=cfg["candidates"], qid=extra.get("qid"),
        alphas=opts.get("alphas") if task == "quantile" else None, sample_weight=extra.get("sample_weight"),
        sampler=cfg["sampler"], n_trials=int(cfg["n_trials"]), timeout_seconds=cfg["timeout_seconds"],
        n_folds=int(cfg["n_folds"]), time_ordered=tord, order_key=extra.get("order_key") if tord else None,
        seed=int(cfg["seed"]), n_threads=int(cfg["n_threads"]),
        scorer=cfg["scorer"] if task == spec.task else None, max_gap=cfg["max_gap"],
        objective=opts.get("objective"), eval_k=opts.get("eval_k", 10))


def fit_gap(name: str, artifact: Mapping, train: pd.DataFrame, valid: pd.DataFrame, ctx: Mapping,
            config: Mapping | None = None) -> dict:
    """The final model's score on train and validation rows with the family's scorer, and the gap
    (absolute for bounded scores, relative to validation for losses; positive = better on train)."""
    spec, cfg = get_family(name), resolve_config(name, config)
    sc = get_scorer(cfg["scorer"], spec.task, _task_opts(spec, cfg).get("alphas"))

    def score(df):
        _, y, _, extra = spec.prepare(df, ctx)
        return float(sc.fn(y, spec.predict(artifact, df), extra.get("qid")))

    s_tr, s_va = score(train), score(valid)
    raw = (s_tr - s_va) if sc.greater_is_better else (s_va - s_tr)
    gap = raw if sc.gap == "absolute" else raw / max(abs(s_va), 1e-12)
    return {"scorer": sc.name, "train": s_tr, "validation": s_va, "gap": float(gap), "gap_kind": sc.gap}


def train_family(name: str, train: pd.DataFrame, valid: pd.DataFrame, ctx: Mapping,
                 config: Mapping | None = None) -> dict:
    """Select (when ``algorithm`` is ``"auto"``), fit and check one family's model; return its artifact
    with ``selection`` (the full :class:`SelectionResult` as a dict, or None), ``fit_check`` (final
    train-vs-validation gap) and ``config``."""
    spec, cfg = get_family(name), resolve_config(name, config)
    sel = None
    if cfg["algorithm"] == "auto":
        sel = select_family(name, train, ctx, cfg)
        algorithm, params = sel.best_candidate, dict(sel.best_params)
    else:
        algorithm, params = cfg["algorithm"], dict(cfg["params"])
    artifact = spec.train(train, valid, ctx, algorithm, params, cfg)
    artifact["selection"] = sel.to_dict() if sel is not None else None
    artifact["fit_check"] = fit_gap(name, artifact, train, valid, ctx, cfg) if len(valid) else None
    artifact["config"] = _jsonable_cfg(cfg)
    return artifact


def _jsonable_cfg(cfg: Mapping) -> dict:
    from .selection import _jsonable

    return _jsonable(copy.deepcopy(dict(cfg)))


def gate_metrics(report: Mapping, artifact: Mapping) -> dict[str, float]:
    """Flat metric values the gates read: the report's scalar keys plus ``cv_gap`` and ``fit_gap``."""
    out = {k: v for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    sel = artifact.get("selection")
    if sel:
        out["cv_gap"] = sel.get("gap")
    fc = artifact.get("fit_check")
    if fc:
        out["fit_gap"] = fc.get("gap")
    return out


def evaluate_family(name: str, test: pd.DataFrame, artifact: Mapping, ctx: Mapping | None = None,
                    gate_overrides: Mapping[str, Mapping] | None = None) -> dict:
    """Evaluate a family's artifact on its test rows and run its gates.

    Returns the family report plus ``gates`` ({name: {metric, value, op, threshold, action, passed}}),
    ``blocking_failures`` and ``should_deploy`` (no ``fail`` gate failed). A gate whose metric the report
    lacks (e.g. ``cv_gap`` without selection) is reported as skipped, not failed.
    """
    spec = get_family(name)
    report = spec.evaluate(test, artifact, dict(ctx or {}))
    values = gate_metrics(report, artifact)
    gates, blocking = {}, []
    for g in family_gates(name, gate_overrides).values():
        if g.metric not in values or values[g.metric] is None:
            gates[g.name] = {"metric": g.metric, "value": None, "op": g.op, "threshold": g.threshold,
                             "action": g.action, "passed": None, "skipped": True}
            continue
        v = float(values[g.metric])
        res = g.evaluate(v if math.isfinite(v) else float("nan"))
        gates[g.name] = {"metric": g.metric, "value": v, "op": g.op, "threshold": g.threshold, "action": g.action,
                         "passed": res.passed, "skipped": False, "description": res.describe()}
        if res.blocks:
            blocking.append(g.name)
    report["gates"] = gates
    report["blocking_failures"] = blocking
    report["should_deploy"] = not blocking
    report["primary_metric"] = {"name": spec.primary_metric, "value": values.get(spec.primary_metric),
                                "greater_is_better": spec.greater_is_better}
    return report
