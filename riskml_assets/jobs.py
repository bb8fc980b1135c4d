"""Jobs with clear names over the shared tenant x week partitions."""

import dagster as dg

INGEST_SELECTION = dg.AssetSelection.groups("ingest")
TRAIN_SELECTION = dg.AssetSelection.groups("features", "prepare", "risk", "registry")
SCORE_SELECTION = dg.AssetSelection.groups("scoring")
FAMILY_SELECTION = dg.AssetSelection.groups("revenue_forecast", "action_ranker")

ingest_job = dg.define_asset_job("ingest_job", selection=INGEST_SELECTION,
                                 description="Validate and quarantine one tenant-week of incoming files.")
train_job = dg.define_asset_job("train_job", selection=TRAIN_SELECTION,
                                description="Features -> cleaning -> splits -> balancing -> risk model -> calibrator "
                                            "-> evaluation -> registration/promotion for one tenant-week.")
score_job = dg.define_asset_job("score_job", selection=SCORE_SELECTION,
                                description="Score the week's open opportunities with the champion (drift-gated).")
full_job = dg.define_asset_job("riskml_full_job", selection=INGEST_SELECTION | TRAIN_SELECTION | SCORE_SELECTION,
                               description="Ingest, train, register and score one tenant-week (the whole graph).")
families_job = dg.define_asset_job("families_job", selection=FAMILY_SELECTION,
                                   description="Revenue forecast (P10/P50/P90) and action ranker: selection, "
                                               "training and evaluation for one tenant-week.")
llm_data_job = dg.define_asset_job("llm_data_job", selection=dg.AssetSelection.groups("llm"),
                                  description="Optional: LLM fine-tuning examples (JSONL) for one tenant-week, validated "
                                              "(needs dataset_splits of the week; not part of the main job).")
jobs = [ingest_job, train_job, score_job, families_job, full_job, llm_data_job]
