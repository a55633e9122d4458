"""benchmarks/client_overhead.py runs and shows headroom over a 100 tokens/s server."""

import json
import subprocess
import sys

from conftest import REPO_ROOT


def test_client_overhead_reports_headroom():
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "client_overhead.py"), "--tokens", "300",
               "--repeats", "3", "--json"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    figures = json.loads(completed.stdout[completed.stdout.index("{"):completed.stdout.rindex("}") + 1])
    assert figures["parser"]["max_tokens_per_s"] >= 1000
    assert figures["loopback"]["max_tokens_per_s"] >= 1000
    assert figures["loopback"]["request_cpu_ms"] > 0
    assert "PASS" in completed.stdout


def test_client_overhead_fails_unreachable_margin():
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "client_overhead.py"), "--tokens", "100",
               "--repeats", "1", "--target-rate", "1e9"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 1
    assert "FAIL" in completed.stdout
