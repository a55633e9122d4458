"""scripts/benchmark_vllm.py against a real llama-server with a tiny model.

The script runs as a separate process, as the deploy runs it on the box.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest
import requests

from conftest import SCRIPT_PATH, start_llama_server

pytestmark = pytest.mark.llama_server


def run_benchmark(base_url, model, *args, tmp_path, name="results.json", env=None):
    output = tmp_path / name
    command = [sys.executable, str(SCRIPT_PATH), "--url", base_url, "--model", model, "--no-progress",
               "--output", str(output), "--timeout", "60", *args]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    document = json.loads(output.read_text()) if output.exists() else None
    return completed, document


def predicted_total(base_url: str) -> float:
    text = requests.get(base_url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("llamacpp:tokens_predicted_total "):
            return float(line.split()[1])
    raise AssertionError("llama-server /metrics has no llamacpp:tokens_predicted_total")


def test_token_counts_match_server(llama_server, tmp_path):
    before = predicted_total(llama_server.base_url)
    completed, document = run_benchmark(llama_server.base_url, llama_server.alias, "--num-prompts", "4",
                                        "--input-length", "64", "--output-length", "48",
                                        "--max-concurrent", "2", tmp_path=tmp_path)
    after = predicted_total(llama_server.base_url)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    run = document["runs"][0]
    assert run["prompt_lengths"]["exact"], run["prompt_lengths"]
    for request in run["requests"]:
        timings = request["server_timings"]
        assert request["usage_reported"]
        assert request["completion_tokens"] == 48
        assert request["completion_tokens"] == timings["predicted_n"]
        assert request["prompt_tokens"] == 64
        assert request["prompt_tokens"] == timings["prompt_n"] + timings["cache_n"]
        # llama-server sends one token per chunk, so the chunk count is a
        # second, independent count of the output.
        assert request["content_chunks"] == request["completion_tokens"]
    assert run["summary"]["total_completion_tokens"] == 4 * 48
    # The server counter also includes the one-token warm-up request.
    assert after - before == 4 * 48 + 1


def test_output_rate_matches_server_timings(llama_server, tmp_path):
    completed, document = run_benchmark(llama_server.base_url, llama_server.alias, "--num-prompts", "6",
                                        "--input-length", "32", "--output-length", "512",
                                        "--max-concurrent", "1", tmp_path=tmp_path)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    run = document["runs"][0]
    timings = [request["server_timings"] for request in run["requests"]]

    # Per request: llama-server's prompt plus generation time is its share of
    # the request's latency, so both rates describe the same work.
    server_rates = [t["predicted_n"] * 1000.0 / (t["prompt_ms"] + t["predicted_ms"]) for t in timings]
    client_rate = run["summary"]["per_request_output_tokens_per_s"]["p50"]
    assert client_rate == pytest.approx(statistics.median(server_rates), rel=0.10)

    # Whole run: the client's wall time also contains the gaps between requests,
    # which a loaded machine stretches, so only an upper bound is stable.
    busy_s = sum(t["prompt_ms"] + t["predicted_ms"] for t in timings) / 1000.0
    server_rate = sum(t["predicted_n"] for t in timings) / busy_s
    assert run["summary"]["output_tokens_per_s"] <= server_rate * 1.10


def test_sweep_writes_chart(llama_server, tmp_path):
    completed, document = run_benchmark(llama_server.base_url, llama_server.alias, "--num-prompts", "4",
                                        "--input-length", "32", "--output-length", "16",
                                        "--concurrency-sweep", "1,2,4", tmp_path=tmp_path, name="sweep.json")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    chart = tmp_path / "sweep.png"
    assert document["chart"] == str(chart)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert chart.stat().st_size > 10_000
    assert [run["summary"]["concurrency"] for run in document["runs"]] == [1, 2, 4]
    assert all(run["summary"]["successful_requests"] == 4 for run in document["runs"])


@pytest.mark.parametrize("flag, value, failed_check", [
    ("--min-total-tokens-per-s", "1e12", "total (prompt + output) tokens/s"),
    ("--max-latency-s", "0.000001", "p99 end-to-end latency (s)"),
])
def test_threshold_failure_exits_nonzero(llama_server, tmp_path, flag, value, failed_check):
    completed, document = run_benchmark(llama_server.base_url, llama_server.alias, "--num-prompts", "2",
                                        "--input-length", "32", "--output-length", "8", flag, value,
                                        tmp_path=tmp_path)
    assert completed.returncode == 1, completed.stdout
    assert f"FAIL {failed_check}" in completed.stdout
    assert document["passed"] is False
    assert document["failed_checks"] == [f"concurrency 2: {failed_check}"]


def test_default_thresholds_pass(llama_server, tmp_path):
    completed, document = run_benchmark(llama_server.base_url, llama_server.alias, "--num-prompts", "4",
                                        tmp_path=tmp_path)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "RESULT: PASS" in completed.stdout
    assert document["server"]["llama_cpp_build_info"]
    assert document["parameters"]["input_length"] == 128


def test_api_key_from_environment(tmp_path):
    key = "benchmark-test-key"
    with start_llama_server(api_key=key) as process:
        server = process.server
        environment = {"PATH": "/usr/bin:/bin", "VLLM_API_KEY": key}
        completed, document = run_benchmark(server.base_url, server.alias, "--num-prompts", "2",
                                            "--output-length", "8", tmp_path=tmp_path, env=environment)
        assert completed.returncode == 0, completed.stdout + completed.stderr
        assert document["parameters"]["api_key_set"] is True
        assert key not in json.dumps(document)

        completed, document = run_benchmark(server.base_url, server.alias, "--num-prompts", "2",
                                            "--output-length", "8", tmp_path=tmp_path, name="nokey.json",
                                            env={"PATH": "/usr/bin:/bin"})
        assert completed.returncode == 1
        assert document["runs"][0]["summary"]["errors_by_kind"] == {"http_401": 2}
