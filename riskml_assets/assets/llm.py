"""LLM fine-tuning data prep (seed design, phase 4; issue 12 item 4): optional, in ``llm_data_job`` only.

``llm_finetune_examples`` writes ``<data dir>/llm/<tenant>/<week>/<split>.jsonl`` (chat format: system, user =
the snapshot, assistant = the outcome and a templated explanation; see ``core.llm_data``) and returns the index of
the lines (stored by the IO manager as parquet). Four blocking checks read the files back: every line parses with
the schema, no label leakage, no free text of another tenant (its owner/account ids, stage names, categories and
extra text columns, from every tenant's ``risk_snapshots`` and ``dataset_splits`` of the week), size and row count.
Files that fail parse, leakage or foreign text are renamed ``<split>.rejected.jsonl`` so no fine-tuning job picks
them up. Fine-tuning itself is out of scope.
"""

import os
from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import Field

from ..checks import checks_after_materialization, check_spec
from ..core import llm_data as L
from ..partitions import split_key, tenant_week
from ..resources import RiskmlSettings
from .common import OWNERS, frame_metadata, md_table
from .pooled import _all_tenants_in, by_tenant

CHECKS = {
    "llm_examples_parse": "Every JSONL line parses with messages = system, user, assistant; the completion follows "
                          "the template and states the row's label; lines and index match.",
    "llm_examples_no_leakage": "No prompt holds closed_at, outcome, actual revenue (names or the close date), and "
                               "probed prompts do not change when the answer columns do.",
    "llm_examples_no_foreign_text": "No line holds a free-text value (owner/account id, stage name, category, extra "
                                    "text column) of another tenant that this tenant does not have itself.",
    "llm_examples_size": "At least min_rows examples and at most max_bytes in the tenant-week's files.",
}
_FILE_CHECKS = {"parse": "llm_examples_parse", "no_leakage": "llm_examples_no_leakage",
                "no_foreign_text": "llm_examples_no_foreign_text", "size": "llm_examples_size"}


def default_llm_dir() -> str:
    return str(Path(os.environ.get("RISKML_DATA_DIR", "data")) / "llm")


class LlmExamplesConfig(dg.Config):
    output_dir: Optional[str] = Field(None, description="Folder of the JSONL files (default: $RISKML_DATA_DIR/llm, "
                                                        "i.e. data/llm); files go to <dir>/<tenant>/<week>/<split>.jsonl.")
    splits: list[str] = Field(list(L.SPLIT_ORDER), description="Which dataset splits to write (one file each).")
    per_opportunity: str = Field("all", description="all snapshots of an opportunity, or only its latest / earliest.")
    min_rows: int = Field(50, ge=1, description="Size gate: fewer examples fail llm_examples_size.")
    max_bytes: int = Field(500_000_000, ge=1, description="Size gate: larger files (all splits) fail llm_examples_size.")
    leak_probe_rows: int = Field(200, ge=0, description="Rows whose prompts are rebuilt with the answer changed.")


@dg.asset(partitions_def=tenant_week, group_name="llm", owners=OWNERS, code_version="1", kinds={"python", "json"},
          tags={"domain": "risk", "family": "llm"},
          ins={"dataset_splits": dg.AssetIn(**_all_tenants_in), "risk_snapshots": dg.AssetIn(**_all_tenants_in),
               "feature_manifest": dg.AssetIn()},
          check_specs=[check_spec(name, "llm_finetune_examples", desc) for name, desc in CHECKS.items()],
          description="Optional (llm_data_job): JSONL chat examples (snapshot context -> outcome and templated "
                      "explanation) per tenant-week under data/llm/<tenant>/<week>/, validated by four blocking "
                      "checks (parse/schema, no label leakage, no other tenant's free text, size).")
@checks_after_materialization
def llm_finetune_examples(context: dg.AssetExecutionContext, config: LlmExamplesConfig, riskml: RiskmlSettings,
                          dataset_splits, risk_snapshots, feature_manifest: dict):
    tenant, week = split_key(context)
    splits, snaps = by_tenant(dataset_splits, tenant), by_tenant(risk_snapshots, tenant)
    own = splits.get(tenant)
    if own is None:
        raise ValueError(f"llm_finetune_examples {tenant}|{week}: no dataset_splits for the partition itself")
    manifest = feature_manifest.get("features") or {}
    examples = L.build_examples(own, manifest=manifest, splits=config.splits, per_opportunity=config.per_opportunity)
    folder = Path(config.output_dir or default_llm_dir()) / tenant / week
    index, paths = L.write_jsonl(examples, folder)
    own_text = L.text_values([own, snaps.get(tenant)])
    others = {t: L.text_values([splits.get(t), snaps.get(t)]) for t in sorted(set(splits) | set(snaps)) if t != tenant}
    foreign = L.foreign_values(own_text, others)
    result = L.validate_files(paths, index, own, foreign, min_rows=config.min_rows, max_bytes=config.max_bytes,
                              leak_probe_rows=config.leak_probe_rows, manifest=manifest)
    rejected = not all(result[k]["passed"] for k in ("parse", "no_leakage", "no_foreign_text"))
    if rejected:  # nobody may fine-tune on these: renamed, kept for inspection
        for split, p in list(paths.items()):
            target = p.with_name(f"{split}.rejected.jsonl")
            p.replace(target)
            paths[split] = target
        context.log.error(f"llm_finetune_examples {tenant}|{week}: files rejected and renamed *.rejected.jsonl: "
                          + "; ".join(f"{k}: {v['value']}" for k, v in result.items() if not v["passed"]))
    checks = []
    for key, name in _FILE_CHECKS.items():
        r = result[key]
        meta = {k: (dg.MetadataValue.json(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()
                if k != "passed"}
        checks.append(dg.AssetCheckResult(check_name=name, passed=bool(r["passed"]), metadata=meta,
                                          severity=dg.AssetCheckSeverity.ERROR,
                                          description=f"{name}: {'pass' if r['passed'] else 'FAIL'} ({r['value']})"))
    counts = index.groupby("split").size().to_dict() if len(index) else {}
    context.log.info(f"llm_finetune_examples {tenant}|{week}: {len(index)} examples {counts} in {folder} "
                     f"({result['size']['bytes']} bytes); other tenants checked: {sorted(others)}")
    sample = examples.head(1)
    return dg.MaterializeResult(value=index, check_results=checks, metadata={
        **frame_metadata(index), "folder": str(folder), "rejected": rejected,
        "files": dg.MetadataValue.json({s: str(p) for s, p in paths.items()}),
        "examples_by_split": dg.MetadataValue.json({str(k): int(v) for k, v in counts.items()}),
        "bytes": int(result["size"]["bytes"]), "other_tenants_checked": dg.MetadataValue.json(sorted(others)),
        "lost_share": float(index[L.LABEL].mean()) if len(index) else 0.0,
        "example": dg.MetadataValue.md(md_table(sample[["prompt", "completion"]], 1) if len(sample) else "_(none)_"),
    })


llm_assets = [llm_finetune_examples]
