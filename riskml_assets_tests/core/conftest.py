"""Simulated data shared by the core tests (built once per session)."""
import pytest

from riskml_assets.core import features as F
from riskml_assets.core import simulator
from riskml_assets.core.cleaning import clean_examples
from riskml_assets.core.splits import split_examples


def simulated_splits(sim, manifest, seed: int = 0, tenant: str = ""):
    """The pure training path up to grouped stratified splits for a simulated tenant (``tenant``: the hash
    split's salt, as in the assets)."""
    ex, _ = F.build_training_examples(sim.snapshots, sim.outcomes, sim.activities, manifest,
                                      partition_end="2026-11-23", window_weeks=52)
    clean, _, _ = clean_examples(ex, manifest)
    return split_examples(clean, seed=seed, tenant=tenant)


@pytest.fixture(scope="session")
def manifest():
    return F.build_manifest()


@pytest.fixture(scope="session")
def acme():
    return simulator.simulate_tenant(simulator.DEFAULT_TENANTS[0])


@pytest.fixture(scope="session")
def initech_splits(manifest):
    return simulated_splits(simulator.simulate_tenant(simulator.DEFAULT_TENANTS[2]), manifest)  # the small tenant
