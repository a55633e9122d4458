"""Time the deploy on one and on four throwaway hosts, and count its remote commands.

    sudo .venv/bin/python benchmarks/deploy_timing.py [--counts 1,4] [--output results.json]

For each host count it starts that many Strix-Halo-like throwaway hosts (see
tests/harness/hosts.py), then times four runs of `pyinfra inventory.py
deploy.py` over real SSH: a dry run, the first apply, a no-op re-apply and a
no-op dry run. It prints wall time (the median of five runs, except for the
first apply), remote commands and uploads for each.
start_service is false, so no container is started: the figures measure the
deploy's own work, not a model load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.harness.hosts import start_host  # noqa: E402
from tests.harness.hosts_fake import GiB  # noqa: E402

RUNS = (("dry run", ["--dry"]), ("first apply", []), ("no-op re-apply", []),
        ("no-op dry run", ["--dry"]))
DATA = {"start_service": "false", "vllm_min_free_disk_gb": "1"}
# Runs of each kind except the first apply; the table shows the median.
REPEATS = 5


def timed_run(hosts, extra: list[str]) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as counts_file:
        argv = [sys.executable, str(REPO_ROOT / "benchmarks" / "count_pyinfra.py"),
                counts_file.name, "-y", "--ssh-user", "root", "--ssh-key", str(hosts[0].ssh_key),
                "--data", "ssh_known_hosts_file=/dev/null",
                "--data", "ssh_strict_host_key_checking=off", *extra]
        for key, value in DATA.items():
            argv += ["--data", f"{key}={value}"]
        argv += ["inventory.py", "deploy.py"]
        env = dict(os.environ, BESTBOX_HOSTS=",".join(h.address for h in hosts))
        started = time.monotonic()
        result = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - started
        if result.returncode != 0:
            raise SystemExit(f"pyinfra failed:\n{result.stdout[-3000:]}{result.stderr[-2000:]}")
        counts = json.loads(Path(counts_file.name).read_text())
    return {"seconds": round(seconds, 2), "commands": counts["commands"],
            "uploads": counts["uploads"]}


def measure(count: int) -> dict:
    hosts = []
    try:
        for index in range(count):
            hosts.append(start_host(f"bench{count}x{index + 1}", with_docker=True,
                                    with_udevd=True, model=True, meminfo_total=128 * GiB))
        results = {}
        for label, extra in RUNS:
            # The first apply changes the hosts, so it runs once; the others
            # repeat, and the median damps noise from other load on the machine.
            repeats = 1 if label == "first apply" else REPEATS
            samples = [timed_run(hosts, extra) for _ in range(repeats)]
            samples.sort(key=lambda sample: sample["seconds"])
            results[label] = samples[len(samples) // 2]
        return results
    finally:
        for host in hosts:
            host.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1,4",
                        help="comma-separated host counts to measure (default 1,4)")
    parser.add_argument("--output", help="also write the figures to this JSON file")
    options = parser.parse_args()

    results = {}
    for count in (int(part) for part in options.counts.split(",")):
        results[count] = measure(count)

    print(f"{'hosts':>5}  {'run':<15} {'seconds':>8} {'commands':>9} {'uploads':>8}")
    for count, runs in results.items():
        for label, figures in runs.items():
            print(f"{count:>5}  {label:<15} {figures['seconds']:>8.2f} "
                  f"{figures['commands']:>9} {figures['uploads']:>8}")
    if 1 in results and 4 in results:
        ratio = results[4]["no-op re-apply"]["seconds"] / results[1]["no-op re-apply"]["seconds"]
        print(f"no-op re-apply, 4 hosts / 1 host: {ratio:.2f} (target: at most 1.5)")
    if options.output:
        Path(options.output).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
