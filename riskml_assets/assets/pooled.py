"""The pooled risk model (opt-in, issue 12 item 2a): one model over the train rows of the tenants who opt in.

The maths is ``core.pooled``; this shell reads the opt-ins from the tenant configs, loads every tenant's
``dataset_splits`` and ``feature_manifest`` of the partition's week and attaches metadata.

Run order: the pooled model of ``tenant|week`` reads the ``dataset_splits`` of **every** tenant for that week
(missing ones are skipped, ``allow_missing_partitions``). Materialize ``dataset_splits`` for all tenants of the
week first (e.g. the ``prepare`` group for every tenant), then the ``risk`` group; a tenant run before the others
were prepared gets ``available: false`` with the reason.
"""

from typing import Literal

import dagster as dg
from ..core.lazy import lazy_module

pd = lazy_module("pandas")

from pydantic import Field

from ..core.pooled import POOLED_KEY, PooledConfigError, parse_pooled, train_pooled_model, unavailable
from ..core.training import XGBParams
from ..io_manager import window_value
from ..partitions import split_key, tenant_week
from ..resources import RiskmlSettings
from .common import OWNERS, md_table

# every tenant of the partition's week (the tenant dimension: all keys; the week: the same week)
same_week_all_tenants = dg.MultiPartitionMapping({
    "tenant": dg.DimensionPartitionMapping("tenant", dg.AllPartitionMapping()),
    "week": dg.DimensionPartitionMapping("week", dg.IdentityPartitionMapping()),
})
_all_tenants_in = dict(partition_mapping=same_week_all_tenants, metadata={"allow_missing_partitions": True})
# lazy: read only when the tenant opted in (otherwise every tenant's training run would read every tenant's splits)
_all_tenants_lazy = dict(partition_mapping=same_week_all_tenants,
                         metadata={"allow_missing_partitions": True, "lazy": True})


def by_tenant(value, own_tenant: str) -> dict[str, object]:
    """{tenant: value} of an all-tenants input (one bare value when a single partition was mapped: the own one)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or "features" in value:  # a bare frame or one bare manifest
        return {own_tenant: value}
    out = {}
    for key, v in value.items():
        if v is None:
            continue
        k = key.keys_by_dimension["tenant"] if isinstance(key, dg.MultiPartitionKey) else str(key).split("|")[0]
        out[k] = v
    return out


class PooledModelConfig(dg.Config):
    target_weight: float = Field(1.0, gt=0, description="Sample weight of the target tenant's own train rows "
                                                        "(others: 1).")
    max_depth: int = Field(4, ge=1, le=12)
    learning_rate: float = Field(0.05, gt=0, le=1)
    n_estimators: int = Field(800, ge=1, description="Upper bound; early stopping on the target's validation rows.")
    n_threads: int = Field(2, ge=1)
    calibration: Literal["auto", "platt", "isotonic", "none"] = "auto"
    seed: int = 0


@dg.asset(partitions_def=tenant_week, group_name="risk", owners=OWNERS, code_version="1",
          tags={"domain": "risk", "family": "risk"}, kinds={"xgboost"},
          ins={"dataset_splits": dg.AssetIn(**_all_tenants_lazy), "feature_manifest": dg.AssetIn(**_all_tenants_lazy)},
          description="Opt-in pooled risk model (`pooled: true` in config/tenants/<tenant>.yaml): XGBoost on the TRAIN "
                      "rows of every opted-in tenant of the week with the tenant as a categorical feature, early "
                      "stopping and calibration on this tenant's own validation rows; no tenant's validation or test "
                      "rows are trained on. Needs the other tenants' dataset_splits of the same week (prepare every "
                      "tenant before the risk step). Not opted in / nobody to pool with: available=false and why.")
def pooled_risk_model(context: dg.AssetExecutionContext, config: PooledModelConfig, riskml: RiskmlSettings,
                      dataset_splits, feature_manifest):
    tenant, week = split_key(context)
    own_cfg_path = riskml.tenant_config_path(tenant)
    if not parse_pooled(riskml.tenant_config(tenant), where=str(own_cfg_path)):  # bad own config: a clear error
        result = unavailable(f"{tenant} has not opted in to the pooled model ('{POOLED_KEY}: true' in "
                             f"{own_cfg_path.name})")
        context.log.info(f"pooled_risk_model {tenant}|{week}: {result['reason']}")
        return dg.MaterializeResult(value=result, metadata={"available": False, "reason": result["reason"]})
    splits = by_tenant(window_value(dataset_splits), tenant)
    manifests = by_tenant(window_value(feature_manifest), tenant)
    opted, refused = [], {}
    for t in sorted(set(context.instance.get_dynamic_partitions("tenant")) | set(splits) | {tenant}):
        try:
            if parse_pooled(riskml.tenant_config(t), where=str(riskml.tenant_config_path(t))):
                opted.append(t)
        except (PooledConfigError, ValueError) as exc:  # another tenant's bad config leaves it out, never fails us
            refused[t] = str(exc)
            context.log.warning(f"pooled_risk_model: tenant {t} left out of the pool: {exc}")
    own_manifest = (manifests.get(tenant) or {}).get("features")
    if own_manifest is None:
        raise ValueError(f"pooled_risk_model {tenant}|{week}: no feature_manifest for the partition itself")
    frames = {t: df for t, df in splits.items() if isinstance(df, pd.DataFrame)}
    params = XGBParams(max_depth=config.max_depth, learning_rate=config.learning_rate,
                       n_estimators=config.n_estimators, n_threads=config.n_threads, seed=config.seed)
    result = train_pooled_model(frames, tenant, own_manifest, opted,
                                manifests={t: m["features"] for t, m in manifests.items() if m},
                                params=params, target_weight=config.target_weight, calibration=config.calibration,
                                seed=config.seed, log=context.log.info)
    result["opted_in"], result["left_out"] = opted, refused
    if result["available"]:
        result["model"]["manifest_fingerprint"] = manifests[tenant].get("fingerprint")
        result["model"]["week"] = week
    context.log.info(f"pooled_risk_model {tenant}|{week}: available={result['available']}: {result['reason']}")
    rows = pd.DataFrame(sorted(result["rows_by_tenant"].items()), columns=["tenant", "train rows"])
    meta = {"available": bool(result["available"]), "reason": result["reason"],
            "tenants": dg.MetadataValue.json(result["tenants"]), "opted_in": dg.MetadataValue.json(opted),
            "rows_by_tenant": dg.MetadataValue.md(md_table(rows))}
    if refused:
        meta["left_out"] = dg.MetadataValue.json(refused)
    if result["available"]:
        meta.update({k: float(v) for k, v in result["metrics"].items()})
        meta["features_masked"] = dg.MetadataValue.json(result["features_masked"])
        meta["best_iteration"] = int(result["model"]["best_iteration"])
        meta["train_fingerprint"] = result["train_fingerprint"]
        meta["calibration"] = result["calibrator"]["method"]
        meta["calibration_choice"] = str(result["calibrator"]["selection"].get("pooled_choice", ""))
    return dg.MaterializeResult(value=result, metadata=meta)


pooled_assets = [pooled_risk_model]
