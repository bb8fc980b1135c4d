"""Loading the code location does not import the heavy libraries the assets use only when they run.

A behaviour test (which modules got imported), not a timing test: ``riskml_assets.definitions`` is
imported in a fresh interpreter and its ``sys.modules`` inspected.
"""
import json
import subprocess
import sys

import pytest

from riskml_assets.core.lazy import lazy_attr, lazy_module

HEAVY = ("scipy", "sklearn", "matplotlib", "mlflow", "xgboost", "lightgbm", "optuna", "adlfs", "dask",
         "distributed", "imblearn", "polars", "pandera", "pandas", "numpy", "pyarrow")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_loading_definitions_imports_no_heavy_library():
    loaded = _modules_after("import riskml_assets.definitions as d\nassert d.defs.resolve_all_job_defs()")
    assert "riskml_assets.definitions" in loaded
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert heavy == [], f"imported while loading the code location: {heavy[:20]}"


def test_the_lazy_names_import_on_first_use_and_behave_as_the_real_ones():
    loaded = _modules_after(
        "from riskml_assets.core import calibration, metrics\n"
        "import sys\n"
        "assert 'scipy.stats' not in sys.modules and 'sklearn' not in sys.modules\n"
        "assert metrics.roc_auc([0, 1, 0, 1], [0.1, 0.8, 0.3, 0.9]) == 1.0\n"
        "assert 'scipy.stats' in sys.modules\n"
        "cal = calibration.fit_calibrator([0.1, 0.2, 0.3, 0.7, 0.8, 0.9] * 10, [0, 0, 1, 0, 1, 1] * 10, method='isotonic')\n"
        "assert cal[0].predict([0.9])[0] > cal[0].predict([0.1])[0]\n"
        "calibration.fit_calibrator([0.1, 0.2, 0.3, 0.7, 0.8, 0.9] * 10, [0, 0, 1, 0, 1, 1] * 10, method='platt')\n")
    assert {"scipy.stats", "scipy.optimize", "sklearn.isotonic"} <= loaded


def test_lazy_helpers():
    mod = lazy_module("json")
    assert mod.dumps({"a": 1}) == '{"a": 1}'
    assert mod.loads is json.loads
    cls = lazy_attr("fractions", "Fraction")
    assert cls(1, 3) + cls(1, 6) == cls(1, 2)
    assert cls.from_float(0.5) == cls(1, 2)
    with pytest.raises(AttributeError):
        lazy_module("json").no_such_name


def test_lazy_names_pickle_as_the_real_ones():
    """A closure over a lazy ``pd`` must pickle (Dask ships map_partitions functions to workers and tokenizes
    them by pickling): the lazy name pickles as a reference to the real module or attribute."""
    import pickle

    import cloudpickle

    assert pickle.loads(pickle.dumps(lazy_module("json"))) is json
    assert pickle.loads(pickle.dumps(lazy_attr("json", "dumps"))) is json.dumps
    pd = lazy_module("pandas")

    def rows(n):
        return len(pd.DataFrame({"a": range(n)}))

    blob = cloudpickle.dumps(rows)
    assert blob == cloudpickle.dumps(rows)  # deterministic (Dask's tokenizer)
    assert pickle.loads(blob)(3) == 3


def test_frame_annotation_accepts_pandas_and_polars_frames_only():
    """Asset inputs and outputs are annotated ``Frame`` (not ``pd.DataFrame``, which would import pandas when the
    code location loads); Dagster type-checks with isinstance, which must still refuse anything but a frame."""
    import pandas as pd
    import polars as pl

    from riskml_assets.assets.common import Frame

    assert isinstance(pd.DataFrame({"a": [1]}), Frame)
    assert isinstance(pl.DataFrame({"a": [1]}), Frame)
    assert not isinstance(pd.Series([1]), Frame)
    assert not isinstance({"a": [1]}, Frame)
    assert not isinstance(pl.DataFrame({"a": [1]}).lazy(), Frame)


def test_a_non_frame_output_fails_dagster_type_check(tmp_path):
    """The Frame annotation is a real Dagster type check: an asset annotated ``-> Frame`` that returns a dict fails."""
    import dagster as dg

    from riskml_assets.assets.common import Frame

    @dg.asset
    def not_a_frame() -> Frame:
        return {"a": 1}

    @dg.asset
    def a_frame() -> Frame:
        import pandas as pd

        return pd.DataFrame({"a": [1]})

    ok = dg.materialize([a_frame], raise_on_error=False)
    assert ok.success
    bad = dg.materialize([not_a_frame], raise_on_error=False)
    assert not bad.success
    failure = [e for e in bad.all_events if e.is_step_failure][0]
    assert "Frame" in str(failure.event_specific_data.error.message) or "type check" in str(
        failure.event_specific_data.error.message).lower()
