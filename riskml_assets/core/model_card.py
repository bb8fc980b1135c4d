"""A model card per registered risk version: what it was trained on, how good it is against the baselines, which
gates it passed, why it was (not) promoted and what it cannot be trusted for.

Pure: :func:`build_model_card` takes dicts (the evaluation report, the artifact, the manifest, the promotion
decision, the data summary) and returns the card's facts as a dict; :func:`model_card_markdown` renders them.
The two helpers that read frames (:func:`data_summary` of the splits, :func:`baseline_metrics` on the test
rows) return plain dicts too. The registry attaches the markdown to the MLflow version (``model_card.md`` on the
version's run and the version's description); the ``registered_models`` asset shows it in the UI.

Nothing here imports dagster.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from . import metrics as M
from .features import LABEL

CI_LEVEL = 0.90
SMALL_TEST_OPPORTUNITIES = 200  # fewer test opportunities than this: the card says the test set is small
WIDE_AUC_CI, WIDE_BRIER_CI = 0.10, 0.04  # interval widths above which the card calls the intervals wide
TARGET_TRAIN_ROWS = 5000  # the augmentation target: fewer real train rows is a small tenant


def _num(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def data_summary(splits: pd.DataFrame, manifest: Mapping | None = None, window_weeks: int | None = None) -> dict:
    """Rows and opportunities per split (real rows; synthetic rows counted apart), the data window (first and
    last snapshot date, the number of distinct snapshot weeks) of a ``dataset_splits`` frame, and the features of
    ``manifest`` the frame has no usable value of (``unavailable_features``: left out upstream, never filled)."""
    df = splits
    synthetic = (df["is_synthetic"].fillna(False).astype(bool) if "is_synthetic" in df.columns
                 else pd.Series(False, index=df.index))
    real = df[~synthetic]
    out: dict[str, Any] = {"rows": {}, "opportunities": {}, "lost_rate": {}, "synthetic_rows": int(synthetic.sum())}
    for name in ("train", "validation", "test"):
        part = real[real["split"] == name]
        out["rows"][name] = int(len(part))
        out["opportunities"][name] = int(part["opportunity_id"].nunique()) if len(part) else 0
        out["lost_rate"][name] = float(part[LABEL].mean()) if len(part) and LABEL in part.columns else None
    if "snapshot_date" in real.columns and len(real):
        ts = pd.to_datetime(real["snapshot_date"])
        out["first_snapshot"] = ts.min().date().isoformat()
        out["last_snapshot"] = ts.max().date().isoformat()
        out["snapshot_weeks"] = int(ts.dt.to_period("W-SUN").nunique())
    else:
        out["first_snapshot"] = out["last_snapshot"] = None
        out["snapshot_weeks"] = 0
    out["window_weeks"] = window_weeks
    out["unavailable_features"] = sorted(c for c in (manifest or {})
                                         if c not in real.columns or not real[c].notna().any())
    return out


def baseline_metrics(test: pd.DataFrame, base_rate: float, *, level: float = CI_LEVEL, n_boot: int = 1000,
                     seed: int = 0) -> dict:
    """The baselines on the real test rows with ``level`` opportunity-bootstrap intervals: the base rate (a
    constant P(lost) = ``base_rate``) and the CRM's own ``baseline_risk_score`` (when every test row has one).

    Returns ``{"base_rate": {"value", "brier", "brier_ci", "auc", "auc_ci"}, "crm_score": {...} | None}``."""
    if "is_synthetic" in test.columns:
        test = test[~test["is_synthetic"].fillna(False).astype(bool)]
    y = test[LABEL].to_numpy(int)
    groups = test["opportunity_id"].to_numpy()
    out: dict[str, Any] = {"level": float(level)}

    def one(p, auc: bool = True):
        fns = {"auc": M.roc_auc, "brier": M.brier} if auc else {"brier": M.brier}
        cis = M.grouped_bootstrap_cis(y, p, fns, groups, n_boot=n_boot, level=level, seed=seed)
        return {"auc": float(M.roc_auc(y, p)), "brier": float(M.brier(y, p)),
                "auc_ci": [float(x) for x in cis["auc"]] if auc else None,
                "brier_ci": [float(x) for x in cis["brier"]]}

    rate = float(np.clip(base_rate, 1e-6, 1 - 1e-6))
    # a constant ranks nothing: its AUC is 0.5 on every resample, so only its Brier gets an interval
    out["base_rate"] = {"value": rate, **one(np.full(len(y), rate), auc=False)} if len(y) else None
    if len(y) and "baseline_risk_score" in test.columns and test["baseline_risk_score"].notna().all():
        out["crm_score"] = one(test["baseline_risk_score"].to_numpy(float).clip(0, 1))
    else:
        out["crm_score"] = None
    return out


def _algorithm(artifact: Mapping) -> str:
    if artifact.get("algorithm"):
        return str(artifact["algorithm"])
    return "xgboost" if artifact.get("booster_json") else "unknown"


def _features(manifest: Mapping, artifact: Mapping) -> list[dict]:
    rows = []
    for name in list(artifact.get("features") or []):
        pin = manifest.get(name) or {}
        rows.append({"feature": name, "version": pin.get("version"), "kind": pin.get("kind") or
                     (artifact.get("feature_kinds") or {}).get(name)})
    return rows


def _width(ci) -> float | None:
    if not ci or len(ci) != 2 or _num(ci[0]) is None or _num(ci[1]) is None:
        return None
    return float(ci[1]) - float(ci[0])


def known_limits(card: Mapping) -> list[str]:
    """The card's warnings, derived from its own facts (each a sentence)."""
    out = []
    data, model, ev = card["data"], card["metrics"]["model"], card["evaluation"]
    n_test = data["opportunities"].get("test", 0)
    if n_test < SMALL_TEST_OPPORTUNITIES:
        out.append(f"Small test set: {data['rows'].get('test', 0)} rows of {n_test} opportunities "
                   f"(< {SMALL_TEST_OPPORTUNITIES}); differences between models of a few thousandths of Brier are "
                   "not detectable.")
    wa, wb = _width(model.get("auc_ci")), _width(model.get("brier_ci"))
    if (wa is not None and wa > WIDE_AUC_CI) or (wb is not None and wb > WIDE_BRIER_CI):
        out.append(f"Wide intervals: the {100 * card['metrics']['level']:g}% interval of the test AUC spans "
                   f"{wa:.3f} and of the Brier {wb:.3f} (limits {WIDE_AUC_CI} and {WIDE_BRIER_CI}).")
    if data["rows"].get("train", 0) < TARGET_TRAIN_ROWS:
        out.append(f"Few real train rows: {data['rows'].get('train', 0)} (< {TARGET_TRAIN_ROWS})"
                   + (f"; {data['synthetic_rows']} synthetic rows were added to the train split."
                      if data.get("synthetic_rows") else "."))
    if card["features"]["unavailable"]:
        out.append(f"Unavailable features (no usable source data for this tenant, left out rather than filled): "
                   f"{', '.join(card['features']['unavailable'])}.")
    crm = card["metrics"].get("crm_score")
    if crm and _num(model.get("brier")) is not None and _num(crm.get("brier")) is not None:
        if model["brier"] >= crm["brier"]:
            out.append(f"The CRM's own risk_score has a Brier of {crm['brier']:.4f}, not worse than this model's "
                       f"{model['brier']:.4f} on the same test rows.")
        elif model.get("brier_ci") and crm.get("brier_ci") and model["brier_ci"][1] >= crm["brier_ci"][0]:
            out.append("The model's and the CRM score's Brier intervals overlap: the model is not clearly better "
                       "than the CRM's own risk_score on this test set.")
    if ev.get("kept_variant") not in (None, "as trained"):
        out.append(f"Registered variant: {ev['kept_variant']} ({ev.get('kept_variant_reason') or 'see the report'}).")
    warned = [g["gate"] for g in card["gates"] if g["result"] == "warn"]
    if warned:
        out.append(f"Warning gates not passed: {', '.join(warned)}.")
    failed = [g["gate"] for g in card["gates"] if g["result"] == "FAIL"]
    if failed:
        out.append(f"Blocking gates failed: {', '.join(failed)} — this version cannot be promoted.")
    if card["source"] not in (None, "tenant_model"):
        out.append(f"Champion source {card['source']!r}: not the model learnt from this tenant's rows alone"
                   + (" (the CRM's own risk_score, calibrated)." if card["source"] == "crm_score" else "."))
    return out


def build_model_card(*, tenant: str, week: str, family: str = "risk", model_name: str | None = None,
                     version: str | int | None = None, data: Mapping, manifest: Mapping, artifact: Mapping,
                     evaluation: Mapping, baselines: Mapping, decision: Mapping | None = None,
                     gates: Sequence[Mapping] | None = None, promotion_gate: Mapping | None = None,
                     run_id: str | None = None) -> dict:
    """The card's facts as a dict (see :func:`model_card_markdown`).

    ``data``: :func:`data_summary`; ``manifest``: the feature manifest (``{name: {version, kind, ...}}``);
    ``artifact``: the registered model artifact (``features``, ``algorithm``, ...); ``evaluation``: the
    ``risk_evaluation`` report (``calibrated`` with ``auc_ci``/``brier_ci``, ``gates``, ``warnings``,
    ``kept_variant``, and when present ``choice``/``candidates`` of the champion candidates); ``baselines``:
    :func:`baseline_metrics`; ``decision``: the promotion decision of the registry; ``gates``: every gate result
    of the training run (``{"gate", "asset", "action", "result": pass|FAIL|warn}``; default: the evaluation's own
    gates and warnings); ``promotion_gate``: ``{"gate", "passed", "action"}`` of the registration."""
    cal = dict(evaluation.get("calibrated") or {})
    level = _num(evaluation.get("ci_level")) or _num(baselines.get("level")) or CI_LEVEL
    model = {k: _num(cal.get(k)) for k in ("auc", "brier", "ece", "log_loss")}
    model["auc_ci"] = list(evaluation.get("auc_ci") or cal.get("auc_ci") or []) or None
    model["brier_ci"] = list(evaluation.get("brier_ci") or cal.get("brier_ci") or []) or None
    given = bool(gates)
    gates = [dict(g) for g in gates] if given else []
    for name, ok in ({} if given else (evaluation.get("gates") or {})).items():
        gates.append({"gate": name, "action": "fail", "result": "pass" if ok else "FAIL"})
    for name, ok in ({} if given else (evaluation.get("warnings") or {})).items():
        gates.append({"gate": name, "action": "warn", "result": "pass" if ok else "warn"})
    if promotion_gate is not None:
        gates.append({"asset": promotion_gate.get("asset"), "gate": promotion_gate["gate"],
                      "action": promotion_gate.get("action", "warn"),
                      "result": "pass" if promotion_gate["passed"] else
                      ("FAIL" if promotion_gate.get("action") == "fail" else "warn")})
    choice = evaluation.get("choice") or {}
    source = (decision or {}).get("champion_source") or choice.get("chosen") or artifact.get("source")
    features = _features(manifest, artifact)
    unavailable = list(data.get("unavailable_features") or [])
    d = dict(decision or {})
    card = {
        "tenant": tenant, "week": week, "family": family, "model_name": model_name,
        "version": None if version is None else str(version), "run_id": run_id,
        "algorithm": _algorithm(artifact), "source": source,
        "data": dict(data),
        "features": {"used": features, "unavailable": unavailable},
        "metrics": {"level": level, "model": model, "base_rate": baselines.get("base_rate"),
                    "crm_score": baselines.get("crm_score")},
        "gates": gates,
        "promotion": {"should_deploy": bool(d.get("should_deploy")) if d else None, "reason": d.get("reason"),
                      "p_value": _num(d.get("p_value")), "champion_before": d.get("champion_version"),
                      "first_model": d.get("first_model")},
        "evaluation": {"kept_variant": evaluation.get("kept_variant"),
                       "kept_variant_reason": evaluation.get("kept_variant_reason"),
                       "calibration": (artifact.get("calibration") or None)},
        "selection": _selection(artifact),
    }
    card["limits"] = known_limits(card)
    return card


def _selection(artifact: Mapping) -> dict | None:
    sel = artifact.get("selection")
    if not isinstance(sel, Mapping) or not sel:
        return None
    return {"best_candidate": sel.get("best_candidate"), "cv_mean": _num(sel.get("cv_mean")),
            "cv_std": _num(sel.get("cv_std")), "trials": len(sel.get("trials") or [])}


def _f(v, spec: str = ".4f") -> str:
    x = _num(v)
    return "-" if x is None else format(x, spec)


def _ci(ci: Sequence | None) -> str:
    if not ci or len(ci) != 2 or _num(ci[0]) is None:
        return "-"
    return f"{float(ci[0]):.4f}–{float(ci[1]):.4f}"


def model_card_markdown(card: Mapping) -> str:
    """The card as markdown (MLflow version description, ``model_card.md``, the asset's metadata)."""
    data, met = card["data"], card["metrics"]
    title = f"{card['model_name'] or card['family']}" + (f" v{card['version']}" if card.get("version") else "")
    lines = [f"# Model card: {title}", "",
             f"Tenant **{card['tenant']}**, week **{card['week']}**, family `{card['family']}`; algorithm "
             f"**{card['algorithm']}**" + (f", champion source **{card['source']}**" if card.get("source") else "")
             + (f"; training run `{card['run_id']}`" if card.get("run_id") else "") + ".", ""]
    sel = card.get("selection")
    if sel:
        lines += [f"Chosen by selection: {sel['best_candidate']} (CV {_f(sel['cv_mean'])} ± {_f(sel['cv_std'])}, "
                  f"{sel['trials']} trials).", ""]
    lines += ["## Data", "",
              f"Snapshots from {data.get('first_snapshot') or '-'} to {data.get('last_snapshot') or '-'} "
              f"({data.get('snapshot_weeks', 0)} weeks"
              + (f" of a {data['window_weeks']}-week window" if data.get("window_weeks") else "") + ").", "",
              "| split | rows | opportunities | lost rate |", "|---|---:|---:|---:|"]
    for s in ("train", "validation", "test"):
        lines.append(f"| {s} | {data['rows'].get(s, 0)} | {data['opportunities'].get(s, 0)} | "
                     f"{_f(data['lost_rate'].get(s), '.3f')} |")
    if data.get("synthetic_rows"):
        lines.append(f"| train (synthetic, added) | {data['synthetic_rows']} | - | - |")
    lines += ["", f"## Metrics on the test split ({100 * met['level']:g}% opportunity-bootstrap intervals)", "",
              "| | AUC | AUC interval | Brier | Brier interval | ECE |", "|---|---:|---|---:|---|---:|"]
    m = met["model"]
    lines.append(f"| this model (calibrated) | {_f(m.get('auc'))} | {_ci(m.get('auc_ci'))} | {_f(m.get('brier'))} | "
                 f"{_ci(m.get('brier_ci'))} | {_f(m.get('ece'))} |")
    b = met.get("base_rate")
    if b:
        lines.append(f"| baseline: base rate ({b['value']:.3f}) | {_f(b.get('auc'))} | - | {_f(b.get('brier'))} | "
                     f"{_ci(b.get('brier_ci'))} | - |")
    c = met.get("crm_score")
    if c:
        lines.append(f"| baseline: CRM risk_score | {_f(c.get('auc'))} | {_ci(c.get('auc_ci'))} | {_f(c.get('brier'))} | "
                     f"{_ci(c.get('brier_ci'))} | - |")
    else:
        lines.append("| baseline: CRM risk_score | - | - | - | - | - (not sent for every test row) |")
    lines += ["", f"## Features ({len(card['features']['used'])} used, pinned versions)", "",
              ", ".join(f"`{r['feature']}` v{r['version']}" for r in card["features"]["used"]) or "-", ""]
    if card["features"]["unavailable"]:
        lines += [f"Unavailable: {', '.join(card['features']['unavailable'])}.", ""]
    n_pass = sum(1 for g in card["gates"] if g["result"] == "pass")
    lines += [f"## Gates ({n_pass}/{len(card['gates'])} passed)", "", "| asset | gate | action | result |",
              "|---|---|---|---|"]
    lines += [f"| {g.get('asset') or '-'} | {g['gate']} | {g['action']} | {g['result']} |" for g in card["gates"]
              ] or ["| - | - | - | - |"]
    p = card["promotion"]
    lines += ["", "## Promotion", ""]
    if p["should_deploy"] is None:
        lines.append("No promotion decision recorded.")
    else:
        lines.append(f"**{'Promoted to champion' if p['should_deploy'] else 'Not promoted'}**"
                     + (f" (champion before: v{p['champion_before']})" if p.get("champion_before") else "")
                     + f": {p.get('reason') or '-'}" + (f" (p = {p['p_value']:.3g})" if p.get("p_value") is not None
                                                       else ""))
    lines += ["", "## Known limits", ""]
    lines += [f"- {x}" for x in card["limits"]] or ["- none found by the card's rules"]
    return "\n".join(lines) + "\n"
