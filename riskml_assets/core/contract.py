"""The data contract: tenant ids, incoming file names, column names and weeks.

Everything that decides whether an outside string may become a path or a partition lives here.
"""
from __future__ import annotations

import datetime as dt
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
        for f in sorted(tenant_dir.iterdir()):
            if f.name.startswith("."):
                continue
            try:
                good.append(parse_incoming_path(f, root))
            except ContractError as exc:
                bad.append((f, str(exc)))
    return good, bad
