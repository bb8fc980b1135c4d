"""Real services for the `services` test suite: Azurite (npm) and PostgreSQL (Debian), on 127.0.0.1.

Both are started on free ports by the fixtures in ``conftest.py`` and stopped by the PID (process
group) we started — never anything else. Azurite comes from ``tools/azurite`` (``npm ci`` there,
done by ``.ci/run``); PostgreSQL from Debian's ``postgresql`` package (``initdb``/``postgres`` of the
newest version under ``/usr/lib/postgresql``), run as the unprivileged ``postgres`` user when the
tests run as root. The Azurite account key below is the public, documented development key.
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AZURITE_ACCOUNT = "devstoreaccount1"
# the well-known Azurite development key (public; documented by Microsoft for the emulator)
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_LISTEN = re.compile(r"successfully listens on http://127\.0\.0\.1:(\d+)")


class ServiceMissing(RuntimeError):
    pass


def find_azurite_blob() -> str | None:
    exe = os.environ.get("AZURITE_BLOB_BIN") or str(ROOT / "tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob")
    return exe if Path(exe).exists() else shutil.which("azurite-blob")


def _stop_group(proc: subprocess.Popen, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)  # only the process group we started
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def azurite_blob(timeout: float = 60.0):
    """Azurite's blob service on a free port, in memory; yields pid, port, blob_url, connection_string."""
    exe = find_azurite_blob()
    if exe is None:
        raise ServiceMissing("azurite-blob not found: run `npm ci` in tools/azurite (.ci/run does)")
    workdir = tempfile.mkdtemp(prefix="riskml-azurite-")
    log = open(os.path.join(workdir, "azurite.log"), "w+")
    proc = subprocess.Popen([exe, "--blobHost", "127.0.0.1", "--blobPort", "0", "--inMemoryPersistence",
                             "--skipApiVersionCheck", "--loose", "--disableTelemetry"],
                            cwd=workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    t0, port = time.monotonic(), None
    try:
        while port is None:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"azurite exited: {log.read()[-2000:]}")
            if time.monotonic() - t0 > timeout:
                raise TimeoutError("azurite did not start")
            log.seek(0)
            m = _LISTEN.search(log.read())
            port = int(m.group(1)) if m else None
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
        while True:  # ready when it answers anything over HTTP
            try:
                urllib.request.urlopen(f"{url}?comp=list", timeout=1)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if time.monotonic() - t0 > timeout:
                    raise
                time.sleep(0.05)
        yield {"pid": proc.pid, "port": port, "blob_url": url, "account_name": AZURITE_ACCOUNT,
               "account_key": AZURITE_KEY,
               "connection_string": (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
                                     f"AccountKey={AZURITE_KEY};BlobEndpoint={url};")}
    finally:
        _stop_group(proc)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_server(timeout: float = 60.0, fsync: bool = False):
    """A throw-away PostgreSQL cluster on 127.0.0.1 and a free port (trust auth, loopback only). ``fsync=False``
    (tests) skips waiting for the disk; the benchmarks start it with ``fsync=True``, as a real server runs.

    Yields pid, port, url (``postgresql://postgres@127.0.0.1:PORT/postgres``) and ``createdb(name) -> url``.
    """
    initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
    if not initdb or not postgres:
        raise ServiceMissing("PostgreSQL server binaries not found: apt-get install postgresql (.ci/run does)")
    workdir = tempfile.mkdtemp(prefix="riskml-pg-")
    data = os.path.join(workdir, "data")
    as_user: dict = {}
    if os.geteuid() == 0:  # postgres refuses to run as root: use the package's unprivileged user
        pw = pwd.getpwnam("postgres")
        os.chown(workdir, pw.pw_uid, pw.pw_gid)
        as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    subprocess.run([initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True, **as_user)
    port = _free_port()
    log = open(os.path.join(workdir, "pg.log"), "w+")
    if as_user:
        os.chown(log.name, as_user["user"], as_user["group"])
    proc = subprocess.Popen([postgres, "-D", data, "-h", "127.0.0.1", "-p", str(port), "-k", workdir,
                             "-c", f"fsync={'on' if fsync else 'off'}", "-c", "max_connections=100"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, **as_user)
    t0 = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"postgres exited: {log.read()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                log.seek(0)
                if "ready to accept connections" in log.read():
                    break
            if time.monotonic() - t0 > timeout:
                raise TimeoutError("postgres did not start")
            time.sleep(0.1)

        def createdb(name: str) -> str:
            import psycopg2

            conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
            conn.close()
            return f"postgresql://postgres@127.0.0.1:{port}/{name}"

        yield {"pid": proc.pid, "port": port, "host": "127.0.0.1", "user": "postgres",
               "url": f"postgresql://postgres@127.0.0.1:{port}/postgres", "createdb": createdb}
    finally:
        _stop_group(proc, timeout=20, sig=signal.SIGINT)  # postgres "fast" shutdown: no waiting for clients
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
