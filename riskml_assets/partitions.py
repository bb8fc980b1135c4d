"""The one partitions definition of the chain: dynamic ``tenant`` x Monday-anchored ``week``.

Keys look like ``acme|2026-11-16`` (dimensions in alphabetical order: tenant, week).

The ``week`` partitions run from ``$RISKML_FIRST_WEEK`` (a Monday, read once at import; default
2010-01-04, see ``core.contract.first_week``) up to and including the current week (``end_offset=1``:
files are dated by the day they are exported, so a file of today has a partition; training only uses
complete weeks). ``core.contract.week_in_range`` is the one rule that says whether a file date may
become a partition, with a one-line reason when not.
"""

import functools

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


def remember_window_offsets(maxsize: int = 4096) -> None:
    """Make Dagster remember where a time window lies ``offset`` partitions away (issue 11).

    ``TimeWindowPartitionMapping`` finds the first week of a lookback window by stepping back one partition at a
    time through the cron schedule (fast paths exist only for daily and hourly partitions): 77 steps, ~6 ms, for
    each mapping of a ``LOOKBACK_WEEKS`` window. A training run maps its windows 16 times (inputs, then their data
    versions), always from the same week, and the daemon's automation conditions map them for every tenant-week.
    The result depends only on the partitions definition (immutable, hashable), the datetime (with its time
    zone) and the offset, so it is kept (least recently used out past ``maxsize``) and Dagster's own function
    computes every new one. Idempotent; an unhashable definition goes to Dagster's function as before.
    Dagster is pinned (see the lock file); the tests compare the results with Dagster's own function."""
    from dagster._core.definitions.partitions.mapping import time_window as tw

    current = tw._offsetted_datetime  # noqa: SLF001
    if getattr(current, "riskml_remembered", False):
        return

    @functools.lru_cache(maxsize=maxsize)
    def remembered(partitions_def, dt, tz: str, offset: int):
        return current(partitions_def, dt, offset)

    @functools.wraps(current)
    def offsetted(partitions_def, dt, offset):
        try:  # equal datetimes in different zones are different keys: the result keeps the caller's zone
            return remembered(partitions_def, dt, repr(dt.tzinfo), offset)
        except TypeError:
            return current(partitions_def, dt, offset)

    offsetted.riskml_remembered = True
    tw._offsetted_datetime = offsetted  # noqa: SLF001


remember_window_offsets()


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
