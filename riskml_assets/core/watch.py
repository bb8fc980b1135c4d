"""Pure logic of the snapshot sensor: which incoming files are new or changed since the last tick.

The state (the sensor cursor) maps each file's relative path to a fingerprint ``size:mtime_ns:sha256``.
A file is re-hashed only when its size or mtime changed, and requested again only when its content
hash changed. Refused files (bad tenant id, bad name, unreadable) are remembered with their
fingerprint, so they are reported once and not retried until they change; nothing is ever deleted.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .contract import ContractError, parse_incoming_name, validate_tenant, week_key

STATE_VERSION = 1


@dataclass(frozen=True)
class FileEvent:
    tenant: str
    week: str
    kind: str
    rel_path: str
    digest: str

    @property
    def run_key(self) -> str:
        return f"{self.rel_path}@{self.digest[:16]}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_state(cursor: str | None) -> dict:
    if not cursor:
        return {"v": STATE_VERSION, "files": {}, "refused": {}}
    state = json.loads(cursor)
    state.setdefault("files", {})
    state.setdefault("refused", {})
    return state


def dump_state(state: dict) -> str:
    return json.dumps(state, sort_keys=True, separators=(",", ":"))


def scan(root: Path, state: dict) -> tuple[list[FileEvent], list[tuple[str, str]], dict]:
    """Compare the incoming folder with ``state``; return (new/changed files, newly refused (path, reason), new state).

    Every file found is classified exactly once per content: hostile or malformed names are refused
    without ever being joined into a path that leaves ``root``.
    """
    root = Path(root)
    files: dict = dict(state.get("files", {}))
    refused: dict = dict(state.get("refused", {}))
    events: list[FileEvent] = []
    new_refusals: list[tuple[str, str]] = []
    if not root.is_dir():
        return events, new_refusals, {"v": STATE_VERSION, "files": files, "refused": refused}

    def refuse(rel: str, quick: str, reason: str) -> None:
        if refused.get(rel, {}).get("fp") != quick:
            new_refusals.append((rel, reason))
        refused[rel] = {"fp": quick, "reason": reason}

    for tenant_dir in sorted(root.iterdir()):
        if not tenant_dir.is_dir():
            st = tenant_dir.stat()
            refuse(tenant_dir.name, f"{st.st_size}:{st.st_mtime_ns}", "not a tenant folder: files must sit in <tenant>/")
            continue
        try:
            tenant = validate_tenant(tenant_dir.name)
        except ContractError as exc:
            refuse(tenant_dir.name + "/", "dir", str(exc))
            continue
        for f in sorted(tenant_dir.iterdir()):
            if f.name.startswith(".") or f.is_dir():
                continue  # hidden files are writes in progress (written as .name.tmp, then renamed)
            rel = f"{tenant}/{f.name}"
            try:
                st = f.stat()
            except OSError as exc:
                refuse(rel, "unstat", f"cannot stat: {exc}")
                continue
            quick = f"{st.st_size}:{st.st_mtime_ns}"
            try:
                kind, date = parse_incoming_name(f.name)
            except ContractError as exc:
                refuse(rel, quick, str(exc))
                continue
            prev = files.get(rel)
            if prev and prev.get("quick") == quick:
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
            events.append(FileEvent(tenant=tenant, week=week_key(date), kind=kind, rel_path=rel, digest=digest))
    return events, new_refusals, {"v": STATE_VERSION, "files": files, "refused": refused}
