"""Jobs with clear names over the shared tenant x week partitions."""

import dagster as dg

INGEST_SELECTION = dg.AssetSelection.groups("ingest")
TRAIN_SELECTION = dg.AssetSelection.groups("features", "prepare", "risk")

ingest_job = dg.define_asset_job("ingest_job", selection=INGEST_SELECTION,
                                 description="Validate and quarantine one tenant-week of incoming files.")
train_job = dg.define_asset_job("train_job", selection=TRAIN_SELECTION,
                                description="Features -> cleaning -> splits -> balancing -> risk model -> calibrator "
                                            "-> evaluation for one tenant-week.")
full_job = dg.define_asset_job("riskml_full_job", selection=INGEST_SELECTION | TRAIN_SELECTION,
                               description="Ingest and train one tenant-week (the whole graph).")
jobs = [ingest_job, train_job, full_job]
