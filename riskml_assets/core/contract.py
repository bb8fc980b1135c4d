"""The data contract: tenant ids, incoming file names, column names and weeks.

Everything that decides whether an outside string may become a path or a partition lives here.
"""
from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
FILE_KINDS = ("snapshots", "outcomes", "activities", "interactions")
REQUIRED_KINDS = ("snapshots", "outcomes")
FILE_SUFFIXES = (".parquet", ".csv")
FILE_RE = re.compile(r"^(?P<kind>snapshots|outcomes|activities|interactions)-(?P<date>\d{4}-\d{2}-\d{2})\.(?P<ext>parquet|csv)$")

RISK_CATEGORIES = ("commercial", "competitive", "relationship", "technical", "timeline")
OPEN_STAGES = ("prospecting", "qualification", "proposal", "negotiation", "commit")

SNAPSHOT_REQUIRED = (
    "opportunity_id", "snapshot_date", "deal_value", "currency", "probability", "stage",
    "close_date", "last_activity_at", "owner_id", "account_id",
)
SNAPSHOT_OPTIONAL = (
    "industry", "region", "product_line", "risk_score", "revenue_at_risk",
    *(f"risk_{c}" for c in RISK_CATEGORIES),
)
OUTCOME_REQUIRED = ("opportunity_id", "outcome", "closed_at", "actual_revenue")
OUTCOME_OPTIONAL = ("mitigation_effectiveness",)
ACTIVITY_REQUIRED = ("opportunity_id", "occurred_at", "activity_type")
INTERACTION_REQUIRED = ("user_id", "opportunity_id", "action_id", "shown_at", "relevance")

ACTIVITY_TYPES = ("email", "call", "meeting", "demo", "proposal", "note")


class ContractError(ValueError):
    """An outside input that breaks the data contract (bad tenant id, bad file name, unreadable file)."""


def validate_tenant(tenant: str) -> str:
    """Return the tenant id if it is allowed, else raise ContractError naming it.

    A tenant id becomes a directory name and a partition key, so anything outside
    ``^[a-z0-9][a-z0-9_-]{0,62}$`` (``..``, ``/``, upper case, spaces, empty) is refused.
    """
    if not isinstance(tenant, str) or not TENANT_RE.fullmatch(tenant):
        raise ContractError(
            f"invalid tenant id {tenant!r}: it must match {TENANT_RE.pattern} "
            "(lower-case letters, digits, '_' or '-', at most 63 characters, not starting with '_' or '-')"
        )
    return tenant


@dataclass(frozen=True)
class IncomingFile:
    tenant: str
    kind: str
    date: dt.date
    path: Path

    @property
    def week(self) -> str:
        return week_key(self.date)


def parse_incoming_name(name: str) -> tuple[str, dt.date]:
    """Parse ``<kind>-<YYYY-MM-DD>.<parquet|csv>`` into (kind, date); ContractError otherwise."""
    m = FILE_RE.fullmatch(name)
    if not m:
        raise ContractError(
            f"file name {name!r} is not in the contract: expected <kind>-<YYYY-MM-DD>.parquet|csv "
            f"with kind one of {', '.join(FILE_KINDS)}"
        )
    try:
        date = dt.date.fromisoformat(m["date"])
    except ValueError as exc:
        raise ContractError(f"file name {name!r} carries an impossible date: {exc}") from None
    return m["kind"], date


def parse_incoming_path(path: Path, incoming_root: Path) -> IncomingFile:
    """Classify a file under ``<incoming_root>/<tenant>/``; ContractError for anything else."""
    path = Path(path)
    try:
        rel = path.resolve().relative_to(Path(incoming_root).resolve())
    except ValueError:
        raise ContractError(f"{path} is not under the incoming directory {incoming_root}") from None
    if len(rel.parts) != 2:
        raise ContractError(f"{rel} is not at <tenant>/<file>: files must sit directly in a tenant folder")
    tenant = validate_tenant(rel.parts[0])
    kind, date = parse_incoming_name(rel.parts[1])
    return IncomingFile(tenant=tenant, kind=kind, date=date, path=path)


def week_start(d: dt.date | dt.datetime) -> dt.date:
    """Monday of the week that contains ``d``."""
    if isinstance(d, dt.datetime):
        d = d.date()
    return d - dt.timedelta(days=d.weekday())


def week_key(d: dt.date | dt.datetime) -> str:
    return week_start(d).isoformat()


def week_bounds(week: str) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a Monday-anchored week key as naive datetimes."""
    start = dt.date.fromisoformat(week)
    if start.weekday() != 0:
        raise ContractError(f"week key {week!r} is not a Monday")
    s = dt.datetime.combine(start, dt.time())
    return s, s + dt.timedelta(days=7)


# --------------------------------------------------------------------------- the accepted range of weeks

#: Environment variable naming the first week (a Monday, YYYY-MM-DD) of the ``week`` partitions.
FIRST_WEEK_ENV = "RISKML_FIRST_WEEK"
#: Default first week: early enough for any plausible CRM history (a Monday).
DEFAULT_FIRST_WEEK = "2010-01-04"
#: A file may be dated up to this many days after today (UTC): exports written in a time zone ahead of UTC.
FUTURE_TOLERANCE_DAYS = 1


def first_week(value: str | None = None) -> str:
    """The first week of the partitions: ``value``, else ``$RISKML_FIRST_WEEK``, else :data:`DEFAULT_FIRST_WEEK`.

    ContractError (one line, naming the variable) unless it is an ISO date that is a Monday.
    """
    raw = value if value is not None else os.environ.get(FIRST_WEEK_ENV, "").strip() or DEFAULT_FIRST_WEEK
    try:
        d = dt.date.fromisoformat(raw)
    except (TypeError, ValueError):
        raise ContractError(f"{FIRST_WEEK_ENV}={raw!r} is not a date (expected a Monday as YYYY-MM-DD)") from None
    if d.weekday() != 0:
        raise ContractError(f"{FIRST_WEEK_ENV}={raw!r} is a {d.strftime('%A')}, not a Monday "
                            f"(the Monday of that week is {week_key(d)})")
    if d.year < 1970:
        raise ContractError(f"{FIRST_WEEK_ENV}={raw!r} is before 1970")
    return d.isoformat()


@dataclass(frozen=True)
class WeekVerdict:
    """Whether a file date / week may become a ``week`` partition; ``reason`` says why not (empty when ok).

    ``code`` is ``ok``, ``before_first_week`` or ``future`` (a ``future`` file can become valid later:
    a caller may retry it once its date has come; ``before_first_week`` needs ``RISKML_FIRST_WEEK``).
    """
    ok: bool
    code: str
    week: str
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


def week_in_range(d: dt.date | dt.datetime | str, *, today: dt.date | None = None,
                  first: str | None = None) -> WeekVerdict:
    """Is the file date (or week key) ``d`` inside the accepted range of week partitions?

    The contract: a file belongs to the Monday-anchored week of its date, and is accepted when
    ``first week <= week(d)`` and ``d <= today + FUTURE_TOLERANCE_DAYS`` and ``week(d) <= week(today)``
    (``today`` in UTC, default: now). A file of the current, still incomplete week *is* accepted:
    exports are dated by the day they are written, and the week is ingested again as more files
    arrive; training only ever uses complete weeks (:func:`latest_complete_week`). A file dated after
    today (beyond the tolerance) or in a later week is refused as ``future``; a file before the
    first week (``$RISKML_FIRST_WEEK``, default 2010-01-04) as ``before_first_week``.
    Pure: the reason is one line that names the date, the week and the bound.
    """
    if isinstance(d, str):
        try:
            d = dt.date.fromisoformat(d)
        except ValueError:
            return WeekVerdict(False, "bad_date", d, f"{d!r} is not a date (YYYY-MM-DD)")
    if isinstance(d, dt.datetime):
        d = d.date()
    today = today or dt.datetime.now(dt.timezone.utc).date()
    if isinstance(today, dt.datetime):
        today = today.date()
    start = first_week(first)
    wk = week_key(d)
    if wk < start:
        return WeekVerdict(False, "before_first_week", wk,
                           f"date {d.isoformat()} (week {wk}) is before the first week {start}; "
                           f"set {FIRST_WEEK_ENV} to an earlier Monday to accept older history")
    latest = today + dt.timedelta(days=FUTURE_TOLERANCE_DAYS)
    if d > latest or wk > week_key(today):
        return WeekVerdict(False, "future", wk,
                           f"date {d.isoformat()} (week {wk}) is in the future: today is {today.isoformat()} (UTC), "
                           f"the latest accepted week is {week_key(today)}")
    return WeekVerdict(True, "ok", wk)


def latest_complete_week(today: dt.date) -> str:
    """The last Monday-anchored week that has fully ended before ``today``."""
    return (week_start(today) - dt.timedelta(days=7)).isoformat()


def scan_incoming(incoming_root: Path) -> tuple[list[IncomingFile], list[tuple[Path, str]]]:
    """All contract files under ``incoming_root`` and, separately, everything refused with a reason."""
    root = Path(incoming_root)
    good: list[IncomingFile] = []
    bad: list[tuple[Path, str]] = []
    if not root.exists():
        return good, bad
    for tenant_dir in sorted(root.iterdir()):
        if tenant_dir.name.startswith("."):
            continue
        if not tenant_dir.is_dir():
            bad.append((tenant_dir, "not a tenant directory"))
            continue
        try:
            validate_tenant(tenant_dir.name)
        except ContractError as exc:
            bad.append((tenant_dir, str(exc)))
            continue
        from .watch import entry_refusal  # local: watch imports this module

        refusal = entry_refusal(tenant_dir, tenant_dir)
        if refusal:
            bad.append((tenant_dir, refusal))
            continue
        for f in sorted(tenant_dir.iterdir()):
            if f.name.startswith("."):
                continue
            refusal = entry_refusal(f, tenant_dir)
            if refusal:
                bad.append((f, refusal))
                continue
            try:
                good.append(parse_incoming_path(f, root))
            except ContractError as exc:
                bad.append((f, str(exc)))
    return good, bad
