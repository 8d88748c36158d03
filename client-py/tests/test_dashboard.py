"""The web dashboard at ``/ui/`` on the real stack, in headless Chromium driven by selenium:
an operator signs in, sees agent 1:1 online, starts a job from the Run page, watches its first
line arrive while it runs and kills it; a viewer sees neither the Run page nor a Kill button.

Needs Debian's ``chromium`` and ``chromium-driver`` and selenium from PyPI (the test command
installs them in CI); skipped with the reason when they are missing. Screenshots go to a
temporary directory (``$DASHBOARD_SHOTS`` to keep them elsewhere); with
``DASHBOARD_README_SHOT=1`` the job page is also saved as ``docs/dashboard.png`` for the README.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO_ROOT

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _missing(why: str) -> None:
    """In CI (scripts/test-all.sh installs all of it) a missing piece fails; elsewhere it skips."""
    if os.environ.get("CI"):
        pytest.fail(why, pytrace=False)
    pytest.skip(why, allow_module_level=True)


try:
    from selenium import webdriver
except ImportError:
    _missing("selenium is not installed (pip install selenium)")
if not (os.path.exists(CHROMEDRIVER) and os.path.exists(CHROMIUM)):
    _missing("headless Chromium missing: apt-get install chromium chromium-driver")

from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

WAIT = 30


def user_add(stack, name: str, role: str) -> str:
    """``jsacc user add NAME --role ROLE``: the token is the last line of stdout."""
    argv = [stack.exe("jsacc"), "user", "add", name, "--role", role, "-r", stack.redis_arg,
            "--data-dir", str(stack.tmp / "token-data")]
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout.strip().splitlines()[-1]


def call(stack, token: str, method: str, path: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(stack.controller_url + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


@pytest.fixture(scope="module")
def tokens(stack):
    return {"operator": user_add(stack, "dash-op", "operator"),
            "viewer": user_add(stack, "dash-viewer", "viewer")}


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    d = Path(os.environ.get("DASHBOARD_SHOTS") or tmp_path_factory.mktemp("dashboard-shots"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--ignore-certificate-errors", "--window-size=1280,800",
                "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    # The page itself 1280x800, whatever the window's frame takes.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, what: str, check, timeout: float = WAIT):
    # The pages re-render as data arrives: an element found a moment ago may be gone.
    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: check(d), message=f"the dashboard did not show {what} within {timeout} s")


def click(driver, what: str, css: str) -> None:
    """Clicks the element `css`, finding it again if a re-render replaced it."""
    def clicked(d):
        el = find(d, css)
        if el is None:
            return False
        el.click()
        return True
    wait(driver, what, clicked)


def find(driver, css: str):
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0] if found else None


def sign_in(driver, stack, token: str) -> None:
    if driver.current_url.startswith(stack.controller_url):
        driver.execute_script("sessionStorage.clear()")  # sign the previous account out
    driver.get(f"{stack.controller_url}/ui/#/agents")
    driver.refresh()
    field = wait(driver, "the sign-in form", lambda d: find(d, "#token"))
    field.send_keys(token)
    driver.find_element(By.ID, "signin").click()
    wait(driver, "the header after signing in",
         lambda d: find(d, "#top") and d.find_element(By.ID, "top").is_displayed())


def fake_stats(stack, agent: str, n: int = 40) -> None:
    """Stats batches as an agent with host gauges would send them (one a minute), so the
    agent page has something to chart."""
    now = int(time.time() * 1000)
    latest = {}
    for i in range(n):
        epoch = now - (n - 1 - i) * 60_000
        wave = math.sin(i / 5)
        metrics = [
            {"key": "jsagent.host.cpu_percent", "type": "gauge", "value": 35 + 20 * wave + i % 7},
            {"key": "jsagent.host.mem_used", "type": "gauge", "value": (5.2 + wave) * 2**30},
            {"key": "jsagent.host.mem_total", "type": "gauge", "value": 16 * 2**30},
            {"key": "ops.web.process.rss", "type": "gauge", "value": (300 + 4 * i) * 2**20},
            {"key": "ops.web.requests", "type": "counter", "sum": 600 + 50 * wave,
             "rate": 10 + wave},
            {"key": "ops.web.latency_ms", "type": "timer", "count": 600, "sum": 7200,
             "min": 2, "max": 80, "mean": 12 + 3 * wave, "p50": 10, "p90": 25, "p99": 70},
        ]
        gid, nid = agent.split(":")
        batch = {"gid": int(gid), "nid": int(nid), "epoch": epoch, "interval": 60,
                 "metrics": metrics}
        stack.r.xadd(f"stats:{{{agent}}}", {"batch": json.dumps(batch)})
        for m in metrics:
            latest[m["key"]] = json.dumps({"epoch": epoch, "interval": 60,
                                           **{k: v for k, v in m.items() if k != "key"}})
    stack.r.hset(f"stats:{{{agent}}}:latest", mapping=latest)


def job_state(driver) -> str:
    badge = find(driver, ".pagehead h2 .badge")
    return badge.text if badge else ""


def csp_violations(driver):
    return [e["message"] for e in driver.get_log("browser")
            if "Content Security Policy" in e["message"] or "Refused to" in e["message"]]


def test_the_pages_are_embedded_with_strict_headers(stack):
    with urllib.request.urlopen(f"{stack.controller_url}/ui", timeout=5) as r:
        assert r.url.endswith("/ui/")  # /ui redirects
        page = r.read().decode()
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Content-Type"].startswith("text/html")
    assert "<script src=\"app.js\"" in page and "https://" not in page
    with urllib.request.urlopen(f"{stack.controller_url}/ui/app.js", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/javascript")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{stack.controller_url}/ui/nothing.js", timeout=5)
    assert e.value.code == 404


def test_an_operator_starts_watches_and_kills_a_job_and_a_viewer_cannot(
        stack, tokens, browser, shots):
    d = browser
    d.get(f"{stack.controller_url}/ui/")
    wait(d, "the sign-in form", lambda d: find(d, "#token"))
    d.save_screenshot(str(shots / "signin.png"))
    sign_in(d, stack, tokens["operator"])
    assert "dash-op" in d.find_element(By.ID, "who").text
    wait(d, "agent 1:1 online", lambda d: find(d, "#agents tr[data-agent='1:1'] .dot.on"))
    d.save_screenshot(str(shots / "agents.png"))

    fake_stats(stack, "1:2")
    d.get(f"{stack.controller_url}/ui/#/agents/1/2")
    wait(d, "agent 1:2's charts", lambda d: len(d.find_elements(By.CSS_SELECTOR, "svg.chart")) >= 3)
    d.save_screenshot(str(shots / "agent.png"))
    d.get(f"{stack.controller_url}/ui/#/agents")
    wait(d, "agent 1:2's cpu and memory in the list",
         lambda d: "GiB" in d.find_element(By.CSS_SELECTOR, "tr[data-agent='1:2']").text)

    d.find_element(By.ID, "nav-run").click()
    wait(d, "agent 1:1 among the Run page's targets",
         lambda d: find(d, "#run-agent option[value='1:1']"))
    Select(d.find_element(By.ID, "run-agent")).select_by_value("1:1")
    d.find_element(By.ID, "run-shell").send_keys("echo first; sleep 30; echo never")
    d.save_screenshot(str(shots / "run.png"))
    d.find_element(By.ID, "run-submit").click()
    wait(d, "the new job's page", lambda d: "#/jobs/" in d.current_url)
    job_id = d.current_url.split("#/jobs/")[1]

    wait(d, "the job's first line while it runs",
         lambda d: "first" in d.find_element(By.ID, "output").text
         and job_state(d) == "RUNNING")
    assert "never" not in d.find_element(By.ID, "output").text
    d.save_screenshot(str(shots / "job-running.png"))

    # The overview while it runs (the README's screenshot), then back to the job.
    d.get(f"{stack.controller_url}/ui/#/agents")
    wait(d, "the job under Running now", lambda d: find(d, f"tr[data-job='{job_id}'] .st-RUNNING"))
    d.save_screenshot(str(shots / "agents-running.png"))
    if os.environ.get("DASHBOARD_README_SHOT") == "1":
        d.save_screenshot(str(REPO_ROOT / "docs" / "dashboard.png"))
    d.get(f"{stack.controller_url}/ui/#/jobs/{job_id}")
    wait(d, "the job's page again", lambda d: find(d, "#kill") and "first" in
         d.find_element(By.ID, "output").text)

    click(d, "the Kill button", "#kill")
    click(d, "the kill confirmation", "#confirm")
    wait(d, "the job KILLED", lambda d: job_state(d) == "KILLED")
    assert find(d, "#kill") is None  # a final job has no Kill button
    assert call(stack, tokens["viewer"], "GET", f"/v1/jobs/{job_id}")["state"] == "KILLED"
    d.save_screenshot(str(shots / "job-killed.png"))

    d.get(f"{stack.controller_url}/ui/#/jobs")
    wait(d, "the job in the list", lambda d: find(d, f"tr[data-job='{job_id}'] .st-KILLED"))
    d.save_screenshot(str(shots / "jobs.png"))

    # A job's messages on the Logs page.
    call(stack, tokens["operator"], "POST", "/v1/jobs",
         {"gid": 1, "nid": 2, "cmd": "execute",
          "args": {"cmd": "/bin/sh", "args": ["-c", "echo '5::backup done'; echo '7::disk 91%'"],
                   "domain": "ops", "name": "dash"}})
    d.get(f"{stack.controller_url}/ui/#/logs/ops/dash")
    wait(d, "the job's log messages", lambda d: "disk 91%" in d.find_element(By.ID, "logs").text)
    d.save_screenshot(str(shots / "logs.png"))

    # A viewer, on a job that is still running: no Kill button, no Run page.
    running = call(stack, tokens["operator"], "POST", "/v1/jobs",
                   {"gid": 1, "nid": 1, "cmd": "execute",
                    "args": {"cmd": "/bin/sh", "args": ["-c", "echo viewer-sees-me; sleep 30"]}})
    try:
        sign_in(d, stack, tokens["viewer"])
        assert "viewer" in d.find_element(By.ID, "who").text
        assert find(d, "#nav-run") is None
        d.get(f"{stack.controller_url}/ui/#/jobs/{running['id']}")
        wait(d, "the running job's output for the viewer",
             lambda d: "viewer-sees-me" in d.find_element(By.ID, "output").text
             and job_state(d) == "RUNNING")
        assert find(d, "#kill") is None
        d.save_screenshot(str(shots / "job-viewer.png"))
        d.get(f"{stack.controller_url}/ui/#/run")
        wait(d, "the Run page refusing a viewer", lambda d: "may not start jobs" in
             d.find_element(By.ID, "main").text)
    finally:
        call(stack, tokens["operator"], "DELETE", f"/v1/jobs/{running['id']}")
    assert csp_violations(d) == []
    print(f"screenshots in {shots}")
