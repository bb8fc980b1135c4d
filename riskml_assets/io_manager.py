"""The one IO manager: data frames as parquet, JSON-able dicts (models, manifests, reports) as JSON.

Built on ``dagster.UPathIOManager`` so the same code writes to a local folder or to any fsspec URL
(``abfs://container/path`` on Azure through adlfs). Nothing is pickled.
"""

import json
from typing import Any

import dagster as dg
import pandas as pd
import polars as pl
from upath import UPath

PARQUET, JSON = ".parquet", ".json"


class RiskmlUPathIOManager(dg.UPathIOManager):
    extension = None  # chosen per object: .parquet for frames, .json for dicts

    def _with_extension(self, path):  # keep the partition path bare; the suffix is added per object
        return path

    def handle_output(self, context: dg.OutputContext, obj: Any):
        if context.has_asset_partitions and isinstance(obj, dict) and obj and all(
            isinstance(v, (pd.DataFrame, pl.DataFrame)) for v in obj.values()
        ):
            paths = self._get_paths_for_partitions(context)
            for key, frame in obj.items():
                self.dump_to_path(context, frame, paths[key])
            return
        super().handle_output(context, obj)

    def dump_to_path(self, context, obj: Any, path: UPath):
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(obj, pl.LazyFrame):
            obj = obj.collect()
        if isinstance(obj, (pd.DataFrame, pl.DataFrame)):
            target = path.with_name(path.name + PARQUET)
            with target.open("wb") as fh:
                if isinstance(obj, pl.DataFrame):
                    obj.write_parquet(fh)
                else:
                    obj.to_parquet(fh, index=False)
            self._remove(path.with_name(path.name + JSON))
        elif isinstance(obj, dict):
            target = path.with_name(path.name + JSON)
            target.write_text(json.dumps(obj, default=_json_default))
            self._remove(path.with_name(path.name + PARQUET))
        else:
            raise TypeError(
                f"{context.asset_key.to_user_string()}: the riskml IO manager stores pandas/polars frames and "
                f"JSON-able dicts, got {type(obj).__name__}"
            )

    @staticmethod
    def _remove(p: UPath) -> None:
        if p.exists():
            p.unlink()

    def load_from_path(self, context, path: UPath) -> Any:
        pq, js = path.with_name(path.name + PARQUET), path.with_name(path.name + JSON)
        if pq.exists():
            with pq.open("rb") as fh:
                want_polars = _wants(context, pl.DataFrame)
                return pl.read_parquet(fh) if want_polars else pd.read_parquet(fh)
        if js.exists():
            return json.loads(js.read_text())
        raise FileNotFoundError(f"no stored value for {context.asset_key.to_user_string()} at {path}(.parquet|.json)")


def _wants(context, typ) -> bool:
    import typing

    t = getattr(getattr(context, "dagster_type", None), "typing_type", None)
    if typing.get_origin(t) is dict:
        t = typing.get_args(t)[1]
    return t is typ


def _json_default(o):
    import datetime as dt

    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (dt.date, dt.datetime, pd.Timestamp)):
        return o.isoformat()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class RiskmlIOManager(dg.ConfigurableIOManagerFactory):
    """Where every asset value lives: a local folder (default ``data/assets``) or an fsspec URL."""

    base_path: str = "data/assets"
    storage_options_json: str = "{}"

    def create_io_manager(self, context) -> RiskmlUPathIOManager:
        opts = json.loads(self.storage_options_json or "{}")
        return RiskmlUPathIOManager(base_path=UPath(self.base_path, **opts))
