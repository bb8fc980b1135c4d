"""The one partitions definition of the chain: dynamic ``tenant`` x Monday-anchored ``week``.

Keys look like ``acme|2026-11-16`` (dimensions in alphabetical order: tenant, week).
"""

import dagster as dg

PARTITIONS_START = "2024-01-01"  # a Monday
# Weeks of history a training partition may read: the training window (<= 52 weeks by default)
# plus 26 weeks so that history features (slips so far, stage age, ...) of the oldest examples are complete.
LOOKBACK_WEEKS = 78
MAX_WINDOW_WEEKS = LOOKBACK_WEEKS - 26

tenant_partitions = dg.DynamicPartitionsDefinition(name="tenant")
week_partitions = dg.WeeklyPartitionsDefinition(start_date=PARTITIONS_START, day_offset=1)
tenant_week = dg.MultiPartitionsDefinition({"tenant": tenant_partitions, "week": week_partitions})

lookback_mapping = dg.MultiPartitionMapping(
    {
        "tenant": dg.DimensionPartitionMapping("tenant", dg.IdentityPartitionMapping()),
        "week": dg.DimensionPartitionMapping(
            "week", dg.TimeWindowPartitionMapping(start_offset=-(LOOKBACK_WEEKS - 1), end_offset=0)
        ),
    }
)


def partition_key(tenant: str, week: str) -> str:
    return f"{tenant}|{week}"


def split_key(context) -> tuple[str, str]:
    """(tenant, week) of the run's partition."""
    keys = context.partition_key.keys_by_dimension
    return keys["tenant"], keys["week"]
