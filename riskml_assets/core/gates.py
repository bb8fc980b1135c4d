"""Quality gates as data: a metric, an operator, a threshold and an action.

Defaults live here; an operator overrides any of them in a YAML file (``config/gates.yaml`` or the file
named by ``RISKML_GATES_FILE``) without a release, e.g.::

    risk_model_beats_base_rate:
      threshold: 0.02
    risk_snapshots_duplicate_keys:
      action: warn
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt, "==": operator.eq}
ACTIONS = ("fail", "warn")


@dataclass(frozen=True)
class Gate:
    name: str
    metric: str
    op: str
    threshold: float
    action: str = "fail"
    description: str = ""

    def evaluate(self, value) -> "GateResult":
        if self.op not in OPS:
            raise ValueError(f"gate {self.name}: unknown operator {self.op!r}")
        ok = value is not None and not (isinstance(value, float) and math.isnan(value)) and OPS[self.op](value, self.threshold)
        return GateResult(self, value, bool(ok))


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    value: object
    passed: bool

    @property
    def blocks(self) -> bool:
        return not self.passed and self.gate.action == "fail"

    def describe(self) -> str:
        v = f"{self.value:.4g}" if isinstance(self.value, (int, float)) and self.value is not None else repr(self.value)
        state = "passed" if self.passed else ("FAILED" if self.gate.action == "fail" else "warning")
        return f"{self.gate.name}: {self.gate.metric} = {v} (must be {self.gate.op} {self.gate.threshold:g}) -> {state}"


DEFAULT_GATES: tuple[Gate, ...] = (
    # inputs
    Gate("risk_snapshots_schema", "quarantined_share", "<=", 0.05, "fail", "share of snapshot rows rejected by the schema"),
    Gate("risk_snapshots_duplicate_keys", "duplicate_key_share", "<=", 0.01, "fail", "share of (opportunity, date) keys seen more than once"),
    Gate("risk_snapshots_future_dates", "future_rows", "<=", 0, "fail", "snapshot rows dated in the future"),
    Gate("risk_snapshots_not_empty", "rows", ">=", 1, "fail", "valid snapshot rows in the week"),
    Gate("opportunity_outcomes_schema", "quarantined_share", "<=", 0.05, "fail", "share of outcome rows rejected"),
    Gate("opportunity_outcomes_duplicate_keys", "duplicate_key_share", "<=", 0.01, "fail", "share of opportunities with two outcomes"),
    Gate("activity_events_schema", "quarantined_share", "<=", 0.05, "fail", "share of activity rows rejected"),
    Gate("recommendation_interactions_schema", "quarantined_share", "<=", 0.05, "fail",
         "share of recommendation-feedback rows rejected"),
    # one gate per ingestion asset: a file of the week that cannot be read at all (quarantined as unreadable_file)
    *(Gate(f"{a}_files_readable", "unreadable_files", "<=", 0, "fail",
           "files of the week that could not be read (recorded in the quarantine as unreadable_file; "
           "the readable files are ingested)")
      for a in ("risk_snapshots", "opportunity_outcomes", "activity_events", "recommendation_interactions")),
    # features
    Gate("feature_manifest_parity", "mismatched_features", "<=", 0, "fail", "pinned features whose version/hash differ from the registry"),
    Gate("training_examples_min_rows", "labelled_rows", ">=", 200, "fail", "labelled examples in the window"),
    Gate("training_examples_max_null_rate", "max_null_rate", "<=", 0.6, "fail", "highest null rate of an available feature"),
    Gate("training_examples_parity", "mismatched_features", "<=", 0, "fail", "features extracted with a version other than pinned"),
    # cleaning and splits
    Gate("clean_examples_drop_share", "drop_share", "<=", 0.10, "fail", "share of examples dropped by cleaning"),
    Gate("dataset_splits_disjoint", "opportunities_in_several_splits", "<=", 0, "fail", "opportunities present in two splits"),
    Gate("dataset_splits_min_rows", "min_split_rows", ">=", 50, "fail", "rows of the smallest split"),
    Gate("dataset_splits_min_class", "min_class_rows", ">=", 10, "fail", "rows of the rarest class in any split"),
    Gate("dataset_splits_walk_forward_order", "order_violations", "<=", 0, "fail", "walk-forward: test outcomes earlier than train outcomes"),
    Gate("balanced_train_ratio", "ratio_shortfall", "<=", 0.05, "fail", "target class ratio minus achieved ratio"),
    # model
    Gate("risk_model_beats_base_rate", "auc_validation_ci_low", ">=", 0.52, "fail",
         "lower end of the 90% opportunity-bootstrap interval of validation AUC (the base rate scores 0.5)"),
    Gate("risk_model_not_overfit", "auc_gap_train_validation", "<=", 0.10, "warn", "train AUC minus validation AUC"),
    Gate("risk_calibrator_ece", "ece_excess_validation_cv", "<=", 0.03, "fail",
         "ECE after calibration (out-of-fold on validation) beyond the noise floor of a perfectly calibrated model"),
    Gate("risk_evaluation_ece", "ece_excess", "<=", 0.03, "fail",
         "ECE of calibrated test predictions beyond the noise floor of a perfectly calibrated model"),
    Gate("risk_evaluation_beats_baselines", "brier_skill", ">=", 0.02, "fail", "1 - Brier(model)/Brier(base rate) on test"),
    Gate("risk_evaluation_beats_crm_score", "brier_skill_vs_crm", ">=", 0.0, "warn",
         "1 - Brier(model)/Brier(the snapshot's own CRM risk_score) on test; passes when the CRM sends no score"),
    # registry and scoring
    Gate("registered_models_promotion", "promoted", ">=", 1, "warn",
         "the new version became champion (gates passed, floors met, significantly better than the champion)"),
    Gate("risk_scores_drift", "max_psi", "<=", 0.25, "fail",
         "largest PSI of a model feature in the scored week vs the champion's training data"),
    Gate("risk_scores_drift_warn", "max_psi", "<=", 0.10, "warn", "early warning: PSI above 0.1"),
)


def default_gates() -> dict[str, Gate]:
    """Every gate of the product with its default: the ones above plus those the augmentation modules own."""
    from .ablation import ABLATION_GATE
    from .synthetic_quality import QUALITY_GATES

    return {g.name: g for g in (*DEFAULT_GATES, *QUALITY_GATES, ABLATION_GATE)}


def load_gates(path: str | Path | None = None) -> dict[str, Gate]:
    """Default gates, overridden field by field by the YAML file at ``path`` (if it exists)."""
    gates = default_gates()
    if path and Path(path).exists():
        import yaml

        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected a mapping of gate name -> fields")
        for name, fields in data.items():
            if name not in gates:
                raise ValueError(f"{path}: unknown gate {name!r}; known gates: {', '.join(sorted(gates))}")
            gates[name] = override_gate(gates[name], fields, where=f"{path}: ")
    return gates


def override_gate(gate: Gate, fields: Mapping, where: str = "") -> Gate:
    """``gate`` with some of its fields replaced (metric, op, threshold, action, description), validated."""
    unknown = set(fields) - {"metric", "op", "threshold", "action", "description"}
    if unknown:
        raise ValueError(f"{where}gate {gate.name}: unknown fields {sorted(unknown)}")
    g = replace(gate, **fields)
    if g.action not in ACTIONS or g.op not in OPS:
        raise ValueError(f"{where}gate {gate.name}: action must be one of {ACTIONS} and op one of {list(OPS)}")
    return replace(g, threshold=float(g.threshold))
