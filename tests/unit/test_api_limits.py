"""`elis replay` and `elis compare --base-url` judge prompts by the limits the running API reports in /healthz,
not by this machine's settings."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from typer.testing import CliRunner

from elis.cli import app
from elis.models_prepare import BUNDLED_MODEL_NAME
from elis.replay.api_limits import ApiLimits, api_limits, local_model_of
from elis.replay.sources import ContextCheck

runner = CliRunner()


def _serve_health(body: dict, status: int = 200):
    """A real HTTP server answering GET /healthz with `body` (and 404 elsewhere); returns (url, server)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            payload = json.dumps(body).encode() if self.path == "/healthz" else b"{}"
            self.send_response(status if self.path == "/healthz" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


@pytest.fixture
def health_server():
    servers = []

    def start(body: dict, status: int = 200) -> str:
        url, server = _serve_health(body, status)
        servers.append(server)
        return url

    yield start
    for server in servers:
        server.shutdown()


def test_the_strictest_limits_of_the_apis_that_answer_are_read_from_healthz(health_server):
    small = health_server({"model": "/srv/m", "max_model_len": 4096, "max_tokens_limit": 512}, status=503)
    large = health_server({"model": "/srv/m", "max_model_len": 8192, "max_tokens_limit": 2048})
    assert api_limits(large) == ApiLimits("/srv/m", 8192, 2048)
    # a 503 (a dependency away) still says the limits; a down API is skipped
    assert api_limits(large, small, "http://127.0.0.1:9") == ApiLimits("/srv/m", 4096, 512)
    assert api_limits("http://127.0.0.1:9") is None
    assert api_limits(health_server({"status": "ok", "model": "x"})) is None  # an older API: does not say


def test_the_apis_tokenizer_is_loaded_only_from_a_copy_on_this_machine(tmp_path):
    assert local_model_of(BUNDLED_MODEL_NAME, "/elsewhere") == ""  # the bundled model, prepared here
    assert local_model_of("org/served-model", "org/served-model") == "org/served-model"  # served here too
    assert local_model_of(str(tmp_path), "") == str(tmp_path)  # a folder this machine has
    assert local_model_of("org/served-model", "") is None  # a hub id: never a download at run time


def test_a_comparison_that_also_starts_apis_here_takes_the_stricter_limits_and_this_machines_model():
    from elis.config import Settings
    from elis.replay.api_limits import with_local

    local = Settings(max_model_len=2048, max_tokens_limit=1024)
    assert with_local(ApiLimits("org/big", 8192, 512), local) == ApiLimits(BUNDLED_MODEL_NAME, 2048, 512)


def test_without_the_apis_tokenizer_long_prompts_pass_unchecked_and_are_counted():
    check = ContextCheck(256, lambda: None, max_tokens_limit=128)
    assert check.refusal([{"role": "user", "content": "short"}], 64) is None and check.unchecked == 0
    assert check.refusal([{"role": "user", "content": "word " * 500}], 64) is None and check.unchecked == 1
    assert check.refusal([{"role": "user", "content": "short"}], 200) == (
        "max_tokens 200 is above the service's limit of 128")


def test_replay_leaves_out_what_the_running_api_refuses_by_its_own_limits(health_server, tmp_path):
    """This machine's settings allow max_tokens 1024; the API says 128: every prompt would be refused there, so
    replay stops before submitting anything, naming the API's limit. An unknown model's long prompts are
    reported as unchecked."""
    url = health_server({"model": "org/not-here", "max_model_len": 256, "max_tokens_limit": 128})
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n{"prompt": "' + "word " * 400 + '"}\n')
    refused = runner.invoke(app, ["replay", "--base-url", url, "--prompts", str(prompts), "--max-tokens", "200"])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert "the API would refuse every prompt; the first: max_tokens 200 is above the service's limit of 128" in (
        refused.output)
    unchecked = runner.invoke(app, ["replay", "--base-url", url, "--prompts", str(prompts), "--max-tokens", "64"])
    # the fake API takes no jobs, so the replay then fails on submission: after the warning, with one clear line
    assert "1 prompts (long, or of several turns) were not checked against the context" in unchecked.output
    assert unchecked.exit_code == 1 and "Traceback" not in unchecked.output


def test_compare_on_a_given_api_that_serves_only_some_policies_checks_the_local_limits_too(health_server, tmp_path):
    """The given API admits max_tokens 4096, but ISRTF and the bound run on APIs started here (limit 1024): the
    request is refused before anything starts, with this machine's limit. With every policy on given APIs, their
    own limits decide."""
    from elis.config import Settings
    from elis.replay.cli import _compare_limits

    health = {"policy": "fcfs", "model": BUNDLED_MODEL_NAME, "max_model_len": 8192, "max_tokens_limit": 4096}
    url = health_server(health)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    mixed = runner.invoke(app, ["compare", "--base-url", url, "--workload", str(prompts), "--policies", "fcfs,isrtf",
                                "--max-tokens", "2000", "--out-dir", str(tmp_path / "a")])
    assert mixed.exit_code == 2 and "max_tokens 2000 is above the service's limit of 1024" in mixed.output
    local = Settings(max_model_len=2048, max_tokens_limit=1024)
    isrtf = health_server({**health, "policy": "isrtf"})
    given = {"fcfs": url, "isrtf": isrtf}
    assert _compare_limits(given, ["fcfs", "isrtf"], local) == ApiLimits(BUNDLED_MODEL_NAME, 8192, 4096)
    assert _compare_limits(given, ["fcfs", "isrtf", "srtf-oracle"], local) == ApiLimits(BUNDLED_MODEL_NAME, 2048, 1024)
    assert _compare_limits({}, ["fcfs"], local) is None
