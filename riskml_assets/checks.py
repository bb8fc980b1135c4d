"""Gates become blocking asset checks: one factory for specs, one for results.

Each asset declares the gates it owns; it evaluates them on the frame it just built (no reload) and
returns the results with its materialization. A gate whose action is ``fail`` reports ERROR severity,
which stops downstream assets of the same run; ``warn`` reports WARN and never blocks.
"""

from typing import Mapping

import dagster as dg

from .core.gates import Gate, default_gates


def gate_specs(asset_name: str, gate_names: tuple[str, ...]) -> list[dg.AssetCheckSpec]:
    specs, defaults = [], default_gates()
    for name in gate_names:
        g = defaults[name]
        specs.append(dg.AssetCheckSpec(name, asset=asset_name, blocking=True,
                                       description=f"{g.description} (default: {g.metric} {g.op} {g.threshold:g}, "
                                                   f"action {g.action}; configurable)"))
    return specs


def gate_results(gates: Mapping[str, Gate], values: Mapping[str, object], extra: Mapping[str, Mapping] | None = None,
                 log=None) -> list[dg.AssetCheckResult]:
    """Evaluate the named gates on ``values`` ({gate name: metric value})."""
    out = []
    for name, value in values.items():
        res = gates[name].evaluate(value)
        if log is not None:
            (log.info if res.passed else log.error if res.blocks else log.warning)(res.describe())
        meta = {"metric": res.gate.metric, "value": _num(value), "operator": res.gate.op,
                "threshold": float(res.gate.threshold), "action": res.gate.action}
        meta.update((extra or {}).get(name, {}))
        out.append(dg.AssetCheckResult(
            check_name=name, passed=res.passed, description=res.describe(), metadata=meta,
            severity=dg.AssetCheckSeverity.ERROR if res.gate.action == "fail" else dg.AssetCheckSeverity.WARN,
        ))
    return out


def _num(v):
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float)):
        return float(v) if v == v else -1.0
    return str(v)


def summarize(results: list[dg.AssetCheckResult]) -> str:
    return "; ".join(f"{r.check_name}={'pass' if r.passed else 'FAIL'}" for r in results)
