"""A deploy killed part way leaves every file old or new, and the next run converges.

The deploy writes each file to a temporary file in the same directory and
renames it into place. These tests kill `pyinfra` with SIGKILL at several
points of a first apply, then check each managed file against its original
and its final content, and rerun the deploy.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from bestbox.config import load_defaults, settings_from
from bestbox.plan import managed_paths
from tests.e2e.deploying import NO_SERVICE, REPO_ROOT, VENV_BIN, box_suite, run_pyinfra
from tests.harness.hosts_fake import GiB

HOST_OPTIONS = dict(render_gid=992, model=True, with_docker=True, with_udevd=True,
                    meminfo_total=128 * GiB)
PATHS = managed_paths(settings_from(load_defaults(), "test"))


def checksums(host) -> dict[str, str]:
    """Return the sha256 of each managed path on the host, or "absent"."""
    result = {}
    for path in PATHS:
        found = host.run(["sha256sum", path], check=False)
        result[path] = found.stdout.split()[0] if found.returncode == 0 else "absent"
    return result


@pytest.fixture(scope="module")
def final_checksums(throwaway_hosts):
    """Checksums of a host that one uninterrupted deploy converged."""
    reference = throwaway_hosts("killref", **HOST_OPTIONS)
    run = run_pyinfra([reference], data=NO_SERVICE)
    assert run.returncode == 0, run.output[-3000:]
    yield checksums(reference)
    throwaway_hosts.stop(reference)


def start_deploy(host) -> subprocess.Popen:
    argv = [str(VENV_BIN / "pyinfra"), "-y", "--ssh-user", "root", "--ssh-key", str(host.ssh_key),
            "--data", "ssh_known_hosts_file=/dev/null",
            "--data", "ssh_strict_host_key_checking=off", "--data", "start_service=false",
            "--data", "vllm_min_free_disk_gb=1", "inventory.py", "deploy.py"]
    env = dict(os.environ, BESTBOX_HOSTS=host.address)
    return subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.mark.parametrize("delay", [1.6, 2.4, 3.2, 4.0])
def test_killed_deploy_leaves_old_or_new_files(throwaway_hosts, final_checksums, delay):
    host = throwaway_hosts(f"kill{int(delay * 10)}", **HOST_OPTIONS)
    original = checksums(host)

    process = start_deploy(host)
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    # A command that was already running on the host finishes on its own.
    time.sleep(1)

    for path, checksum in checksums(host).items():
        assert checksum in (original[path], final_checksums[path]), path

    run = run_pyinfra([host], data=NO_SERVICE)
    assert run.returncode == 0, run.output[-3000:]
    assert checksums(host) == final_checksums
    assert run_pyinfra([host], data=NO_SERVICE).totals()["success"] == 0
    assert box_suite([host]).returncode == 0
    throwaway_hosts.stop(host)
