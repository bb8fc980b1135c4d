"""riskml: a Dagster code location that turns weekly CRM risk snapshots into calibrated risk models."""
