"""llm_finetune_examples in a real Dagster instance: JSONL files per split under the data folder, the four blocking
checks, other tenants' free text read through the all-tenants partition mapping, rejected files renamed."""
import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from riskml_assets.core import features as F
from riskml_assets.core import llm_data as L
from riskml_assets.core import simulator
from riskml_assets.core.cleaning import clean_examples
from riskml_assets.core.splits import split_examples

WEEK = "2026-11-16"


def _tenant(spec, manifest):
    sim = simulator.simulate_tenant(spec, weeks=30)
    ex, _ = F.build_training_examples(sim.snapshots, sim.outcomes, sim.activities, manifest,
                                      partition_end="2026-11-23", window_weeks=30)
    clean, _, _ = clean_examples(ex, manifest)
    week_snaps = sim.snapshots[sim.snapshots["snapshot_date"] == sim.snapshots["snapshot_date"].max()]
    return split_examples(clean, seed=0, tenant=spec.name), week_snaps


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    from riskml_assets.io_manager import RiskmlIOManager
    from riskml_assets.resources import RiskmlSettings

    root = tmp_path_factory.mktemp("llm")
    manifest = F.build_manifest()
    data = {"initech": _tenant(simulator.DEFAULT_TENANTS[2], manifest),
            "globex": _tenant(simulator.TenantSpec("globex", 6.0, 1), manifest)}
    splits_g, snaps_g = data["globex"]  # globex's own free text: owner names and a campaign column
    snaps_g = snaps_g.assign(owner_id="Globex Owner " + snaps_g["owner_id"].astype(str),
                             campaign=np.where(np.arange(len(snaps_g)) % 2, "Globex Spring Summit", "Webinar"))
    data["globex"] = (splits_g, snaps_g)
    base = root / "assets"
    for t, (splits, snaps) in data.items():
        for asset, df in (("dataset_splits", splits), ("risk_snapshots", snaps)):
            (base / asset / t).mkdir(parents=True)
            df.to_parquet(base / asset / t / f"{WEEK}.parquet", index=False)
        (base / "feature_manifest" / t).mkdir(parents=True)
        (base / "feature_manifest" / t / f"{WEEK}.json").write_text(
            json.dumps({"features": manifest, "fingerprint": F.manifest_fingerprint(manifest)}))
    resources = {"io_manager": RiskmlIOManager(base_path=str(base)),
                 "riskml": RiskmlSettings(incoming_dir=str(root / "incoming"), quarantine_dir=str(root / "q"),
                                          gates_file=str(root / "gates.yaml"), tenants_dir=str(root / "tenants"))}
    (root / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
        instance.add_dynamic_partitions("tenant", ["globex", "initech"])
        yield {"root": root, "data": data, "resources": resources, "instance": instance}


def _run(deployment, tenant, out):
    from riskml_assets.assets.llm import llm_finetune_examples
    from riskml_assets.partitions import tenant_week

    upstream = [dg.AssetSpec(n, partitions_def=tenant_week) for n in ("dataset_splits", "risk_snapshots",
                                                                      "feature_manifest")]
    return dg.materialize([llm_finetune_examples, *upstream], partition_key=f"{tenant}|{WEEK}",
                          instance=deployment["instance"], resources=deployment["resources"], raise_on_error=False,
                          run_config={"ops": {"llm_finetune_examples": {"config": {"output_dir": str(out)}}}})


def test_writes_validated_jsonl_per_split_under_the_data_folder(deployment):
    out = deployment["root"] / "data" / "llm"
    res = _run(deployment, "initech", out)
    assert res.success
    checks = {e.check_name: e.passed for e in res.get_asset_check_evaluations()}
    assert checks == {"llm_examples_parse": True, "llm_examples_no_leakage": True,
                      "llm_examples_no_foreign_text": True, "llm_examples_size": True}
    splits, _ = deployment["data"]["initech"]
    folder = out / "initech" / WEEK
    assert sorted(p.name for p in folder.iterdir()) == ["test.jsonl", "train.jsonl", "validation.jsonl"]
    for split in ("train", "validation", "test"):
        lines = (folder / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(lines) == int((splits.split == split).sum())
        first = json.loads(lines[0])["messages"]
        assert first[0]["content"] == L.SYSTEM_PROMPT and first[2]["content"].startswith("Outcome: ")
    index = pd.read_parquet(deployment["root"] / "assets" / "llm_finetune_examples" / "initech" / f"{WEEK}.parquet")
    assert len(index) == len(splits) and set(index.columns) >= {"split", "file", "line", "opportunity_id", "label"}
    meta = res.asset_materializations_for_node("llm_finetune_examples")[0].metadata
    assert meta["rejected"].value is False and meta["other_tenants_checked"].value == ["globex"]
    assert meta["folder"].value == str(folder)
    foreign = [e for e in res.get_asset_check_evaluations() if e.check_name == "llm_examples_no_foreign_text"][0]
    assert foreign.metadata["foreign_values"].value["globex"] > 10  # globex's owners and campaign were checked


def test_a_file_with_another_tenants_text_is_rejected_and_blocks(deployment, monkeypatch):
    # a builder bug mixes a few globex rows (and their owner names) into initech's examples
    real = L.build_examples
    globex_rows = deployment["data"]["globex"][1].head(2)

    def buggy(df, **kw):
        ex = real(df, **kw)
        extra = ex.head(2).copy()
        extra["prompt"] = [p + f"\n- Owner: {o}" for p, o in zip(extra["prompt"], globex_rows["owner_id"])]
        return pd.concat([ex, extra], ignore_index=True)

    monkeypatch.setattr(L, "build_examples", buggy)
    out = deployment["root"] / "data" / "llm_bad"
    res = _run(deployment, "initech", out)
    assert not res.success  # a blocking check failed
    checks = {e.check_name: e.passed for e in res.get_asset_check_evaluations()}
    assert checks == {"llm_examples_parse": True, "llm_examples_no_leakage": True,
                      "llm_examples_no_foreign_text": False, "llm_examples_size": True}
    folder = out / "initech" / WEEK
    assert sorted(p.name for p in folder.iterdir()) == ["test.rejected.jsonl", "train.rejected.jsonl",
                                                        "validation.rejected.jsonl"]
    ev = [e for e in res.get_asset_check_evaluations() if e.check_name == "llm_examples_no_foreign_text"][0]
    assert {d["tenant"] for d in ev.metadata["detail"].value} == {"globex"}
    assert any(d["value"].startswith("globex owner") for d in ev.metadata["detail"].value)
