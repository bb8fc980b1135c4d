"""A deterministic CRM simulator that writes data in the contract, with a known ground truth.

The simulator produces, per tenant, weekly ``snapshots-``, ``outcomes-`` and ``activities-`` files
under ``<incoming_root>/<tenant>/`` exactly as a real CRM export would arrive (it is a convenience,
never a special path), plus an oracle file ``<oracle_root>/<tenant>/truth.parquet`` that only tests
read. Nothing here imports dagster.

Ground truth
------------
Every opportunity gets two hidden latents at creation, ``engaged`` (P=0.6) and ``slip_prone``
(P=0.3), and a fixed true loss probability::

    p_lost_true = sigmoid(-1.1 + 1.9*(not engaged) + 1.2*slip_prone
                          + 0.35*log(deal_value / MEDIAN_DEAL_VALUE)
                          + INDUSTRY_EFFECT[industry] + REGION_EFFECT[region])

The outcome is Bernoulli(p_lost_true), drawn at creation. The observable trajectory (activities,
close-date slips, stage moves, value changes, noisy scores, lifetime) depends only on the latents
and never on the outcome, so ``p_lost_true`` is the best any model can do (the oracle), and the
latents leave point-in-time visible traces: engaged deals log ~2.5 activities a week against ~0.35,
slip-prone deals move their close date with P=0.45 a week against 0.05.

Mitigation actions and feedback (the ``interactions`` files)
------------------------------------------------------------
A catalogue of mitigation actions (:data:`ACTION_CATALOGUE`, each addressing one risk category) is
recommended to deal owners. Every written week but the last, each open opportunity is reviewed by its
owner (``user_id`` = ``owner_id``) with P=0.25 on the snapshot Friday between 08:00 and 17:00 and shown
3-6 actions (drawn without replacement, mildly favouring the categories the CRM's heuristic
``risk_<category>`` scores flag, like a rule-based recommender). The feedback ``relevance`` (0 ignored,
1 clicked, 2 accepted) thresholds a latent utility::

    utility = ACTION_NEED_WEIGHT * need(opportunity state, action) + preference[user, action]
              + popularity[action] + logistic noise
    relevance = 2 if utility > ACTION_ACCEPT_AT else 1 if utility > ACTION_CLICK_AT else 0

``need`` is 1 for relationship actions on disengaged deals, timeline actions on slip-prone deals,
competitive actions where the industry/region effect is adverse, technical actions on the platform
product line (a proof of concept mostly before the proposal stage), and grows with the deal size for
commercial actions (a discount mostly in negotiation/commit). Every driver leaves point-in-time traces
(activities, close-date slips, categorical columns, deal value, stage, past feedback), and ranking by
the noiseless utility (``utility_mean`` in the oracle) is the best any ranker can do. Interactions
come from a separate random stream, so snapshots, outcomes, activities and truth are identical with or
without them; they never change outcomes. The oracle folder also gets ``actions.parquet`` (the
catalogue) and ``interactions_truth.parquet`` (every shown row with its ``need`` and ``utility_mean``).

Time line
---------
Weeks run Monday–Sunday. The snapshot of a week is taken on its Friday at 00:00 and lists every
opportunity open at that moment. Opportunities close Monday–Thursday of the week their (possibly
slipped) expected close date falls in, so ``closed_at`` is always after the last snapshot that
lists them. The simulation starts ``WARMUP_WEEKS`` before the first written week so the first file
already holds deals of all ages; only the last ``weeks`` weeks are written. Nothing is later than
the Friday ``end`` at 00:00 (the "as of" moment): deals still open then are censored (no outcome).

Real export habits (``export_habits=True``, CLI ``--export-habits``)
--------------------------------------------------------------------
Writes a tenant the way real CRM exports look, for the end-to-end checks of ingestion and features:

- history from ``history_from`` (default :data:`EXPORT_HISTORY_FROM`, 2016) to ``end``: years of weekly
  snapshots (the default tenant :data:`EXPORT_HABITS_TENANT` creates 5 deals a week, about 25k rows);
- outcomes **filed by export date**: the ``outcomes-<Monday>`` file of each Monday carries the closes of
  the 7 days before it (so nearly every ``closed_at`` is in the week before the file's week), and a
  share :data:`LATE_FILING_SHARE` of closes is filed one export later (typed in late); closes whose
  export would come after ``end`` are not written (censored at export time, ``outcome_written`` False);
- the tenant's **own stage names** (:data:`EXPORT_STAGES`, none of them a contract stage) in funnel order;
- two **extra columns** with real signal in the ground truth: numeric ``lead_score`` (0-100, a noisy
  reading of a hidden lead quality) and categorical ``lead_source``; the true loss logit gains
  ``-LOGIT_LEAD_QUALITY * quality + LEAD_SOURCE_EFFECT[source]``. The CRM's own ``risk_score`` does not see
  them (it is computed from the logit without the lead terms), so only a model that uses the extra
  columns can recover that part of the truth. A few values are missing, like in real exports.

The extra draws come from their own random stream, so the contract columns' random draws are the same
as without the habits (only the outcomes move, through the changed true probability). Deterministic by seed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from riskml_assets.core import contract

__all__ = [
    "TenantSpec", "SimulatedTenant", "DEFAULT_TENANTS", "DEFAULT_END", "DEFAULT_WEEKS", "DEFAULT_SEED",
    "WARMUP_WEEKS", "simulate_tenant", "write_tenant", "generate", "summarize", "parse_tenants", "main",
    "ACTION_CATALOGUE", "action_catalogue", "simulate_interactions", "oracle_revenue_quantiles",
    "oracle_action_utility", "REVENUE_FACTOR", "EXPORT_HABITS_TENANT", "EXPORT_HISTORY_FROM", "EXPORT_STAGES",
]

# --------------------------------------------------------------------------------------------
# Public configuration


@dataclass(frozen=True)
class TenantSpec:
    """One simulated tenant: its id, its mean number of new opportunities a week, a seed offset."""

    name: str
    new_opps_per_week: float
    seed_offset: int = 0

    def __post_init__(self) -> None:
        contract.validate_tenant(self.name)
        rate = float(self.new_opps_per_week)
        if not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"tenant {self.name!r}: new_opps_per_week must be a positive number, got {self.new_opps_per_week!r}")


DEFAULT_TENANTS: tuple[TenantSpec, ...] = (
    TenantSpec("acme", 60.0, 0),
    TenantSpec("globex", 18.0, 1),
    TenantSpec("initech", 3.0, 2),
)
DEFAULT_END = dt.date(2026, 11, 20)  # a Friday; nothing in the data is later than this
DEFAULT_WEEKS = 60
DEFAULT_SEED = 7
# real export habits (see the module doc)
EXPORT_HISTORY_FROM = dt.date(2016, 1, 4)
EXPORT_HABITS_TENANT = TenantSpec("northwind", 5.0, 11)
EXPORT_STAGES = ("Discovery", "Solutioning", "Business Case", "Negotiation & Review", "Verbal Commit")
LEAD_SOURCES = ("referral", "partner", "event", "web", "outbound", "paid_search")
LEAD_SOURCE_P = (0.12, 0.13, 0.15, 0.25, 0.20, 0.15)
LEAD_SOURCE_EFFECT = {"referral": -0.8, "partner": -0.4, "event": 0.0, "web": 0.1, "outbound": 0.6, "paid_search": 0.4}
LOGIT_LEAD_QUALITY = 0.8  # per sd of the hidden lead quality
LEAD_SCORE_NOISE = 8.0  # lead_score = clip(50 + 18 * quality + N(0, 8), 0, 100), rounded
P_LEAD_MISSING = 0.04  # each extra column is empty on this share of deals
LATE_FILING_SHARE = 0.05  # closes filed one export later than due
HABITS_STREAM = 0x4AB1  # the separate random stream of the export-habit draws
WARMUP_WEEKS = 20  # simulated before the first written week, never written (except as outcomes' history)

# --------------------------------------------------------------------------------------------
# Model constants (the ground truth). Tests and docs refer to these.

MEDIAN_DEAL_VALUE = 40_000.0
P_ENGAGED = 0.6
P_SLIP_PRONE = 0.3
LOGIT_INTERCEPT = -1.3
LOGIT_NOT_ENGAGED = 2.4
LOGIT_SLIP_PRONE = 0.6
LOGIT_LOG_VALUE = 0.35

INDUSTRIES = ("software", "manufacturing", "finance", "healthcare", "retail")
INDUSTRY_P = (0.30, 0.20, 0.20, 0.15, 0.15)
INDUSTRY_EFFECT = {"software": -0.30, "manufacturing": 0.10, "finance": -0.20, "healthcare": 0.00, "retail": 0.30}
REGIONS = ("NA", "EMEA", "APAC", "LATAM")
REGION_P = (0.45, 0.30, 0.15, 0.10)
REGION_EFFECT = {"NA": -0.20, "EMEA": 0.00, "APAC": 0.20, "LATAM": 0.10}
PRODUCT_LINES = ("core", "analytics", "platform")
PRODUCT_P = (0.50, 0.30, 0.20)
PRODUCT_VALUE_MULT = (1.0, 0.7, 1.6)
CURRENCIES = ("USD", "EUR", "GBP")
CURRENCY_P = (0.80, 0.13, 0.07)

STAGE_DEFAULT_PROBABILITY = {"prospecting": 10, "qualification": 25, "proposal": 45, "negotiation": 65, "commit": 85}
INITIAL_STAGE_P = (0.55, 0.30, 0.15)  # prospecting, qualification, proposal
P_STAGE_ADVANCE = 0.25
P_STAGE_ADVANCE_ENGAGED_BONUS = 0.08
P_VALUE_CHANGE = 0.05

ACTIVITY_RATE_ENGAGED = 2.5  # events per week
ACTIVITY_RATE_DISENGAGED = 0.35
ACTIVITY_TYPE_P = (0.40, 0.25, 0.15, 0.08, 0.05, 0.07)  # in contract.ACTIVITY_TYPES order

P_SLIP_SLIP_PRONE = 0.45
P_SLIP_OTHER = 0.05
SLIP_DAYS = (7, 28)  # inclusive
REVENUE_FACTOR = (0.85, 1.1)  # a won deal realises its last deal value times U(0.85, 1.1)
MAX_SLIPS = 3  # without a cap a slip-prone deal (expected slip 1.1 weeks a week) would never close
CLOSE_AFTER_DAYS = (28, 140)  # initial expected close: 4–20 weeks after creation (inclusive),
CLOSE_AFTER_BETA = (1.0, 4.0)  # ... skewed to the short end by a Beta draw (mean about 7 weeks)

RISK_NOISE_SD = 0.8  # risk_score = sigmoid(logit(p_lost_true) + AR(1) noise with this stationary sd)
RISK_NOISE_AR = 0.3
P_MITIGATION_RECORDED = 0.35

# mitigation actions: (action_id, risk category it addresses, popularity = utility offset for everyone)
ACTION_CATALOGUE: tuple[tuple[str, str, float], ...] = (
    ("exec_sponsor_call", "relationship", 0.0),
    ("re_engagement_sequence", "relationship", 0.2),
    ("champion_mapping", "relationship", -0.2),
    ("reschedule_close", "timeline", 0.3),
    ("mutual_action_plan", "timeline", 0.0),
    ("discount_offer", "commercial", 0.5),
    ("roi_business_case", "commercial", -0.1),
    ("competitive_battlecard", "competitive", 0.1),
    ("reference_customer_call", "competitive", -0.3),
    ("technical_deep_dive", "technical", 0.0),
    ("proof_of_concept", "technical", -0.4),
)
P_REVIEW = 0.25  # share of open deals whose owner reviews recommendations in a week
ACTIONS_SHOWN = (3, 6)  # inclusive
ACTION_NEED_WEIGHT = 2.0
ACTION_PREF_SD = 0.7  # user x action preference
ACTION_NOISE_SCALE = 0.6  # logistic noise of one impression
ACTION_CLICK_AT = 1.0
ACTION_ACCEPT_AT = 2.2
ACTION_SHOWN_BIAS = 0.8  # shown with weight exp(bias * heuristic risk score of the action's category)
INTERACTION_STREAM = 0x1A7E  # the separate random stream of the interactions
INTERACTION_COLUMNS = contract.INTERACTION_REQUIRED

SNAPSHOT_COLUMNS = (*contract.SNAPSHOT_REQUIRED, *contract.SNAPSHOT_OPTIONAL)
OUTCOME_COLUMNS = (*contract.OUTCOME_REQUIRED, *contract.OUTCOME_OPTIONAL)
ACTIVITY_COLUMNS = contract.ACTIVITY_REQUIRED
TRUTH_COLUMNS = ("opportunity_id", "p_lost_true", "engaged", "slip_prone", "outcome", "created_at", "closed_at", "outcome_written")

_DAY = 86_400
_WEEK = 7 * _DAY
_ORDER = ("snapshots", "outcomes", "activities", "interactions")


@dataclass
class SimulatedTenant:
    """The in-memory result of :func:`simulate_tenant` (timestamps are naive ``datetime64[ns]``).

    ``truth`` has one row per simulated opportunity (warm-up ones included): ``p_lost_true``,
    the latents ``engaged``/``slip_prone``, the drawn ``outcome`` (fixed at creation, also for
    censored deals), ``created_at``, ``closed_at`` (NaT if still open at ``end``) and
    ``outcome_written`` (whether its outcome row is in ``outcomes``).
    """

    name: str
    snapshots: pd.DataFrame
    outcomes: pd.DataFrame
    activities: pd.DataFrame
    truth: pd.DataFrame
    fridays: list[dt.date] = field(default_factory=list)  # the written weeks, as their Fridays
    end: dt.date = DEFAULT_END
    seed: int = DEFAULT_SEED
    #: recommendation feedback in the contract (user_id, opportunity_id, action_id, shown_at, relevance)
    interactions: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(INTERACTION_COLUMNS)))
    #: oracle of the interactions: the same rows plus category, need and the noiseless utility
    interaction_truth: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: written the way real CRM exports look (module doc); then ``outcome_files`` holds, row for row of
    #: ``outcomes``, the date of the ``outcomes-<date>`` file that carries it (a Monday)
    export_habits: bool = False
    outcome_files: pd.Series | None = None

    @property
    def actions(self) -> pd.DataFrame:
        return action_catalogue()


# --------------------------------------------------------------------------------------------
# Simulation


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def last_friday(d: dt.date) -> dt.date:
    """The latest Friday on or before ``d`` (snapshots are taken on Fridays)."""
    if isinstance(d, dt.datetime):
        d = d.date()
    return d - dt.timedelta(days=(d.weekday() - 4) % 7)


def simulate_tenant(
    spec: TenantSpec,
    *,
    weeks: int | None = None,
    end: dt.date = DEFAULT_END,
    seed: int = DEFAULT_SEED,
    opportunities: int | None = None,
    export_habits: bool = False,
    history_from: dt.date | None = None,
) -> SimulatedTenant:
    """Simulate one tenant for ``weeks`` written weeks ending with the Friday on or before ``end``.

    ``opportunities`` replaces ``spec.new_opps_per_week`` by the rate that creates about that many
    opportunities in total (warm-up included). Same ``spec``/``seed``/arguments give identical frames.
    ``weeks`` defaults to :data:`DEFAULT_WEEKS`, or with ``export_habits`` (real export habits, module doc) /
    ``history_from`` to every week from ``history_from`` (default 2016-01-04) to ``end``.
    """
    contract.validate_tenant(spec.name)
    friday_last = last_friday(end)
    if weeks is None:
        if export_habits or history_from is not None:
            first = history_from or EXPORT_HISTORY_FROM
            weeks = (friday_last - last_friday(first + dt.timedelta(days=6))).days // 7 + 1
        else:
            weeks = DEFAULT_WEEKS
    weeks = int(weeks)
    if weeks < 1:
        raise ValueError(f"weeks must be >= 1, got {weeks}")
    total_weeks = WARMUP_WEEKS + weeks
    if opportunities is not None:
        if opportunities <= 0:
            raise ValueError(f"opportunities must be > 0, got {opportunities}")
        rate = float(opportunities) / total_weeks
    else:
        rate = float(spec.new_opps_per_week)
    monday0 = friday_last - dt.timedelta(days=4 + 7 * (total_weeks - 1))
    horizon = (total_weeks - 1) * _WEEK + 4 * _DAY  # the last Friday 00:00, in seconds since monday0
    rng = np.random.default_rng(int(seed) + int(spec.seed_offset))

    # ---- arrivals and static per-opportunity draws (fixed order: determinism)
    per_week = rng.poisson(rate, total_weeks)
    n = int(per_week.sum())
    week_created = np.repeat(np.arange(total_weeks), per_week)
    created_at = week_created * _WEEK + rng.integers(0, 4, n) * _DAY + 8 * 3600 + rng.integers(0, 10 * 3600, n)
    created_day = created_at // _DAY

    engaged = rng.random(n) < P_ENGAGED
    slip_prone = rng.random(n) < P_SLIP_PRONE
    n_accounts = max(2, round(n / 3))
    acc_industry = rng.choice(len(INDUSTRIES), size=n_accounts, p=INDUSTRY_P)
    acc_region = rng.choice(len(REGIONS), size=n_accounts, p=REGION_P)
    account = rng.integers(0, n_accounts, n)
    industry = acc_industry[account]
    region = acc_region[account]
    n_owners = max(1, round(n / 40))
    owner_bias = rng.normal(0.0, 6.0, n_owners)
    owner = rng.integers(0, n_owners, n)
    product = rng.choice(len(PRODUCT_LINES), size=n, p=PRODUCT_P)
    currency = rng.choice(len(CURRENCIES), size=n, p=CURRENCY_P)
    value0 = MEDIAN_DEAL_VALUE * np.asarray(PRODUCT_VALUE_MULT)[product] * np.exp(rng.normal(0.0, 0.8, n))
    value0 = np.maximum(np.round(value0, -2), 1_000.0)

    ind_eff = np.array([INDUSTRY_EFFECT[k] for k in INDUSTRIES])[industry]
    reg_eff = np.array([REGION_EFFECT[k] for k in REGIONS])[region]
    logit_true = (
        LOGIT_INTERCEPT + LOGIT_NOT_ENGAGED * (~engaged) + LOGIT_SLIP_PRONE * slip_prone
        + LOGIT_LOG_VALUE * np.log(value0 / MEDIAN_DEAL_VALUE) + ind_eff + reg_eff
    )
    logit_crm = logit_true  # what the CRM's own heuristic risk score is built on
    if export_habits:
        hrng = np.random.default_rng([int(seed) + int(spec.seed_offset), HABITS_STREAM])
        lead_quality = hrng.normal(0.0, 1.0, n)
        lead_source = hrng.choice(len(LEAD_SOURCES), size=n, p=LEAD_SOURCE_P)
        lead_score = np.clip(np.round(50.0 + 18.0 * lead_quality + hrng.normal(0.0, LEAD_SCORE_NOISE, n)), 0, 100)
        lead_score_missing = hrng.random(n) < P_LEAD_MISSING
        lead_source_missing = hrng.random(n) < P_LEAD_MISSING
        late_filing = hrng.random(n) < LATE_FILING_SHARE
        src_eff = np.array([LEAD_SOURCE_EFFECT[k] for k in LEAD_SOURCES])[lead_source]
        logit_true = logit_true - LOGIT_LEAD_QUALITY * lead_quality + src_eff
    p_lost = _sigmoid(logit_true)
    lost = rng.random(n) < p_lost

    lo, hi = CLOSE_AFTER_DAYS
    close_day = created_day + lo + np.round((hi - lo) * rng.beta(*CLOSE_AFTER_BETA, n)).astype(np.int64)
    stage = rng.choice(3, size=n, p=INITIAL_STAGE_P)
    prob_noise_opp = rng.normal(0.0, 5.0, n)
    risk_noise = rng.normal(0.0, RISK_NOISE_SD, n)
    cat_base = rng.normal(0.0, 0.6, (n, len(contract.RISK_CATEGORIES)))
    close_wd_fallback = rng.integers(0, 4, n)
    close_secs = 8 * 3600 + rng.integers(0, 10 * 3600, n)
    revenue_factor = rng.uniform(*REVENUE_FACTOR, n)
    has_mitigation = rng.random(n) < P_MITIGATION_RECORDED
    mitigation = np.round(rng.beta(2.0, 2.0, n), 4)

    # ---- dynamic state
    value = value0.copy()
    n_slips = np.zeros(n, dtype=np.int64)
    is_open = np.ones(n, dtype=bool)
    closed_at = np.full(n, -1, dtype=np.int64)
    close_week = np.full(n, -1, dtype=np.int64)
    last_act = np.full(n, -1, dtype=np.int64)
    act_rate = np.where(engaged, ACTIVITY_RATE_ENGAGED, ACTIVITY_RATE_DISENGAGED)
    p_slip = np.where(slip_prone, P_SLIP_SLIP_PRONE, P_SLIP_OTHER)
    p_adv = P_STAGE_ADVANCE + P_STAGE_ADVANCE_ENGAGED_BONUS * engaged
    stage_prob = np.array([STAGE_DEFAULT_PROBABILITY[s] for s in contract.OPEN_STAGES], dtype=float)
    first_opp_of_week = np.concatenate([[0], np.cumsum(per_week)])

    snap_parts: list[tuple] = []
    act_parts: list[tuple] = []
    for i in range(total_weeks):
        week_start, week_end, snap_t = i * _WEEK, (i + 1) * _WEEK, i * _WEEK + 4 * _DAY
        existing = np.arange(first_opp_of_week[i + 1])  # created in week i or before

        # 1. closings: open deals whose expected close date falls in this week close Monday–Thursday.
        cand = existing[is_open[existing] & (week_created[existing] < i)]
        closing = cand[close_day[cand] // 7 <= i]
        if closing.size:
            cd = close_day[closing]
            day = np.where((cd % 7 <= 3) & (cd // 7 == i), cd, i * 7 + close_wd_fallback[closing])
            closed_at[closing] = day * _DAY + close_secs[closing]
            close_week[closing] = i
            is_open[closing] = False

        # 2. activities during the week, while the deal is open and not after the horizon.
        active = existing[is_open[existing] | (close_week[existing] == i)]
        a = np.maximum(week_start, created_at[active])
        b = np.minimum(np.where(close_week[active] == i, closed_at[active], week_end), horizon)
        span = np.maximum(b - a, 0)
        counts = rng.poisson(act_rate[active] * span / _WEEK)
        act_opp = np.repeat(active, counts)
        act_t = np.repeat(a, counts) + np.floor(rng.random(act_opp.size) * np.repeat(span, counts)).astype(np.int64)
        act_type = rng.choice(len(contract.ACTIVITY_TYPES), size=act_opp.size, p=ACTIVITY_TYPE_P)
        before = act_t < snap_t
        np.maximum.at(last_act, act_opp[before], act_t[before])

        # 3. the Friday snapshot: weekly dynamics for deals seen before, then one row per open deal.
        snap = existing[is_open[existing] & (created_at[existing] < snap_t)]
        m = snap.size
        old = week_created[snap] < i
        r_slip, r_adv, r_val = rng.random(m), rng.random(m), rng.random(m)
        slip_days = rng.integers(SLIP_DAYS[0], SLIP_DAYS[1] + 1, m)
        val_mult = rng.uniform(0.8, 1.2, m)
        ar_innov = rng.normal(0.0, RISK_NOISE_SD, m)
        prob_noise_row = rng.normal(0.0, 3.0, m)
        cat_noise = rng.normal(0.0, 0.5, (m, len(contract.RISK_CATEGORIES)))

        slips = old & (r_slip < p_slip[snap]) & (n_slips[snap] < MAX_SLIPS)
        close_day[snap[slips]] += slip_days[slips]
        n_slips[snap[slips]] += 1
        adv = old & (r_adv < p_adv[snap])
        stage[snap[adv]] = np.minimum(stage[snap[adv]] + 1, len(contract.OPEN_STAGES) - 1)
        vch = old & (r_val < P_VALUE_CHANGE)
        value[snap[vch]] = np.maximum(np.round(value[snap[vch]] * val_mult[vch], -2), 1_000.0)
        risk_noise[snap[old]] = (
            RISK_NOISE_AR * risk_noise[snap[old]] + math.sqrt(1 - RISK_NOISE_AR**2) * ar_innov[old]
        )

        if i >= WARMUP_WEEKS:
            s = snap
            prob = stage_prob[stage[s]] + owner_bias[owner[s]] + prob_noise_opp[s] + prob_noise_row
            prob = np.round(np.clip(prob, 0.0, 100.0))
            risk = _sigmoid(logit_crm[s] + risk_noise[s])
            lv = np.log(value[s] / MEDIAN_DEAL_VALUE)
            cat_logits = np.column_stack([
                -0.6 + 0.4 * lv,  # commercial
                -0.7 + 0.25 * (ind_eff[s] + reg_eff[s]) / 0.3,  # competitive
                -1.0 + 1.6 * (~engaged[s]),  # relationship
                -0.9 + 0.4 * (product[s] == 2),  # technical
                -1.3 + 0.9 * slip_prone[s] + 0.45 * n_slips[s],  # timeline
            ]) + cat_base[s] + cat_noise
            snap_parts.append((
                np.full(m, i), s, value[s].copy(), prob, stage[s].copy(), close_day[s].copy(),
                last_act[s].copy(), risk, _sigmoid(cat_logits),
            ))
            act_parts.append((act_opp, act_t, act_type))

        after = ~before
        np.maximum.at(last_act, act_opp[after], act_t[after])

    # ---- frames
    t0 = np.datetime64(monday0.isoformat(), "s")
    def ts(secs):
        return (t0 + np.asarray(secs, dtype=np.int64).astype("timedelta64[s]")).astype("datetime64[ns]")

    ids = np.array([f"{spec.name}-{k:06d}" for k in range(n)], dtype=object)
    owner_ids = np.array([f"own-{k:04d}" for k in range(n_owners)], dtype=object)
    account_ids = np.array([f"acc-{k:05d}" for k in range(n_accounts)], dtype=object)
    str_of = lambda names, idx: np.asarray(names, dtype=object)[idx]  # noqa: E731

    if snap_parts:
        cols = [np.concatenate([p[j] for p in snap_parts]) for j in range(8)]
        cats = np.concatenate([p[8] for p in snap_parts])
    else:  # pragma: no cover - weeks >= 1 always yields parts
        cols = [np.zeros(0, dtype=np.int64)] * 8
        cats = np.zeros((0, 5))
    wk, s, val, prob, stg, cday, lact, risk = cols
    s = s.astype(np.int64)
    last_activity = ts(np.where(lact >= 0, lact, 0))
    last_activity[lact < 0] = np.datetime64("NaT")
    snapshots = pd.DataFrame({
        "opportunity_id": ids[s],
        "snapshot_date": ts(wk.astype(np.int64) * _WEEK + 4 * _DAY),
        "deal_value": val.astype(float),
        "currency": str_of(CURRENCIES, currency[s]),
        "probability": prob.astype(float),
        "stage": str_of(contract.OPEN_STAGES, stg.astype(np.int64)),
        "close_date": ts(cday.astype(np.int64) * _DAY),
        "last_activity_at": last_activity,
        "owner_id": owner_ids[owner[s]],
        "account_id": account_ids[account[s]],
        "industry": str_of(INDUSTRIES, industry[s]),
        "region": str_of(REGIONS, region[s]),
        "product_line": str_of(PRODUCT_LINES, product[s]),
        "risk_score": np.round(risk.astype(float), 4),
        "revenue_at_risk": np.round(val.astype(float) * np.round(risk.astype(float), 4), 2),
        **{f"risk_{c}": np.round(cats[:, j], 4) for j, c in enumerate(contract.RISK_CATEGORIES)},
    })

    written = np.flatnonzero(close_week >= WARMUP_WEEKS)
    written = written[np.argsort(closed_at[written], kind="stable")]
    won_w = ~lost[written]
    outcomes = pd.DataFrame({
        "opportunity_id": ids[written],
        "outcome": np.where(won_w, "won", "lost").astype(object),
        "closed_at": ts(closed_at[written]),
        "actual_revenue": np.where(won_w, np.round(value[written] * revenue_factor[written], 2), 0.0),
        "mitigation_effectiveness": np.where(has_mitigation[written], mitigation[written], np.nan),
    })

    if act_parts:
        a_opp = np.concatenate([p[0] for p in act_parts]).astype(np.int64)
        a_t = np.concatenate([p[1] for p in act_parts]).astype(np.int64)
        a_ty = np.concatenate([p[2] for p in act_parts]).astype(np.int64)
    else:  # pragma: no cover
        a_opp = a_t = a_ty = np.zeros(0, dtype=np.int64)
    order = np.lexsort((a_opp, a_t))
    activities = pd.DataFrame({
        "opportunity_id": ids[a_opp[order]],
        "occurred_at": ts(a_t[order]),
        "activity_type": str_of(contract.ACTIVITY_TYPES, a_ty[order]),
    })

    closed_ts = ts(np.where(closed_at >= 0, closed_at, 0))
    closed_ts[closed_at < 0] = np.datetime64("NaT")
    truth = pd.DataFrame({
        "opportunity_id": ids,
        "p_lost_true": p_lost,
        "engaged": engaged,
        "slip_prone": slip_prone,
        "outcome": np.where(lost, "lost", "won").astype(object),
        "created_at": ts(created_at),
        "closed_at": closed_ts,
        "outcome_written": close_week >= WARMUP_WEEKS,
    })
    fridays = [monday0 + dt.timedelta(days=7 * i + 4) for i in range(WARMUP_WEEKS, total_weeks)]
    irng = np.random.default_rng([int(seed) + int(spec.seed_offset), INTERACTION_STREAM])
    interactions, interaction_truth = simulate_interactions(snapshots, truth, end=friday_last, rng=irng)
    outcome_files = None
    if export_habits:
        opp_idx = pd.Series(np.arange(n), index=ids)
        so = opp_idx.loc[snapshots["opportunity_id"]].to_numpy()
        snapshots["stage"] = pd.Series(snapshots["stage"]).map(dict(zip(contract.OPEN_STAGES, EXPORT_STAGES))).to_numpy(object)
        snapshots["lead_score"] = np.where(lead_score_missing[so], np.nan, lead_score[so])
        snapshots["lead_source"] = np.where(lead_source_missing[so], None, np.asarray(LEAD_SOURCES, dtype=object)[lead_source[so]])
        # filed by export date: the Monday after the close's week (one export later for a late share)
        oi = opp_idx.loc[outcomes["opportunity_id"]].to_numpy()
        closed_day = outcomes["closed_at"].dt.normalize()
        export = closed_day - pd.to_timedelta(closed_day.dt.weekday, unit="D") + pd.Timedelta(days=7)
        export = export + pd.to_timedelta(np.where(late_filing[oi], 7, 0), unit="D")
        on_time = (export <= pd.Timestamp(friday_last)).to_numpy()  # later exports do not exist yet
        outcomes = outcomes.loc[on_time].reset_index(drop=True)
        outcome_files = pd.Series(export[on_time].dt.date.to_numpy(), name="filed_on")
        truth["outcome_written"] = truth["opportunity_id"].isin(outcomes["opportunity_id"]).to_numpy()
        truth["lead_quality"] = lead_quality
    return SimulatedTenant(
        name=spec.name, snapshots=snapshots, outcomes=outcomes, activities=activities, truth=truth,
        fridays=fridays, end=friday_last, seed=int(seed), interactions=interactions,
        interaction_truth=interaction_truth, export_habits=bool(export_habits), outcome_files=outcome_files,
    )


def action_catalogue() -> pd.DataFrame:
    """The mitigation actions: action_id, category (the risk category it addresses), popularity."""
    return pd.DataFrame(ACTION_CATALOGUE, columns=["action_id", "category", "popularity"])


def _action_need(snap: pd.DataFrame, engaged: np.ndarray, slip_prone: np.ndarray) -> np.ndarray:
    """(rows, actions) matrix of how much each action fits each snapshot's hidden state (0..1)."""
    m = len(snap)
    stage_idx = pd.Categorical(snap["stage"], categories=list(contract.OPEN_STAGES)).codes
    adverse = (snap["industry"].map(INDUSTRY_EFFECT).to_numpy(float)
               + snap["region"].map(REGION_EFFECT).to_numpy(float)) >= 0.1
    platform = (snap["product_line"] == "platform").to_numpy()
    size = np.clip(np.log(snap["deal_value"].to_numpy(float) / MEDIAN_DEAL_VALUE) / 1.2, 0.0, 1.0)
    need = np.zeros((m, len(ACTION_CATALOGUE)))
    for j, (aid, cat, _) in enumerate(ACTION_CATALOGUE):
        if cat == "relationship":
            need[:, j] = ~engaged
        elif cat == "timeline":
            need[:, j] = slip_prone
        elif cat == "competitive":
            need[:, j] = adverse
        elif cat == "technical":
            need[:, j] = platform * (np.where(stage_idx <= 1, 1.0, 0.4) if aid == "proof_of_concept" else 1.0)
        elif cat == "commercial":
            need[:, j] = size * (np.where(stage_idx >= 3, 1.0, 0.2) if aid == "discount_offer" else 1.0)
    return need


def simulate_interactions(snapshots: pd.DataFrame, truth: pd.DataFrame, *, end: dt.date,
                          rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Recommendation feedback for the snapshot rows (see the module doc), from its own generator.

    Returns (interactions in the contract, sorted by shown_at/user/opportunity/action; oracle rows).
    """
    k_act = len(ACTION_CATALOGUE)
    owners = snapshots["owner_id"].astype(str)
    owner_idx = owners.str.slice(4).astype(int).to_numpy() if len(owners) else np.zeros(0, int)
    n_users = int(owner_idx.max()) + 1 if len(owner_idx) else 0
    preference = rng.normal(0.0, ACTION_PREF_SD, (n_users, k_act))  # drawn first: independent of the data size
    popularity = np.array([a[2] for a in ACTION_CATALOGUE])
    snap = snapshots[snapshots["snapshot_date"] < pd.Timestamp(end)].reset_index(drop=True)  # shown_at <= end
    reviewed = rng.random(len(snap)) < P_REVIEW
    snap = snap.loc[reviewed].reset_index(drop=True)
    m = len(snap)
    t = truth.set_index("opportunity_id").loc[snap["opportunity_id"]]
    engaged, slip = t["engaged"].to_numpy(bool), t["slip_prone"].to_numpy(bool)
    need = _action_need(snap, engaged, slip)
    shown_n = rng.integers(ACTIONS_SHOWN[0], ACTIONS_SHOWN[1] + 1, m)
    cat_score = np.column_stack([snap[f"risk_{cat}"].to_numpy(float) for _, cat, _ in ACTION_CATALOGUE]) if m else np.zeros((0, k_act))
    keys = ACTION_SHOWN_BIAS * cat_score + rng.gumbel(size=(m, k_act))  # Gumbel top-k = weighted sampling w/o replacement
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    shown = rank < shown_n[:, None]
    hour = rng.integers(8 * 3600, 17 * 3600, m)
    noise = rng.logistic(0.0, ACTION_NOISE_SCALE, (m, k_act))
    u_idx = snap["owner_id"].astype(str).str.slice(4).astype(int).to_numpy() if m else np.zeros(0, int)
    utility_mean = ACTION_NEED_WEIGHT * need + preference[u_idx] + popularity[None, :]
    utility = utility_mean + noise
    relevance = np.where(utility > ACTION_ACCEPT_AT, 2, np.where(utility > ACTION_CLICK_AT, 1, 0))
    rows, cols = np.nonzero(shown)
    aid = np.array([a[0] for a in ACTION_CATALOGUE], dtype=object)
    cat = np.array([a[1] for a in ACTION_CATALOGUE], dtype=object)
    shown_at = (snap["snapshot_date"].to_numpy()[rows] + hour[rows].astype("timedelta64[s]")).astype("datetime64[ns]")
    oracle = pd.DataFrame({
        "user_id": snap["owner_id"].to_numpy(object)[rows],
        "opportunity_id": snap["opportunity_id"].to_numpy(object)[rows],
        "action_id": aid[cols],
        "shown_at": shown_at,
        "relevance": relevance[rows, cols].astype(np.int64),
        "category": cat[cols],
        "need": need[rows, cols],
        "utility_mean": utility_mean[rows, cols],
    }).sort_values(["shown_at", "user_id", "opportunity_id", "action_id"], kind="mergesort").reset_index(drop=True)
    return oracle[list(INTERACTION_COLUMNS)].copy(), oracle


# --------------------------------------------------------------------------------------------
# Writing


def oracle_revenue_quantiles(truth: pd.DataFrame, df: pd.DataFrame, alphas: Sequence[float]) -> np.ndarray:
    """The true quantiles of realised revenue of the rows of ``df`` (tests and benchmarks only): 0 below
    P(lost) = ``p_lost_true``, else the deal value times the won revenue factor at the matching level
    (deal values may still change after the snapshot, so even this oracle is not exact)."""
    p = df["opportunity_id"].map(truth.set_index("opportunity_id")["p_lost_true"]).to_numpy(float)
    v = df["deal_value"].to_numpy(float)
    lo, hi = REVENUE_FACTOR
    cols = []
    for a in alphas:
        u = np.clip((a - p) / (1 - p), 0, 1)
        cols.append(np.where(a <= p, 0.0, v * (lo + (hi - lo) * u)))
    return np.column_stack(cols)


def oracle_action_utility(interaction_truth: pd.DataFrame, df: pd.DataFrame) -> np.ndarray:
    """The noiseless utility of each shown (user, opportunity, action) row of ``df`` (tests and benchmarks)."""
    keys = ["user_id", "opportunity_id", "action_id", "shown_at"]
    m = df[keys].merge(interaction_truth[keys + ["utility_mean"]], on=keys, how="left")
    if len(m) != len(df) or m["utility_mean"].isna().any():
        raise ValueError("rows without a ground-truth utility: not the simulator's interactions")
    return m["utility_mean"].to_numpy()


def _friday_of(ts: pd.Series) -> pd.Series:
    d = ts.dt.normalize()
    return d - pd.to_timedelta(d.dt.weekday, unit="D") + pd.Timedelta(days=4)


def _write_frame(df: pd.DataFrame, path: Path, fmt: str) -> None:
    """Write atomically: a hidden temporary file (ignored by contract.scan_incoming) then a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    if fmt == "parquet":
        df.to_parquet(tmp, index=False, engine="pyarrow")
    else:
        df.to_csv(tmp, index=False, date_format="%Y-%m-%d %H:%M:%S", lineterminator="\n")
    os.replace(tmp, path)


def write_tenant(sim: SimulatedTenant, incoming_root: Path, oracle_root: Path, fmt: str = "parquet") -> list[Path]:
    """Write ``sim`` as contract files under ``<incoming_root>/<tenant>/`` and the oracle file.

    One ``snapshots-<Friday>`` file per written week; ``outcomes-<Friday>`` (deals closed that
    Monday–Sunday week), ``activities-<Friday>`` (events of that week) and ``interactions-<Friday>``
    (recommendations shown that Friday) are skipped when empty.
    The oracle goes to ``<oracle_root>/<tenant>/truth.parquet`` (always parquet), with ``actions.parquet``
    and ``interactions_truth.parquet`` next to it. Existing files of the same name are replaced; other
    files are left alone. Returns the written contract files and truth.parquet (last).
    """
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    tenant = contract.validate_tenant(sim.name)
    out_dir = Path(incoming_root) / tenant
    out_dir.mkdir(parents=True, exist_ok=True)
    by_kind = {
        "snapshots": (sim.snapshots, sim.snapshots["snapshot_date"]),
        "outcomes": (sim.outcomes, _friday_of(sim.outcomes["closed_at"])),
        "activities": (sim.activities, _friday_of(sim.activities["occurred_at"])),
        "interactions": (sim.interactions, _friday_of(pd.to_datetime(sim.interactions["shown_at"]))),
    }
    filed = None
    if sim.export_habits and sim.outcome_files is not None:  # outcomes-<Monday>: filed by export date
        filed = pd.to_datetime(pd.Series(sim.outcome_files).reset_index(drop=True))
        by_kind["outcomes"] = (sim.outcomes.iloc[0:0], by_kind["outcomes"][1].iloc[0:0])
    written: list[Path] = []
    for friday in sim.fridays:
        key = pd.Timestamp(friday)
        for kind in _ORDER:
            frame, fri = by_kind[kind]
            part = frame.loc[(fri == key).to_numpy()].reset_index(drop=True)
            if part.empty and kind != "snapshots":
                continue
            path = out_dir / f"{kind}-{friday.isoformat()}.{fmt}"
            contract.parse_incoming_name(path.name)  # never write a name outside the contract
            _write_frame(part, path, fmt)
            written.append(path)
    if filed is not None:
        for monday in sorted(filed.unique()):
            part = sim.outcomes.loc[(filed == monday).to_numpy()].reset_index(drop=True)
            path = out_dir / f"outcomes-{pd.Timestamp(monday).date().isoformat()}.{fmt}"
            contract.parse_incoming_name(path.name)
            _write_frame(part, path, fmt)
            written.append(path)
    oracle_dir = Path(oracle_root) / tenant
    oracle_dir.mkdir(parents=True, exist_ok=True)
    # the action catalogue and the interactions' ground truth sit next to truth.parquet (not in the list)
    _write_frame(action_catalogue(), oracle_dir / "actions.parquet", "parquet")
    if len(sim.interaction_truth):
        _write_frame(sim.interaction_truth, oracle_dir / "interactions_truth.parquet", "parquet")
    truth_path = oracle_dir / "truth.parquet"
    _write_frame(sim.truth, truth_path, "parquet")
    written.append(truth_path)
    return written


def summarize(sim: SimulatedTenant) -> dict:
    """Sizes of a simulated tenant: opportunities (all simulated), rows, labelled rows, lost rate."""
    labelled = sim.snapshots["opportunity_id"].isin(sim.outcomes["opportunity_id"])
    n_out = len(sim.outcomes)
    return {
        "opportunities": int(len(sim.truth)),
        "opportunities_in_snapshots": int(sim.snapshots["opportunity_id"].nunique()),
        "snapshot_rows": int(len(sim.snapshots)),
        "labelled_rows": int(labelled.sum()),
        "outcomes": int(n_out),
        "lost_rate": float((sim.outcomes["outcome"] == "lost").mean()) if n_out else float("nan"),
        "activities": int(len(sim.activities)),
        "interactions": int(len(sim.interactions)),
        "weeks": len(sim.fridays),
    }


def generate(
    incoming_root: Path | str = Path("data/incoming"),
    oracle_root: Path | str = Path("data/oracle"),
    tenants: Sequence[TenantSpec] = DEFAULT_TENANTS,
    weeks: int | None = None,
    end: dt.date = DEFAULT_END,
    seed: int = DEFAULT_SEED,
    opportunities: int | None = None,
    fmt: str = "parquet",
    export_habits: bool = False,
    history_from: dt.date | None = None,
) -> dict[str, dict]:
    """Simulate and write every tenant; return ``{tenant: summary}`` (summary includes ``files``).
    ``export_habits``/``history_from``: see :func:`simulate_tenant` (``weeks=None`` then means "from
    ``history_from``", default 2016)."""
    names = [t.name for t in tenants]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate tenant names in {names}")
    out: dict[str, dict] = {}
    for spec in tenants:
        sim = simulate_tenant(spec, weeks=weeks, end=end, seed=seed, opportunities=opportunities,
                              export_habits=export_habits, history_from=history_from)
        files = write_tenant(sim, Path(incoming_root), Path(oracle_root), fmt=fmt)
        out[spec.name] = {**summarize(sim), "files": files}
    return out


# --------------------------------------------------------------------------------------------
# CLI


def parse_tenants(text: str) -> tuple[TenantSpec, ...]:
    """``"acme,globex"`` (known names) or ``"acme:60,newco:5"`` (NAME:RATE) into specs.

    Known names keep their default seed offset; other names get a stable offset from their crc32.
    """
    known = {t.name: t for t in (*DEFAULT_TENANTS, EXPORT_HABITS_TENANT)}
    specs: list[TenantSpec] = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        name, _, rate = item.partition(":")
        name = contract.validate_tenant(name.strip())
        offset = known[name].seed_offset if name in known else zlib.crc32(name.encode()) % 100_000
        if rate.strip():
            try:
                r = float(rate)
            except ValueError:
                raise ValueError(f"tenant {name!r}: rate {rate!r} is not a number") from None
            specs.append(TenantSpec(name, r, offset))
        elif name in known:
            specs.append(known[name])
        else:
            raise ValueError(f"unknown tenant {name!r}: give its weekly rate as {name}:RATE")
    if not specs:
        raise ValueError("no tenants given")
    return tuple(specs)


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m riskml_assets.core.simulator",
        description="Write deterministic simulated CRM data (snapshots, outcomes, activities, interactions) in the "
        "riskml data contract, plus an oracle truth file per tenant for tests.",
    )
    p.add_argument("--out", default="data/incoming", help="incoming root; files go to OUT/<tenant>/ (default: %(default)s)")
    p.add_argument("--oracle", default="data/oracle", help="oracle root for truth.parquet (default: %(default)s)")
    p.add_argument(
        "--tenants", default=None,
        help="comma list of known tenant names or NAME:RATE pairs (new opportunities a week) (default: "
        + ",".join(f"{t.name}:{t.new_opps_per_week:g}" for t in DEFAULT_TENANTS)
        + f"; with --export-habits: {EXPORT_HABITS_TENANT.name}:{EXPORT_HABITS_TENANT.new_opps_per_week:g})",
    )
    p.add_argument("--weeks", type=int, default=None,
                   help=f"weeks written (default: {DEFAULT_WEEKS}; with --export-habits or --history-from: every "
                        "week from the history start to --end)")
    p.add_argument("--export-habits", action="store_true",
                   help="write the files the way real CRM exports look: history from 2016, outcomes filed by "
                        "export date (outcomes-<Monday> with the previous 7 days' closes), the tenant's own stage "
                        "names and two extra columns (lead_score, lead_source) with real signal")
    p.add_argument("--history-from", type=dt.date.fromisoformat, default=None,
                   help=f"first week of history (default with --export-habits: {EXPORT_HISTORY_FROM})")
    p.add_argument("--opportunities", type=int, default=None, help="about this many opportunities per tenant (overrides rates)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default: %(default)s)")
    p.add_argument("--end", type=dt.date.fromisoformat, default=DEFAULT_END,
                   help="last snapshot date; a non-Friday means the Friday before it (default: %(default)s)")
    p.add_argument("--format", dest="fmt", choices=("parquet", "csv"), default="parquet", help="file format (default: %(default)s)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        if args.tenants is None:
            tenants = (EXPORT_HABITS_TENANT,) if args.export_habits else DEFAULT_TENANTS
        else:
            tenants = parse_tenants(args.tenants)
        if args.weeks is not None and args.weeks < 1:
            raise ValueError("--weeks must be >= 1")
        if args.history_from is not None and args.history_from >= args.end:
            raise ValueError(f"--history-from {args.history_from} is not before --end {args.end}")
        if args.opportunities is not None and args.opportunities <= 0:
            raise ValueError("--opportunities must be > 0")
    except (ValueError, contract.ContractError) as exc:
        parser.error(str(exc))
    summary = generate(
        args.out, args.oracle, tenants=tenants, weeks=args.weeks, end=args.end, seed=args.seed,
        opportunities=args.opportunities, fmt=args.fmt, export_habits=args.export_habits,
        history_from=args.history_from,
    )
    header = f"{'tenant':<16}{'opps':>8}{'snapshot_rows':>15}{'labelled_rows':>15}{'lost_rate':>11}{'weeks':>7}{'files':>7}"
    print(header)
    for name, s in summary.items():
        print(f"{name:<16}{s['opportunities']:>8}{s['snapshot_rows']:>15}{s['labelled_rows']:>15}"
              f"{s['lost_rate']:>11.3f}{s['weeks']:>7}{len(s['files']):>7}")
    print(f"incoming: {args.out}  oracle: {args.oracle}  end: {last_friday(args.end)}  seed: {args.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
