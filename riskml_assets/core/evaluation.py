"""Evaluation of the risk family: metrics on the test split, baselines, errors and the markdown report."""
from __future__ import annotations

from .lazy import lazy_attr, lazy_module

np = lazy_module("numpy")
pd = lazy_module("pandas")

StratifiedKFold = lazy_attr("sklearn.model_selection", "StratifiedKFold")  # imported on first use

from . import metrics as M
from .calibration import calibrator_from_dict, fit_calibrator
from .features import LABEL

P_CLIP = 1e-3  # a calibrated risk is never exactly 0 or 1 (isotonic steps can reach both)
CI_LEVEL = 0.90  # the test metrics' opportunity-bootstrap interval
CI_BOOT = 1000


def metric_intervals(y, p, groups, *, level: float = CI_LEVEL, n_boot: int = CI_BOOT,
                          seed: int = 0) -> dict:
    """Opportunity-level bootstrap intervals of the test AUC and Brier (``metrics.grouped_bootstrap_cis``:
    whole opportunities are resampled, because the snapshots of one opportunity share its outcome).

    Returns ``{"auc_ci": [low, high], "brier_ci": [low, high], "ci_level", "ci_n_boot", "ci_groups"}``.
    """
    cis = M.grouped_bootstrap_cis(y, p, {"auc": M.roc_auc, "brier": M.brier}, groups, n_boot=n_boot,
                                  level=level, seed=seed)
    return {"auc_ci": list(cis["auc"]), "brier_ci": list(cis["brier"]), "ci_level": float(level),
            "ci_n_boot": int(n_boot), "ci_groups": int(pd.Series(np.asarray(groups)).nunique())}


def oof_calibrated(p_raw: np.ndarray, y: np.ndarray, method: str, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold calibrated predictions on the calibration rows (an honest in-sample ECE)."""
    p_raw, y = np.asarray(p_raw, float), np.asarray(y, int)
    folds = min(n_folds, int(y.sum()), int(len(y) - y.sum()))
    if folds < 2:
        return p_raw.copy()
    out = np.empty(len(y))
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(p_raw.reshape(-1, 1), y):
        cal, _ = fit_calibrator(p_raw[tr], y[tr], method=method, seed=seed)
        out[te] = cal.predict(p_raw[te])
    return np.clip(out, P_CLIP, 1 - P_CLIP)


def fit_risk_calibrator(p_raw_val: np.ndarray, y_val: np.ndarray, method: str = "auto",
                        threshold: float | None = None, seed: int = 0, groups=None) -> dict:
    """Fit the calibrator on validation rows; choose the operating threshold (max F1) on them.

    Returns a JSON-able dict: the calibrator, the selection info, the threshold and validation metrics
    (raw, calibrated in-sample and calibrated out-of-fold).
    """
    cal, info = fit_calibrator(p_raw_val, y_val, method=method, seed=seed)
    p_cal = np.clip(cal.predict(p_raw_val), P_CLIP, 1 - P_CLIP)
    p_oof = oof_calibrated(p_raw_val, y_val, info["method"], seed=seed)
    thr = float(threshold) if threshold is not None else float(M.best_f1_threshold(y_val, p_cal))
    return {
        "calibrator": cal.to_dict(),
        "method": info["method"],
        "selection": info,
        "threshold": thr,
        "validation": {
            "brier_raw": M.brier(y_val, p_raw_val), "ece_raw": M.ece(y_val, p_raw_val),
            "brier_calibrated": M.brier(y_val, p_cal), "ece_calibrated": M.ece(y_val, p_cal),
            "brier_cv": M.brier(y_val, p_oof), "ece_cv": M.ece(y_val, p_oof),
            "ece_noise_floor": M.ece_noise_floor(p_oof, seed=seed, groups=groups), "rows": int(len(y_val)),
        },
    }


def apply_calibrator(calibrator: dict, p_raw: np.ndarray) -> np.ndarray:
    p = calibrator_from_dict(calibrator["calibrator"]).predict(np.asarray(p_raw, float))
    return np.clip(p, P_CLIP, 1 - P_CLIP)


def evaluate_risk(test: pd.DataFrame, p_raw: np.ndarray, p_cal: np.ndarray, *, threshold: float,
                  train_base_rate: float, importance: dict[str, float], n_errors: int = 10,
                  ci_level: float = CI_LEVEL, ci_boot: int = CI_BOOT, seed: int = 0) -> dict:
    """Metrics of the calibrated model on the test rows, next to two baselines and the raw model.

    ``auc_ci`` / ``brier_ci`` (top level, also inside ``calibrated``): the ``ci_level`` opportunity-bootstrap
    interval of the calibrated model's test AUC and Brier (seeded by ``seed``; see ``metric_intervals``).
    """
    y = test[LABEL].to_numpy(dtype=int)
    report = {"rows": int(len(y)), "lost_rate": float(y.mean()), "threshold": float(threshold)}
    report["calibrated"] = M.classification_report(y, p_cal, threshold=threshold)
    report["opportunities"] = int(test["opportunity_id"].nunique())
    cis = metric_intervals(y, p_cal, test["opportunity_id"].to_numpy(), level=ci_level, n_boot=ci_boot,
                                seed=seed)
    report.update(cis)
    report["calibrated"].update(auc_ci=cis["auc_ci"], brier_ci=cis["brier_ci"])
    report["calibrated"]["ece_noise_floor"] = M.ece_noise_floor(p_cal, groups=test["opportunity_id"].to_numpy())
    report["calibrated"]["ece_excess"] = max(0.0, report["calibrated"]["ece"] - report["calibrated"]["ece_noise_floor"])
    report["uncalibrated"] = M.classification_report(y, p_raw, threshold=threshold)
    base = np.full(len(y), float(np.clip(train_base_rate, 1e-6, 1 - 1e-6)))
    report["baseline_base_rate"] = M.classification_report(y, base, threshold=threshold)
    if "baseline_risk_score" in test.columns and test["baseline_risk_score"].notna().all():
        rs = test["baseline_risk_score"].to_numpy(dtype=float).clip(0, 1)
        report["baseline_risk_score"] = M.classification_report(y, rs, threshold=threshold)
    else:
        report["baseline_risk_score"] = None
    b_model, b_base = report["calibrated"]["brier"], report["baseline_base_rate"]["brier"]
    report["brier_skill"] = float(1 - b_model / b_base) if b_base > 0 else float("nan")
    b_crm = (report["baseline_risk_score"] or {}).get("brier")
    report["brier_skill_vs_crm"] = float(1 - b_model / b_crm) if b_crm else None  # None: no CRM score to beat
    report["reliability"] = M.reliability_table(y, p_cal).to_dict(orient="records")
    err = test[["opportunity_id", "snapshot_date"]].copy()
    err["actual_lost"] = y
    err["p_lost"] = p_cal
    err["abs_error"] = np.abs(p_cal - y)
    report["largest_errors"] = err.sort_values("abs_error", ascending=False).head(n_errors).assign(
        snapshot_date=lambda d: d["snapshot_date"].astype(str)).to_dict(orient="records")
    report["feature_importance"] = importance
    return report


def _ci_text(ci) -> str:
    lo, hi = (float(x) for x in ci)
    return "n/a" if lo != lo or hi != hi else f"[{lo:.4f}, {hi:.4f}]"


def ci_sentence(report: dict) -> str:
    """The markdown sentence with the test AUC and Brier intervals."""
    return (f"{100 * report.get('ci_level', CI_LEVEL):g}% opportunity-bootstrap intervals on test "
            f"({report.get('ci_n_boot', CI_BOOT)} resamples of the {report.get('ci_groups', '?')} test "
            f"opportunities, seeded): AUC {_ci_text(report['auc_ci'])} · Brier {_ci_text(report['brier_ci'])}.")


METRIC_ROWS = ("auc", "log_loss", "brier", "ece", "precision", "recall", "f1", "mse", "mae", "rmse", "r2")


def comparison_table(report: dict) -> pd.DataFrame:
    cols = {"calibrated model": report["calibrated"], "uncalibrated model": report["uncalibrated"],
            "baseline: base rate": report["baseline_base_rate"]}
    if report.get("baseline_risk_score"):
        cols["baseline: CRM risk_score"] = report["baseline_risk_score"]
    return pd.DataFrame({name: [vals[m] for m in METRIC_ROWS] for name, vals in cols.items()}, index=list(METRIC_ROWS))


def report_markdown(report: dict, title: str, plots: dict[str, str] | None = None) -> str:
    """The evaluation report as markdown; ``plots`` maps a heading to a markdown image."""
    c = report["calibrated"]
    lines = [
        f"# {title}",
        "",
        f"Test split: **{report['rows']}** examples"
        + (f" of {report['opportunities']} opportunities" if report.get("opportunities") is not None else "")
        + f", lost rate {report['lost_rate']:.3f}; operating threshold "
        f"{report['threshold']:.3f} (max F1 on validation).",
        "",
        f"**AUC {c['auc']:.4f} · Brier {c['brier']:.4f} · ECE {c['ece']:.4f} · log-loss {c['log_loss']:.4f}** — "
        f"Brier skill vs base rate {report['brier_skill']:.3f}"
        + (f", vs the CRM's own risk_score {report['brier_skill_vs_crm']:.3f}." if report.get("brier_skill_vs_crm")
           is not None else "."),
        "",
    ]
    if report.get("auc_ci") is not None:
        lines += [ci_sentence(report), ""]
    if report.get("kept_variant"):
        why = str(report.get("kept_variant_reason") or "")
        lines += [f"**Kept variant: {report['kept_variant']}**" + (f" — {why.rstrip('.')}." if why else "."), ""]
    lines += [
        "## Metrics against baselines",
        comparison_table(report).to_markdown(floatfmt=".4f"),
        "",
    ]
    for heading, img in (plots or {}).items():
        lines += [f"## {heading}", img, ""]
    imp = pd.DataFrame(list(report["feature_importance"].items())[:15], columns=["feature", "share of gain"])
    lines += ["## Feature importance (share of total gain)", imp.to_markdown(index=False, floatfmt=".3f"), ""]
    lines += ["## Largest errors", pd.DataFrame(report["largest_errors"]).to_markdown(index=False, floatfmt=".3f"), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# champion candidates: the tenant's model, the CRM's own risk_score (calibrated), a pooled model
# --------------------------------------------------------------------------------------------

CRM_SCORE_FEATURE = "heuristic_risk_score"  # the pinned feature that carries the CRM's risk_score column
CRM_SCORE_ALGORITHM = "crm_score"
#: every candidate source, simplest first (the order the choice rule walks; see core.promotion.choose_candidate)
CANDIDATE_SOURCES = ("crm_score", "tenant_model", "pooled")


class CandidateUnavailable(ValueError):
    """A champion candidate cannot be built for this tenant-week (the reason says why)."""


def crm_score_raw(artifact: dict, df: pd.DataFrame) -> np.ndarray:
    """Uncalibrated P(lost) of a ``crm_score`` artifact: the CRM's own risk score (its pinned feature column),
    clipped to [0, 1]; a missing score gets the artifact's ``fill_value`` (the validation rows' median)."""
    col = artifact["features"][0]
    if col not in df.columns:
        raise KeyError(f"input lacks model features: [{col!r}] (the CRM risk_score feature of a crm_score model)")
    s = pd.to_numeric(df[col], errors="coerce").astype("float64").to_numpy()
    s = np.where(np.isfinite(s), s, float(artifact.get("fill_value", 0.5)))
    return np.clip(s, 0.0, 1.0)


def crm_score_artifact(valid: pd.DataFrame, manifest: dict, *, feature: str = CRM_SCORE_FEATURE,
                       min_coverage: float = 0.5, **extra) -> dict:
    """The CRM's own ``risk_score`` as a model artifact (algorithm ``crm_score``): no fitted parameters, one
    pinned feature. It is served like any champion (``core.training.predict_raw`` dispatches on the
    algorithm; the registered pyfunc reads the feature column of the feature rows).

    Raises CandidateUnavailable when the manifest does not pin the feature (the tenant's CRM sends no
    risk_score) or fewer than ``min_coverage`` of the validation rows carry a score.
    """
    if feature not in manifest:
        raise CandidateUnavailable(f"the feature manifest does not pin {feature!r}: the tenant's snapshots carry "
                                   "no CRM risk_score")
    if feature not in valid.columns or len(valid) == 0:
        raise CandidateUnavailable(f"the validation rows have no {feature!r} column or no rows")
    s = pd.to_numeric(valid[feature], errors="coerce")
    coverage = float(s.notna().mean())
    if coverage < min_coverage:
        raise CandidateUnavailable(f"only {coverage:.0%} of the validation rows carry a CRM risk_score "
                                   f"(< {min_coverage:.0%})")
    fill = float(s.median())
    return {
        "family": "risk", "algorithm": CRM_SCORE_ALGORITHM, "features": [feature],
        "feature_kinds": {feature: "numeric"}, "categories": {}, "manifest": {feature: manifest[feature]},
        "params": {"fill_value": fill, "seed": 0}, "fill_value": fill, "best_iteration": None,
        "importance": {feature: 1.0}, "train_rows": 0, "score_coverage_validation": coverage,
        "description": "the CRM's own risk_score, calibrated on the validation rows", **extra,
    }


def crm_score_candidate(valid: pd.DataFrame, manifest: dict, *, method: str = "auto", seed: int = 0,
                        threshold: float | None = None, **extra) -> dict:
    """The calibrated CRM score: ``{"model": crm_score artifact, "calibrator": fit_risk_calibrator on the
    validation rows' score (Platt/isotonic chosen by cross-validation)}``; raises CandidateUnavailable."""
    art = crm_score_artifact(valid, manifest, **extra)
    y = valid[LABEL].to_numpy(int)
    cal = fit_risk_calibrator(crm_score_raw(art, valid), y, method=method, threshold=threshold, seed=seed,
                              groups=valid["opportunity_id"].to_numpy())
    art["metrics"] = {"brier_validation_raw": M.brier(y, crm_score_raw(art, valid)),
                      "auc_validation": M.roc_auc(y, crm_score_raw(art, valid))}
    return {"model": art, "calibrator": cal}


def candidate_metrics(y, p, groups, *, level: float = CI_LEVEL, n_boot: int = CI_BOOT, seed: int = 0) -> dict:
    """AUC, Brier, ECE and log-loss of calibrated predictions with their ``level`` opportunity-bootstrap
    intervals (the same resamples for every metric)."""
    y, p = np.asarray(y, int), np.asarray(p, float)
    fns = {"auc": M.roc_auc, "brier": M.brier, "ece": M.ece}
    cis = M.grouped_bootstrap_cis(y, p, fns, groups, n_boot=n_boot, level=level, seed=seed)
    out = {name: float(fn(y, p)) for name, fn in fns.items()}
    out["log_loss"] = float(M.log_loss(y, p))
    for name in fns:
        out[f"{name}_ci"] = [float(x) for x in cis[name]]
    out["ci_level"] = float(level)
    return out


def candidates_table(candidates: dict[str, dict], chosen: str | None = None) -> pd.DataFrame:
    """One row per candidate: Brier/AUC/ECE with their intervals (``candidates[name]["test"]`` from
    :func:`candidate_metrics`), or why it was not available."""
    rows = []
    for name, c in candidates.items():
        t = c.get("test") or {}
        fmt = (lambda k: f"{t[k]:.4f} [{t[k + '_ci'][0]:.4f}, {t[k + '_ci'][1]:.4f}]") if t else (lambda k: "-")
        rows.append({"candidate": name + (" (champion)" if name == chosen else ""),
                     "algorithm": (c.get("model") or {}).get("algorithm", "-") if c.get("available") else "-",
                     "Brier": fmt("brier"), "AUC": fmt("auc"), "ECE": fmt("ece"),
                     "status": "available" if c.get("available") else f"unavailable: {c.get('reason', '')}"})
    return pd.DataFrame(rows)


def candidates_markdown(candidates: dict[str, dict], choice: dict) -> str:
    """The report section: the candidates table and the choice (rule, steps, reason)."""
    level = next((c["test"]["ci_level"] for c in candidates.values() if c.get("test")), CI_LEVEL)
    lines = ["## Champion candidates (same test opportunities)", "",
             f"Metrics on the test split with {100 * level:g}% opportunity-bootstrap intervals.", "",
             candidates_table(candidates, choice.get("chosen")).to_markdown(index=False), "",
             f"**Champion source: {choice.get('chosen')}** — {choice.get('reason', '')}", "",
             f"Rule ({choice.get('chosen_on', 'test')}): {choice.get('rule', '')}", ""]
    steps = choice.get("steps") or []
    if steps:
        lines += ["| candidate | against | Brier delta | CI | p | significant |", "|---|---|---|---|---|---|"]
        lines += [f"| {s['candidate']} | {s['against']} | {s['delta']:.4f} | [{s['ci_low']:.4f}, {s['ci_high']:.4f}] "
                  f"| {s['p_value']:.3g} | {s['significant']} |" for s in steps]
        lines.append("")
    return "\n".join(lines)


def pooled_raw(artifact: dict, df: pd.DataFrame) -> np.ndarray:
    """Uncalibrated P(lost) of a pooled model served for its target tenant (see :func:`pooled_candidate`):
    the tenant feature is set to the target tenant, then the pooled booster predicts on its own feature list."""
    from .training import predict_raw

    tenant_feature = artifact.get("tenant_feature", "tenant")
    rows = df if tenant_feature in df.columns else df.assign(**{tenant_feature: artifact["target_tenant"]})
    return predict_raw({**artifact, "features": list(artifact["pooled_features"]), "pooled_features": None}, rows)


def pooled_candidate(result: dict | None, tenant: str) -> dict:
    """The ``pooled_risk_model`` result as a champion candidate of ``tenant``: ``{"available", "reason", "model",
    "calibrator"}``. The servable artifact lists the tenant's own features as ``features`` (what feature rows and
    the registered signature carry) and keeps the booster's list, tenant feature included, as ``pooled_features``
    (``core.training.predict_raw`` dispatches on it to :func:`pooled_raw`)."""
    if not result:
        return {"available": False, "reason": "no pooled_risk_model result for this partition"}
    if not result.get("available"):
        return {"available": False, "reason": str(result.get("reason") or "pooled model unavailable")}
    art = dict(result["model"])
    target = art.get("target_tenant")
    if target != tenant:
        return {"available": False, "reason": f"the pooled model was trained for tenant {target!r}, not {tenant!r}"}
    tenant_feature = art.get("tenant_feature", "tenant")
    art["pooled_features"] = list(art["features"])
    art["features"] = [f for f in art["features"] if f != tenant_feature]
    art["importance"] = {f: v for f, v in (art.get("importance") or {}).items()}
    return {"available": True, "reason": str(result.get("reason") or ""), "model": art,
            "calibrator": result["calibrator"], "tenants": list(result.get("tenants") or [])}
