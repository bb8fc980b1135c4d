"""A real browser against a real dagster-webserver: the asset graph, check results and the report's plot.

Runs with `bash scripts/test.sh -m ui` (CI runs it); needs Debian's `chromium` (scripts/test.sh -m ui
installs it when missing). The webserver is started by PID on 127.0.0.1 and stopped by that PID.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = REPO / "docs" / "screenshots" if os.environ.get("RISKML_UPDATE_SCREENSHOTS") else None
pytestmark = pytest.mark.ui


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    shutil.copytree(REPO / "data" / "sample" / "incoming", root / "data" / "incoming")
    for f in ("dagster.yaml", "workspace.yaml"):
        shutil.copy(REPO / f, root / f)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_HOME", "RISKML_", "MLFLOW_"))}
    env["DAGSTER_HOME"] = str(root / ".dagster")
    run = subprocess.run([BIN / "riskml", "run"], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    port = _free_port()
    log = open(root / "webserver.log", "w")
    proc = subprocess.Popen([BIN / "dagster-webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(base + "/server_info", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("dagster-webserver did not come up: " + (root / "webserver.log").read_text()[-2000:])
        yield {"base": base, "root": root, "env": env}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the group we created: the webserver and its code server only
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def page(deployment):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        pg = browser.new_page(viewport={"width": 1500, "height": 950})
        pg.set_default_timeout(30000)
        yield pg
        browser.close()


def _shot(pg, name, tmp_root):
    target = (SHOTS or tmp_root) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(target))
    return target


def _dismiss_welcome(pg):
    skip = pg.get_by_role("button", name="Skip")
    if skip.count():
        skip.first.click()


def report_plots(pg, base: str, partition: str) -> int:
    """Open risk_evaluation's materialization for a partition, open the report, count embedded PNG plots."""
    pg.goto(f"{base}/assets/risk_evaluation?partition={partition.replace('|', '%7C')}", wait_until="networkidle")
    _dismiss_welcome(pg)
    pg.get_by_text("Latest materialization").first.wait_for()
    pg.get_by_text("report", exact=True).first.wait_for()
    show = pg.get_by_text("[Show Markdown]")
    if show.count():  # long markdown opens in a dialog; short markdown is rendered inline
        show.first.click()
    pg.get_by_text("Metrics against baselines").first.wait_for()
    n = pg.locator("img[src^='data:image/png']").count()
    pg.keyboard.press("Escape")
    return n


def test_asset_graph_shows_assets_and_check_results(deployment, page):
    page.goto(f"{deployment['base']}/locations/riskml/asset-groups/risk", wait_until="networkidle")
    _dismiss_welcome(page)
    page.get_by_text("risk_evaluation").first.wait_for()
    body = page.inner_text("body")
    for name in ("risk_model", "risk_calibrator", "risk_evaluation"):
        assert name in body
    assert "Passed" in body  # check results are shown on the graph nodes
    _shot(page, "asset-graph.png", deployment["root"])


def test_evaluation_report_shows_the_reliability_plot(deployment, page):
    week = "2026-11-16"
    assert report_plots(page, deployment["base"], f"demo|{week}") >= 2  # reliability diagram + importance
    page.get_by_text("[Show Markdown]").first.click()
    heading = page.get_by_text("Reliability diagram (test split)").first
    heading.wait_for()
    heading.scroll_into_view_if_needed()
    _shot(page, "evaluation-report.png", deployment["root"])
    page.keyboard.press("Escape")
    # checks of the evaluation are visible on the asset page
    page.goto(f"{deployment['base']}/assets/risk_evaluation?view=checks", wait_until="networkidle")
    page.get_by_text("risk_evaluation_ece").first.wait_for()
    page.get_by_text("risk_evaluation_beats_baselines").first.wait_for()
    _shot(page, "evaluation-checks.png", deployment["root"])


def test_a_report_without_plot_is_detected(deployment, page):
    """The same browser check fails on a report whose plot is missing (so the test above can fail).

    Runs last: it records a newer materialization of the same partition whose report has no plot."""
    with dg.DagsterInstance.from_config(deployment["env"]["DAGSTER_HOME"]) as inst:
        inst.add_dynamic_partitions("tenant", ["demo"])
        inst.report_runless_asset_event(dg.AssetMaterialization(
            asset_key="risk_evaluation", partition="demo|2026-11-16",
            metadata={"report": dg.MetadataValue.md("# Risk model evaluation\n\n## Metrics against baselines\n\nno plot")}))
    assert report_plots(page, deployment["base"], "demo|2026-11-16") == 0
