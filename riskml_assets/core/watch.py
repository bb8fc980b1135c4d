"""Pure logic of the snapshot sensor: which incoming files are new or changed since the last tick.

The state (the sensor cursor) maps each file's relative path to a fingerprint ``size:mtime_ns:sha256``.
A file is re-hashed only when its size or mtime changed, and requested again only when its content
hash changed. Refused files (bad tenant id, bad name, date outside the accepted weeks, unreadable,
symbolic links leaving the tenant folder) are remembered with their fingerprint, so they are reported
once; nothing is ever deleted. A refusal never stops the scan: every other file is still classified.

Every new or changed content gets the next number of the cursor's event counter (``seq``), and the
run key carries it: reverting a file to an earlier content (A -> B -> A) is a new event with a new
run key, while an unchanged file never yields a second event.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .contract import ContractError, parse_incoming_name, validate_tenant, week_in_range
from .ingest import reads_weeks

STATE_VERSION = 2  # 2: event counter ``seq`` (absent in version 1 cursors: starts at 0)


@dataclass(frozen=True)
class FileEvent:
    tenant: str
    week: str
    kind: str
    rel_path: str
    digest: str
    seq: int = 0  # the cursor's event number of this content
    mtime: float = 0.0  # the file's modification time (epoch seconds) when it was hashed

    @property
    def run_key(self) -> str:
        return f"{self.rel_path}@{self.digest[:16]}#{self.seq}"


def weeks_to_ingest(event: FileEvent, ingested_weeks, *, today: dt.date | None = None,
                    first_week: str | None = None) -> list[str]:
    """The weeks whose ingestion a new or changed file calls for, the file's own week first.

    A routed kind (outcomes) is also read by the ingestion of the LATE_WEEKS weeks before its own
    (``ingest.reads_weeks``): those of them already ingested (``ingested_weeks``, week keys of the
    tenant) must be ingested again, or the late rows the file carries for them would never reach them.
    Weeks not ingested yet read the file when their own ingestion comes. Only accepted weeks are listed.
    """
    earlier = [w for w in reads_weeks(event.kind, dt.date.fromisoformat(event.week)) if w != event.week]
    return [event.week] + [w for w in earlier if w in ingested_weeks
                           and week_in_range(w, today=today, first=first_week).ok]


def entry_refusal(path: Path, tenant_dir: Path) -> str | None:
    """Why ``path`` must not be read as a file of the tenant whose folder is ``tenant_dir``; None when it is safe.

    ``path`` is an entry of ``tenant_dir`` (or ``tenant_dir`` itself). The tenant's own folder is
    ``<incoming root, resolved>/<tenant>``: the incoming root may itself be a link (a mount), but the
    tenant folder may not be a symbolic link, and an entry that is a symbolic link must resolve to a
    file inside the tenant's own folder. A dangling link or a link loop is refused too. Pure of
    Dagster; reads only link metadata (``lstat``/``readlink``/``resolve``), never file contents.
    """
    path, tenant_dir = Path(path), Path(tenant_dir)
    own = tenant_dir.parent.resolve() / tenant_dir.name
    if tenant_dir.is_symlink():
        return (f"tenant folder {tenant_dir.name!r} is a symbolic link (to {_readlink(tenant_dir)!r}): refused, "
                f"a tenant's files must sit in its own folder, not behind a link")
    if path == tenant_dir:
        return None
    if path.parent != tenant_dir:
        return f"{path.name!r} is not directly in the tenant folder {tenant_dir.name}/"
    if not path.is_symlink():
        return None
    target = _readlink(path)
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing target, or a loop (RuntimeError before Python 3.13)
        return f"dangling symbolic link (to {target!r}): the target does not exist or the link loops"
    if not real.is_relative_to(own):
        return (f"symbolic link to {target!r} resolves outside the tenant folder {tenant_dir.name}/: refused, "
                f"a tenant may only ingest files of its own folder")
    return None


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_state(cursor: str | None) -> dict:
    if not cursor:
        return {"v": STATE_VERSION, "files": {}, "refused": {}, "seq": 0}
    state = json.loads(cursor)
    state.setdefault("files", {})
    state.setdefault("refused", {})
    state.setdefault("seq", 0)
    return state


def dump_state(state: dict) -> str:
    return json.dumps(state, sort_keys=True, separators=(",", ":"))


def scan(root: Path, state: dict, *, today: dt.date | None = None,
         first_week: str | None = None) -> tuple[list[FileEvent], list[tuple[str, str]], dict]:
    """Compare the incoming folder with ``state``; return (new/changed files, newly refused (path, reason), new state).

    Every file found is classified exactly once per content: hostile or malformed names are refused
    without ever being joined into a path that leaves ``root``. A file whose date is outside the
    accepted weeks (``contract.week_in_range`` with ``today`` and ``first_week``) is refused with the
    reason; it is re-judged on every scan (a file dated tomorrow is accepted once its week has come)
    but reported only once per content. No entry can stop the scan of the others.
    """
    root = Path(root)
    files: dict = dict(state.get("files", {}))
    refused: dict = dict(state.get("refused", {}))
    seq = int(state.get("seq", 0))
    events: list[FileEvent] = []
    new_refusals: list[tuple[str, str]] = []

    def new_state() -> dict:
        return {"v": STATE_VERSION, "files": files, "refused": refused, "seq": seq}

    if not root.is_dir():
        return events, new_refusals, new_state()

    def refuse(rel: str, quick: str, reason: str) -> None:
        if refused.get(rel, {}).get("fp") != quick:
            new_refusals.append((rel, reason))
        refused[rel] = {"fp": quick, "reason": reason}

    for tenant_dir in sorted(root.iterdir()):
        if tenant_dir.is_symlink():
            why = entry_refusal(tenant_dir, tenant_dir)
            refuse(tenant_dir.name + "/", f"link:{_readlink(tenant_dir)}", why)
            continue
        if not tenant_dir.is_dir():
            try:
                st = tenant_dir.lstat()
                quick = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                quick = "unstat"
            refuse(tenant_dir.name, quick, "not a tenant folder: files must sit in <tenant>/")
            continue
        try:
            tenant = validate_tenant(tenant_dir.name)
        except ContractError as exc:
            refuse(tenant_dir.name + "/", "dir", str(exc))
            continue
        try:
            entries = sorted(tenant_dir.iterdir())
        except OSError as exc:
            refuse(tenant_dir.name + "/", "unlistable", f"cannot list the tenant folder: {exc}")
            continue
        for f in entries:
            if f.name.startswith("."):
                continue  # hidden files are writes in progress (written as .name.tmp, then renamed)
            rel = f"{tenant}/{f.name}"
            if f.is_symlink():
                why = entry_refusal(f, tenant_dir)
                if why:
                    refuse(rel, f"link:{_readlink(f)}", why)
                    continue
            if f.is_dir():
                continue
            try:
                st = f.stat()
            except OSError as exc:
                refuse(rel, "unstat", f"cannot stat: {exc}")
                continue
            quick = f"{st.st_size}:{st.st_mtime_ns}"
            if not stat.S_ISREG(st.st_mode):  # a FIFO or a device would block or never end the hashing
                refuse(rel, f"mode:{st.st_mode}", "not a regular file (a pipe, socket or device)")
                continue
            try:
                kind, date = parse_incoming_name(f.name)
            except ContractError as exc:
                refuse(rel, quick, str(exc))
                continue
            verdict = week_in_range(date, today=today, first=first_week)
            if not verdict.ok:
                refuse(rel, quick, f"date outside the accepted weeks ({verdict.code}): {verdict.reason}")
                continue
            prev = files.get(rel)
            if prev and prev.get("quick") == quick and rel not in refused:
                continue
            try:
                digest = _sha256(f)
            except OSError as exc:
                refuse(rel, quick, f"unreadable: {exc}")
                continue
            if st.st_size == 0:
                refuse(rel, quick, "empty file (0 bytes)")
                continue
            refused.pop(rel, None)
            files[rel] = {"quick": quick, "sha": digest}
            if prev and prev.get("sha") == digest:
                continue  # touched, same content: nothing to do
            seq += 1
            events.append(FileEvent(tenant=tenant, week=verdict.week, kind=kind, rel_path=rel, digest=digest,
                                    seq=seq, mtime=st.st_mtime))
    return events, new_refusals, new_state()


@dataclass(frozen=True)
class WeekRequest:
    """One ingestion request of a tenant-week: every new or changed file of one tick that calls for it."""
    tenant: str
    week: str
    events: tuple[FileEvent, ...]  # the files dated in the week (own) and the routed files of later weeks
    late_from: tuple[str, ...] = ()  # weeks of the routed files (outcomes) that may carry late rows for it

    @property
    def files(self) -> list[str]:
        return sorted(e.rel_path for e in self.events)

    @property
    def run_key(self) -> str:
        """Covers every event of the request: one event keeps its own key (file@sha#seq); several give
        ``tenant|week#seq,seq,...`` (event numbers are unique in the cursor, so a later change is a new key)."""
        own = [e for e in self.events if e.week == self.week]
        if len(self.events) == 1:
            e = self.events[0]
            return e.run_key if own else f"{e.run_key}>{self.week}"
        return f"{self.tenant}|{self.week}#" + ",".join(str(s) for s in sorted(e.seq for e in self.events))


def plan_requests(events: list[FileEvent], ingested_weeks: dict[str, set[str]] | None = None, *,
                  today: dt.date | None = None, first_week: str | None = None) -> list[WeekRequest]:
    """One request per tenant-week for the events of one tick (several files of a week are one ingestion).

    A routed file (outcomes) also calls for the already-ingested earlier weeks it may carry rows for
    (``weeks_to_ingest`` with ``ingested_weeks[tenant]``); those merge with the other requests of the same
    tenant-week. Sorted by tenant, then week (oldest first)."""
    ingested_weeks = ingested_weeks or {}
    groups: dict[tuple[str, str], list[FileEvent]] = {}
    late: dict[tuple[str, str], set[str]] = {}
    for e in events:
        for w in weeks_to_ingest(e, ingested_weeks.get(e.tenant, set()), today=today, first_week=first_week):
            groups.setdefault((e.tenant, w), []).append(e)
            if w != e.week:
                late.setdefault((e.tenant, w), set()).add(e.week)
    return [WeekRequest(t, w, tuple(sorted(evs, key=lambda x: x.seq)), tuple(sorted(late.get((t, w), ()))))
            for (t, w), evs in sorted(groups.items())]


def already_ingested(events: list[FileEvent], materialized_at: dict[tuple[str, str, str], float]
                     ) -> tuple[list[FileEvent], list[FileEvent]]:
    """Split the events of a first scan (empty cursor) into (new, seen).

    ``materialized_at[(tenant, week, kind)]`` is the time (epoch seconds) of the latest materialization of the
    ingest asset of ``kind`` for that tenant-week. A file whose own tenant-week was ingested at or after the
    file's modification time was read by that ingestion (e.g. ``riskml ingest-history`` before the sensor was
    switched on): it counts as seen. Any other file is new."""
    new, seen = [], []
    for e in events:
        at = materialized_at.get((e.tenant, e.week, e.kind))
        (seen if at is not None and at >= e.mtime else new).append(e)
    return new, seen
