"""An honest ablation of synthetic augmentation and class balancing (pure module, no dagster).

Every variant trains the SAME model configuration (``training.train_xgb_classifier``, early stopping on
the real validation rows, then ``evaluation.fit_risk_calibrator`` on the real validation rows) on its own
version of the train split, and is scored on the SAME real test rows: AUC, Brier and ECE of the
calibrated predictions (``metrics``), next to the raw ones. Validation and test never contain a
synthetic row (checked, not assumed).

``choose_variant`` is the one decision function for augmentation and balancing. Its default rule
(``require="helps"``): the configured variant is kept only when it **helps on both Brier and AUC**,
judged with the paired 90 % opportunity-bootstrap intervals of its differences to the baseline on the
same real test rows:

1. its synthetic rows passed the quality gates;
2. its test Brier is not worse than the baseline's by more than ``tolerance`` (the ablation gate);
3. Brier is significantly better: the upper end of the 90 % interval of (variant - baseline) Brier is
   below 0;
4. AUC is not significantly worse: the upper end of the 90 % interval of (variant - baseline) AUC is
   at least 0, **and** the observed AUC loss is at most ``auc_tolerance`` (0.005 by default — the
   0.007-0.018 AUC that default oversampling cost on a real tenant is refused even when the interval is
   wide).

Otherwise the baseline (real train rows, no balancing) is kept, with the reason. ``require="point"`` /
``"ci"`` are the older, more lenient rules (Brier only, within tolerance).
"""
from __future__ import annotations

import math
import time
from typing import Callable, Mapping

from .lazy import lazy_module

np = lazy_module("numpy")
pd = lazy_module("pandas")


from . import metrics as M
from .augmentation import DEFAULT_METHODS, METHODS, SYNTHETIC_FLAG, augment
from .balancing import balance
from .evaluation import apply_calibrator, fit_risk_calibrator
from .features import LABEL
from .gates import Gate
from .training import XGBParams, fit_like, predict_raw, train_xgb_classifier

BASELINE = "baseline"
DEFAULT_TOLERANCE = 0.002
DEFAULT_AUC_TOLERANCE = 0.005
RULES = ("helps", "point", "ci")

ABLATION_GATE = Gate(
    "augmented_examples_ablation_brier", "test_brier_delta_vs_baseline", "<=", DEFAULT_TOLERANCE, "fail",
    "test Brier of the augmented/balanced variant minus the baseline's; above the threshold the variant is "
    "refused and the baseline train set is kept")

# name -> {"augment": kwargs for augmentation.augment or None, "balance": kwargs for balancing.balance or None}
DEFAULT_VARIANTS: dict[str, dict] = {
    BASELINE: {},
    "augmented:smote": {"augment": {"methods": ["smote"]}},
    "augmented:copula": {"augment": {"methods": ["copula"]}},
    "augmented:rules": {"augment": {"methods": ["rules"]}},
    "augmented": {"augment": {"methods": list(DEFAULT_METHODS)}},  # what the pipeline runs by default
    "augmented:all": {"augment": {"methods": list(METHODS)}},
    "balanced:smote": {"balance": {"strategy": "smote", "target_ratio": 1.0, "min_ratio": 1.0}},
    "augmented+balanced": {"augment": {"methods": list(DEFAULT_METHODS)},
                           "balance": {"strategy": "smote", "target_ratio": 1.0, "min_ratio": 1.0}},
}

TABLE_COLUMNS = ("variant", "augment", "balance", "real_train_rows", "synthetic_rows", "train_rows",
                 "train_lost_rate", "augmentation_skipped", "quality_passed", "test_rows", "auc", "brier", "ece",
                 "log_loss", "auc_raw", "brier_raw", "ece_raw", "delta_auc", "delta_brier", "delta_ece",
                 "delta_brier_ci_low", "delta_brier_ci_high", "delta_auc_ci_low", "delta_auc_ci_high",
                 "best_iteration", "seconds")

VariantFn = Callable[["pd.DataFrame", Mapping, int], tuple["pd.DataFrame", dict]]


def _real_part(splits_df: pd.DataFrame, name: str) -> pd.DataFrame:
    part = splits_df[splits_df["split"].astype(str) == name]
    if SYNTHETIC_FLAG in part.columns and part[SYNTHETIC_FLAG].fillna(False).astype(bool).any():
        raise ValueError(f"the {name} split contains synthetic rows: it must be 100% real")
    return part.reset_index(drop=True)


def _build_train(train: pd.DataFrame, manifest: Mapping, spec, seed: int) -> tuple[pd.DataFrame, dict]:
    if callable(spec):
        return spec(train.copy(), manifest, seed)
    info: dict = {"augment": "", "balance": "", "augmentation_skipped": None, "quality_passed": None}
    out = train
    aug = (spec or {}).get("augment")
    if aug:
        kwargs = {"seed": seed, **aug}
        out, ainfo = augment(out, manifest, **kwargs)
        info["augment"] = "+".join(kwargs.get("methods", METHODS))
        info["augmentation_skipped"] = bool(ainfo["skipped"])
        q = ainfo.get("quality", {})
        info["quality_passed"] = all(v["passed"] for v in q.values()) if q else None
        info["augmentation_info"] = ainfo
    bal = (spec or {}).get("balance")
    if bal:
        kwargs = {"seed": seed, **bal}
        if kwargs.get("strategy") == "smote" and "features" not in kwargs:
            kwargs["features"] = manifest
        out, binfo = balance(out, **kwargs)
        info["balance"] = f"{kwargs.get('strategy')}@{kwargs.get('target_ratio', 1.0):g}"
        info["balance_info"] = binfo
    return out, info


def run_ablation(splits_df: pd.DataFrame, manifest: Mapping, *, variants: Mapping[str, dict | VariantFn] | None = None,
                 seed: int = 0, params: XGBParams | None = None, calibration: str = "auto",
                 n_boot: int = 300, log: Callable[[str], None] | None = None,
                 keep_models: bool = False, like: Mapping | None = None) -> pd.DataFrame | tuple[pd.DataFrame, dict]:
    """Train and score every variant; one row per variant (columns ``TABLE_COLUMNS``).

    ``splits_df`` holds real rows with a ``split`` column (train/validation/test). ``variants`` maps a name
    to ``{"augment": {...}, "balance": {...}}`` (keyword arguments of ``augment``/``balance``; either may
    be missing) or to ``fn(train, manifest, seed) -> (train', info)``. The baseline (real train rows, no
    balancing) is always included. Deterministic for a fixed ``seed`` (apart from ``seconds``).
    ``delta_brier_ci_low/high`` and ``delta_auc_ci_low/high``: 90 % intervals of (variant - baseline) Brier
    and AUC from one paired bootstrap that resamples whole test opportunities (their snapshots share one
    outcome; ``metrics.grouped_bootstrap_cis``).
    ``keep_models``: also return ``{variant: {"model": artifact, "calibrator": calibrator}}`` (so a refused
    candidate can be replaced by the baseline without training it again).
    ``like``: a trained risk artifact whose algorithm and params every variant retrains (``training.fit_like``,
    e.g. the LightGBM or random forest the selection chose); without it, XGBoost with ``params``.
    """
    variants = dict(DEFAULT_VARIANTS if variants is None else variants)
    if BASELINE not in variants:
        variants = {BASELINE: {}, **variants}
    train = _real_part(splits_df, "train")
    valid = _real_part(splits_df, "validation")
    test = _real_part(splits_df, "test")
    if not len(valid) or not len(test):
        raise ValueError("the ablation needs real validation and test rows")
    params = params or XGBParams(seed=seed)
    y_val, y_test = valid[LABEL].to_numpy(dtype=int), test[LABEL].to_numpy(dtype=int)
    rows, preds, models = [], {}, {}
    for name, spec in variants.items():
        t0 = time.perf_counter()
        tr, info = _build_train(train, manifest, spec, seed)
        if "split" in tr.columns and (tr["split"].astype(str) != "train").any():
            raise ValueError(f"variant {name!r} produced non-train rows")
        model = (fit_like(like, tr, valid, manifest) if like is not None
                 else train_xgb_classifier(tr, valid, manifest, params))
        p_val, p_test = predict_raw(model, valid), predict_raw(model, test)
        cal = fit_risk_calibrator(p_val, y_val, method=calibration, seed=seed,
                                  groups=valid["opportunity_id"].to_numpy() if "opportunity_id" in valid.columns else None)
        p_cal = apply_calibrator(cal, p_test)
        preds[name] = p_cal
        if keep_models:
            models[name] = {"model": model, "calibrator": cal}
        syn = int(tr[SYNTHETIC_FLAG].fillna(False).astype(bool).sum()) if SYNTHETIC_FLAG in tr.columns else 0
        row = {
            "variant": name, "augment": info.get("augment", ""), "balance": info.get("balance", ""),
            "real_train_rows": int(len(tr) - syn), "synthetic_rows": syn, "train_rows": int(len(tr)),
            "train_lost_rate": float(tr[LABEL].mean()),
            "augmentation_skipped": info.get("augmentation_skipped"), "quality_passed": info.get("quality_passed"),
            "test_rows": int(len(test)),
            "auc": M.roc_auc(y_test, p_cal), "brier": M.brier(y_test, p_cal), "ece": M.ece(y_test, p_cal),
            "log_loss": M.log_loss(y_test, p_cal),
            "auc_raw": M.roc_auc(y_test, p_test), "brier_raw": M.brier(y_test, p_test), "ece_raw": M.ece(y_test, p_test),
            "best_iteration": int(model["best_iteration"]),
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        if log:
            log(f"ablation {name}: {row['train_rows']} train rows ({syn} synthetic) -> test AUC {row['auc']:.4f} "
                f"Brier {row['brier']:.4f} ECE {row['ece']:.4f}")
    table = pd.DataFrame(rows)
    base = table.loc[table["variant"] == BASELINE].iloc[0]
    for m in ("auc", "brier", "ece"):
        table[f"delta_{m}"] = table[m] - base[m]
    groups = test["opportunity_id"].to_numpy() if "opportunity_id" in test.columns else np.arange(len(test))

    deltas = {"brier": lambda y, pp: M.brier(y, pp[:, 1]) - M.brier(y, pp[:, 0]),
              "auc": lambda y, pp: M.roc_auc(y, pp[:, 1]) - M.roc_auc(y, pp[:, 0])}
    ci = {f"delta_{m}_ci_{end}": [] for m in deltas for end in ("low", "high")}
    for name in table["variant"]:
        if name == BASELINE:
            for v in ci.values():
                v.append(0.0)
            continue
        pair = np.column_stack([preds[BASELINE], preds[name]])
        cis = M.grouped_bootstrap_cis(y_test, pair, deltas, groups, n_boot=n_boot, level=0.90, seed=seed)
        for m, (a, b) in cis.items():
            ci[f"delta_{m}_ci_low"].append(a)
            ci[f"delta_{m}_ci_high"].append(b)
    for col, vals in ci.items():
        table[col] = vals
    return (table[list(TABLE_COLUMNS)], models) if keep_models else table[list(TABLE_COLUMNS)]


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def choose_variant(table: pd.DataFrame, candidate: str, tolerance: float = DEFAULT_TOLERANCE,
                   baseline: str = BASELINE, require: str = "helps",
                   auc_tolerance: float = DEFAULT_AUC_TOLERANCE) -> dict:
    """Keep ``candidate`` (the configured augmented/balanced variant) or fall back to the baseline.

    ``require="helps"`` (default): the rule of the module docstring — kept only when its synthetic rows
    passed the quality gates, its Brier is within ``tolerance`` of the baseline's, the 90 % interval of its
    Brier difference lies below 0 and its AUC is not significantly worse (the 90 % interval of the AUC
    difference reaches 0 or above, and the observed loss is at most ``auc_tolerance``).
    ``require="point"``: Brier only, kept when the observed difference is within ``tolerance``;
    ``require="ci"``: Brier only, kept when the upper end of its interval is within ``tolerance``.

    Returns ``{"kept", "candidate", "passed", "rule", "delta_brier", "delta_brier_ci", "delta_auc",
    "delta_auc_ci", "tolerance", "auc_tolerance", "criteria", "reason", ...}``. ``passed`` is False
    whenever the candidate was refused; ``harmful`` says whether the refusal is the ablation gate's
    (Brier worse by more than ``tolerance``, or failed quality gates) rather than "did not help".
    """
    if require not in RULES:
        raise ValueError(f"require must be one of {RULES}, got {require!r}")
    by_name = table.set_index("variant")
    if baseline not in by_name.index:
        raise ValueError(f"the ablation table has no {baseline!r} row")
    if candidate not in by_name.index:
        raise ValueError(f"unknown candidate variant {candidate!r}; the table has {list(by_name.index)}")
    b, c = by_name.loc[baseline], by_name.loc[candidate]
    delta = float(c["brier"] - b["brier"])
    d_auc = float(c["auc"] - b["auc"]) if "auc" in c.index and "auc" in b.index else float("nan")
    b_ci = [float(c.get("delta_brier_ci_low", float("nan"))), float(c.get("delta_brier_ci_high", float("nan")))]
    a_ci = [float(c.get("delta_auc_ci_low", float("nan"))), float(c.get("delta_auc_ci_high", float("nan")))]
    out = {"candidate": candidate, "rule": require, "delta_brier": delta, "delta_brier_ci": b_ci,
           "delta_auc": d_auc, "delta_auc_ci": a_ci, "tolerance": float(tolerance),
           "auc_tolerance": float(auc_tolerance), "brier_baseline": float(b["brier"]),
           "brier_candidate": float(c["brier"]), "harmful": False}
    if "auc" in c.index:
        out.update(auc_baseline=float(b["auc"]), auc_candidate=float(c["auc"]))

    def refuse(reason: str, harmful: bool = False, **extra) -> dict:
        return {**out, **extra, "kept": baseline, "passed": False, "harmful": harmful,
                "reason": f"{candidate} refused: {reason}; kept {baseline} (real train rows, no balancing)"}

    if candidate == baseline:
        return {**out, "kept": baseline, "passed": True, "reason": "the baseline was configured: nothing to gate"}
    if c.get("quality_passed") is False:
        return refuse("its synthetic rows failed the quality gates", harmful=True)
    gate = Gate(ABLATION_GATE.name, ABLATION_GATE.metric, ABLATION_GATE.op, float(tolerance), ABLATION_GATE.action)
    if not gate.evaluate(delta).passed:
        return refuse(f"test Brier {c['brier']:.4f} is worse than the baseline's {b['brier']:.4f} by {delta:.4f} "
                      f"> tolerance {tolerance:g}", harmful=True)
    if c.get("augmentation_skipped") is True and not c.get("balance"):
        return {**out, "kept": baseline, "passed": True,
                "reason": f"{candidate}: augmentation skipped (enough real rows), identical to {baseline}"}
    ci = f", 90% CI [{b_ci[0]:+.4f}, {b_ci[1]:+.4f}]" if _finite(b_ci[1]) else ""
    if require == "ci" and not gate.evaluate(b_ci[1]).passed:
        return refuse(f"the upper end of the 90% interval of its Brier difference ({b_ci[1]:+.4f}) exceeds the "
                      f"tolerance {tolerance:g}")
    if require == "helps":
        criteria = {
            "brier_significantly_better": bool(_finite(b_ci[1]) and b_ci[1] < 0),
            "auc_not_significantly_worse": bool(_finite(a_ci[1]) and a_ci[1] >= 0),
            "auc_loss_within_tolerance": bool(_finite(d_auc) and d_auc >= -auc_tolerance),
        }
        out["criteria"] = criteria
        auc_txt = (f"AUC {d_auc:+.4f}" + (f" (90% CI [{a_ci[0]:+.4f}, {a_ci[1]:+.4f}])" if _finite(a_ci[1]) else ""))
        brier_txt = f"Brier {delta:+.4f}{ci}"
        if not criteria["brier_significantly_better"]:
            return refuse(f"it does not help on Brier: {brier_txt} — the interval does not lie below 0 ({auc_txt})")
        if not criteria["auc_not_significantly_worse"]:
            return refuse(f"its AUC is significantly worse: {auc_txt}, although {brier_txt}")
        if not criteria["auc_loss_within_tolerance"]:
            return refuse(f"it costs AUC: {auc_txt} is a loss above the AUC tolerance {auc_tolerance:g}, "
                          f"although {brier_txt}")
        return {**out, "kept": candidate, "passed": True,
                "reason": f"{candidate} kept: it helps on both Brier and AUC — {brier_txt} (significantly better), "
                          f"{auc_txt} (not significantly worse)"}
    verdict = "better than" if delta < 0 else "within tolerance of"
    if ci and b_ci[1] < 0:
        ci += ": significantly better"
    return {**out, "kept": candidate, "passed": True,
            "reason": f"{candidate} kept: test Brier {c['brier']:.4f} is {verdict} the baseline's {b['brier']:.4f} "
                      f"(delta {delta:+.4f}{ci}; tolerance {tolerance:g})"}


def ablation_markdown(table: pd.DataFrame, decision: Mapping | None = None, title: str = "Augmentation ablation") -> str:
    cols = [c for c in ("variant", "train_rows", "synthetic_rows", "quality_passed", "auc", "brier", "ece",
                        "delta_auc", "delta_auc_ci_low", "delta_auc_ci_high", "delta_brier", "delta_brier_ci_low",
                        "delta_brier_ci_high", "delta_ece") if c in table.columns]
    lines = [f"## {title}", "", f"Same model configuration, scored on the same {int(table['test_rows'].iloc[0])} "
             "real test rows (calibrated on the real validation rows).", "",
             table[cols].to_markdown(index=False, floatfmt=".4f"), ""]
    if decision:
        lines += [f"**Kept: {decision['kept']}** — {decision['reason']}", ""]
    return "\n".join(lines)
