"""pooled_risk_model in a real Dagster instance: opt-in from the tenant configs, every tenant's dataset_splits of
the week through the all-tenants partition mapping, the JSON artifact through the riskml IO manager."""
import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from riskml_assets.core import features as F
from riskml_assets.core import pooled, simulator
from riskml_assets.core.cleaning import clean_examples
from riskml_assets.core.splits import split_examples

WEEK = "2026-11-16"
FAST = {"learning_rate": 0.2, "n_estimators": 200}
TINY = {"learning_rate": 0.3, "n_estimators": 40, "max_depth": 3}  # the run-order test checks wiring, not quality


def _splits(spec, manifest):
    sim = simulator.simulate_tenant(spec)
    ex, _ = F.build_training_examples(sim.snapshots, sim.outcomes, sim.activities, manifest,
                                      partition_end="2026-11-23", window_weeks=52)
    clean, _, _ = clean_examples(ex, manifest)
    return split_examples(clean, seed=0, tenant=spec.name)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """dataset_splits and feature_manifest of three tenants stored by the riskml IO manager's layout (real parquet
    and JSON); initech and globex opt in, acme does not (its config has other keys only)."""
    from riskml_assets.io_manager import RiskmlIOManager
    from riskml_assets.resources import RiskmlSettings

    root = tmp_path_factory.mktemp("pooled")
    manifest = F.build_manifest()
    frames = {}
    for spec in (simulator.DEFAULT_TENANTS[2], simulator.DEFAULT_TENANTS[1]):
        frames[spec.name] = _splits(spec, manifest)
    frames["acme"] = frames["globex"].head(500)  # stands in for a tenant that did not opt in
    for t, df in frames.items():
        (root / "assets" / "dataset_splits" / t).mkdir(parents=True)
        df.to_parquet(root / "assets" / "dataset_splits" / t / f"{WEEK}.parquet", index=False)
        (root / "assets" / "feature_manifest" / t).mkdir(parents=True)
        (root / "assets" / "feature_manifest" / t / f"{WEEK}.json").write_text(
            json.dumps({"features": manifest, "fingerprint": F.manifest_fingerprint(manifest)}))
    tenants = root / "tenants"
    tenants.mkdir()
    (tenants / "initech.yaml").write_text("pooled: true\n")
    (tenants / "globex.yaml").write_text("pooled: true\nstages: [prospecting, qualification, proposal]\n")
    (tenants / "acme.yaml").write_text("extra_features: {mode: off}\n")
    resources = {"io_manager": RiskmlIOManager(base_path=str(root / "assets")),
                 "riskml": RiskmlSettings(incoming_dir=str(root / "incoming"), quarantine_dir=str(root / "q"),
                                          gates_file=str(root / "gates.yaml"), tenants_dir=str(tenants))}
    (root / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
        instance.add_dynamic_partitions("tenant", ["acme", "globex", "initech", "umbrella"])  # umbrella: no data
        yield {"root": root, "frames": frames, "resources": resources, "instance": instance, "tenants": tenants}


def _upstream():
    """dataset_splits and feature_manifest as external assets: their stored partitions are read, never rebuilt."""
    from riskml_assets.partitions import tenant_week

    return [dg.AssetSpec(name, partitions_def=tenant_week) for name in ("dataset_splits", "feature_manifest")]


def _run(deployment, tenant, config=None):
    from riskml_assets.assets.pooled import pooled_risk_model

    res = dg.materialize([pooled_risk_model, *_upstream()], partition_key=f"{tenant}|{WEEK}", instance=deployment["instance"],
                         resources=deployment["resources"],
                         run_config={"ops": {"pooled_risk_model": {"config": {**FAST, **(config or {})}}}})
    assert res.success
    value = json.loads((deployment["root"] / "assets" / "pooled_risk_model" / tenant / f"{WEEK}.json").read_text())
    meta = res.asset_materializations_for_node("pooled_risk_model")[0].metadata
    return value, meta


def test_opted_in_tenant_pools_with_the_other_opted_in_tenant_only(deployment):
    value, meta = _run(deployment, "initech")
    frames = deployment["frames"]
    assert value["available"] is True, value["reason"]
    assert value["tenants"] == ["globex", "initech"] and value["opted_in"] == ["globex", "initech"]
    assert value["rows_by_tenant"] == {t: int((frames[t].split == "train").sum()) for t in ("globex", "initech")}
    assert meta["available"].value is True and meta["train_fingerprint"].value == value["train_fingerprint"]
    assert meta["calibration"].value == value["calibrator"]["method"]
    assert "lowest out-of-fold Brier (folds grouped by opportunity)" in meta["calibration_choice"].value
    model = value["model"]
    assert model["target_tenant"] == "initech" and model["week"] == WEEK and pooled.TENANT_FEATURE in model["features"]
    assert "acme" not in model["categories"][pooled.TENANT_FEATURE]  # acme's rows never entered
    # the stored artifact scores the tenant's own test rows (JSON round trip through the IO manager)
    test = frames["initech"].query("split == 'test'")
    p = pooled.predict_pooled(model, test, "initech", value["calibrator"])
    assert p.shape == (len(test),) and np.all((p > 0) & (p < 1))
    assert value["calibrator"]["validation"]["rows"] == int((frames["initech"].split == "validation").sum())


def test_not_opted_in_is_a_cheap_step_with_the_reason(deployment, monkeypatch):
    """Not opted in: nothing of the other tenants is read (the all-tenants inputs are lazy; before, every tenant's
    training run read every tenant's splits of the week); opted in: both inputs are read once."""
    from riskml_assets import io_manager

    reads = []
    real = io_manager.RiskmlUPathIOManager._read_window
    monkeypatch.setattr(io_manager.RiskmlUPathIOManager, "_read_window", lambda self, context, *a: reads.append(
        context.asset_key.to_user_string()) or real(self, context, *a))
    value, meta = _run(deployment, "acme")
    assert value["available"] is False and value["model"] is None
    assert "acme has not opted in" in value["reason"] and "acme.yaml" in value["reason"]
    assert meta["reason"].value == value["reason"]
    assert reads == []
    value, _ = _run(deployment, "initech", TINY)
    assert value["available"] is True and sorted(reads) == ["dataset_splits", "feature_manifest"]


def test_another_tenants_bad_config_leaves_it_out_and_a_lone_tenant_gets_the_reason(deployment):
    bad = deployment["tenants"] / "globex.yaml"
    bad.write_text("pooled: yes please\n")
    try:
        value, meta = _run(deployment, "initech")
    finally:
        bad.write_text("pooled: true\n")
    assert value["available"] is False and "no other opted-in tenant" in value["reason"]
    assert "globex" in value["left_out"] and "must be true or false" in value["left_out"]["globex"]
    assert "globex" in meta["left_out"].value


def test_own_bad_config_fails_with_the_file_named(deployment):
    from riskml_assets.assets.pooled import pooled_risk_model

    own = deployment["tenants"] / "initech.yaml"
    own.write_text("pooled: 1\n")
    try:
        res = dg.materialize([pooled_risk_model, *_upstream()], partition_key=f"initech|{WEEK}", instance=deployment["instance"],
                             resources=deployment["resources"], raise_on_error=False)
    finally:
        own.write_text("pooled: true\n")
    assert not res.success
    errors = [(e.event_specific_data.error.cause or e.event_specific_data.error).message
              for e in res.all_events if e.is_step_failure]
    assert any("initech.yaml: 'pooled' must be true or false" in m for m in errors), errors


def test_run_order_a_tenant_prepared_in_the_same_run_pools_with_one_prepared_before(deployment, tmp_path):
    """dataset_splits and pooled_risk_model in one run per tenant (as in train_job): the first tenant's pooled
    model finds nobody to pool with and names the missing tenant; the second pools with the first's stored
    splits and its own, written earlier in the same run."""
    from riskml_assets.assets.pooled import pooled_risk_model
    from riskml_assets.assets.prep import dataset_splits
    from riskml_assets.io_manager import RiskmlIOManager
    from riskml_assets.partitions import tenant_week

    base = tmp_path / "assets"
    for t in ("initech", "globex"):  # the upstream of dataset_splits, stored; the splits themselves are not
        (base / "clean_examples" / t).mkdir(parents=True)
        deployment["frames"][t].drop(columns=["split"]).to_parquet(base / "clean_examples" / t / f"{WEEK}.parquet")
        (base / "feature_manifest" / t).mkdir(parents=True)
        (base / "feature_manifest" / t / f"{WEEK}.json").write_text(
            (deployment["root"] / "assets" / "feature_manifest" / t / f"{WEEK}.json").read_text())
    resources = {**deployment["resources"], "io_manager": RiskmlIOManager(base_path=str(base))}
    upstream = [dg.AssetSpec(n, partitions_def=tenant_week) for n in ("clean_examples", "feature_manifest")]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["globex", "initech"])
        values = {}
        for t in ("globex", "initech"):  # one run per tenant, one after the other
            res = dg.materialize([dataset_splits, pooled_risk_model, *upstream], partition_key=f"{t}|{WEEK}",
                                 instance=instance, resources=resources,
                                 run_config={"ops": {"pooled_risk_model": {"config": TINY}}})
            assert res.success
            values[t] = json.loads((base / "pooled_risk_model" / t / f"{WEEK}.json").read_text())
    first, second = values["globex"], values["initech"]
    assert first["available"] is False and "no other opted-in tenant has train rows" in first["reason"]
    assert "initech" in first["reason"]  # the opted-in tenant whose splits did not exist yet
    assert second["available"] is True and second["tenants"] == ["globex", "initech"]
    stored = {t: pd.read_parquet(base / "dataset_splits" / t / f"{WEEK}.parquet") for t in ("globex", "initech")}
    assert second["rows_by_tenant"] == {t: int((df.split == "train").sum()) for t, df in stored.items()}
