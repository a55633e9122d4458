"""Helpers for end-to-end tests: run the real deploy with the repository's inventory.

The deploy reaches the throwaway hosts over real SSH, through inventory.py and
BESTBOX_HOSTS, as an operator would reach a box.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

# Values every end-to-end run needs on a throwaway host: the hosts' disks are
# this machine's, which may have less room than a real box.
BASE_DATA = {"vllm_min_free_disk_gb": "1"}
# The hosts run no vLLM image unless a test loads the stand-in, so most runs
# only write files.
NO_SERVICE = {"start_service": "false"}

RESULT_RE = re.compile(r"Grand total\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)")


@dataclass
class DeployRun:
    returncode: int
    output: str

    def totals(self) -> dict[str, int]:
        """Return the Grand total row: operations, successes, errors and no-changes."""
        match = RESULT_RE.search(self.output)
        assert match, f"no results table in the output:\n{self.output[-3000:]}"
        values = [0 if value == "-" else int(value) for value in match.groups()]
        return dict(zip(("operations", "success", "error", "no_change"), values))


def run_pyinfra(hosts, script: str = "deploy.py", *, dry: bool = False, diff: bool = False,
                data: dict | None = None, timeout: float = 900) -> DeployRun:
    """Run `pyinfra inventory.py SCRIPT` against the given throwaway hosts."""
    first = hosts[0]
    argv = [str(VENV_BIN / "pyinfra"), "--ssh-user", "root", "--ssh-key", str(first.ssh_key),
            "--data", "ssh_known_hosts_file=/dev/null",
            "--data", "ssh_strict_host_key_checking=off"]
    for key, value in {**BASE_DATA, **(data or {})}.items():
        argv += ["--data", f"{key}={value}"]
    if dry:
        argv.append("--dry")
    if diff:
        argv.append("--diff")
    else:
        # --diff output appears only while pyinfra detects changes, which -y skips.
        argv.append("-y")
    argv += ["inventory.py", script]
    env = dict(os.environ, BESTBOX_HOSTS=",".join(h.address for h in hosts),
               PATH=f"{VENV_BIN}:{os.environ['PATH']}")
    env.pop("BESTBOX_SSH_KEY", None)
    result = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    return DeployRun(result.returncode, result.stdout + result.stderr)


# Everything on a host that the deploy may touch, with modes, owners,
# modification times and content checksums. Files of 10 MB or more (the
# sparse model shards) get no checksum: reading 61 GB would take minutes.
STATE_COMMAND = r"""
for root in /home/bestbox /etc/udev/rules.d /var/backups /etc/group /etc/passwd /dev/kfd /dev/dri; do
  [ -e "$root" ] || continue
  find "$root" -xdev \( -type f -o -type d -o -type c -o -type l \) -printf '%p %m %u %g %T@\n' 2>/dev/null
  find "$root" -xdev -type f -size -10M -exec sha256sum {} + 2>/dev/null
done | sort
"""


def host_state(host) -> str:
    """Return a listing of every path the deploy may touch, to compare before and after."""
    return host.run(STATE_COMMAND).stdout


def tree_state(host, root: str = "/home/bestbox/BestBox") -> str:
    """Return content checksums, modes and owners of the BestBox checkout (no times)."""
    command = (f"cd {root} && find . -printf '%p %m %u %g\\n' | sort && "
               "find . -type f -exec sha256sum {} + | sort")
    return host.run(command).stdout


def box_suite(hosts, *extra: str) -> subprocess.CompletedProcess:
    """Run the operator verification suite (tests/box) against the hosts over SSH."""
    targets = ",".join(f"ssh://{h.address}" for h in hosts)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/box",
            f"--hosts={targets}", f"--ssh-config={hosts[0].ssh_config}", *extra]
    return subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
