"""The production storage path on Azurite (issue 10 item 1): every asset value through the one IO manager on
``abfs://`` (adlfs), MLflow's artifacts (the registered model's files) on ``wasbs://`` in the same blob container,
and Dagster's compute logs in a blob container through dagster-azure's compute-log manager.

Azurite is started on a free port by the session fixture (tools/azurite, ``npm ci``); run with
``python -m pytest -m services riskml_assets_tests/test_azure.py``.
"""
import io
import json
import sys
import time

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from riskml_assets.core import simulator

pytestmark = pytest.mark.services

TENANT = "azco"
WEEKS = 14
QUALITY_GATES = ("training_examples_min_rows", "dataset_splits_min_rows", "dataset_splits_min_class",
                 "risk_model_beats_base_rate", "risk_calibrator_ece", "risk_evaluation_ece",
                 "risk_evaluation_beats_baselines", "risk_scores_drift")
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# the tenant's own XGBoost model is registered (its booster file is among the blobs checked below; the calibrated
# CRM score and the other algorithms have their own registry tests)
TRAIN = {**QUIET, "ops": {"augmented_examples": {"config": {"methods": []}},
                          "risk_model": {"config": {"selection": False}},
                          "risk_evaluation": {"config": {"champion_candidates": ["tenant_model"]}},
                          "registered_models": {"config": {"min_auc": 0.0, "max_ece": 1.0, "n_boot": 100}}}}


def _blobs(azurite, container, prefix=""):
    from azure.storage.blob import BlobServiceClient

    cc = BlobServiceClient.from_connection_string(azurite["connection_string"]).get_container_client(container)
    return cc, sorted(b.name for b in cc.list_blobs(name_starts_with=prefix))


def _read_parquet(cc, name) -> pd.DataFrame:  # straight from the blob service, not through our IO manager
    return pd.read_parquet(io.BytesIO(cc.download_blob(name).readall()))


@dg.asset
def shouty():
    print("riskml-stdout-marker-7f3a")
    print("riskml-stderr-marker-9c1d", file=sys.stderr)
    return 1


def test_compute_logs_of_a_run_land_in_the_blob_container(azurite, az_container, tmp_path, monkeypatch):
    from riskml_assets.azure import ConnStrAzureBlobComputeLogManager

    monkeypatch.setenv("RISKML_TEST_AZ_CONN", azurite["connection_string"])
    overrides = {"compute_logs": {"module": "riskml_assets.azure", "class": "ConnStrAzureBlobComputeLogManager",
                                  "config": {"connection_string": {"env": "RISKML_TEST_AZ_CONN"},
                                             "container": az_container, "prefix": "dagster-logs",
                                             "local_dir": str(tmp_path / "staging")}}}
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home"), overrides=overrides) as instance:
        assert isinstance(instance.compute_log_manager, ConnStrAzureBlobComputeLogManager)
        res = dg.materialize([shouty], instance=instance, resources={"io_manager": dg.mem_io_manager})
        assert res.success
        cc, names = _blobs(azurite, az_container, f"dagster-logs/storage/{res.run_id}/compute_logs/")
        [out] = [n for n in names if n.endswith(".out")]
        [err] = [n for n in names if n.endswith(".err")]
        assert cc.download_blob(out).readall().decode() == "riskml-stdout-marker-7f3a\n"
        assert "riskml-stderr-marker-9c1d" in cc.download_blob(err).readall().decode()
        # the UI reads them back through the manager (the log key of the run's LOGS_CAPTURED event)
        [captured] = [e for e in instance.all_logs(res.run_id)
                      if e.dagster_event and e.dagster_event.event_type_value == "LOGS_CAPTURED"]
        key = [res.run_id, "compute_logs", captured.dagster_event.logs_captured_data.file_key]
        data = instance.compute_log_manager.get_log_data(key)
        assert data.stdout.decode() == "riskml-stdout-marker-7f3a\n"
        # the instance stores the env var's name, not the connection string
        assert azurite["account_key"] not in json.dumps(instance.compute_log_manager.inst_data.config_dict)


@pytest.fixture
def azure_platform(azurite, az_container, tmp_path, monkeypatch):
    """The embedded defaults moved to Azure by environment variables only, exactly as a user would."""
    from riskml_assets.assets.registry import rollback_job
    from riskml_assets.definitions import all_assets
    from riskml_assets.jobs import jobs
    from riskml_assets.resources import default_resources
    from riskml_assets.sensors import schedules, sensors

    from .conftest import Platform

    for k in ("RISKML_STORAGE_OPTIONS", "RISKML_MLFLOW_ARTIFACTS", "AZURE_STORAGE_ACCOUNT_KEY",
              "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_ACCOUNT_NAME", "RISKML_EXPERIMENT",
              "MLFLOW_TRACKING_URI", "RISKML_GATES_FILE", "RISKML_TENANTS_DIR"):
        monkeypatch.delenv(k, raising=False)
    data = tmp_path / "data"
    monkeypatch.setenv("RISKML_DATA_DIR", str(data))
    monkeypatch.setenv("RISKML_STORAGE", f"abfs://{az_container}/riskml/assets")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite["connection_string"])
    # this test is about where things are stored, not about the model's quality on a tiny tenant: the model-quality
    # gates only warn (the data gates still fail), so the first model becomes champion and is scored
    (tmp_path / "gates.yaml").write_text("".join(f"{g}:\n  action: warn\n" for g in QUALITY_GATES))
    monkeypatch.setenv("RISKML_GATES_FILE", str(tmp_path / "gates.yaml"))
    resources = default_resources()
    assert resources["io_manager"].azure_connection_string == dg.EnvVar("AZURE_STORAGE_CONNECTION_STRING")
    art = f"wasbs://{az_container}@devstoreaccount1.blob.core.windows.net/riskml/mlartifacts"
    assert resources["mlflow"].artifact_location == art and resources["model_registry"].artifact_location == art
    # an in-memory instance: the event log is not what this test is about, and SQLite's event writes are half of
    # a run's time on a busy machine (the persistent instance is tested on PostgreSQL)
    with dg.DagsterInstance.ephemeral() as instance:
        p = Platform(tmp_path, instance)
        p.incoming = data / "incoming"
        p.resources = resources = {**p.resources, **resources}  # + any other resource the Platform binds
        p.defs = dg.Definitions(assets=all_assets, jobs=[*jobs, rollback_job], resources=resources, sensors=sensors,
                                schedules=schedules, executor=dg.in_process_executor)
        yield p, data, az_container


def test_ingest_train_score_on_azurite_with_mlflow_artifacts_in_the_same_container(azure_platform, azurite):
    from riskml_assets.core.scoring import score_open_opportunities

    platform, data, container = azure_platform
    t0 = time.monotonic()
    sim = simulator.simulate_tenant(simulator.TenantSpec(TENANT, 25.0, 2), weeks=WEEKS)
    simulator.write_tenant(sim, platform.incoming, data / "oracle")
    platform.ingest_all(TENANT)
    t1 = time.monotonic()
    week = platform.weeks(TENANT)[-1]
    train = platform.run("train_job", TENANT, week, run_config=TRAIN)
    assert train.success
    t2 = time.monotonic()
    score = platform.run("score_job", TENANT, week)
    assert score.success
    print(f"azurite path: ingest {len(platform.weeks(TENANT))} weeks {t1 - t0:.1f}s, train {t2 - t1:.1f}s, "
          f"score {time.monotonic() - t2:.1f}s")

    # every asset value is in the blob container, nothing in the local asset folder
    assert not (data / "assets").exists() and not (data / "mlartifacts").exists()
    cc, names = _blobs(azurite, container, "riskml/assets/")
    stored = {n.split("/")[2] for n in names}
    materialized = {e.asset_key.to_user_string() for r in (train, score) for e in r.get_asset_materialization_events()}
    assert {"training_examples", "risk_model", "risk_calibrator", "risk_evaluation",
            "registered_models", "risk_scores"} <= materialized
    assert materialized | {"risk_snapshots", "opportunity_outcomes", "activity_events"} <= stored
    assert f"riskml/assets/risk_model/{TENANT}/{week}.json" in names
    assert sum(n.startswith(f"riskml/assets/risk_snapshots/{TENANT}/") for n in names) == len(platform.weeks(TENANT))

    # the registered model's files are in the same container (MLflow's wasbs:// artifact repository)
    registry = platform.resources["model_registry"].get()
    version = registry.champion_version(TENANT, "risk")
    assert version == "1"
    mv = registry.client.get_model_version(registry.model_name(TENANT, "risk"), version)
    run_uri = registry.client.get_run(mv.run_id).info.artifact_uri
    assert run_uri.startswith(f"wasbs://{container}@devstoreaccount1.blob.core.windows.net/riskml/mlartifacts/")
    _, model_blobs = _blobs(azurite, container, "riskml/mlartifacts/")
    prefix = run_uri.split(".net/", 1)[1] + "/" + mv.tags["riskml.artifact_path"] + "/"
    files = {n.removeprefix(prefix) for n in model_blobs if n.startswith(prefix)}
    assert {"model/MLmodel", "model/model.json", "riskml/artifact.json", "riskml/calibrator.json"} <= files
    # the training run's own artifacts (MlflowTracking) went there too
    train_run = json.loads(cc.download_blob(
        f"riskml/assets/risk_model/{TENANT}/{week}.json").readall())["mlflow_run_id"]
    assert registry.client.get_run(train_run).info.artifact_uri.startswith(f"wasbs://{container}@")

    # risk_scores read straight from Azurite equal a recomputation from the champion (loaded back from Azurite)
    scores = _read_parquet(cc, f"riskml/assets/risk_scores/{TENANT}/{week}.parquet")
    snaps = pd.concat([_read_parquet(cc, n) for n in names if n.startswith(f"riskml/assets/risk_snapshots/{TENANT}/")],
                      ignore_index=True)
    acts = pd.concat([_read_parquet(cc, n) for n in names if n.startswith(f"riskml/assets/activity_events/{TENANT}/")],
                     ignore_index=True)
    from riskml_assets.core.contract import week_bounds

    start, end = week_bounds(week)
    ts = pd.to_datetime(snaps["snapshot_date"])
    latest = snaps[(ts >= start) & (ts < end)]
    champ = registry.load(TENANT, "risk", alias="champion")
    expected = score_open_opportunities(snaps, acts if len(acts) else None, latest, champ, None, 0.0)
    key = ["opportunity_id", "snapshot_date"]
    got = scores.sort_values(key).reset_index(drop=True)
    want = expected.sort_values(key).reset_index(drop=True)
    assert len(got) == latest["opportunity_id"].nunique() > 0
    np.testing.assert_allclose(got["p_lost"].to_numpy(), want["p_lost"].to_numpy(), rtol=0, atol=1e-12)
    assert list(got["opportunity_id"]) == list(want["opportunity_id"])


WINDOW_WEEKS = ["2026-10-26", "2026-11-02", "2026-11-16"]  # three stored weeks; the rest of the window is missing


def test_a_lookback_window_on_blob_storage_lists_once_instead_of_asking_each_partition(azurite, az_container,
                                                                                       monkeypatch):
    """A 78-week window with 3 stored weeks: before, each missing week cost 4 exists() look-ups (parquet, json, and
    the same for Dagster's back-compat path), each one or two HTTP round trips: about 300 per input on Azure."""
    import adlfs

    from riskml_assets.io_manager import RiskmlIOManager
    from riskml_assets.partitions import LOOKBACK_WEEKS, lookback_mapping, tenant_week

    @dg.asset(partitions_def=tenant_week, name="probe")
    def probe(context) -> pd.DataFrame:
        return pd.DataFrame({"week": [context.partition_key.keys_by_dimension["week"]]})

    @dg.asset(partitions_def=tenant_week, ins={"probe": dg.AssetIn(
        partition_mapping=lookback_mapping, metadata={"allow_missing_partitions": True})})
    def window(probe) -> pd.DataFrame:
        return pd.concat(list(probe.values()), ignore_index=True)

    io = RiskmlIOManager(base_path=f"abfs://{az_container}/assets",
                         azure_connection_string=dg.EnvVar("RISKML_TEST_AZ_CONN"))
    monkeypatch.setenv("RISKML_TEST_AZ_CONN", azurite["connection_string"])
    calls = {"info": 0, "exists": 0, "ls": 0}
    for name in calls:  # count the real filesystem's look-ups (each is a request to the blob service)
        real = getattr(adlfs.AzureBlobFileSystem, f"_{name}")

        async def counted(self, *a, _real=real, _name=name, **k):
            calls[_name] += 1
            return await _real(self, *a, **k)
        monkeypatch.setattr(adlfs.AzureBlobFileSystem, f"_{name}", counted)
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("tenant", ["winco"])
        for w in WINDOW_WEEKS:
            assert dg.materialize([probe], partition_key=f"winco|{w}", instance=instance,
                                  resources={"io_manager": io}).success
        for k in calls:
            calls[k] = 0
        res = dg.materialize([probe, window], selection=[window], partition_key=f"winco|{WINDOW_WEEKS[-1]}",
                             instance=instance, resources={"io_manager": io})
        assert res.success
    cc, _ = _blobs(azurite, az_container)
    got = _read_parquet(cc, f"assets/window/winco/{WINDOW_WEEKS[-1]}.parquet")
    assert sorted(got["week"]) == WINDOW_WEEKS  # the three stored weeks, none invented
    lookups = calls["info"] + calls["exists"] + calls["ls"]
    assert lookups <= 3 * len(WINDOW_WEEKS) + 6, (calls, LOOKBACK_WEEKS)  # listings + a few per stored week
