"""The model card of a real registration (issue 12 item 6): a trained, calibrated and evaluated risk model is
registered in a real MLflow SQLite store; its card carries the right numbers, ``model_card.md`` exists on the
version's run and the version's description is the card."""
from __future__ import annotations

import numpy as np
import pytest

from riskml_assets import registry as R
from riskml_assets.core import evaluation, simulator, training
from riskml_assets.core import features as F
from riskml_assets.core import metrics as M
from riskml_assets.core import model_card as MC
from riskml_assets.core.cleaning import clean_examples
from riskml_assets.core.splits import split_examples

LABEL = F.LABEL


@pytest.fixture(scope="module")
def registration(tmp_path_factory):
    sim = simulator.simulate_tenant(simulator.TenantSpec("cardco", 8.0, 4), weeks=30)
    manifest = F.build_manifest()
    examples, _ = F.build_training_examples(sim.snapshots, sim.outcomes, sim.activities, manifest,
                                            partition_end="2026-11-23", window_weeks=52)
    clean, _, _ = clean_examples(examples, manifest)
    splits = split_examples(clean, method="stratified", seed=0)
    parts = {n: splits[splits["split"] == n].reset_index(drop=True) for n in ("train", "validation", "test")}
    art = training.train_xgb_classifier(parts["train"], parts["validation"], manifest,
                                        training.XGBParams(n_estimators=60, max_depth=3, n_threads=1))
    cal = evaluation.fit_risk_calibrator(training.predict_raw(art, parts["validation"]),
                                         parts["validation"][LABEL].to_numpy(int))
    p_raw = training.predict_raw(art, parts["test"])
    p_cal = evaluation.apply_calibrator(cal, p_raw)
    report = evaluation.evaluate_risk(parts["test"], p_raw, p_cal, threshold=0.5,
                                      train_base_rate=float(parts["train"][LABEL].mean()), importance={}, ci_boot=200)
    report["gates"], report["warnings"] = {"risk_evaluation_ece": True}, {"risk_evaluation_beats_crm_score": False}
    reg = R.ModelRegistry(f"sqlite:///{tmp_path_factory.mktemp('cardreg') / 'mlflow.db'}")
    out = R.register_risk_candidate(reg, "cardco", artifact=art, calibrator=cal, manifest=manifest,
                                    test=parts["test"], metrics={"auc": report["calibrated"]["auc"]},
                                    report_md="# test", gates_passed=report["gates"], n_boot=200,
                                    snapshots_history=sim.snapshots, activities=sim.activities)
    card = MC.build_model_card(
        tenant="cardco", week="2026-11-16", model_name=reg.model_name("cardco", "risk"), version=out["version"],
        data=MC.data_summary(splits, manifest), manifest=manifest, artifact=art, evaluation=report,
        baselines=MC.baseline_metrics(parts["test"], float(parts["train"][LABEL].mean()), n_boot=200),
        decision=out["decision"], promotion_gate={"gate": "registered_models_promotion", "action": "warn",
                                                  "passed": bool(out["decision"]["should_deploy"])})
    md = MC.model_card_markdown(card)
    run_id = reg.attach_model_card("cardco", "risk", out["version"], md)
    return {"reg": reg, "out": out, "card": card, "md": md, "run_id": run_id, "parts": parts, "report": report,
            "splits": splits, "art": art}


@pytest.mark.slow  # the fixture trains and registers a real model: ~50 s on 2 busy cores
def test_card_of_a_real_registration_has_the_right_numbers(registration):
    card, parts, report = registration["card"], registration["parts"], registration["report"]
    test, train = parts["test"], parts["train"]
    assert card["version"] == registration["out"]["version"] == "1"
    assert card["data"]["rows"] == {n: len(parts[n]) for n in ("train", "validation", "test")}
    assert card["data"]["opportunities"]["test"] == test["opportunity_id"].nunique()
    assert card["data"]["first_snapshot"] == str(registration["splits"]["snapshot_date"].min())[:10]
    y = test[LABEL].to_numpy(int)
    rate = float(train[LABEL].mean())
    assert card["metrics"]["base_rate"]["brier"] == pytest.approx(np.mean((y - rate) ** 2))
    assert card["metrics"]["crm_score"]["auc"] == pytest.approx(
        M.roc_auc(y, test["baseline_risk_score"].to_numpy(float).clip(0, 1)))
    assert card["metrics"]["model"]["auc"] == pytest.approx(report["calibrated"]["auc"])
    assert card["metrics"]["model"]["brier_ci"] == report["brier_ci"]
    assert [f["feature"] for f in card["features"]["used"]] == registration["art"]["features"]
    assert all(f["version"] == F.build_manifest()[f["feature"]]["version"] for f in card["features"]["used"])
    assert card["promotion"]["should_deploy"] is True and card["algorithm"] == "xgboost"  # first model: champion
    assert card["data"]["opportunities"]["test"] < MC.SMALL_TEST_OPPORTUNITIES
    assert any(x.startswith("Small test set") for x in card["limits"])


@pytest.mark.slow
def test_card_is_the_versions_mlflow_artifact_and_description(registration):
    reg, version, md = registration["reg"], registration["out"]["version"], registration["md"]
    mv = reg.client.get_model_version(reg.model_name("cardco", "risk"), version)
    assert mv.run_id == registration["run_id"]
    local = reg.client.download_artifacts(mv.run_id, "model_card.md", str(registration["reg"].tracking_uri
                                                                        .removeprefix("sqlite:///")[:-len("mlflow.db")]))
    with open(local) as fh:
        assert fh.read() == md
    assert mv.description == md and mv.description.startswith("# Model card: riskml.cardco.risk v1")
    assert f"| test | {len(registration['parts']['test'])} |" in mv.description


@pytest.mark.slow
def test_a_long_card_is_cut_in_the_description_but_whole_in_the_artifact(registration):
    reg, version = registration["reg"], registration["out"]["version"]
    long_md = registration["md"] + "\n".join(f"- limit number {i}" for i in range(600)) + "\n"
    assert len(long_md) > 5000
    reg.attach_model_card("cardco", "risk", version, long_md)
    mv = reg.client.get_model_version(reg.model_name("cardco", "risk"), version)
    assert len(mv.description) <= 5000 and mv.description.endswith("the whole card is the run's artifact "
                                                                    "model_card.md)\n")
    text = reg.client.download_artifacts(mv.run_id, "model_card.md")
    with open(text) as fh:
        assert fh.read() == long_md
    reg.attach_model_card("cardco", "risk", version, registration["md"])  # back to the real card
