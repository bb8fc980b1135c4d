"""Gate overrides: one validated mechanism for the pipeline gates (YAML file) and the family gates."""
import pytest

from riskml_assets.core import families as FAM
from riskml_assets.core.gates import default_gates, load_gates


def test_yaml_override_changes_only_the_named_fields(tmp_path):
    f = tmp_path / "gates.yaml"
    f.write_text("risk_evaluation_ece:\n  threshold: 0.05\n  action: warn\n")
    gates, defaults = load_gates(f), default_gates()
    g = gates["risk_evaluation_ece"]
    assert (g.threshold, g.action, g.metric, g.op) == (0.05, "warn", defaults["risk_evaluation_ece"].metric, "<=")
    assert not g.evaluate(0.06).passed and not g.evaluate(0.06).blocks  # a warning now, not a block
    assert gates["risk_evaluation_beats_baselines"] == defaults["risk_evaluation_beats_baselines"]


@pytest.mark.parametrize("text, match", [
    ("no_such_gate:\n  threshold: 1\n", "unknown gate 'no_such_gate'"),
    ("risk_evaluation_ece:\n  treshold: 1\n", r"unknown fields \['treshold'\]"),
    ("risk_evaluation_ece:\n  action: explode\n", "action must be one of"),
])
def test_bad_overrides_name_the_file_the_gate_and_the_problem(tmp_path, text, match):
    f = tmp_path / "gates.yaml"
    f.write_text(text)
    with pytest.raises(ValueError, match=match) as e:
        load_gates(f)
    assert str(f) in str(e.value)


def test_family_gates_use_the_same_override_rules():
    g = FAM.family_gates("action_ranker", {"action_ranker_beats_popularity": {"threshold": 0.5},
                                           "risk_evaluation_ece": {"threshold": 9}})  # other gates ignored
    assert g["action_ranker_beats_popularity"].threshold == 0.5
    with pytest.raises(ValueError, match="unknown fields"):
        FAM.family_gates("action_ranker", {"action_ranker_beats_popularity": {"limit": 1}})
