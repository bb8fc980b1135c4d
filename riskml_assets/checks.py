"""Gates become blocking asset checks: one factory for specs, one for results.

Each asset declares the gates it owns; it evaluates them on the frame it just built (no reload) and
returns the results with its materialization. A gate whose action is ``fail`` reports ERROR severity,
which stops downstream assets of the same run; ``warn`` reports WARN and never blocks.

Every spec is partitioned like its asset (``partitions.tenant_week``): Dagster then stores each result
with the run's partition key (``AssetCheckEvaluation.partition``), so a tenant-week's checks are its own
in the UI, in ``riskml checks`` and for the schedule, instead of "the latest result of any partition".
A partitioned ``AssetCheckSpec`` is a *preview* API in Dagster 1.13 (pinned version); its
PreviewWarning is silenced here, for these specs only.
"""

import functools
import inspect
import warnings
from dataclasses import dataclass
from typing import Iterable, Mapping

import dagster as dg

from .core.gates import Gate, default_gates
from .partitions import tenant_week


def check_spec(name: str, asset: str, description: str, *, blocking: bool = True,
               partitions_def: dg.PartitionsDefinition | None = tenant_week) -> dg.AssetCheckSpec:
    """An in-asset check spec partitioned like its asset: results are stored per partition."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=dg.PreviewWarning,
                                message=".*partitions_def on an AssetCheckSpec")
        return dg.AssetCheckSpec(name, asset=asset, blocking=blocking, description=description,
                                 partitions_def=partitions_def)


def gate_specs(asset_name: str, gate_names: tuple[str, ...],
               partitions_def: dg.PartitionsDefinition | None = tenant_week) -> list[dg.AssetCheckSpec]:
    specs, defaults = [], default_gates()
    for name in gate_names:
        g = defaults[name]
        specs.append(check_spec(name, asset_name, partitions_def=partitions_def,
                                description=f"{g.description} (default: {g.metric} {g.op} {g.threshold:g}, "
                                            f"action {g.action}; configurable)"))
    return specs


def gate_results(gates: Mapping[str, Gate], values: Mapping[str, object], extra: Mapping[str, Mapping] | None = None,
                 log=None) -> list[dg.AssetCheckResult]:
    """Evaluate the named gates on ``values`` ({gate name: metric value})."""
    out = []
    for name, value in values.items():
        res = gates[name].evaluate(value)
        if log is not None:
            # a passed gate is said by its check evaluation (same text as its description); a stored log line
            # would repeat it (issue 11: one SQLite write per record) -- failures and warnings stay in the log
            (log.debug if res.passed else log.error if res.blocks else log.warning)(res.describe())
        meta = {"metric": res.gate.metric, "value": _num(value), "operator": res.gate.op,
                "threshold": float(res.gate.threshold), "action": res.gate.action}
        meta.update((extra or {}).get(name, {}))
        out.append(dg.AssetCheckResult(
            check_name=name, passed=res.passed, description=res.describe(), metadata=meta,
            severity=dg.AssetCheckSeverity.ERROR if res.gate.action == "fail" else dg.AssetCheckSeverity.WARN,
        ))
    return out


def checks_after_materialization(fn):
    """Decorate an asset's compute function (under ``@dg.asset``) that returns or yields a ``MaterializeResult``
    with ``check_results``: the materialization is yielded without them and each check result after it, with its
    asset key. Same events, same order, same blocking; but Dagster no longer looks up the target materialization
    of every embedded check result a first time only to learn its key (measured: one event-log query per gate,
    23 per training run), it does so once, when the check is stored."""

    @functools.wraps(fn)
    def compute(*args, **kwargs):
        out = fn(*args, **kwargs)
        context = next((a for a in args if isinstance(a, dg.AssetExecutionContext)), None)
        for item in out if inspect.isgenerator(out) else ([] if out is None else [out]):
            yield from _separated(item, context)

    return compute


def _separated(item, context):
    if not isinstance(item, dg.MaterializeResult) or not item.check_results:
        yield item
        return
    key = item.asset_key or (context.asset_key if context is not None else None)
    if key is None:  # no key to give the check results: leave them where Dagster resolves it
        yield item
        return
    yield dg.MaterializeResult(asset_key=item.asset_key, metadata=item.metadata, data_version=item.data_version,
                               tags=item.tags, value=item.value)
    for c in item.check_results:
        yield c if c.asset_key is not None else c._replace(asset_key=key)


def _num(v):
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float)):
        return float(v) if v == v else -1.0
    return str(v)


def summarize(results: list[dg.AssetCheckResult]) -> str:
    return "; ".join(f"{r.check_name}={'pass' if r.passed else 'FAIL'}" for r in results)


# ----------------------------------------------------------------- reading results back, per partition
COMPLETED = ("SUCCEEDED", "FAILED")


@dataclass(frozen=True)
class PartitionCheck:
    """The stored state of one check for one partition: ``status`` is SUCCEEDED, FAILED or PLANNED (a run
    intends to evaluate it: still running, or it ended without a result); ``evaluation`` is None while PLANNED."""
    key: dg.AssetCheckKey
    status: str
    run_id: str
    evaluation: dg.AssetCheckEvaluation | None


def partition_checks(instance: dg.DagsterInstance, keys: Iterable[dg.AssetCheckKey], partition: str,
                     completed: bool = False) -> dict[dg.AssetCheckKey, PartitionCheck]:
    """The latest record of each check for one partition (``completed``: the latest with a result).

    Only results stored with that partition are seen (partitioned specs, see ``check_spec``); results
    recorded before the specs were partitioned carry ``partition=None`` and are not returned.
    """
    from dagster._core.event_api import PartitionKeyFilter
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus as S

    keys = list(dict.fromkeys(keys))
    storage, flt = instance.event_log_storage, PartitionKeyFilter(key=partition)
    if completed:
        recs = {}
        for k in keys:
            hist = storage.get_asset_check_execution_history(k, limit=1, status={S.SUCCEEDED, S.FAILED},
                                                             partition_filter=flt)
            if hist:
                recs[k] = hist[0]
    else:  # one query; the storage matches asset keys and names separately, so keep only the asked keys
        wanted = set(keys)
        recs = {k: r for k, r in storage.get_latest_asset_check_execution_by_key(keys, partition_filter=flt).items()
                if k in wanted}
    out = {}
    for k, r in recs.items():
        ev = None
        if r.status.value in COMPLETED and r.event is not None and r.event.dagster_event is not None:
            ev = r.event.dagster_event.event_specific_data
        out[k] = PartitionCheck(key=k, status=r.status.value, run_id=r.run_id, evaluation=ev)
    return out
