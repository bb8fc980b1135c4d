"""LLM fine-tuning data prep (seed design, phase 4): (snapshot context -> outcome and explanation) examples.

One chat example per labelled snapshot of a tenant-week's ``dataset_splits``::

    {"messages": [{"role": "system", "content": SYSTEM_PROMPT},
                  {"role": "user", "content": <the snapshot: CRM fields and point-in-time history features>},
                  {"role": "assistant", "content": "Outcome: lost\\nRisk signals in the snapshot: ...\\n..."}]}

written as JSONL, one file per split (``<dir>/<tenant>/<week>/<split>.jsonl``: train for fine-tuning, validation
for the job's validation file, test held out), in the chat format of the common fine-tuning services.

- The prompt is built only from the row's snapshot fields and history features (``PROMPT_FIELDS`` and the
  tenant's own ``x_`` extra columns); the columns that carry the answer (``LEAKAGE_COLUMNS``: ``closed_at``,
  ``outcome``, ``actual_revenue``, the label, the split) are never read by ``build_prompt``.
- The completion is the outcome plus a **templated** explanation (``explain``): the risk signals and the signals
  in the deal's favour that the snapshot shows, by fixed rules on the features. No text is generated, and the
  only free text in a file is the tenant's own values (its stage names, categories, extra columns).

``validate_files`` reads the files back and returns the four checks (parse and schema, no label leakage, no free
text of another tenant, size/row count). Nothing here imports dagster.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Iterable, Mapping

from .lazy import lazy_module

np = lazy_module("numpy")
pd = lazy_module("pandas")


from .features import EXTRA_PREFIX, LABEL

SYSTEM_PROMPT = ("You are a B2B sales risk analyst. From one CRM snapshot of an open opportunity, say whether the "
                 "deal will be won or lost, then list the facts of the snapshot that point each way.")
QUESTION = "Will this opportunity be won or lost? Answer with the result first, then the evidence."
LEAKAGE_COLUMNS = ("closed_at", "outcome", "actual_revenue", LABEL, "split", "sample_weight")
# words that never appear in a prompt (the names of the answer's columns)
LEAKAGE_WORDS = ("closed_at", "actual_revenue", "outcome", "closed won", "closed lost")
ROLES = ("system", "user", "assistant")
OUTCOMES = {1: "lost", 0: "won"}
COMPLETION_RE = re.compile(r"^Outcome: (won|lost)\nRisk signals in the snapshot: .+\nSignals in its favour: .+$",
                           re.DOTALL)
SPLIT_ORDER = ("train", "validation", "test")
NOT_TEXT_COLUMNS = frozenset(("source_file", "week", "snapshot_date", "closed_at", "close_date", "last_activity_at",
                              "split", "outcome"))


def _num(row: Mapping, col: str) -> float | None:
    v = row.get(col)
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _text(row: Mapping, col: str) -> str | None:
    v = row.get(col)
    if v is None or (isinstance(v, float) and not math.isfinite(v)) or v is pd.NA or v is pd.NaT:
        return None
    s = " ".join(str(v).split())
    return s or None


def _count(v: float) -> str:
    return f"{v:.0f}"


def build_prompt(row: Mapping, extra_columns: Iterable[str] = ()) -> str:
    """The user message of one example: the snapshot's CRM fields and history features at snapshot time.
    Reads only the columns named here (never ``LEAKAGE_COLUMNS``); a missing value is left out."""
    lines = []
    snap = row.get("snapshot_date")
    if snap is not None and not pd.isna(snap):
        lines.append(f"Opportunity snapshot of {pd.Timestamp(snap).date().isoformat()}.")
    else:
        lines.append("Opportunity snapshot.")
    stage = _text(row, "stage")
    if stage:
        idx = _num(row, "stage_index")
        lines.append(f"- Stage: {stage}" + (f" (position {idx + 1:.0f} in the tenant's funnel)" if idx is not None else ""))
    value, cur = _num(row, "deal_value"), _text(row, "currency")
    if value is not None:
        lines.append(f"- Deal value: {value:,.0f}" + (f" {cur}" if cur else ""))
    change = _num(row, "deal_value_change")
    if change is not None:
        lines.append(f"- Deal value change since the first snapshot: {100 * change:+.0f}%")
    prob = _num(row, "crm_probability")
    if prob is not None:
        lines.append(f"- CRM win probability: {prob:.0f}%")
    risk = _num(row, "heuristic_risk_score")
    if risk is not None:
        cats = [(c.split("_", 1)[1], _num(row, c)) for c in
                ("risk_commercial", "risk_competitive", "risk_relationship", "risk_technical", "risk_timeline")]
        cats = [f"{name} {v:.2f}" for name, v in cats if v is not None]
        lines.append(f"- CRM risk score: {risk:.2f}" + (f" ({', '.join(cats)})" if cats else ""))
    dtc = _num(row, "days_to_close")
    if dtc is not None:
        lines.append(f"- Days to the expected close date: {dtc:.0f}")
    slips, slip_days = _num(row, "close_date_slips"), _num(row, "close_date_slip_days")
    if slips is not None:
        lines.append(f"- Expected close date moved: {_count(slips)} times"
                     + (f" ({slip_days:.0f} days in total)" if slip_days is not None else ""))
    a30, a90, last = _num(row, "activity_count_30d"), _num(row, "activity_count_90d"), _num(row, "days_since_last_activity")
    act = [f"{_count(a30)} in the last 30 days" if a30 is not None else None,
           f"{_count(a90)} in the last 90 days" if a90 is not None else None,
           f"the last one {last:.1f} days ago" if last is not None else None]
    act = [a for a in act if a]
    if act:
        lines.append("- Activities: " + "; ".join(act))
    eng = _num(row, "engagement")
    if eng is not None:
        lines.append(f"- Engagement score: {eng:.2f}")
    age, stage_age = _num(row, "opportunity_age_days"), _num(row, "stage_age_days")
    if age is not None or stage_age is not None:
        lines.append("- Age: " + "; ".join(x for x in (f"{age:.0f} days since creation" if age is not None else None,
                                                       f"{stage_age:.0f} days in the current stage"
                                                       if stage_age is not None else None) if x))
    account = [(lbl, _text(row, c)) for lbl, c in (("industry", "industry"), ("region", "region"),
                                                   ("product line", "product_line"))]
    account = [f"{lbl}: {v}" for lbl, v in account if v]
    if account:
        lines.append("- Account: " + "; ".join(account))
    extras = []
    for c in extra_columns:
        v = row.get(c)
        if c in LEAKAGE_COLUMNS or v is None or (isinstance(v, float) and not math.isfinite(v)) or pd.isna(v):
            continue
        shown = f"{v:g}" if isinstance(v, (int, float, np.integer, np.floating)) else _text(row, c)
        if shown:
            extras.append(f"{c[len(EXTRA_PREFIX):] if c.startswith(EXTRA_PREFIX) else c}: {shown}")
    if extras:
        lines.append("- Other CRM fields: " + "; ".join(extras))
    lines.append("")
    lines.append(QUESTION)
    return "\n".join(lines)


def explain(row: Mapping) -> tuple[list[str], list[str]]:
    """The templated explanation: (risk signals, signals in the deal's favour) that the snapshot shows, by fixed
    rules on the features (no generated text)."""
    risk, good = [], []
    last, a30 = _num(row, "days_since_last_activity"), _num(row, "activity_count_30d")
    if last is not None and last >= 14:
        risk.append(f"no logged activity for {last:.0f} days")
    elif last is not None and last <= 3:
        good.append(f"the last activity was {last:.1f} days ago")
    if a30 is not None and a30 <= 1:
        risk.append(f"only {_count(a30)} activities in the last 30 days")
    elif a30 is not None and a30 >= 8:
        good.append(f"{_count(a30)} activities in the last 30 days")
    slips, slip_days = _num(row, "close_date_slips"), _num(row, "close_date_slip_days")
    if slips is not None and slips >= 1:
        risk.append(f"the expected close date moved {_count(slips)} times"
                    + (f" ({slip_days:.0f} days in total)" if slip_days is not None else ""))
    elif slips is not None:
        good.append("the expected close date never moved")
    dtc = _num(row, "days_to_close")
    if dtc is not None and dtc < 0:
        risk.append(f"the expected close date passed {abs(dtc):.0f} days ago")
    prob = _num(row, "crm_probability")
    if prob is not None and prob <= 30:
        risk.append(f"the CRM win probability is low ({prob:.0f}%)")
    elif prob is not None and prob >= 70:
        good.append(f"the CRM win probability is high ({prob:.0f}%)")
    score = _num(row, "heuristic_risk_score")
    if score is not None and score >= 0.6:
        risk.append(f"the CRM risk score is high ({score:.2f})")
    elif score is not None and score <= 0.3:
        good.append(f"the CRM risk score is low ({score:.2f})")
    stage_age = _num(row, "stage_age_days")
    if stage_age is not None and stage_age >= 60:
        risk.append(f"{stage_age:.0f} days in the current stage")
    change = _num(row, "deal_value_change")
    if change is not None and change <= -0.05:
        risk.append(f"the deal value was cut by {100 * abs(change):.0f}% since the first snapshot")
    return risk, good


def build_completion(row: Mapping) -> str:
    """The assistant message: the outcome (from the label) and the templated explanation."""
    label = int(row[LABEL])
    risk, good = explain(row)
    return (f"Outcome: {OUTCOMES[label]}\n"
            f"Risk signals in the snapshot: {'; '.join(risk) if risk else 'none of the checked signals'}.\n"
            f"Signals in its favour: {'; '.join(good) if good else 'none of the checked signals'}.")


def extra_columns_of(manifest: Mapping[str, Mapping] | None, df: pd.DataFrame) -> list[str]:
    """The tenant's own extra columns (``x_<column>`` features of its manifest) present in the frame."""
    return sorted(c for c in (manifest or {}) if c.startswith(EXTRA_PREFIX) and c in df.columns)


def build_examples(df: pd.DataFrame, *, manifest: Mapping[str, Mapping] | None = None,
                   splits: Iterable[str] = SPLIT_ORDER, per_opportunity: str = "all") -> pd.DataFrame:
    """One row per example: ``split``, ``opportunity_id``, ``snapshot_date``, ``label``, ``prompt``, ``completion``.
    ``per_opportunity``: ``all`` snapshots, or only the ``latest`` / ``earliest`` snapshot of each opportunity."""
    if per_opportunity not in ("all", "latest", "earliest"):
        raise ValueError(f"per_opportunity must be all, latest or earliest, got {per_opportunity!r}")
    missing = [c for c in ("opportunity_id", "snapshot_date", LABEL, "split") if c not in df.columns]
    if missing:
        raise KeyError(f"dataset_splits lacks {missing}: cannot build LLM examples")
    rows = df[df["split"].isin(list(splits))].sort_values(["split", "opportunity_id", "snapshot_date"], kind="mergesort")
    if per_opportunity != "all" and len(rows):
        rows = rows.groupby("opportunity_id", sort=False).tail(1) if per_opportunity == "latest" else \
            rows.groupby("opportunity_id", sort=False).head(1)
    extras = extra_columns_of(manifest, rows)
    prompt_cols = [c for c in rows.columns if c not in LEAKAGE_COLUMNS]  # the prompt never sees the answer
    recs = rows[prompt_cols].to_dict(orient="records")
    labels = rows[LABEL].to_numpy(int)
    out = pd.DataFrame({
        "split": rows["split"].to_numpy(), "opportunity_id": rows["opportunity_id"].astype(str).to_numpy(),
        "snapshot_date": rows["snapshot_date"].to_numpy(), LABEL: labels,
        "prompt": [build_prompt(r, extras) for r in recs],
        "completion": [build_completion({**r, LABEL: y}) for r, y in zip(recs, labels)],
    })
    return out.reset_index(drop=True)


def example_line(prompt: str, completion: str) -> str:
    return json.dumps({"messages": [{"role": "system", "content": SYSTEM_PROMPT},
                                    {"role": "user", "content": prompt},
                                    {"role": "assistant", "content": completion}]}, ensure_ascii=False)


def write_jsonl(examples: pd.DataFrame, folder: Path) -> tuple[pd.DataFrame, dict[str, Path]]:
    """Write ``<folder>/<split>.jsonl`` (replacing older files of this partition); returns the index (``file``,
    ``line`` added, prompt and completion dropped) and {split: path}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.jsonl"):
        old.unlink()
    paths, index = {}, []
    for split, part in examples.groupby("split", sort=False):
        path = folder / f"{split}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for p, c in zip(part["prompt"], part["completion"]):
                fh.write(example_line(p, c) + "\n")
        tmp.replace(path)
        paths[str(split)] = path
        index.append(part.drop(columns=["prompt", "completion"]).assign(file=path.name, line=np.arange(len(part))))
    idx = pd.concat(index, ignore_index=True) if index else examples.drop(columns=["prompt", "completion"]).assign(
        file=pd.Series(dtype=object), line=pd.Series(dtype=int))
    return idx, paths


# ----------------------------------------------------------------------------------------- validation
_TOKEN = re.compile(r"[\w][\w\-./&'+@]*", re.UNICODE)


def _norm(text: str) -> str:
    return " ".join(str(text).lower().split())


def tokens(text: str) -> set[str]:
    return {t.rstrip(".-/'") for t in _TOKEN.findall(text.lower())}


def text_values(frames: Iterable[pd.DataFrame]) -> set[str]:
    """The free-text values of some frames: every non-numeric string of their text columns (owner and account
    ids, stage names, categories, extra text columns), normalised (lower case, single spaces)."""
    out: set[str] = set()
    for df in frames:
        if df is None or not len(df):
            continue
        for c in df.columns:
            if c in NOT_TEXT_COLUMNS or not (pd.api.types.is_object_dtype(df[c]) or pd.api.types.is_string_dtype(df[c])
                                             or isinstance(df[c].dtype, pd.CategoricalDtype)):
                continue
            for v in pd.unique(df[c].dropna().astype(str)):
                n = _norm(v)
                if len(n) >= 2 and not _is_number(n):
                    out.add(n)
    return out


def _is_number(s: str) -> bool:
    try:
        float(s.replace(",", ""))
        return True
    except ValueError:
        return False


def template_words() -> set[str]:
    """Words of the fixed templates (a foreign value equal to one of them cannot be told from the template)."""
    empty = {c: None for c in ("stage", "currency", "industry", "region", "product_line")}
    full = {"stage_index": 1, "deal_value": 1, "deal_value_change": -0.5, "crm_probability": 1, "heuristic_risk_score": 0.9,
            "risk_commercial": 1, "risk_competitive": 1, "risk_relationship": 1, "risk_technical": 1,
            "risk_timeline": 1, "days_to_close": -1, "close_date_slips": 1, "close_date_slip_days": 1,
            "activity_count_30d": 1, "activity_count_90d": 1, "days_since_last_activity": 20, "engagement": 1,
            "opportunity_age_days": 1, "stage_age_days": 90, "stage": "s", "industry": "i", "region": "r",
            "product_line": "p", "snapshot_date": "2020-01-01", LABEL: 1}
    good = {**full, "crm_probability": 90, "heuristic_risk_score": 0.1, "days_since_last_activity": 1,
            "activity_count_30d": 9, "close_date_slips": 0, LABEL: 0}
    text = " ".join([SYSTEM_PROMPT, build_prompt({**empty, "snapshot_date": None}), build_prompt(full, ["x_a"]),
                     build_completion(full), build_completion(good), "none of the checked signals"])
    return tokens(text)


def foreign_values(own: set[str], others: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """{tenant: its free-text values that the target tenant's own text cannot explain}: any of them in the target's
    file would be text copied from another tenant. Left out: the target's own values, values inside one of them
    (``review`` when the tenant has a stage ``Negotiation & Review``), and values made only of template words and
    numbers (``30 days``), which the templates write for every tenant."""
    words = template_words()
    own_joined = "\n".join(sorted(own))

    def explained(v: str) -> bool:
        toks = tokens(v)
        return v in own or v in own_joined or all(t in words or _is_number(t) for t in toks)

    return {t: {v for v in vals if not explained(v)} for t, vals in others.items()}


def validate_files(paths: Mapping[str, Path], index: pd.DataFrame, rows: pd.DataFrame,
                   foreign: Mapping[str, set[str]], *, min_rows: int = 50, max_bytes: int = 500_000_000,
                   leak_probe_rows: int = 200, manifest: Mapping | None = None, max_reported: int = 10) -> dict:
    """Read the written files back and check them. Returns {check: {"passed", "value", "detail"...}}:

    - ``parse``: every line is JSON with ``messages`` = system, user, assistant (non-empty strings), the
      assistant message matches the completion template, the outcome it states is the row's label, and the
      lines match the index one to one;
    - ``no_leakage``: no prompt holds a leakage word or the row's ``closed_at`` date, and the prompts of
      ``leak_probe_rows`` rows are unchanged when their answer columns are changed (flipped label and outcome,
      moved close, other revenue): the prompt does not depend on the answer;
    - ``no_foreign_text``: no line holds a free-text value of another tenant that the tenant does not have itself;
    - ``size``: at least ``min_rows`` lines and at most ``max_bytes`` in all.
    """
    bad, n_lines, total_bytes, leaks, hits = [], 0, 0, [], []
    lookup = {(str(f), int(i)): y for f, i, y in zip(index["file"], index["line"], index[LABEL])}
    closed = {}
    if "closed_at" in rows.columns:
        for (oid, snap), c in zip(zip(rows["opportunity_id"].astype(str), pd.to_datetime(rows["snapshot_date"])),
                                  pd.to_datetime(rows["closed_at"])):
            if not pd.isna(c):
                closed[(oid, snap)] = c.date().isoformat()
    keys = {(str(f), int(i)): (str(o), pd.Timestamp(s)) for f, i, o, s in
            zip(index["file"], index["line"], index["opportunity_id"], index["snapshot_date"])}
    by_first: dict[str, list[tuple[str, str]]] = {}
    for t, vals in foreign.items():
        for v in vals:
            first = _TOKEN.findall(v)
            head = first[0].rstrip(".-/'") if first else None
            if head:
                by_first.setdefault(head, []).append((v, t))
    seen_lines = set()
    for split, path in paths.items():
        path = Path(path)
        total_bytes += path.stat().st_size
        with path.open(encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                n_lines += 1
                where = (path.name, i)
                seen_lines.add(where)
                try:
                    obj = json.loads(line)
                    msgs = obj["messages"]
                    ok = (isinstance(msgs, list) and [m.get("role") for m in msgs] == list(ROLES)
                          and all(isinstance(m.get("content"), str) and m["content"].strip() for m in msgs)
                          and set(obj) == {"messages"})
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    bad.append({"file": path.name, "line": i + 1, "problem": f"does not parse: {exc}"})
                    continue
                if not ok:
                    bad.append({"file": path.name, "line": i + 1, "problem": "messages are not system, user, "
                                                                             "assistant with non-empty text"})
                    continue
                m = COMPLETION_RE.match(msgs[2]["content"])
                if not m:
                    bad.append({"file": path.name, "line": i + 1, "problem": "completion outside the template"})
                elif where not in lookup:
                    bad.append({"file": path.name, "line": i + 1, "problem": "line not in the index"})
                elif m.group(1) != OUTCOMES[int(lookup[where])]:
                    bad.append({"file": path.name, "line": i + 1, "problem": "stated outcome is not the row's label"})
                prompt = msgs[1]["content"]
                low = prompt.lower() + "\n" + msgs[0]["content"].lower()
                words = [w for w in LEAKAGE_WORDS if w in low]
                date = closed.get(keys.get(where, (None, None)))
                if date and date in prompt:
                    words.append(f"closed_at date {date}")
                if words:
                    leaks.append({"file": path.name, "line": i + 1, "found": words})
                text = _norm(" ".join(x["content"] for x in msgs))
                for tok in tokens(text) & by_first.keys():
                    for v, t in by_first[tok]:
                        if v == tok or v in text:
                            hits.append({"file": path.name, "line": i + 1, "value": v, "tenant": t})
    missing_lines = len(set(lookup) - seen_lines)
    if missing_lines:
        bad.append({"file": "*", "line": 0, "problem": f"{missing_lines} indexed examples have no line"})
    # counterfactual probe: the prompt must not change when the answer does
    probe = rows.head(leak_probe_rows)
    extras = extra_columns_of(manifest, rows)
    changed = 0
    for r in probe.to_dict(orient="records"):
        flipped = {**r, LABEL: 1 - int(r[LABEL]), "outcome": "won" if r.get("outcome") == "lost" else "lost",
                   "closed_at": pd.Timestamp("1999-01-01"), "actual_revenue": 123456789.0, "split": "other"}
        if build_prompt({k: v for k, v in r.items() if k not in LEAKAGE_COLUMNS}, extras) != build_prompt(flipped, extras):
            changed += 1
    if changed:
        leaks.append({"file": "*", "line": 0, "found": [f"{changed} of {len(probe)} probed prompts change with the answer"]})
    return {
        "parse": {"passed": not bad, "value": len(bad), "lines": n_lines, "detail": bad[:max_reported]},
        "no_leakage": {"passed": not leaks, "value": len(leaks), "probed_rows": int(len(probe)),
                       "detail": leaks[:max_reported]},
        "no_foreign_text": {"passed": not hits, "value": len(hits),
                            "foreign_values": {t: len(v) for t, v in foreign.items()}, "detail": hits[:max_reported]},
        "size": {"passed": min_rows <= n_lines and total_bytes <= max_bytes, "value": n_lines, "bytes": total_bytes,
                 "min_rows": min_rows, "max_bytes": max_bytes},
    }
