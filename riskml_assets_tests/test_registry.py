"""The MLflow model registry wrapper against a real MLflow SQLite store: registration with checksums,
champion/challenger promotion, interrupted runs, rollback, reruns, and scoring with the registered champion.

Every test uses its own tenant in one shared store (creating the MLflow tables takes a few seconds once).
"""
from __future__ import annotations

import dataclasses
import json
import pickle
import sqlite3
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import polars as pl
import pytest
from pandas.testing import assert_frame_equal

from riskml_assets import registry as R
from riskml_assets.core import scoring, training
from riskml_assets.core import features as F
from riskml_assets.core.contract import ContractError
from riskml_assets_tests.core.test_promotion import risk_models

FLOORS = {"min_auc": 0.5}


@pytest.fixture(scope="module")
def models():
    return risk_models()


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    return R.ModelRegistry(f"sqlite:///{root / 'mlflow.db'}")


class Killed(RuntimeError):
    pass


def _kill(version, decision):
    raise Killed(f"run killed after registering v{version}")


def _candidate(reg, tenant, models, which, *, gates_passed=True, before_promote=None, n_boot=500):
    m = models[which]
    return R.register_risk_candidate(
        reg, tenant, artifact=m["artifact"], calibrator=m["calibrator"], manifest=m["manifest"],
        test=models["parts"]["test"], metrics={"test_brier": 0.2, "evaluation": {"auc": 0.7}},
        report_md=f"# {which} model", gates_passed=gates_passed, floors=FLOORS,
        snapshots_history=models["sim"].snapshots, activities=models["sim"].activities,
        reference_data=models["parts"]["train"], n_boot=n_boot, before_promote=before_promote)


def _week(models):
    snaps = models["sim"].snapshots
    last = snaps["snapshot_date"].max()
    return snaps[snaps["snapshot_date"] < last], models["sim"].activities, snaps[snaps["snapshot_date"] == last]


def _artifact_dir(reg, tenant, family, version) -> Path:
    name = reg.model_name(tenant, family)
    mv = reg.client.get_model_version(name, str(version))
    uri = reg.client.get_run(mv.run_id).info.artifact_uri
    return Path(unquote(urlparse(uri).path)) / mv.tags[R.TAG_ARTIFACT_PATH]


# --------------------------------------------------------------------------------------------
# naming, registration, loading
# --------------------------------------------------------------------------------------------

def test_model_names():
    assert R.ModelRegistry.model_name("acme", "risk") == "riskml.acme.risk"
    assert R.ModelRegistry.model_name("big-co_2", "forecast") == "riskml.big-co_2.forecast"
    with pytest.raises(ContractError):
        R.ModelRegistry.model_name("../etc", "risk")
    with pytest.raises(ValueError, match="family"):
        R.ModelRegistry.model_name("acme", "Risk/x")


def test_register_and_load_round_trip(reg, models):
    strong = models["strong"]
    report = models["parts"]["train"]
    version = reg.register("roundtrip", "risk", strong["artifact"], strong["calibrator"], strong["manifest"],
                           {"test_auc": 0.77, "calibrated": {"brier": 0.18}}, "# report", True,
                           extra_files={"notes/readme.txt": b"hello"}, reference_data=report)
    assert version == "1"
    assert reg.aliases("roundtrip", "risk") == {"challenger": "1"}
    assert reg.champion_version("roundtrip", "risk") is None
    with pytest.raises(R.NoSuchAliasError, match="no champion"):
        reg.load("roundtrip", "risk")
    b = reg.load("roundtrip", "risk", alias="challenger")
    assert b["version"] == "1" and b["alias"] == "challenger" and b["name"] == "riskml.roundtrip.risk"
    assert b["manifest"] == json.loads(json.dumps(strong["manifest"]))
    assert b["calibrator"] == json.loads(json.dumps(strong["calibrator"]))
    assert b["metrics"]["test_auc"] == 0.77 and b["report_md"] == "# report"
    assert b["extra_files"] == {"notes/readme.txt": b"hello"}
    assert list(b["reference"].columns) == strong["artifact"]["features"] and len(b["reference"]) == len(report)
    assert b["gates_passed"] is True and b["manifest_fingerprint"] == F.manifest_fingerprint(strong["manifest"])
    # the booster is XGBoost JSON and predicts exactly as before registration
    test = models["parts"]["test"]
    json.loads(b["artifact"]["booster_json"])
    np.testing.assert_array_equal(training.predict_raw(b["artifact"], test),
                                  training.predict_raw(strong["artifact"], test))
    # an MLflow model with an input signature (one column per feature, categoricals as strings)
    sig = b["signature"]
    inputs = {c["name"]: c["type"] for c in json.loads(sig["inputs"])}
    assert inputs["stage"] == "string" and inputs["days_to_close"] == "double"
    assert [c["name"] for c in json.loads(sig["outputs"])] == ["p_lost"]
    from mlflow.models import Model

    mlmodel = Model.load(str(_artifact_dir(reg, "roundtrip", "risk", version) / "model" / "MLmodel"))
    assert mlmodel.signature is not None and "xgboost" in mlmodel.flavors
    # every file has a recorded sha256; the registry tags carry the metrics and fingerprints
    tags = reg.version_tags("roundtrip", "risk", 1)
    sums = json.loads(tags[R.TAG_CHECKSUMS])
    assert {"model/model.json", "model/MLmodel", "riskml/artifact.json", "riskml/calibrator.json",
            "riskml/feature_manifest.json", "riskml/reference_features.parquet", "extra/notes/readme.txt"} <= set(sums)
    assert tags["riskml.metric.test_auc"] == "0.77" and tags[R.TAG_GATES] == "True"


def test_register_twice_returns_the_same_version(reg, models):
    strong = models["strong"]
    args = ("again", "risk", strong["artifact"], strong["calibrator"], strong["manifest"], {}, "", True)
    v1 = reg.register(*args)
    v2 = reg.register(*args)
    assert v1 == v2 == "1"
    assert len(reg.client.search_model_versions("name='riskml.again.risk'")) == 1


def test_register_into_an_existing_training_run(reg, models):
    weak = models["weak"]
    exp = reg.client.create_experiment("training-runs")
    run = reg.client.create_run(exp, run_name="risk/trainrun/2026-11-16")
    reg.client.set_terminated(run.info.run_id)
    v = reg.register("trainrun", "risk", weak["artifact"], weak["calibrator"], weak["manifest"], {"auc": 0.6}, "",
                     True, run_id=run.info.run_id)
    assert reg.load("trainrun", "risk", version=v)["run_id"] == run.info.run_id
    assert reg.client.list_artifacts(run.info.run_id, "registered_model")


def test_json_model_families_register_without_an_xgboost_flavor(reg, models):
    manifest = {k: models["manifest"][k] for k in ("log_deal_value", "stage")}
    art = {"family": "revenue_forecast", "alphas": [0.1, 0.5, 0.9], "features": list(manifest),
           "feature_kinds": {"log_deal_value": "numeric", "stage": "categorical"}, "categories": {"stage": ["a"]},
           "models": {"quantiles": {"format": "xgboost-json", "json": "{}"}}, "train_seconds": 1.5}
    v1 = reg.register("forecastco", "forecast", art, None, manifest, {"mean_pinball": 10.0}, "", True)
    # timing fields do not change the fingerprint; the model itself does
    assert reg.register("forecastco", "forecast", {**art, "train_seconds": 9.9}, None, manifest, {}, "", True) == v1
    other = {**art, "models": {"quantiles": {"format": "xgboost-json", "json": "{\"x\": 1}"}}}
    assert reg.register("forecastco", "forecast", other, None, manifest, {}, "", True) != v1
    b = reg.load("forecastco", "forecast", version=v1)
    assert b["artifact"]["models"] == art["models"] and b["calibrator"] is None and "booster_json" not in b["artifact"]
    assert [c["name"] for c in json.loads(b["signature"]["outputs"])] == ["p10", "p50", "p90"]
    assert not any(k.startswith("model/") for k in json.loads(b["tags"][R.TAG_CHECKSUMS]))


def test_tampered_files_are_refused_before_anything_is_parsed(reg, models):
    strong = models["strong"]
    blob = pickle.dumps({"a": 1})
    v = reg.register("tamper", "risk", strong["artifact"], strong["calibrator"], strong["manifest"], {}, "", True,
                     extra_files={"legacy.pkl": blob})
    assert reg.load("tamper", "risk", alias="challenger")["extra_files"]["legacy.pkl"] == blob  # verified bytes, never unpickled here
    d = _artifact_dir(reg, "tamper", "risk", v)
    (d / "extra" / "legacy.pkl").write_bytes(pickle.dumps({"a": 2}))
    with pytest.raises(R.ChecksumMismatchError, match=r"extra/legacy.pkl: sha256 .* != registered"):
        reg.load("tamper", "risk", alias="challenger")
    (d / "extra" / "legacy.pkl").write_bytes(blob)
    (d / "riskml" / "surprise.json").write_text("{}")
    with pytest.raises(R.ChecksumMismatchError, match="surprise.json: not registered"):
        reg.load("tamper", "risk", version=v)
    (d / "riskml" / "surprise.json").unlink()
    (d / "riskml" / "calibrator.json").unlink()
    with pytest.raises(R.ChecksumMismatchError, match="calibrator.json: missing"):
        reg.load("tamper", "risk", version=v)


# --------------------------------------------------------------------------------------------
# champion / challenger
# --------------------------------------------------------------------------------------------

def test_first_model_becomes_champion_and_clearly_better_replaces_it(reg, models):
    first = _candidate(reg, "cc", models, "weak")
    assert first["decision"]["first_model"] and first["decision"]["should_deploy"]
    assert first["champion_after"] == first["version"] == "1"
    better = _candidate(reg, "cc", models, "strong")
    d = better["decision"]
    assert d["should_deploy"] and d["p_value"] < 0.05 and d["ci_high"] < 0, d["reason"]
    assert better["champion_before"] == "1" and better["champion_after"] == better["version"] == "2"
    assert reg.aliases("cc", "risk") == {"champion": "2", "previous_champion": "1"}
    tags = reg.version_tags("cc", "risk", 2)
    assert tags["riskml.should_deploy"] == "True" and float(tags["riskml.decision.p_value"]) == d["p_value"]
    assert "significantly better" in tags["riskml.decision.reason"]
    assert "Champion / challenger decision" in reg.load("cc", "risk")["report_md"]
    log = reg.promotion_log("cc", "risk")
    assert [(e["action"], e["from"], e["to"]) for e in log] == [("promote", None, "1"), ("promote", "1", "2")]
    assert log[1]["p_value"] == d["p_value"] and "significantly better" in log[1]["reason"]


def test_challenger_better_only_by_noise_is_not_promoted(reg, models):
    _candidate(reg, "noise", models, "strong")
    retrain = _candidate(reg, "noise", models, "strong_seed1")
    assert not retrain["decision"]["should_deploy"], retrain["decision"]["reason"]
    assert retrain["champion_after"] == "1"
    assert reg.aliases("noise", "risk") == {"champion": "1", "challenger": "2"}
    assert reg.version_tags("noise", "risk", 2)["riskml.should_deploy"] == "False"


def test_challenger_whose_gate_failed_is_never_promoted(reg, models):
    failed_first = _candidate(reg, "gates", models, "strong", gates_passed=False)
    assert not failed_first["decision"]["should_deploy"] and failed_first["champion_after"] is None
    _candidate(reg, "gates", models, "weak")
    failed = _candidate(reg, "gates", models, "strong", gates_passed={"risk_evaluation_ece": False})
    assert failed["version"] == failed_first["version"]  # same model: same version, decision refreshed
    assert not failed["decision"]["should_deploy"] and "risk_evaluation_ece" in failed["decision"]["reason"]
    assert reg.champion_version("gates", "risk") == "2"
    with pytest.raises(R.RegistryError, match="gates did not pass"):
        reg.promote("gates", "risk", failed["version"])
    with pytest.raises(R.RegistryError, match="do not deploy"):
        reg.promote("gates", "risk", "2", {"should_deploy": False, "reason": "no"})
    # once its gates pass (e.g. after an operator fixed a threshold) the same version is promoted
    fixed = _candidate(reg, "gates", models, "strong")
    assert fixed["version"] == failed["version"] and fixed["champion_after"] == fixed["version"]


def test_killed_between_registration_and_promotion_leaves_the_champion(reg, models):
    _candidate(reg, "kill", models, "weak")

    seen = []

    def kill(version, decision):
        seen.append(decision["should_deploy"])
        _kill(version, decision)

    with pytest.raises(Killed):
        _candidate(reg, "kill", models, "strong", before_promote=kill)
    assert seen == [True]
    assert reg.champion_version("kill", "risk") == "1"
    assert reg.aliases("kill", "risk") == {"champion": "1", "challenger": "2"}
    assert reg.load("kill", "risk")["version"] == "1"
    assert [e["to"] for e in reg.promotion_log("kill", "risk")] == ["1"]
    # the re-run finishes the job without registering a duplicate
    rerun = _candidate(reg, "kill", models, "strong")
    assert rerun["version"] == "2" and rerun["champion_after"] == "2"
    assert len(reg.client.search_model_versions("name='riskml.kill.risk'")) == 2


def test_promotion_twice_is_safe(reg, models):
    _candidate(reg, "twice", models, "weak")
    out = _candidate(reg, "twice", models, "strong")
    assert out["promotion"]["status"] == "promoted"
    again = reg.promote("twice", "risk", "2", out["decision"])
    assert again["status"] == "already_champion"
    rerun = _candidate(reg, "twice", models, "strong")  # the whole step re-run
    assert rerun["version"] == "2" and rerun["promotion"] is None
    assert len(reg.promotion_log("twice", "risk")) == 2
    assert reg.aliases("twice", "risk") == {"champion": "2", "previous_champion": "1"}


def test_interrupted_promotion_is_repaired_on_rerun(reg, models):
    _candidate(reg, "repair", models, "weak")
    with pytest.raises(Killed):
        _candidate(reg, "repair", models, "strong", before_promote=_kill)
    # the alias moved but the process died before writing the log entry
    reg.client.set_registered_model_alias("riskml.repair.risk", "previous_champion", "1")
    reg.client.set_registered_model_alias("riskml.repair.risk", "champion", "2")
    out = reg.promote("repair", "risk", "2")
    assert out["status"] == "already_champion"
    log = reg.promotion_log("repair", "risk")
    assert [(e["action"], e["from"], e["to"]) for e in log] == [("promote", None, "1"), ("promote", "1", "2")]
    # and a rollback interrupted after moving the alias is completed, not repeated
    reg.client.set_model_version_tag("riskml.repair.risk", "2", R.TAG_ROLLED_BACK,
                                     json.dumps({"reason": "bad scores", "by": "ops"}))
    reg.client.set_registered_model_alias("riskml.repair.risk", "champion", "1")
    rb = reg.rollback("repair", "risk", "bad scores")
    assert rb["status"] == "already_rolled_back" and reg.champion_version("repair", "risk") == "1"
    assert reg.promotion_log("repair", "risk")[-1]["action"] == "rollback"


# --------------------------------------------------------------------------------------------
# rollback and scoring with the registered champion
# --------------------------------------------------------------------------------------------

def test_rollback_restores_the_previous_champion_and_its_scores(reg, models):
    history, activities, latest = _week(models)
    _candidate(reg, "rb", models, "weak")
    scores_v1 = scoring.score_open_opportunities(history, activities, latest, reg.load("rb", "risk"))
    _candidate(reg, "rb", models, "strong")
    scores_v2 = scoring.score_open_opportunities(history, activities, latest, reg.load("rb", "risk"))
    assert set(scores_v2["model_version"]) == {"2"} and not np.allclose(scores_v1["p_lost"], scores_v2["p_lost"])

    out = reg.rollback("rb", "risk", "complaints from sales ops", actor="alice")
    assert out["status"] == "rolled_back" and (out["from"], out["to"]) == ("2", "1")
    assert reg.champion_version("rb", "risk") == "1"
    back = scoring.score_open_opportunities(history, activities, latest, reg.load("rb", "risk"))
    assert_frame_equal(back, scores_v1, check_exact=True)  # scores change back, exactly
    rolled = json.loads(reg.version_tags("rb", "risk", 2)[R.TAG_ROLLED_BACK])
    assert rolled["reason"] == "complaints from sales ops" and rolled["by"] == "alice"
    last = reg.promotion_log("rb", "risk")[-1]
    assert (last["action"], last["from"], last["to"], last["reason"], last["by"]) == \
        ("rollback", "2", "1", "complaints from sales ops", "alice")

    # twice is safe: no bouncing back to v2
    again = reg.rollback("rb", "risk", "complaints from sales ops")
    assert again["status"] == "already_rolled_back" and "further=True" in again["message"]
    assert reg.champion_version("rb", "risk") == "1" and len(reg.promotion_log("rb", "risk")) == 3
    # there is nothing before v1: the tenant keeps its champion
    further = reg.rollback("rb", "risk", "go further", further=True)
    assert further["status"] == "no_previous_champion" and reg.champion_version("rb", "risk") == "1"
    with pytest.raises(ValueError, match="reason"):
        reg.rollback("rb", "risk", " ")
    # the rolled-back version can be promoted again explicitly, which clears the mark
    reg.promote("rb", "risk", "2", reason="fixed upstream data")
    assert R.TAG_ROLLED_BACK not in reg.version_tags("rb", "risk", 2)
    assert reg.rollback("rb", "risk", "again")["to"] == "1"


def test_rollback_walks_back_only_with_further(reg, models):
    strong = models["strong"]
    name = "walk"
    # three distinct models (different calibrator thresholds give different fingerprints)
    versions = []
    for thr in (0.3, 0.4, 0.5):
        cal = {**strong["calibrator"], "threshold": thr}
        v = reg.register(name, "risk", strong["artifact"], cal, strong["manifest"], {}, "", True)
        reg.promote(name, "risk", v, reason=f"threshold {thr}")
        versions.append(v)
    assert reg.champion_version(name, "risk") == "3"
    assert reg.rollback(name, "risk", "r1")["to"] == "2"
    assert reg.rollback(name, "risk", "r1")["status"] == "already_rolled_back"
    assert reg.champion_version(name, "risk") == "2"
    assert reg.rollback(name, "risk", "r2", further=True)["to"] == "1"
    assert reg.alias_version(name, "risk", "previous_champion") is None
    assert reg.rollback(name, "risk", "r3", further=True)["status"] == "no_previous_champion"
    assert reg.champion_version(name, "risk") == "1"
    # a later promotion, then rollback, goes to the champion before it (v1), never to rolled-back ones
    v4 = reg.register(name, "risk", strong["artifact"], {**strong["calibrator"], "threshold": 0.6},
                      strong["manifest"], {}, "", True)
    reg.promote(name, "risk", v4)
    assert reg.rollback(name, "risk", "r4")["to"] == "1"
    assert reg.rollback(name, "risk", "r5")["status"] == "already_rolled_back"
    assert reg.rollback("nochamp", "risk", "r")["status"] == "no_champion"


def test_changed_feature_definition_makes_champion_scoring_fail_loudly(reg, models, monkeypatch):
    history, activities, latest = _week(models)
    _candidate(reg, "featver", models, "strong")
    champion = reg.load("featver", "risk")
    fd = F.REGISTRY[("days_to_close", 1)]
    changed = dataclasses.replace(fd, expr=lambda: (pl.col("close_date") - pl.col("snapshot_date")).dt.total_days() * 2.0)
    monkeypatch.setitem(F.REGISTRY, ("days_to_close", 1), changed)
    assert changed.definition_hash != fd.definition_hash
    with pytest.raises(F.FeatureVersionError) as err:
        scoring.score_open_opportunities(history, activities, latest, champion)
    msg = str(err.value)
    assert "days_to_close" in msg and fd.definition_hash in msg and changed.definition_hash in msg
    assert "riskml.featver.risk v1" in msg


def test_scores_of_the_registered_champion_are_identical_across_reruns(reg, models):
    history, activities, latest = _week(models)
    _candidate(reg, "rerun", models, "strong")
    a = scoring.score_open_opportunities(history, activities, latest, reg.load("rerun", "risk"))
    b = scoring.score_open_opportunities(history, activities, latest, reg.load("rerun", "risk"))
    assert_frame_equal(a, b, check_exact=True)
    direct = scoring.score_open_opportunities(history, activities, latest,
                                              {**models["strong"], "version": "1", "alias": "champion",
                                               "name": "riskml.rerun.risk"})
    np.testing.assert_array_equal(a["p_lost"], direct["p_lost"])


def test_reference_data_feeds_the_drift_check(reg, models):
    from riskml_assets.core import drift

    _candidate(reg, "driftref", models, "strong")
    champion = reg.load("driftref", "risk")
    ref = champion["reference"]
    report = drift.drift_report(ref, ref.sample(frac=0.5, random_state=0), champion["artifact"]["features"],
                                champion["artifact"]["feature_kinds"])
    assert drift.drift_summary(report)["status"] == "ok"


# --------------------------------------------------------------------------------------------
# SQLite "database is locked"
# --------------------------------------------------------------------------------------------

def test_retry_on_database_is_locked(monkeypatch):
    monkeypatch.setattr(R.time, "sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            try:
                raise sqlite3.OperationalError("database is locked")
            except sqlite3.OperationalError as inner:
                raise RuntimeError("(sqlite3.OperationalError) wrapped by the store") from inner
        return "ok"

    assert R.retry_locked(flaky) == "ok" and len(calls) == 3

    def broken():
        calls.append(1)
        raise ValueError("something else")

    calls.clear()
    with pytest.raises(ValueError):
        R.retry_locked(broken)
    assert len(calls) == 1

    def always_locked():
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError):
        R.retry_locked(always_locked, _timeout=0.0)


# --------------------------------------------------------------------------------------------
# the registered version serves: models:/riskml.<tenant>.risk@champion is an MLflow pyfunc
# --------------------------------------------------------------------------------------------

def test_champion_loads_as_pyfunc_and_predicts_the_batch_scores(reg, models):
    import mlflow

    history, activities, latest = _week(models)
    exp = reg.client.create_experiment("serving-training-runs")
    run = reg.client.create_run(exp, run_name="risk/serve/2026-11-16")
    reg.client.set_terminated(run.info.run_id)
    strong = models["strong"]
    v = reg.register("serve", "risk", strong["artifact"], strong["calibrator"], strong["manifest"], {}, "", True,
                     run_id=run.info.run_id)
    reg.promote("serve", "risk", v)
    mv = reg.client.get_model_version("riskml.serve.risk", v)
    assert mv.run_id == run.info.run_id and mv.tags[R.TAG_TRAINING_RUN] == run.info.run_id
    assert mv.source == f"runs:/{run.info.run_id}/{mv.tags[R.TAG_ARTIFACT_PATH]}"
    assert "MLmodel" in json.loads(mv.tags[R.TAG_CHECKSUMS])  # the version root is the MLflow model

    mlflow.set_tracking_uri(reg.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/riskml.serve.risk@champion")
    bundle = reg.load("serve", "risk")
    scores = scoring.score_open_opportunities(history, activities, latest, bundle)
    rows = scoring.feature_rows(history, activities, latest, bundle)
    assert rows["opportunity_id"].tolist() == scores["opportunity_id"].tolist()
    p = model.predict(rows)["p_lost"].to_numpy()
    np.testing.assert_allclose(p, scores["p_lost"].to_numpy(), rtol=0, atol=1e-9)
    assert model.metadata.get_input_schema().input_names() == strong["artifact"]["features"]
    # an unseen category and a missing value are accepted (as in batch scoring), never an error
    for value in ("never-seen-stage", None):
        odd = rows.copy()
        odd["stage"] = value
        got = model.predict(odd)["p_lost"].to_numpy()
        np.testing.assert_allclose(got, scoring.predict_calibrated(bundle["artifact"], bundle["calibrator"], odd)[0],
                                   rtol=0, atol=1e-12)
        assert np.isfinite(got).all() and ((got > 0) & (got < 1)).all()


def test_training_run_of_another_store_gets_a_registration_run_that_points_to_it(reg, models):
    weak = models["weak"]
    v = reg.register("elsewhere", "risk", weak["artifact"], weak["calibrator"], weak["manifest"], {}, "", True,
                     run_id="0123456789abcdef0123456789abcdef")
    mv = reg.client.get_model_version("riskml.elsewhere.risk", v)
    assert mv.run_id != "0123456789abcdef0123456789abcdef"
    assert mv.tags[R.TAG_TRAINING_RUN] == "0123456789abcdef0123456789abcdef"
    own = reg.client.get_run(mv.run_id)
    assert own.data.tags[R.TAG_TRAINING_RUN] == "0123456789abcdef0123456789abcdef"
    exp = reg.client.get_experiment(own.info.experiment_id)
    assert exp.name == "riskml-registry" and exp.tags[R.TAG_EXPERIMENT_KIND] == R.EXPERIMENT_KIND_ML
    assert reg.load("elsewhere", "risk", version=v)["run_id"] == mv.run_id


def test_calibrated_crm_score_registers_serves_and_is_tagged_with_its_source(reg, models):
    """The CRM's own risk_score, calibrated, as a champion: registered like any model (no booster), tagged
    riskml.champion_source=crm_score, loaded back through mlflow.pyfunc and batch scoring with the same p_lost."""
    import mlflow

    from riskml_assets.core import evaluation as E

    history, activities, latest = _week(models)
    crm = E.crm_score_candidate(models["parts"]["validation"], models["manifest"])
    out = R.register_risk_candidate(
        reg, "crmserve", artifact=crm["model"], calibrator=crm["calibrator"], manifest=models["manifest"],
        test=models["parts"]["test"], metrics={"brier": 0.2}, report_md="# crm", gates_passed=True, floors=FLOORS,
        snapshots_history=history, activities=activities, n_boot=200, champion_source="crm_score",
        candidates={"chosen": "crm_score", "reason": "simplest"})
    v = out["version"]
    assert out["champion_after"] == v and out["decision"]["champion_source"] == "crm_score"
    tags = reg.version_tags("crmserve", "risk", v)
    assert tags[R.TAG_CHAMPION_SOURCE] == "crm_score" and tags["riskml.algorithm"] == "crm_score"
    assert json.loads(tags["riskml.decision"])["candidates"]["chosen"] == "crm_score"
    files = json.loads(tags[R.TAG_CHECKSUMS])
    assert "MLmodel" in files and not any(f.startswith("model/") for f in files)  # a pyfunc without a booster
    bundle = reg.load("crmserve", "risk")
    assert bundle["artifact"]["algorithm"] == "crm_score" and "booster_json" not in bundle["artifact"]
    assert "Champion source of this version: **crm_score**" in bundle["report_md"]
    scores = scoring.score_open_opportunities(history, activities, latest, bundle)
    rows = scoring.feature_rows(history, activities, latest, bundle)
    expected = E.apply_calibrator(crm["calibrator"], rows["heuristic_risk_score"].to_numpy(float).clip(0, 1))
    np.testing.assert_allclose(scores["p_lost"].to_numpy(), expected, rtol=0, atol=1e-12)
    mlflow.set_tracking_uri(reg.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/riskml.crmserve.risk@champion")
    np.testing.assert_allclose(model.predict(rows)["p_lost"].to_numpy(), expected, rtol=0, atol=1e-9)
    assert model.metadata.get_input_schema().input_names() == ["heuristic_risk_score"]
