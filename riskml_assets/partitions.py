"""The one partitions definition of the chain: dynamic ``tenant`` x Monday-anchored ``week``.

Keys look like ``acme|2026-11-16`` (dimensions in alphabetical order: tenant, week).

The ``week`` partitions run from ``$RISKML_FIRST_WEEK`` (a Monday, read once at import; default
2010-01-04, see ``core.contract.first_week``) up to and including the current week (``end_offset=1``:
files are dated by the day they are exported, so a file of today has a partition; training only uses
complete weeks). ``core.contract.week_in_range`` is the one rule that says whether a file date may
become a partition, with a one-line reason when not.
"""

import dagster as dg

from .core.contract import first_week, validate_tenant

PARTITIONS_START = first_week()  # a Monday: $RISKML_FIRST_WEEK or the default
# Weeks of history a training partition may read: the training window (<= 52 weeks by default)
# plus 26 weeks so that history features (slips so far, stage age, ...) of the oldest examples are complete.
LOOKBACK_WEEKS = 78
MAX_WINDOW_WEEKS = LOOKBACK_WEEKS - 26

tenant_partitions = dg.DynamicPartitionsDefinition(name="tenant")
week_partitions = dg.WeeklyPartitionsDefinition(start_date=PARTITIONS_START, day_offset=1, end_offset=1)
tenant_week = dg.MultiPartitionsDefinition({"tenant": tenant_partitions, "week": week_partitions})

lookback_mapping = dg.MultiPartitionMapping(
    {
        "tenant": dg.DimensionPartitionMapping("tenant", dg.IdentityPartitionMapping()),
        "week": dg.DimensionPartitionMapping(
            "week", dg.TimeWindowPartitionMapping(start_offset=-(LOOKBACK_WEEKS - 1), end_offset=0)
        ),
    }
)


def window_in(*, polars: bool = False, lazy: bool = False) -> dg.AssetIn:
    """An input reading a ``LOOKBACK_WEEKS`` window of the same tenant (weeks without files skipped, said once by
    the IO manager); ``polars``: the weeks as polars frames; ``lazy``: a ``LazyWindow`` read only when the step
    asks (an input it needs only sometimes)."""
    metadata = {"allow_missing_partitions": True, **({"frame_type": "polars"} if polars else {}),
                **({"lazy": True} if lazy else {})}
    return dg.AssetIn(partition_mapping=lookback_mapping, metadata=metadata)


def partition_key(tenant: str, week: str) -> str:
    return f"{validate_tenant(tenant)}|{week}"


def split_key(context) -> tuple[str, str]:
    """(tenant, week) of the run's partition; ContractError for a tenant key outside the contract
    (``../x``, ``a/b``, upper case, ...): the tenant becomes a path, so it is checked before any use."""
    keys = context.partition_key.keys_by_dimension
    return validate_tenant(keys["tenant"]), keys["week"]
