"""A tiny code location for the launcher's Ctrl-C test: one step holds a pool slot, then the user presses Ctrl-C."""
import os
import signal

import dagster as dg

tenants = dg.StaticPartitionsDefinition(["a|2026-11-16"])


@dg.asset(partitions_def=tenants, pool="interrupt_pool")
def slot_holder(context: dg.AssetExecutionContext):
    if os.environ.get("RISKML_TEST_INTERRUPT") == "1":
        signal.raise_signal(signal.SIGINT)  # what Ctrl-C in the terminal does, while the step holds its slot
    return 1


@dg.asset(partitions_def=tenants, deps=[slot_holder])
def after(context: dg.AssetExecutionContext):
    return 2


interrupt_job = dg.define_asset_job("interrupt_job", selection=[slot_holder, after])
defs = dg.Definitions(assets=[slot_holder, after], jobs=[interrupt_job], executor=dg.in_process_executor)
