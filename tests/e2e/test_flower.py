"""Flower on the live stack: the worker and its window tasks in Flower's HTTP API, queue lengths from
RabbitMQ's management API, and the workers page in Debian's headless chromium (screenshot kept in
runs/test-artifacts/)."""

from __future__ import annotations

import base64
import shutil
import time
from pathlib import Path

import httpx
import pytest

from elis import launch
from tests.e2e.conftest import wait_done, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[2] / "runs" / "test-artifacts"
AUTH = ("ops", "flower-test-password")


@pytest.fixture(scope="module")
def flower(stack, tmp_path_factory):
    port = launch.free_port()
    env = {**stack.env, "ELIS_FLOWER_USER": AUTH[0], "ELIS_FLOWER_PASSWORD": AUTH[1]}
    managed = launch.start("flower", ["flower", "--port", str(port)], env, tmp_path_factory.mktemp("flower"))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: _answers(f"{base}/healthcheck"),
            timeout_s=60,
            what=f"Flower on {base} ({managed.log_path})",
        )
        yield base
    finally:
        managed.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def worker_node(stack) -> str:
    return f"e2e-{stack.queue[-8:]}@"


def test_flower_requires_its_password_and_shows_the_live_worker_its_window_tasks_and_queue(stack, flower):
    assert httpx.get(f"{flower}/api/workers", timeout=10).status_code == 401
    with stack.api("mlfq") as client:
        job = wait_done(
            client, client.post("/v1/jobs", json={"prompt": "Hi", "target_output_tokens": 60}).json()["id"]
        )
    workers = httpx.get(f"{flower}/api/workers", params={"refresh": 1}, auth=AUTH, timeout=30).json()
    assert any(name.startswith(worker_node(stack)) for name in workers), sorted(workers)

    def window_tasks() -> list[dict]:
        tasks = httpx.get(
            f"{flower}/api/tasks", params={"taskname": "elis.run_window"}, auth=AUTH, timeout=10
        ).json()
        return [t for t in tasks.values() if job["id"] in str(t.get("args"))]

    # One message per yield (a job that keeps its slot runs its next windows under the same message).
    wait_until(lambda: window_tasks() and all(t["state"] == "SUCCESS" for t in window_tasks()), timeout_s=30,
               what="the job's window tasks in Flower")
    assert 1 <= len(window_tasks()) <= job["num_windows"]
    assert all(t["worker"].startswith(worker_node(stack)) for t in window_tasks())
    queues = httpx.get(f"{flower}/api/queues/length", auth=AUTH, timeout=10).json()["active_queues"]
    assert stack.queue in [q["name"] for q in queues]  # read from RabbitMQ's management API


@pytest.mark.skipif(
    shutil.which("chromedriver") is None, reason="scripts/services.sh installs chromium-driver"
)
def test_the_workers_page_in_headless_chromium_lists_the_live_worker(stack, flower, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        token = base64.b64encode(f"{AUTH[0]}:{AUTH[1]}".encode()).decode()
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
        )
        driver.get(f"{flower}/workers?refresh=1")
        deadline = time.monotonic() + 30
        while worker_node(stack) not in driver.page_source and time.monotonic() < deadline:
            time.sleep(0.5)
            driver.refresh()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "flower-workers.png"))
        assert worker_node(stack) in driver.page_source
        assert "Workers" in driver.title or "Flower" in driver.title
    finally:
        driver.quit()
