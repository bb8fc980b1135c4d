"""Jobs with clear names over the shared tenant x week partitions."""

import dagster as dg

INGEST_SELECTION = dg.AssetSelection.groups("ingest")
PREPARE_SELECTION = dg.AssetSelection.groups("features", "prepare")
MODEL_SELECTION = dg.AssetSelection.groups("risk", "registry")
TRAIN_SELECTION = PREPARE_SELECTION | MODEL_SELECTION
SCORE_SELECTION = dg.AssetSelection.groups("scoring")
FORECAST_SELECTION = dg.AssetSelection.groups("revenue_forecast")
RANKER_SELECTION = dg.AssetSelection.groups("action_ranker")
FAMILY_SELECTION = FORECAST_SELECTION | RANKER_SELECTION

ingest_job = dg.define_asset_job("ingest_job", selection=INGEST_SELECTION,
                                 description="Validate and quarantine one tenant-week of incoming files.")
train_job = dg.define_asset_job("train_job", selection=TRAIN_SELECTION,
                                description="Features -> cleaning -> splits -> balancing -> risk model -> calibrator "
                                            "-> evaluation -> registration/promotion for one tenant-week.")
# the main job splits train_job in two when a tenant of the run opts in to the pooled model: prepare_job for every
# tenant of the run first (pooled_risk_model reads every tenant's dataset_splits of the week), then model_job per tenant
prepare_job = dg.define_asset_job("prepare_job", selection=PREPARE_SELECTION,
                                  description="Features -> cleaning -> splits -> balancing for one tenant-week (the "
                                              "first half of train_job; run for every tenant before model_job when "
                                              "a tenant opts in to the pooled model).")
model_job = dg.define_asset_job("model_job", selection=MODEL_SELECTION,
                                description="Risk model, pooled model, calibrator, evaluation (champion choice) and "
                                            "registration/promotion for one tenant-week (needs prepare_job's assets).")
score_job = dg.define_asset_job("score_job", selection=SCORE_SELECTION,
                                description="Score the week's open opportunities with the champion (drift-gated).")
full_job = dg.define_asset_job("riskml_full_job", selection=INGEST_SELECTION | TRAIN_SELECTION | SCORE_SELECTION,
                               description="Ingest, train, register and score one tenant-week (the whole graph).")
families_job = dg.define_asset_job("families_job", selection=FAMILY_SELECTION,
                                   description="Revenue forecast (P10/P50/P90) and action ranker: selection, "
                                               "training and evaluation for one tenant-week.")
# the main job (`riskml run`) launches the two families as separate jobs: the ranker only for tenants that send
# recommendation feedback (interactions files), the forecast for every tenant whose training run passed
forecast_job = dg.define_asset_job("forecast_job", selection=FORECAST_SELECTION,
                                   description="Revenue forecast (P10/P50/P90): selection, training and evaluation "
                                               "with its gates for one tenant-week (needs train_job's splits).")
ranker_job = dg.define_asset_job("ranker_job", selection=RANKER_SELECTION,
                                 description="Action ranker: selection, training and evaluation with its gates for "
                                             "one tenant-week (needs recommendation_interactions).")
llm_data_job = dg.define_asset_job("llm_data_job", selection=dg.AssetSelection.groups("llm"),
                                  description="Optional: LLM fine-tuning examples (JSONL) for one tenant-week, validated "
                                              "(needs dataset_splits of the week; not part of the main job).")
jobs = [ingest_job, train_job, prepare_job, model_job, score_job, families_job, forecast_job, ranker_job, full_job, llm_data_job]
