"""`riskml run` with the pooled model (issue 12 item 2): every tenant's features and splits first when a tenant of
the run opts in, a tenant whose preparation failed or was blocked is not trained, and the summary shows which
candidate is each tenant's champion (source and algorithm)."""

import re
from pathlib import Path

import dagster as dg
import pytest

from riskml_assets import cli
from riskml_assets.launch import Outcome
from riskml_assets.partitions import partition_key, tenant_week

REPO = Path(__file__).resolve().parents[1]
WEEK = "2026-11-16"


def test_training_plan_prepares_every_tenant_first_only_when_someone_opts_in():
    tenants = ["acme", "globex", "initech"]
    assert cli.training_plan(tenants, set()) == {"prepare": [], "per_tenant": ("train_job", "score_job")}
    assert cli.training_plan(tenants, {"umbrella"}) == {"prepare": [], "per_tenant": ("train_job", "score_job")}
    # one opted-in tenant is enough: everybody of the run is prepared (the others may be pooled with it)
    plan = cli.training_plan(tenants, {"globex"})
    assert plan == {"prepare": tenants, "per_tenant": ("model_job", "score_job")}
    assert cli.training_plan([], {"globex"})["prepare"] == []


def test_model_job_and_prepare_job_split_train_job_without_overlap():
    from riskml_assets.definitions import defs
    from riskml_assets.jobs import MODEL_SELECTION, PREPARE_SELECTION, TRAIN_SELECTION

    graph = defs.resolve_asset_graph()
    prep, model, train = (s.resolve(graph) for s in (PREPARE_SELECTION, MODEL_SELECTION, TRAIN_SELECTION))
    assert not prep & model and prep | model == train  # nothing materialized twice, nothing of train_job left out
    assert dg.AssetKey("dataset_splits") in prep and dg.AssetKey("pooled_risk_model") in model
    assert {"prepare_job", "model_job"} <= {j.name for j in defs.resolve_all_job_defs()}


def test_pooled_opt_ins_read_the_tenant_configs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RISKML_TENANTS_DIR", str(tmp_path))
    (tmp_path / "a.yaml").write_text("pooled: true\n")
    (tmp_path / "b.yaml").write_text("pooled: false\n")
    (tmp_path / "bad.yaml").write_text("pooled: maybe\n")  # not a boolean: not opted in, said with the file
    assert cli.pooled_opt_ins(["a", "b", "bad", "none"]) == {"a": True, "b": False, "bad": False, "none": False}
    err = capsys.readouterr().err
    assert "bad counted as not opted in" in err and "bad.yaml" in err


def test_the_simulators_sample_tenants_opt_in_by_their_committed_configs(monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("RISKML_TENANTS_DIR", raising=False)
    from riskml_assets.core.simulator import DEFAULT_TENANTS

    names = [t.name for t in DEFAULT_TENANTS]
    assert cli.pooled_opt_ins(names + ["demo"]) == {**{n: True for n in names}, "demo": False}
    assert cli.training_plan(names, {n for n, o in cli.pooled_opt_ins(names).items() if o})["prepare"] == names


# ------------------------------------------------------------------------------------------------
# the prepare step on a real instance: failed or blocked tenants are held back
# ------------------------------------------------------------------------------------------------

@dg.asset(partitions_def=tenant_week, name="training_examples",
          check_specs=[dg.AssetCheckSpec("training_examples_rows", asset="training_examples", blocking=True),
                       dg.AssetCheckSpec("training_examples_warn", asset="training_examples")])
def _prep(context: dg.AssetExecutionContext):
    tenant = context.partition_key.keys_by_dimension["tenant"]
    if tenant == "broken":
        raise ValueError("no snapshots")
    yield dg.MaterializeResult(metadata={"dagster/row_count": 10})
    yield dg.AssetCheckResult(check_name="training_examples_rows", passed=tenant != "blocked",
                              severity=dg.AssetCheckSeverity.ERROR)
    yield dg.AssetCheckResult(check_name="training_examples_warn", passed=False, severity=dg.AssetCheckSeverity.WARN)


class _InProcessLauncher:
    """Runs the stand-in prepare asset in the instance (a real run of it) and answers like ``Launcher.run``."""

    def __init__(self, instance):
        self.instance, self.jobs = instance, []

    def run(self, job, pk, **_):
        self.jobs.append((job, pk))
        res = dg.materialize([_prep], partition_key=pk, instance=self.instance, raise_on_error=False)
        return Outcome(res.run_id, pk, res.success)


def test_a_tenant_whose_prepare_run_failed_or_was_blocked_is_not_trained(capsys):
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("tenant", ["good", "blocked", "broken"])
        launcher = _InProcessLauncher(instance)
        targets = {"good": WEEK, "blocked": WEEK, "broken": WEEK}
        refused = cli.prepare_tenants(launcher, instance, targets, list(targets))
        assert launcher.jobs == [("prepare_job", partition_key(t, WEEK)) for t in targets]
        assert refused == {"blocked": "prepare_job blocked by a gate (training_examples_rows)",
                           "broken": "prepare_job failed"}  # a WARN gate never holds a tenant back
    out = capsys.readouterr().out
    assert "$ riskml launch --job prepare_job --partition 'good|2026-11-16'" in out
    assert re.search(r"blocked\|2026-11-16: prepared FAILED", out) and re.search(r"good\|2026-11-16: prepared ok", out)


# ------------------------------------------------------------------------------------------------
# the summary: champion source/algorithm, gates of both runs
# ------------------------------------------------------------------------------------------------

def _evaluation(source, algorithm):
    @dg.asset(partitions_def=tenant_week, name="risk_evaluation",
              check_specs=[dg.AssetCheckSpec("risk_evaluation_ece", asset="risk_evaluation", blocking=True)])
    def _ev():
        yield dg.MaterializeResult(metadata={"auc": 0.75, "brier": 0.2, "ece": 0.03, "kept_variant": "as trained",
                                             "champion_source": source, "champion_algorithm": algorithm})
        yield dg.AssetCheckResult(check_name="risk_evaluation_ece", passed=True)

    return _ev


def test_summary_shows_the_champion_source_and_the_gates_of_the_prepare_and_model_runs(capsys):
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("tenant", ["globex", "acme"])
        for tenant, source, algo in (("globex", "pooled", "xgboost"), ("acme", "tenant_model", "random_forest")):
            pk = partition_key(tenant, WEEK)
            assert dg.materialize([_prep], partition_key=pk, instance=instance).success  # prepare_job's run
            assert dg.materialize([_evaluation(source, algo)], partition_key=pk, instance=instance).success
        rows = cli.summary_rows(instance, {"globex": WEEK, "acme": WEEK})
    by = {r["tenant"]: r for r in rows}
    assert (by["globex"]["champion_source"], by["globex"]["champion_algorithm"]) == ("pooled", "xgboost")
    assert (by["acme"]["champion_source"], by["acme"]["champion_algorithm"]) == ("tenant_model", "random_forest")
    # both runs' gates: the prepare run's two and the model run's one
    assert by["globex"]["gates"] == "2/3 (warn: training_examples_warn)" and by["globex"]["status"] == "evaluated"
    cli.print_risk_summary(rows + [{"tenant": "initech", "week": WEEK, "rows": 1500, "auc": 0.7, "brier": 0.16,
                                    "ece": 0.02, "champion_source": "crm_score", "champion_algorithm": "crm_score",
                                    "status": "evaluated", "gates": "20/20"},
                                   {"tenant": "new", "week": WEEK, "rows": None, "auc": None, "brier": None,
                                    "ece": None, "status": "not trained", "gates": ""}])
    out = capsys.readouterr().out
    assert re.search(r"^tenant\s+week\s+rows\s+AUC\s+Brier\s+ECE\s+champion \(source/algo\)\s+status", out, re.M)
    line = r"^{}\s+2026-11-16\s+(\d+|-)\s+([\d.]+|-)\s+([\d.]+|-)\s+([\d.]+|-)\s+(\S+)\s+(evaluated|not trained)"
    shown = {t: re.search(line.format(t), out, re.M).group(5) for t in ("globex", "acme", "initech", "new")}
    assert shown == {"globex": "pooled/xgboost", "acme": "tenant_model/random_forest", "initech": "crm_score",
                     "new": "-"}


@pytest.mark.parametrize("row, label", [({"champion_source": "pooled", "champion_algorithm": "xgboost"},
                                         "pooled/xgboost"),
                                        ({"champion_source": "tenant_model", "champion_algorithm": None},
                                         "tenant_model"),
                                        ({}, "-")])
def test_champion_label(row, label):
    assert cli.champion_label(row) == label
