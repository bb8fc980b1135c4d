"""Deferred imports of heavy libraries (pandas, numpy, pyarrow, scipy, scikit-learn, matplotlib, ...).

Loading the code location imports every asset module, and through them the core modules; a library
those modules use only inside functions should not be paid for at load time (``dagster definitions
validate``, the webserver, each run worker). Written at the import line::

    stats = lazy_module("scipy.stats")                                   # was: from scipy import stats
    StratifiedKFold = lazy_attr("sklearn.model_selection", "StratifiedKFold")

the name behaves as the module (attribute access) or the callable (a call, attribute access) and the
real import happens on first use. ``isinstance(x, lazy_attr(...))`` is not supported: import the
class inside the function for that.
"""
from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    """Stands for the module ``name``; imports it on the first attribute access."""

    def __init__(self, name: str):
        super().__init__(name)
        self.__dict__["_lazy_target"] = name

    def __getattr__(self, attr: str) -> Any:  # only called for names not yet in __dict__
        mod = importlib.import_module(self.__dict__["_lazy_target"])
        self.__dict__.update({k: v for k, v in mod.__dict__.items() if k != "__name__"})
        return getattr(mod, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self.__dict__['_lazy_target']!r}>"

    def __reduce__(self):
        # pickled (cloudpickle: a Dask task's closure over ``pd``; Dask's tokenizer) as the real module, by name
        return importlib.import_module, (self.__dict__["_lazy_target"],)


class LazyAttr:
    """Stands for ``module.attr`` (a class or function); imports it on the first call or attribute access."""

    __slots__ = ("_module", "_attr", "_obj")

    def __init__(self, module: str, attr: str):
        self._module, self._attr, self._obj = module, attr, None

    def _target(self) -> Any:
        if self._obj is None:
            self._obj = getattr(importlib.import_module(self._module), self._attr)
        return self._obj

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target()(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._target(), attr)

    def __repr__(self) -> str:
        return f"<lazy {self._module}.{self._attr}>"

    def __reduce__(self):
        return _import_attr, (self._module, self._attr)


def _import_attr(module: str, attr: str) -> Any:
    return getattr(importlib.import_module(module), attr)


def lazy_module(name: str) -> LazyModule:
    return LazyModule(name)


def lazy_attr(module: str, attr: str) -> LazyAttr:
    return LazyAttr(module, attr)
