"""LLM fine-tuning data prep (core.llm_data): prompts without the answer, templated completions, and the
validation of the written JSONL files (parse, leakage, another tenant's free text, size)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from riskml_assets.core import features as F
from riskml_assets.core import llm_data as L
from riskml_assets.core import simulator

from .conftest import simulated_splits

LABEL = F.LABEL
GLOBEX_STAGES = {"prospecting": "Discovery", "qualification": "Solutioning", "proposal": "Business Case",
                 "negotiation": "Negotiation & Review", "commit": "Verbal Commit"}


def _tenant(spec, manifest):
    sim = simulator.simulate_tenant(spec)
    return sim, simulated_splits(sim, manifest, seed=0, tenant=spec.name)


@pytest.fixture(scope="module")
def tenants(manifest):
    """initech, and globex with its own stage names and an extra text column (its free text)."""
    sim_i, df_i = _tenant(simulator.DEFAULT_TENANTS[2], manifest)
    sim_g, df_g = _tenant(simulator.DEFAULT_TENANTS[1], manifest)
    df_g = df_g.assign(stage=df_g["stage"].map(GLOBEX_STAGES),
                       x_campaign=np.where(np.arange(len(df_g)) % 2, "Globex Spring Summit", "Partner Webinar Q3"))
    return {"initech": (sim_i, df_i), "globex": (sim_g, df_g)}


@pytest.fixture
def written(tenants, manifest, tmp_path):
    sim, df = tenants["initech"]
    ex = L.build_examples(df, manifest=manifest)
    index, paths = L.write_jsonl(ex, tmp_path / "initech" / "2026-11-16")
    own = L.text_values([df, sim.snapshots])
    sim_g, df_g = tenants["globex"]
    foreign = L.foreign_values(own, {"globex": L.text_values([df_g, sim_g.snapshots])})
    return {"df": df, "ex": ex, "index": index, "paths": paths, "foreign": foreign}


ROW = {"snapshot_date": pd.Timestamp("2026-11-13"), "stage": "Negotiation & Review", "stage_index": 3.0,
       "deal_value": 120000.0, "currency": "EUR", "deal_value_change": -0.25, "crm_probability": 20.0,
       "heuristic_risk_score": 0.7, "risk_commercial": 0.1, "risk_timeline": 0.8, "days_to_close": -6.0,
       "close_date_slips": 2.0, "close_date_slip_days": 35.0, "activity_count_30d": 0.0, "activity_count_90d": 4.0,
       "days_since_last_activity": 20.4, "engagement": 0.31, "opportunity_age_days": 140.0, "stage_age_days": 75.0,
       "industry": "retail", "region": "EMEA", "product_line": "core", "x_lead_source": "referral",
       "x_lead_score": 41.0, LABEL: 1, "closed_at": pd.Timestamp("2026-11-18 10:00"), "outcome": "lost",
       "actual_revenue": np.nan, "split": "train"}


def test_prompt_and_completion_of_one_row():
    prompt = L.build_prompt(ROW, ["x_lead_score", "x_lead_source"])
    assert prompt.splitlines() == [
        "Opportunity snapshot of 2026-11-13.",
        "- Stage: Negotiation & Review (position 4 in the tenant's funnel)",
        "- Deal value: 120,000 EUR",
        "- Deal value change since the first snapshot: -25%",
        "- CRM win probability: 20%",
        "- CRM risk score: 0.70 (commercial 0.10, timeline 0.80)",
        "- Days to the expected close date: -6",
        "- Expected close date moved: 2 times (35 days in total)",
        "- Activities: 0 in the last 30 days; 4 in the last 90 days; the last one 20.4 days ago",
        "- Engagement score: 0.31",
        "- Age: 140 days since creation; 75 days in the current stage",
        "- Account: industry: retail; region: EMEA; product line: core",
        "- Other CRM fields: lead_score: 41; lead_source: referral",
        "",
        L.QUESTION,
    ]
    assert L.build_completion(ROW) == (
        "Outcome: lost\n"
        "Risk signals in the snapshot: no logged activity for 20 days; only 0 activities in the last 30 days; the "
        "expected close date moved 2 times (35 days in total); the expected close date passed 6 days ago; the CRM "
        "win probability is low (20%); the CRM risk score is high (0.70); 75 days in the current stage; the deal "
        "value was cut by 25% since the first snapshot.\n"
        "Signals in its favour: none of the checked signals.")
    good = {**ROW, LABEL: 0, "days_since_last_activity": 1.0, "activity_count_30d": 9.0, "close_date_slips": 0.0,
            "days_to_close": 10.0, "crm_probability": 80.0, "heuristic_risk_score": 0.2, "stage_age_days": 7.0,
            "deal_value_change": 0.0}
    assert L.build_completion(good) == (
        "Outcome: won\nRisk signals in the snapshot: none of the checked signals.\n"
        "Signals in its favour: the last activity was 1.0 days ago; 9 activities in the last 30 days; the expected "
        "close date never moved; the CRM win probability is high (80%); the CRM risk score is low (0.20).")
    assert L.COMPLETION_RE.match(L.build_completion(ROW)) and L.COMPLETION_RE.match(L.build_completion(good))


def test_prompts_do_not_depend_on_the_answer(tenants, manifest):
    _, df = tenants["initech"]
    ex = L.build_examples(df, manifest=manifest)
    assert len(ex) == len(df) and set(ex["split"]) == {"train", "validation", "test"}
    # the same prompts without the answer columns at all, and with the answer flipped
    blind = df.drop(columns=[c for c in L.LEAKAGE_COLUMNS if c not in (LABEL, "split")] + ["closed_at"],
                    errors="ignore")
    assert L.build_examples(blind, manifest=manifest)["prompt"].tolist() == ex["prompt"].tolist()
    flipped = df.assign(**{LABEL: 1 - df[LABEL], "outcome": np.where(df[LABEL] == 1, "won", "lost"),
                           "closed_at": pd.Timestamp("2000-01-03"), "actual_revenue": 1.0})
    again = L.build_examples(flipped, manifest=manifest)
    assert again["prompt"].tolist() == ex["prompt"].tolist()
    assert (again["completion"] != ex["completion"]).all()  # only the answer moved
    assert not ex["prompt"].str.contains("closed_at|actual_revenue|outcome", case=False).any()
    stated = ex["completion"].str.extract(r"^Outcome: (won|lost)")[0]
    assert (stated == np.where(ex[LABEL] == 1, "lost", "won")).all()


def test_written_files_parse_and_pass_every_check(written):
    res = L.validate_files(written["paths"], written["index"], written["df"], written["foreign"])
    assert {k: v["passed"] for k, v in res.items()} == {"parse": True, "no_leakage": True, "no_foreign_text": True,
                                                         "size": True}, res
    assert res["no_foreign_text"]["foreign_values"]["globex"] > 100  # not vacuous: globex ids, stages, campaigns
    assert {"business case", "globex spring summit"} <= written["foreign"]["globex"]
    df = written["df"]
    for split, path in written["paths"].items():
        lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
        assert len(lines) == int((df.split == split).sum())
        assert all([m["role"] for m in x["messages"]] == ["system", "user", "assistant"] for x in lines)
    assert res["size"]["value"] == len(df) and res["size"]["bytes"] == sum(p.stat().st_size for p in written["paths"].values())


def _rewrite(path, i, fn):
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[i] = fn(lines[i])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _edit_message(k, fn):
    def edit(line):
        obj = json.loads(line)
        obj["messages"][k]["content"] = fn(obj["messages"][k]["content"])
        return json.dumps(obj)
    return edit


def test_validation_names_a_broken_line_and_a_wrong_outcome(written):
    train = written["paths"]["train"]
    _rewrite(train, 3, lambda s: s[:40])
    _rewrite(train, 5, _edit_message(2, lambda c: c.replace("Outcome: lost", "Outcome: XX").replace(
        "Outcome: won", "Outcome: lost").replace("Outcome: XX", "Outcome: won")))
    res = L.validate_files(written["paths"], written["index"], written["df"], written["foreign"])
    assert not res["parse"]["passed"] and res["parse"]["value"] == 2
    assert [(d["line"], d["problem"][:14]) for d in res["parse"]["detail"]] == [(4, "does not parse"),
                                                                                 (6, "stated outcome")]


def test_validation_catches_label_leakage_in_a_file_and_in_the_builder(written, monkeypatch):
    idx = written["index"]
    row = written["df"].merge(idx.iloc[[7]], on=["opportunity_id", "snapshot_date", "split"])
    date = pd.Timestamp(row["closed_at"].iloc[0]).date().isoformat()
    path = written["paths"][idx["split"].iloc[7]]
    _rewrite(path, int(idx["line"].iloc[7]), _edit_message(1, lambda c: c + f"\n- Closed: {date}"))
    res = L.validate_files(written["paths"], idx, written["df"], written["foreign"], leak_probe_rows=0)
    assert not res["no_leakage"]["passed"]
    assert res["no_leakage"]["detail"] == [{"file": path.name, "line": int(idx["line"].iloc[7]) + 1,
                                            "found": [f"closed_at date {date}"]}]
    # a builder that peeks at the answer is caught by the probe (prompts rebuilt with the answer changed)
    real = L.build_prompt
    monkeypatch.setattr(L, "build_prompt", lambda r, extra=(): real(r, extra) + ("\nhint" if r.get(LABEL) == 1 else ""))
    res = L.validate_files(written["paths"], idx, written["df"], written["foreign"], leak_probe_rows=50)
    assert any("probed prompts change with the answer" in f for d in res["no_leakage"]["detail"] for f in d["found"])


def test_validation_catches_another_tenants_free_text(tenants, written, manifest, tmp_path):
    # a builder bug that mixes globex rows into initech's file: its stage names and campaign values show up
    _, df_g = tenants["globex"]
    mixed = pd.concat([written["df"], df_g.head(3)], ignore_index=True)
    man = {**manifest, "x_campaign": {"version": 1, "hash": "x", "kind": "categorical"}}
    index, paths = L.write_jsonl(L.build_examples(mixed, manifest=man), tmp_path / "mixed")
    res = L.validate_files(paths, index, mixed, written["foreign"])
    assert not res["no_foreign_text"]["passed"]
    found = {d["value"] for d in L.validate_files(paths, index, mixed, written["foreign"],
                                                  max_reported=1000)["no_foreign_text"]["detail"]}
    assert found & {"globex spring summit", "partner webinar q3"}, found  # its extra text column
    assert found & {s.lower() for s in GLOBEX_STAGES.values()}, found  # its own stage names
    assert res["no_foreign_text"]["value"] >= 3  # at least one hit on each of the three copied rows
    assert {d["tenant"] for d in res["no_foreign_text"]["detail"]} == {"globex"}


def test_size_gate(written):
    res = L.validate_files(written["paths"], written["index"], written["df"], written["foreign"],
                           min_rows=len(written["df"]) + 1)
    assert not res["size"]["passed"] and res["size"]["value"] == len(written["df"])
    res = L.validate_files(written["paths"], written["index"], written["df"], written["foreign"], max_bytes=1000)
    assert not res["size"]["passed"]


def test_text_values_and_foreign_values():
    a = pd.DataFrame({"owner_id": ["Ann Lee", "bob"], "stage": ["Proposal", None], "n": [1, 2],
                      "code": ["12.5", "x"], "source_file": ["a/b.parquet", "c"]})
    b = pd.DataFrame({"owner_id": ["Zed  Q", "bob"], "stage": ["proposal", "Risk"], "n": [1, 2]})
    va, vb = L.text_values([a]), L.text_values([b])
    assert va == {"ann lee", "bob", "proposal"}  # numbers, 1-char values and file names are not free text
    assert L.foreign_values(va, {"b": vb}) == {"b": {"zed q"}}  # own values and template words ("risk") excluded
    # inside an own value, or only template words and numbers: the tenant's own text explains it
    own = {"negotiation & review", "ann lee"}
    other = {"review", "lee", "30 days", "risk score", "zed q", "ann"}
    assert L.foreign_values(own, {"b": other}) == {"b": {"zed q"}}


def test_per_opportunity_latest_keeps_one_example_each(tenants, manifest):
    _, df = tenants["initech"]
    ex = L.build_examples(df, manifest=manifest, per_opportunity="latest")
    assert len(ex) == df["opportunity_id"].nunique() and ex["opportunity_id"].is_unique
    last = df.groupby("opportunity_id")["snapshot_date"].max()
    assert (pd.to_datetime(ex.set_index("opportunity_id")["snapshot_date"]) == last.reindex(ex["opportunity_id"]).values).all()
    with pytest.raises(ValueError, match="per_opportunity"):
        L.build_examples(df, per_opportunity="some")
