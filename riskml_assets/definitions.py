"""The one entry point of the code location: it only assembles."""

import warnings

import dagster as dg

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
# riskml_full_job spans the ingest assets (single-run backfill policy: a tenant's history in one run) and the
# training assets (no policy); Dagster then uses one run per partition for that job, which is what it is for
# (one tenant-week): the warning it prints on every resolution says nothing a user can act on
warnings.filterwarnings("ignore", message=r"Asset job \w+ materializes assets with varying BackfillPolicies")

from .assets.families import family_assets  # noqa: E402
from .assets.features import feature_assets  # noqa: E402
from .assets.ingest import ingest_assets  # noqa: E402
from .assets.prep import prep_assets  # noqa: E402
from .assets.llm import llm_assets  # noqa: E402
from .assets.pooled import pooled_assets  # noqa: E402
from .assets.registry import registry_assets, rollback_job  # noqa: E402
from .assets.risk import risk_assets  # noqa: E402
from .jobs import jobs  # noqa: E402
from .resources import default_resources  # noqa: E402
from .compute import compute_resources  # noqa: E402
from .sensors import schedules, sensors  # noqa: E402
from .instance_storage import install_when_imported as _keep_sqlite_connections  # noqa: E402

# the instance's SQLite storages keep their connections in run workers and the code server (issue 11)
_keep_sqlite_connections()

all_assets = [*ingest_assets, *feature_assets, *prep_assets, *risk_assets, *registry_assets,
              *family_assets, *pooled_assets, *llm_assets]

defs = dg.Definitions(
    assets=all_assets,
    jobs=[*jobs, rollback_job],
    sensors=sensors,
    schedules=schedules,
    resources={**default_resources(), **compute_resources()},
    executor=dg.in_process_executor,
)
