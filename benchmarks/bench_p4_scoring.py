"""P4: scoring — 1M rows through the core scoring path, and the ``risk_scores`` asset for ~16k open
opportunities through Dagster next to the bare scoring functions (not a test).

    python benchmarks/bench_p4_scoring.py            # 1M rows + ~16k open opportunities, 3 runs each
    python benchmarks/bench_p4_scoring.py --quick    # small tenants, 1 run each (smoke)
    python benchmarks/bench_p4_scoring.py --code-root <other checkout>

Part 1 (1M rows; the simulated tenant of P3, cached): a small model is trained once (untimed), then

* ``score_1m``: ``core.scoring.compute_features`` on every snapshot row + ``predict_calibrated`` on all of them;
* ``model_only_1m``: ``predict_calibrated`` alone on the same, already computed feature rows (the floor).

Part 2 (one tenant with ~16k open opportunities in its latest week and 26 weeks of history): the weeks are
ingested with ``ingest_job`` and a small model is registered as the tenant's champion (untimed), then

* ``risk_scores_dagster``: ``score_job`` (the ``risk_scores`` asset) for the latest week, in process;
* ``risk_scores_bare``: the same work as plain calls — ``ModelRegistry.load`` of the champion,
  ``score_open_opportunities``, ``compute_features`` of the history and ``drift_report`` (history in memory).

Goal (issue 11): ``risk_scores`` for ~16k open opportunities <= 3 s.
"""
from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing as T  # noqa: E402

TAG = "P4"


def part_1m(args) -> None:
    from riskml_assets.core import features as F
    from riskml_assets.core.scoring import compute_features, predict_calibrated

    snaps, outs, acts = T.simulated(3000 if args.quick else 131_000, 12 if args.quick else 78)
    manifest = F.build_manifest()
    art, cal, _ = T.small_model(T.examples(snaps, outs, acts, manifest), manifest)
    feats, _ = compute_features(snaps, acts, manifest)
    T.note(TAG, f"part 1: {len(snaps):,} snapshot rows scored ({len(art['features'])} model features)")
    out = {}

    def score():
        f, _ = compute_features(snaps, acts, manifest)
        out["p"] = predict_calibrated(art, cal, f)[0]

    times = T.interleave({"score_1m": score, "model_only_1m": lambda: predict_calibrated(art, cal, feats)},
                         args.repeat)
    assert len(out["p"]) == len(snaps) and ((out["p"] >= 0) & (out["p"] <= 1)).all()
    T.report_times(TAG, times)
    T.report_ratio(TAG, times, "score_1m", "model_only_1m")


def part_asset(args, root: Path) -> None:
    from riskml_assets.core import drift as D
    from riskml_assets.core import features as F
    from riskml_assets.core.scoring import compute_features, score_open_opportunities
    from riskml_assets.registry import ModelRegistry, register_risk_candidate

    plat = T.Platform(root)
    try:
        if args.quick:
            plat.relax_gates()
        tenant, week = "benchp4", T.LATEST_WEEK
        weeks = args.weeks or (4 if args.quick else 26)
        # ~2,100 new opportunities a week keep ~16k open at once
        rate = 60 if args.quick else 2100
        sim = T.simulate(opportunities=rate * (20 + weeks), weeks=weeks, name=tenant)
        T.write_incoming(sim, plat.incoming, root / "oracle")
        secs = plat.ingest(tenant, T.weeks_of(plat.incoming / tenant))
        snaps, acts = sim.snapshots, sim.activities
        latest = T.latest_week(snaps)
        manifest = F.build_manifest()
        ex = T.examples(snaps, sim.outcomes, acts, manifest)
        art, cal, splits = T.small_model(ex, manifest, tenant)
        art.update(manifest_fingerprint=F.manifest_fingerprint(manifest), tenant=tenant, week=week)
        reference, _ = compute_features(snaps, acts, manifest)
        reference = reference.sample(n=min(len(reference), 5000), random_state=0).reset_index(drop=True)
        test = splits[splits["split"] == "test"].reset_index(drop=True)
        reg = ModelRegistry(plat.tracking_uri)
        out = register_risk_candidate(reg, tenant, artifact=art, calibrator=cal, manifest=manifest, test=test,
                                      metrics={}, report_md="bench champion", gates_passed={"bench": True},
                                      reference_data=reference, n_boot=100, seed=0)
        if reg.champion_version(tenant, "risk") is None:
            raise RuntimeError(f"the bench model was not promoted: {out['decision'].get('reason')}")
        T.note(TAG, f"part 2: {len(snaps):,} snapshot rows of history, {len(latest):,} rows in week {week}; set-up "
                    f"ingested {weeks} weeks in {secs:.0f} s and registered champion v{out['version']}")
        res_rows = {}

        def dagster():
            res = plat.run("score_job", tenant, week)
            mats = {e.asset_key.to_user_string() for e in res.get_asset_materialization_events()}
            if not res.success or "risk_scores" not in mats:
                raise RuntimeError(f"score_job {tenant}|{week} failed (success={res.success})")
            res_rows["run_id"] = res.run_id

        def bare():
            champ = reg.load(tenant, "risk", alias="champion")
            scores = score_open_opportunities(snaps, acts, latest, champ)
            feats, _ = compute_features(snaps, acts, champ["manifest"])
            new = feats.merge(scores[["opportunity_id", "snapshot_date"]], on=["opportunity_id", "snapshot_date"])
            used = [f for f in champ["artifact"]["features"] if f in new.columns]
            kinds = {f: champ["artifact"]["feature_kinds"][f] for f in used}
            report = D.drift_report(champ["reference"], new, used, kinds, warn=0.10, fail=0.25, min_rows=100)
            res_rows["scored"], res_rows["max_psi"] = len(scores), D.drift_summary(report)["max_psi"]

        times = T.interleave({"risk_scores_dagster": dagster, "risk_scores_bare": bare}, args.repeat)
        T.note(TAG, f"{res_rows['scored']:,} open opportunities scored; max PSI {res_rows['max_psi']:.3f}; "
                    f"{plat.event_records(res_rows['run_id'])} event records in the Dagster run")
        T.report_times(TAG, times)
        T.report_ratio(TAG, times, "risk_scores_dagster", "risk_scores_bare")
        T.report_value(TAG, "risk_scores_dagster_median_s", statistics.median(times["risk_scores_dagster"]), "s",
                       ("<=", 3.0))
    finally:
        plat.close()


def main(argv=None) -> int:
    p = T.parser(__doc__, repeat=3, quick_repeat=1)
    p.add_argument("--weeks", type=int, default=None, help="weeks of history of part 2 (default 26, 4 with --quick)")
    p.add_argument("--part", choices=("all", "1m", "asset"), default="all", help="run one part only")
    args = T.parse(p, argv)
    T.header(TAG, "scoring: 1M rows (core) and the risk_scores asset vs the bare scoring functions", args)
    if args.part in ("all", "1m"):
        part_1m(args)
    if args.part in ("all", "asset"):
        root = Path(tempfile.mkdtemp(prefix="riskml-bench-p4-"))
        try:
            part_asset(args, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
