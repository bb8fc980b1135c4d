"""The production instance (deploy/dagster.yaml) on a real PostgreSQL server, with MLflow tracking and registry on
PostgreSQL too: the end-to-end path of the SQLite asset test (ingest a small tenant, train, register, score), then
everything read back from the databases by a fresh instance built from the same file.

Marker ``services``: the ``postgres`` fixture starts a throw-away PostgreSQL server on 127.0.0.1, ``azurite`` the blob
emulator that receives the compute logs (``python -m pytest -m services riskml_assets_tests/test_postgres.py``).
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml

from riskml_assets.core import simulator

from .conftest import Platform, check_results, in_forked_child, materialized

pytestmark = pytest.mark.services

DEPLOY_YAML = Path(__file__).resolve().parents[1] / "deploy" / "dagster.yaml"
TENANT = "pgco"
# This test is about where runs, events, checks and models are stored, not about the model quality of one small
# draw: the statistical gates of a tenant this small are noise (see test_assets.trained), so they only warn here.
# The structural gates (schemas, keys, splits, parity, minimum rows) keep blocking.
WARN_ONLY = ("risk_model_beats_base_rate", "risk_calibrator_ece", "risk_evaluation_ece", "risk_evaluation_beats_baselines",
             "augmented_examples_ks", "augmented_examples_corr_distance", "augmented_examples_category_distance")


def psycopg2_url(url: str) -> str:
    """SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3 (not installed); dagster-postgres and MLflow need
    the psycopg2 driver named in the URL."""
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


def instance_config(azurite_conn_env: str) -> dict:
    """deploy/dagster.yaml as shipped, except that compute logs go to the emulator: the stock
    AzureBlobComputeLogManager only builds https://<account>.blob.core.windows.net URLs, so the project's
    connection-string subclass (riskml_assets.azure) takes its place with the same settings."""
    config = yaml.safe_load(DEPLOY_YAML.read_text())
    logs = config["compute_logs"]
    assert (logs["module"], logs["class"]) == ("dagster_azure.blob.compute_log_manager", "AzureBlobComputeLogManager")
    settings = {k: v for k, v in logs["config"].items() if k != "default_azure_credential"}
    config["compute_logs"] = {"module": "riskml_assets.azure", "class": "ConnStrAzureBlobComputeLogManager",
                              "config": {**settings, "connection_string": {"env": azurite_conn_env}}}
    return config


@pytest.fixture(scope="module")
def prod(postgres, azurite, tmp_path_factory):
    """A deployment on PostgreSQL: the instance from deploy/dagster.yaml (env vars -> a fresh database), MLflow
    tracking + registry on another fresh database, a simulated tenant ingested week by week, trained and scored."""
    from azure.storage.blob import BlobServiceClient

    from riskml_assets.assets.registry import RegistryResource
    from riskml_assets.resources import MlflowTracking

    suffix = uuid.uuid4().hex[:8]
    dagster_url = psycopg2_url(postgres["createdb"](f"dagster_{suffix}"))
    mlflow_url = psycopg2_url(postgres["createdb"](f"mlflow_{suffix}"))
    logs_container = f"compute-logs-{suffix}"
    BlobServiceClient.from_connection_string(azurite["connection_string"]).create_container(logs_container)

    root = tmp_path_factory.mktemp("riskml-pg")
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config("RISKML_TEST_AZURITE_CONNECTION_STRING")))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        mp.setenv("DAGSTER_POSTGRES_URL", dagster_url)
        mp.setenv("DAGSTER_COMPUTE_LOGS_ACCOUNT", azurite["account_name"])
        mp.setenv("DAGSTER_COMPUTE_LOGS_CONTAINER", logs_container)
        mp.setenv("RISKML_TEST_AZURITE_CONNECTION_STRING", azurite["connection_string"])
        # MLflow keeps a connection pool per store for the life of the process; idle pooled connections would make
        # the server's shutdown at the end of the session wait for them
        mp.setenv("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")
        instance = dg.DagsterInstance.get()  # $DAGSTER_HOME/dagster.yaml, as the webserver and daemon open it
        try:
            platform = Platform(root, instance)
            artifacts = (root / "mlartifacts").as_uri()  # RISKML_MLFLOW_ARTIFACTS in a deployment (blob there)
            platform.resources["mlflow"] = MlflowTracking(tracking_uri=mlflow_url, experiment_name="riskml-pg",
                                                          artifact_location=artifacts)
            platform.resources["model_registry"] = RegistryResource(tracking_uri=mlflow_url, artifact_location=artifacts)
            d = platform.defs
            platform.defs = dg.Definitions(assets=d.assets, jobs=d.jobs, sensors=d.sensors, schedules=d.schedules,
                                           resources=platform.resources, executor=d.executor)
            (root / "gates.yaml").write_text(yaml.safe_dump({g: {"action": "warn"} for g in WARN_ONLY}))

            # 16 weeks at 40 new opportunities a week (about 3,600 labelled snapshots): a draw whose first model
            # clears the registry's promotion floors, so it becomes champion (10 weeks at 60 a week did not)
            sim = simulator.simulate_tenant(simulator.TenantSpec(TENANT, 40.0, 3), weeks=16)
            simulator.write_tenant(sim, platform.incoming, platform.oracle)
            weeks = platform.weeks(TENANT)
            t0 = time.monotonic()
            results = {("ingest_job", w): platform.run("ingest_job", TENANT, w) for w in weeks}
            week, t1 = weeks[-1], time.monotonic()
            results[("train_job", week)] = platform.run("train_job", TENANT, week)
            t2 = time.monotonic()
            results[("score_job", week)] = platform.run("score_job", TENANT, week)
            print(f"\n[postgres e2e] ingest {len(weeks)} weeks {t1 - t0:.1f}s, train {t2 - t1:.1f}s, "
                  f"score {time.monotonic() - t2:.1f}s")
            yield {"platform": platform, "instance": instance, "home": home, "week": week, "results": results,
                   "dagster_url": dagster_url, "mlflow_url": mlflow_url, "logs_container": logs_container,
                   "azurite": azurite}
        finally:
            instance.dispose()


def failures(results) -> dict:
    """What failed in which run: the failed steps' errors and the failed checks."""
    out = {}
    for key, r in results.items():
        if not r.success:
            out[key] = {"steps": {e.step_key: e.event_specific_data.error.message.strip()[-300:]
                                  for e in r.all_events if e.is_step_failure},
                        "checks": [n for n, ok in check_results(r).items() if not ok]}
    return out


def fresh_instance(prod) -> dg.DagsterInstance:
    """Another instance object from the same file and variables: it can only see what is in PostgreSQL."""
    return dg.DagsterInstance.from_config(str(prod["home"]))


def sql(url: str, query: str, *args) -> list[tuple]:
    import psycopg2

    conn = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://", 1))
    try:
        with conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall()
    finally:
        conn.close()


def test_instance_from_deploy_yaml_is_postgres_with_run_queue_monitoring_and_pools(prod):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    inst = prod["instance"]
    assert isinstance(inst.run_storage, PostgresRunStorage)
    assert isinstance(inst.event_log_storage, PostgresEventLogStorage)
    assert isinstance(inst.schedule_storage, PostgresScheduleStorage)
    assert type(inst.compute_log_manager).__name__ == "ConnStrAzureBlobComputeLogManager"
    assert type(inst.run_launcher).__name__ == "DefaultRunLauncher"
    assert type(inst.run_coordinator).__name__ == "QueuedRunCoordinator"
    assert inst.run_coordinator.get_run_queue_config().max_concurrent_runs == 10
    assert inst.run_monitoring_enabled and inst.run_monitoring_settings["free_slots_after_run_end_seconds"] == 60
    assert inst.run_monitoring_max_runtime_seconds == 43200
    assert inst.global_op_concurrency_default_limit == 1 and inst.event_log_storage.supports_global_concurrency_limits


def test_runs_materializations_and_check_results_are_in_postgres(prod):
    results, week = prod["results"], prod["week"]
    assert all(r.success for r in results.values()), failures(results)
    train = results[("train_job", week)]
    assert {"risk_model", "risk_calibrator", "risk_evaluation", "registered_models"} <= materialized(train)
    ran = {r.run_id: job for (job, _), r in results.items()}

    inst = fresh_instance(prod)
    try:
        stored = {r.run_id: r for r in inst.get_runs(limit=1000)}
        assert set(stored) == set(ran)  # every run of this deployment, nothing else
        assert {r.job_name for r in stored.values()} == {"ingest_job", "train_job", "score_job"}
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in stored.values())
        assert stored[train.run_id].tags["dagster/partition"] == f"{TENANT}|{week}"
        # materializations with their partition, from the event log in PostgreSQL
        ev = inst.get_latest_materialization_event(dg.AssetKey("registered_models"))
        assert ev.run_id == train.run_id and ev.dagster_event.partition == f"{TENANT}|{week}"
        weeks_ingested = inst.get_materialized_partitions(dg.AssetKey("risk_snapshots"))
        assert weeks_ingested == {f"{TENANT}|{w}" for (job, w) in results if job == "ingest_job"}
        # check results, recorded per run with the run's pass/fail
        ck = dg.AssetCheckKey(dg.AssetKey("risk_scores"), "risk_scores_drift")
        rec = inst.event_log_storage.get_asset_check_execution_history(ck, limit=1)[0]
        assert rec.run_id == results[("score_job", week)].run_id and rec.status.value == "SUCCEEDED"
    finally:
        inst.dispose()

    # the same facts straight from the tables
    url = prod["dagster_url"]
    assert sql(url, "select count(*) from runs where status = 'SUCCESS'")[0][0] == len(ran)
    mats = sql(url, "select count(*) from event_logs where dagster_event_type = 'ASSET_MATERIALIZATION' "
                    "and asset_key = %s and partition = %s", '["registered_models"]', f"{TENANT}|{week}")
    assert mats[0][0] == 1
    checks = dict(sql(url, "select check_name, execution_status from asset_check_executions where run_id = %s",
                      train.run_id))
    expected = check_results(train)
    assert set(checks) == set(expected) and len(checks) >= 15
    assert {n for n, s in checks.items() if s == "SUCCEEDED"} == {n for n, ok in expected.items() if ok}


def test_model_registered_as_champion_in_the_postgres_mlflow_registry_and_scored(prod):
    import mlflow

    platform, week, url = prod["platform"], prod["week"], prod["mlflow_url"]
    train = prod["results"][("train_job", week)]
    client = mlflow.MlflowClient(tracking_uri=url, registry_uri=url)
    reg = platform.load("registered_models", TENANT, week)
    assert reg["champion_after"] == "1", reg.get("decision")
    mv = client.get_model_version_by_alias(f"riskml.{TENANT}.risk", "champion")
    assert str(mv.version) == "1"  # MLflow 3.17 returns an int
    assert str(reg["version"]) == "1"
    # the registry rows really are in PostgreSQL
    rows = sql(url, "select name, alias, version from registered_model_aliases")
    assert (f"riskml.{TENANT}.risk", "champion", 1) in rows
    # the training run (MLflow tracking on PostgreSQL) points back at the Dagster run that trained it
    model = platform.load("risk_model", TENANT, week)
    run = client.get_run(model["mlflow_run_id"])
    assert run.data.tags["dagster.run_id"] == train.run_id
    assert run.data.metrics["auc_validation"] == pytest.approx(model["metrics"]["auc_validation"])
    # scoring used that champion
    scores = platform.load("risk_scores", TENANT, week)
    snaps = platform.load("risk_snapshots", TENANT, week)
    assert set(scores["opportunity_id"]) == set(snaps["opportunity_id"])
    assert scores["p_lost"].between(0, 1).all() and (scores["model_alias"] == "champion").all()


def test_champion_served_from_the_postgres_registry_predicts_the_risk_scores(prod):
    """models:/riskml.<tenant>.risk@champion resolved through the PostgreSQL registry loads the registered pyfunc,
    and its predictions on the week's feature rows are risk_scores' p_lost."""
    import mlflow
    import numpy as np
    import pandas as pd

    from riskml_assets.core import scoring
    from riskml_assets.core.contract import week_bounds

    platform, week, url = prod["platform"], prod["week"], prod["mlflow_url"]

    def frames(asset: str) -> pd.DataFrame:
        files = sorted((platform.root / "assets" / asset / TENANT).glob("*.parquet"))
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)

    bundle = platform.resources["model_registry"].get().load(TENANT, "risk", alias="champion")
    snaps, acts = frames("risk_snapshots"), frames("activity_events")
    days = [d.strftime("%Y-%m-%d") for d in pd.date_range(*week_bounds(week), inclusive="left")]
    latest = snaps[pd.to_datetime(snaps["snapshot_date"]).dt.strftime("%Y-%m-%d").isin(days)]
    rows = scoring.feature_rows(snaps, acts, latest, bundle)
    scores = platform.load("risk_scores", TENANT, week)
    assert rows["opportunity_id"].tolist() == scores["opportunity_id"].astype(str).tolist() and len(rows) > 20
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(url)
    try:
        model = mlflow.pyfunc.load_model(f"models:/riskml.{TENANT}.risk@champion")
    finally:
        mlflow.set_tracking_uri(previous)
    np.testing.assert_allclose(model.predict(rows)["p_lost"].to_numpy(), scores["p_lost"].to_numpy(), rtol=0, atol=1e-9)


def test_mlflow_registry_pool_holds_one_slot_on_postgres(prod):
    """The pool limit of deploy/dagster.yaml is in force: registration used pool mlflow_registry with 1 slot,
    freed when the run ended; a second claimant waits until the first frees it."""
    inst = fresh_instance(prod)
    try:
        storage = inst.event_log_storage
        assert "mlflow_registry" in storage.get_concurrency_keys()
        info = storage.get_concurrency_info("mlflow_registry")
        assert info.slot_count == 1 and info.active_slot_count == 0 and info.pending_step_count == 0
        a, b = f"test-{uuid.uuid4().hex}", f"test-{uuid.uuid4().hex}"
        try:
            assert storage.claim_concurrency_slot("mlflow_registry", a, "registered_models").is_claimed
            second = storage.claim_concurrency_slot("mlflow_registry", b, "registered_models")
            assert not second.is_claimed  # limit 1: the second writer waits
            storage.free_concurrency_slots_for_run(a)
            assert storage.claim_concurrency_slot("mlflow_registry", b, "registered_models").is_claimed
        finally:
            storage.free_concurrency_slots_for_run(a)
            storage.free_concurrency_slots_for_run(b)
        assert storage.get_concurrency_info("mlflow_registry").active_slot_count == 0
    finally:
        inst.dispose()


def test_step_logs_land_in_blob_storage(prod):
    """Compute logs go through the blob compute-log manager: the training run's captured stdout/stderr are blobs
    in the container named by DAGSTER_COMPUTE_LOGS_CONTAINER, under the yaml's prefix, and a fresh instance reads
    the same bytes back."""
    from azure.storage.blob import BlobServiceClient

    train = prod["results"][("train_job", prod["week"])]
    captured = [e.logs_captured_data for e in train.all_events if e.event_type_value == "LOGS_CAPTURED"]
    assert len(captured) == 1  # in-process executor: one capture for the whole run
    file_key = captured[0].file_key
    container = BlobServiceClient.from_connection_string(prod["azurite"]["connection_string"]).get_container_client(
        prod["logs_container"])
    prefix = yaml.safe_load(DEPLOY_YAML.read_text())["compute_logs"]["config"]["prefix"]
    base = f"{prefix}/storage/{train.run_id}/compute_logs/{file_key}"
    names = {b.name for b in container.list_blobs(name_starts_with=f"{prefix}/storage/{train.run_id}/")}
    assert {base + ".out", base + ".err"} <= names  # (a .partial copy may remain from the periodic upload)
    inst = fresh_instance(prod)
    try:
        data = inst.compute_log_manager.get_log_data([train.run_id, "compute_logs", file_key])
        assert (data.stdout or b"") == container.download_blob(base + ".out").readall()
        assert (data.stderr or b"") == container.download_blob(base + ".err").readall()
    finally:
        inst.dispose()


def test_postgres_storages_keep_one_checked_connection_and_a_forked_child_opens_its_own(postgres, tmp_path):
    """instance_storage on dagster-postgres: runs on a PostgreSQL instance open a handful of server connections
    instead of one per statement (Dagster's own methods, compared in the same test), give the same records, survive
    the server dropping the kept connection (checked before use), and a forked child does not use its parent's."""
    import sqlalchemy
    from sqlalchemy import event

    from riskml_assets import instance_storage as S

    url = psycopg2_url(postgres["createdb"](f"dagster_{uuid.uuid4().hex[:8]}"))
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump({"storage": {"postgres": {"postgres_url": url}},
                                                       "telemetry": {"enabled": False}}))
    parts = dg.StaticPartitionsDefinition(["a", "b", "c"])

    @dg.asset(partitions_def=parts, io_manager_key="mem",
              check_specs=[dg.AssetCheckSpec("positive", asset="pg_kept", blocking=True)])
    def pg_kept(context):
        yield dg.MaterializeResult()
        yield dg.AssetCheckResult(check_name="positive", passed=True)

    new_connections = []
    listener = lambda *_: new_connections.append(1)  # noqa: E731  every new DBAPI connection of any engine
    event.listen(sqlalchemy.engine.Engine, "connect", listener)

    def runs(instance) -> int:
        new_connections.clear()
        for key in ("a", "b", "c"):
            assert dg.materialize([pg_kept], instance=instance, partition_key=key,
                                  resources={"mem": dg.InMemoryIOManager()}).success
        return len(new_connections)

    try:
        S.install_when_imported()  # as the code location does; the instance opened after it imports dagster-postgres
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.event_log_storage)._connect is S._pg_connect
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            runs(instance)  # the kept engines and the tables exist from here on
            kept = runs(instance)
            S.uninstall()
            try:
                stock = runs(instance)
            finally:
                S.install()
            assert kept == 0 and stock >= 100, (kept, stock)
            records = instance.fetch_materializations(dg.AssetKey("pg_kept"), limit=100).records
            assert len(records) == 9 and {r.partition_key for r in records} == {"a", "b", "c"}

            # the server drops the kept connections (a restart, a proxy's idle timeout): checked before use, replaced
            admin = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
            with admin.connect() as conn:
                ended = conn.execute(sqlalchemy.text(
                    "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                    "where datname = current_database() and pid <> pg_backend_pid()")).scalar()
            admin.dispose()
            assert ended >= 1
            assert runs(instance) >= 1  # new connections replaced the dropped ones, and the runs succeeded

            assert runs(instance) == 0  # the new ones are kept in turn
            storage = instance.event_log_storage
            parent_engine = storage._riskml_pg_engine
            def child() -> str:
                forgot = "_riskml_pg_engine" not in storage.__dict__
                ok = dg.materialize([pg_kept], instance=instance, partition_key="a",
                                    resources={"mem": dg.InMemoryIOManager()}).success
                return f"{forgot} {ok} {storage._riskml_pg_engine is not parent_engine}"

            assert in_forked_child(child) == "True True True"
            assert storage._riskml_pg_engine is parent_engine
            assert runs(instance) == 0  # the parent's kept connections still work after the child's exit
            assert len(instance.fetch_materializations(dg.AssetKey("pg_kept"), limit=100).records) == 6 * 3 + 1
    finally:
        event.remove(sqlalchemy.engine.Engine, "connect", listener)


@pytest.mark.parametrize("order", ["code location first", "instance first"])
def test_postgres_storages_are_patched_whichever_loads_first(postgres, tmp_path, order):
    """A code server loads the code location, then opens the instance; a run worker opens its instance, then loads
    the code location: in both, the instance's PostgreSQL storages use the kept engines."""
    import subprocess
    import sys

    url = psycopg2_url(postgres["createdb"](f"dagster_{uuid.uuid4().hex[:8]}"))
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump({"storage": {"postgres": {"postgres_url": url}},
                                                           "telemetry": {"enabled": False}}))
    steps = {"code": "import riskml_assets.definitions", "instance": f"i = dg.DagsterInstance.from_config({str(tmp_path)!r})"}
    first, second = ("code", "instance") if order == "code location first" else ("instance", "code")
    code = "\n".join(["import dagster as dg", steps[first], steps[second],
                      "from riskml_assets import instance_storage as S",
                      "assert type(i.event_log_storage)._connect is S._pg_connect",
                      "assert type(i.run_storage).connect is S._pg_connect",
                      "assert type(i.schedule_storage).connect is S._pg_connect",
                      "i.add_dynamic_partitions('tenant', ['x'])",
                      "assert i.get_dynamic_partitions('tenant') == ['x']",
                      "assert i.event_log_storage._riskml_pg_engine.pool.size() == 1"])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
