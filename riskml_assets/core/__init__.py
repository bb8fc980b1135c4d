"""Pure logic of riskml. Nothing in this package imports dagster."""
