"""Paths the deploy must not write through, rejected before any change.

Each case prepares one host by hand, as a careless or hostile owner of the
checkout might, and expects the deploy to stop with a message that names
the path, while nothing on the host changes.
"""

from __future__ import annotations

import pytest

from tests.e2e.deploying import NO_SERVICE, host_state, run_pyinfra
from tests.harness.hosts_fake import GiB

CHECKOUT = "/home/bestbox/BestBox"


@pytest.mark.parametrize("name, setup, expected", [
    ("unsafe-dir", f"mkdir {CHECKOUT}/scripts/monitor-vllm.sh",
     f"{CHECKOUT}/scripts/monitor-vllm.sh is a directory, not a regular file"),
    ("unsafe-link", f"ln -s /etc/hostname {CHECKOUT}/.env.vllm",
     f"{CHECKOUT}/.env.vllm is a link, not a regular file"),
    ("unsafe-archive", f"mkdir -p /tmp/elsewhere {CHECKOUT}/docs/archive && "
                       f"ln -s /tmp/elsewhere {CHECKOUT}/docs/archive/llama-cpp",
     f"{CHECKOUT}/docs/archive/llama-cpp is a link, not a directory"),
    ("unsafe-nested", "printf 'if [ -n \"$R\" ]; then\\n    export LLM_BASE_URL=http://$R/v1\\nfi\\n'"
                      f" >> {CHECKOUT}/activate.sh",
     f"{CHECKOUT}/activate.sh line 30 sets LLM_BASE_URL inside a block"),
])
def test_unsafe_path_is_rejected_before_changes(throwaway_hosts, name, setup, expected):
    host = throwaway_hosts(name, model=True, with_docker=True, with_udevd=True,
                           meminfo_total=128 * GiB)
    host.run(setup)
    before = host_state(host)
    run = run_pyinfra([host], data=NO_SERVICE)
    assert run.returncode != 0
    assert expected in run.output, run.output[-3000:]
    assert "nothing was changed" in run.output
    assert host_state(host) == before
    throwaway_hosts.stop(host)
