"""The action ranker: learning to rank mitigation actions from recommendation feedback.

A **query** is one recommendation session: a user (``user_id``) shown some actions for one
opportunity at one moment (``shown_at``); its items are the actions shown, labelled with the feedback
``relevance`` (0 ignored, 1 clicked, 2 accepted). Features of an item, all point in time:

- the action itself (``action_id``, categorical; ``action_category`` and ``action_category_risk`` = the
  CRM's heuristic ``risk_<category>`` score of the action's category, when a catalogue is given);
- user x action history: times shown, mean relevance, accept rate, lift over the action's popularity,
  days since the user last accepted / was shown it; the user's overall mean relevance;
- action popularity: times shown, mean relevance and accept rate over all users;
- opportunity x action history: times this action was already shown for this deal, best feedback so far;
- context: the opportunity's registry features (stage, days to close, engagement, slips, risk scores,
  deal value, ...) at its latest snapshot at or before ``shown_at``.

History only counts interactions strictly before ``shown_at`` (never the session itself).
Rows are kept sorted by query (``qid`` increasing, in time order), as XGBoost's rankers need.

Nothing here imports dagster.
"""
from __future__ import annotations

import time
from typing import Mapping, Sequence

from .lazy import lazy_module

np = lazy_module("numpy")
pd = lazy_module("pandas")

pl = lazy_module("polars")  # imported on first use (code location load time)

from . import features as F
from . import metrics as M
from .selection import make_model, model_from_dict
from .training import design_matrix

QUERY_KEY = ("user_id", "opportunity_id", "shown_at")
HISTORY_FEATURES = (
    "ua_shown", "ua_mean_rel", "ua_accept_rate", "ua_lift", "ua_days_since_accept", "ua_days_since_shown",
    "user_shown", "user_mean_rel", "action_shown", "action_mean_rel", "action_accept_rate",
    "oa_shown", "oa_max_rel", "opp_sessions_before",
)
DEFAULT_RANKER_PARAMS = {"n_estimators": 300, "max_depth": 5, "learning_rate": 0.08, "min_child_weight": 5.0,
                         "subsample": 0.8, "colsample_bytree": 0.8, "reg_lambda": 1.0}
OBJECTIVES = ("rank:pairwise", "rank:ndcg")
_DAY_NS = 86_400 * 10**9


def _prior(df: pd.DataFrame, keys: list[str], prefix: str) -> pd.DataFrame:
    """Per row: counts/means of the rows with the same ``keys`` strictly before its ``shown_at``."""
    g = (df.groupby(keys + ["shown_at"], sort=False, observed=True)
         .agg(_n=("relevance", "size"), _rel=("relevance", "sum"), _acc=("_accepted", "sum"))
         .reset_index().sort_values(keys + ["shown_at"], kind="mergesort"))
    grp = g.groupby(keys, sort=False, observed=True)
    n = grp["_n"].cumsum() - g["_n"]
    rel = grp["_rel"].cumsum() - g["_rel"]
    acc = grp["_acc"].cumsum() - g["_acc"]
    t = g["shown_at"].astype("int64").astype(float)
    out = g[keys + ["shown_at"]].copy()
    out[f"{prefix}_shown"] = n.astype(float)
    out[f"{prefix}_mean_rel"] = np.where(n > 0, rel / n.where(n > 0, 1), np.nan)
    out[f"{prefix}_accept_rate"] = np.where(n > 0, acc / n.where(n > 0, 1), np.nan)
    # time of the latest earlier group row, and of the latest earlier group row with an acceptance
    prev = grp["shown_at"].shift(1)
    out[f"{prefix}_prev_t"] = np.where(prev.notna(), prev.to_numpy().astype("datetime64[ns]").astype("int64"), np.nan)
    t_acc = pd.Series(np.where(g["_acc"] > 0, t, -np.inf), index=g.index)
    last_acc = t_acc.groupby([g[k] for k in keys], sort=False, observed=True).cummax()
    last_acc_before = last_acc.groupby([g[k] for k in keys], sort=False, observed=True).shift(1)
    out[f"{prefix}_prev_accept_t"] = last_acc_before.where(np.isfinite(last_acc_before)).astype(float)
    return out


def build_ranking_examples(interactions, snapshots, activities=None, manifest: Mapping | None = None, *,
                           catalogue: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict]:
    """Point-in-time ranking examples, one row per shown action, sorted by ``qid`` then ``action_id``.

    ``interactions``: the contract's feedback rows; ``snapshots``/``activities``: the tenant's history
    (context features come from the feature registry with the pinned ``manifest``, default: latest
    versions); ``catalogue``: optional ``action_id``/``category`` frame (adds the category features).
    Returns (frame with qid, the query keys, action_id, relevance, features; info with ``features``,
    ``feature_kinds``, ``context_features``, ``unavailable_features`` and counts). Interactions whose
    opportunity has no snapshot at or before ``shown_at`` are dropped and counted.
    """
    manifest = dict(manifest) if manifest is not None else F.build_manifest()
    it = interactions if isinstance(interactions, pd.DataFrame) else pl.DataFrame(interactions).to_pandas()
    missing = [c for c in ("user_id", "opportunity_id", "action_id", "shown_at", "relevance") if c not in it.columns]
    if missing:
        raise ValueError(f"interactions lack columns {missing}")
    it = it[["user_id", "opportunity_id", "action_id", "shown_at", "relevance"]].copy()
    for c in ("user_id", "opportunity_id", "action_id"):
        it[c] = it[c].astype(str)
    it["shown_at"] = pd.to_datetime(it["shown_at"]).astype("datetime64[ns]")
    it["relevance"] = pd.to_numeric(it["relevance"]).astype(int)
    if len(it) and not it["relevance"].isin([0, 1, 2]).all():
        raise ValueError("relevance must be 0, 1 or 2")
    it = it.drop_duplicates(["user_id", "opportunity_id", "action_id", "shown_at"], keep="last")
    it = it.sort_values(["shown_at", "user_id", "opportunity_id", "action_id"], kind="mergesort").reset_index(drop=True)
    it["_accepted"] = (it["relevance"] == 2).astype(int)

    # ---- history features (strictly before shown_at)
    ua = _prior(it, ["user_id", "action_id"], "ua")
    us = _prior(it, ["user_id"], "user")
    ac = _prior(it, ["action_id"], "action")
    oa = _prior(it, ["opportunity_id", "action_id"], "oa")
    df = (it.merge(ua, on=["user_id", "action_id", "shown_at"], how="left")
          .merge(us[["user_id", "shown_at", "user_shown", "user_mean_rel"]], on=["user_id", "shown_at"], how="left")
          .merge(ac[["action_id", "shown_at", "action_shown", "action_mean_rel", "action_accept_rate"]],
                 on=["action_id", "shown_at"], how="left")
          .merge(oa[["opportunity_id", "action_id", "shown_at", "oa_shown", "oa_mean_rel"]],
                 on=["opportunity_id", "action_id", "shown_at"], how="left"))
    # best earlier feedback on this opportunity for this action
    o = it.sort_values(["opportunity_id", "action_id", "shown_at"], kind="mergesort")
    best = o.groupby(["opportunity_id", "action_id", "shown_at"], sort=False)["relevance"].max().reset_index()
    best["oa_max_rel"] = best.groupby(["opportunity_id", "action_id"], sort=False)["relevance"].cummax()
    best["oa_max_rel"] = best.groupby(["opportunity_id", "action_id"], sort=False)["oa_max_rel"].shift(1)
    df = df.merge(best[["opportunity_id", "action_id", "shown_at", "oa_max_rel"]],
                  on=["opportunity_id", "action_id", "shown_at"], how="left").drop(columns="oa_mean_rel")
    sess = it[["opportunity_id", "shown_at"]].drop_duplicates().sort_values(["opportunity_id", "shown_at"])
    sess["opp_sessions_before"] = sess.groupby("opportunity_id").cumcount().astype(float)
    df = df.merge(sess, on=["opportunity_id", "shown_at"], how="left")
    t_now = df["shown_at"].astype("int64").astype(float)
    df["ua_days_since_accept"] = (t_now - df["ua_prev_accept_t"]) / _DAY_NS
    df["ua_days_since_shown"] = (t_now - df["ua_prev_t"]) / _DAY_NS
    df["ua_lift"] = df["ua_mean_rel"] - df["action_mean_rel"]
    df = df.drop(columns=["ua_prev_t", "ua_prev_accept_t", "_accepted"])

    # ---- context: the opportunity's registry features at its latest snapshot <= shown_at
    s = snapshots if isinstance(snapshots, pl.DataFrame) else pl.from_pandas(pd.DataFrame(snapshots))
    if len(it):
        s = s.filter(pl.col("snapshot_date").cast(pl.Datetime("ms")) <= pl.lit(it["shown_at"].max()).cast(pl.Datetime("ms")))
    base = F.build_base_frame(s, activities)
    feats, unavailable = F.extract_features(base, manifest)
    context = [c for c in feats.columns if c not in ("opportunity_id", "snapshot_date")]
    ctx = feats.sort("snapshot_date")
    q = (pl.from_pandas(df[["opportunity_id", "shown_at"]].drop_duplicates())
         .with_columns(pl.col("shown_at").cast(pl.Datetime("ms")).alias("_t")).sort("_t"))
    joined = q.join_asof(ctx.rename({"snapshot_date": "_t"}), on="_t", by="opportunity_id", strategy="backward",
                         check_sortedness=False).drop("_t").to_pandas()
    joined["shown_at"] = pd.to_datetime(joined["shown_at"]).astype("datetime64[ns]")
    df = df.merge(joined, on=["opportunity_id", "shown_at"], how="left")
    kinds = {c: manifest[c]["kind"] for c in context}
    crit = [c for c in context if manifest[c].get("critical")] or context[:1]
    no_ctx = df[crit].isna().all(axis=1) if crit else pd.Series(False, index=df.index)
    dropped = int(no_ctx.sum())
    df = df.loc[~no_ctx].copy()
    for c in context:
        if kinds[c] == "categorical":
            df[c] = df[c].astype("object").where(df[c].notna(), "__missing__").astype(str)

    feature_cols = ["action_id"]
    feature_kinds = {"action_id": "categorical"}
    if catalogue is not None:
        cat_of = dict(zip(catalogue["action_id"].astype(str), catalogue["category"].astype(str)))
        df["action_category"] = df["action_id"].map(cat_of).fillna("__missing__")
        risk_cols = {c: f"risk_{c}" for c in set(cat_of.values())}
        df["action_category_risk"] = np.nan
        for cat, col in risk_cols.items():
            if col in df.columns:
                m = df["action_category"] == cat
                df.loc[m, "action_category_risk"] = pd.to_numeric(df.loc[m, col], errors="coerce")
        feature_cols += ["action_category", "action_category_risk"]
        feature_kinds.update({"action_category": "categorical", "action_category_risk": "numeric"})
    feature_cols += list(HISTORY_FEATURES) + context
    feature_kinds.update({c: "numeric" for c in HISTORY_FEATURES})
    feature_kinds.update(kinds)

    df = df.sort_values(["shown_at", "user_id", "opportunity_id", "action_id"], kind="mergesort").reset_index(drop=True)
    df["qid"] = df.groupby(list(QUERY_KEY), sort=False).ngroup().astype(np.int64)
    df["week"] = df["shown_at"].dt.to_period("W-SUN").dt.start_time.dt.date.astype(str)
    df = df[list(dict.fromkeys(["qid", *QUERY_KEY, "action_id", "week", "relevance", *feature_cols]))]
    info = {
        "features": feature_cols, "feature_kinds": feature_kinds, "context_features": context,
        "history_features": list(HISTORY_FEATURES), "unavailable_features": unavailable,
        "rows": int(len(df)), "queries": int(df["qid"].nunique()) if len(df) else 0,
        "users": int(df["user_id"].nunique()) if len(df) else 0, "actions": int(df["action_id"].nunique()) if len(df) else 0,
        "dropped_without_snapshot": dropped,
        "relevance_share": {int(k): float(v) for k, v in df["relevance"].value_counts(normalize=True).sort_index().items()},
    }
    return df, info


def split_ranking_examples(df: pd.DataFrame, *, method: str = "walk_forward", fractions=(0.70, 0.15, 0.15),
                           seed: int = 0, group: str = "opportunity_id") -> pd.DataFrame:
    """Add ``split`` (train/validation/test) by opportunity, so a deal's sessions never straddle splits.

    ``walk_forward`` orders opportunities by their last session (test = the most recent);
    ``grouped`` shuffles opportunities with ``seed``.
    """
    if abs(sum(fractions) - 1.0) > 1e-9 or any(f < 0 for f in fractions):
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    last = df.groupby(group)["shown_at"].max()
    if method == "walk_forward":
        order = last.reset_index().sort_values(["shown_at", group], kind="mergesort")[group].to_numpy()
    elif method == "grouped":
        order = np.random.default_rng(seed).permutation(np.sort(last.index.to_numpy()))
    else:
        raise ValueError(f"unknown split method {method!r}: use 'walk_forward' or 'grouped'")
    cuts = np.round(np.cumsum(fractions)[:-1] * len(order)).astype(int)
    assignment = {}
    for name, part in zip(("train", "validation", "test"), np.split(order, cuts)):
        assignment.update(dict.fromkeys(part, name))
    out = df.copy()
    out["split"] = out[group].map(assignment)
    return out


def _categories(train: pd.DataFrame, features: Sequence[str], kinds: Mapping[str, str]) -> dict[str, list[str]]:
    return {c: sorted(set(train[c].astype(str)) | {"__missing__"}) for c in features if kinds[c] == "categorical"}


def train_ranker(train: pd.DataFrame, valid: pd.DataFrame | None, *, features: Sequence[str],
                 feature_kinds: Mapping[str, str], objective: str = "rank:pairwise", algorithm: str = "xgboost",
                 params: Mapping | None = None, n_threads: int = 1, seed: int = 0, early_stopping_rounds: int = 30,
                 eval_k: int = 10) -> dict:
    """Fit the ranker (XGBoost ``rank:pairwise`` by default, ``rank:ndcg`` selectable, or LightGBM
    lambdarank) with early stopping on validation NDCG@``eval_k``; return a JSON-able artifact."""
    if algorithm == "xgboost" and objective not in OBJECTIVES:
        raise ValueError(f"unknown ranking objective {objective!r}: use one of {OBJECTIVES}")
    features = list(features)
    kinds = {c: feature_kinds[c] for c in features}
    cats = _categories(train, features, kinds)
    p = {**DEFAULT_RANKER_PARAMS, **(params or {})} if algorithm == "xgboost" else dict(params or {})
    model = make_model(algorithm, "ranking", p, n_threads=n_threads, seed=seed, objective=objective, eval_k=eval_k)
    Xtr = design_matrix(train, features, kinds, cats)
    ev = None
    if valid is not None and len(valid):
        ev = (design_matrix(valid, features, kinds, cats), valid["relevance"].to_numpy(int), valid["qid"].to_numpy())
    t0 = time.perf_counter()
    model.fit(Xtr, train["relevance"].to_numpy(int), qid=train["qid"].to_numpy(), eval_set=ev,
              early_stopping_rounds=early_stopping_rounds if ev is not None else None)
    return {
        "family": "action_ranker", "algorithm": algorithm, "objective": objective if algorithm == "xgboost" else "lambdarank",
        "model": model.to_dict(), "features": features, "feature_kinds": kinds, "categories": cats, "params": p,
        "best_iteration": model.best_iteration, "train_rows": int(len(train)),
        "train_queries": int(train["qid"].nunique()), "train_seconds": time.perf_counter() - t0,
        "popularity": popularity_table(train),
    }


def predict_ranker(artifact: Mapping, df: pd.DataFrame) -> np.ndarray:
    """Scores of the artifact's ranker for the rows of ``df`` (higher = show first)."""
    X = design_matrix(df, artifact["features"], artifact["feature_kinds"], artifact["categories"])
    return model_from_dict(artifact["model"]).predict(X)


def popularity_table(train: pd.DataFrame) -> dict[str, float]:
    """Mean relevance of every action over the training rows (all users): the popularity baseline."""
    return {str(k): float(v) for k, v in train.groupby("action_id")["relevance"].mean().sort_index().items()}


def popularity_baseline(train: pd.DataFrame | Mapping[str, float], df: pd.DataFrame) -> np.ndarray:
    """Score every row of ``df`` by its action's mean relevance in ``train`` (unseen actions: the
    overall mean). The same ranking for every user and opportunity."""
    table = dict(train) if isinstance(train, Mapping) else popularity_table(train)
    default = float(np.mean(list(table.values()))) if table else 0.0
    return df["action_id"].astype(str).map(table).fillna(default).to_numpy(float)


def evaluate_ranker(test: pd.DataFrame, scores, *, baseline_scores=None, oracle_scores=None,
                    ks: Sequence[int] = (5, 10)) -> dict:
    """Ranking metrics (metrics.ranking_report: NDCG@k, precision@k, recall@k, MAP) on the test rows
    for the model, and for the popularity baseline / oracle when given; plus the model's lift."""
    q, rel = test["qid"].to_numpy(), test["relevance"].to_numpy(int)
    out = {"rows": int(len(test)), "queries": int(len(np.unique(q))), "ks": list(ks),
           "model": M.ranking_report(q, rel, np.asarray(scores, float), ks=ks)}
    if baseline_scores is not None:
        out["popularity"] = M.ranking_report(q, rel, np.asarray(baseline_scores, float), ks=ks)
        for k in ks:
            out[f"ndcg_at_{k}_lift"] = out["model"][f"ndcg_at_{k}"] - out["popularity"][f"ndcg_at_{k}"]
        out["map_lift"] = out["model"]["map"] - out["popularity"]["map"]
    if oracle_scores is not None:
        out["oracle"] = M.ranking_report(q, rel, np.asarray(oracle_scores, float), ks=ks)
    return out
