"""The deploy end to end over real SSH: dry run, apply, re-apply, box suite, rollback.

Two throwaway hosts with different render GIDs go through the whole life
cycle in order, so the tests in this module depend on each other's effects
and run in file order. The hosts have a Docker engine, but no vLLM image,
so the deploy runs with start_service=false here; tests/e2e/test_service.py
covers the container.
"""

from __future__ import annotations

import re

import pytest
import yaml

from tests.e2e.deploying import NO_SERVICE, box_suite, host_state, run_pyinfra, tree_state
from tests.harness.hosts_fake import GiB

RENDER_GIDS = (992, 109)
COMPOSE = "/home/bestbox/BestBox/docker-compose.yml"


@pytest.fixture(scope="module")
def pair(throwaway_hosts):
    hosts = [throwaway_hosts(f"deploy{i + 1}", render_gid=gid, model=True, with_docker=True, with_udevd=True,
                             meminfo_total=128 * GiB)
             for i, gid in enumerate(RENDER_GIDS)]
    # Taken before any deploy touches the hosts; the rollback test compares with it.
    originals = {host.name: tree_state(host) for host in hosts}
    yield hosts, originals
    for host in hosts:
        throwaway_hosts.stop(host)


def test_dry_run_changes_nothing_and_shows_diffs(pair):
    hosts, _ = pair
    before = [host_state(host) for host in hosts]
    run = run_pyinfra(hosts, dry=True, diff=True, data=NO_SERVICE)
    assert run.returncode == 0, run.output[-4000:]
    assert [host_state(host) for host in hosts] == before
    for path in ("docker-compose.yml", "activate.sh", "activate-cuda.sh", ".env.vllm",
                 "config/prometheus/prometheus.yml", "scripts/start-vllm.sh"):
        assert f"+++ b/home/bestbox/BestBox/{path}" in run.output, path
    assert "+++ b/etc/udev/rules.d/70-bestbox-amd-gpu.rules" in run.output
    assert '+export LLM_BASE_URL="http://localhost:8001/v1"' in run.output


def test_apply_succeeds(pair):
    hosts, _ = pair
    run = run_pyinfra(hosts, data=NO_SERVICE)
    assert run.returncode == 0, run.output[-4000:]
    totals = run.totals()
    assert totals["error"] == 0
    assert totals["success"] > 0


def test_second_apply_changes_nothing(pair):
    hosts, _ = pair
    before = [host_state(host) for host in hosts]
    run = run_pyinfra(hosts, data=NO_SERVICE)
    assert run.returncode == 0, run.output[-4000:]
    totals = run.totals()
    assert totals["success"] == 0, run.output[-4000:]
    assert totals["error"] == 0
    assert [host_state(host) for host in hosts] == before


@pytest.mark.parametrize("index", range(len(RENDER_GIDS)))
def test_each_host_gets_its_own_render_gid(pair, index):
    hosts, _ = pair
    host = hosts[index]
    service = yaml.safe_load(host.run(["cat", COMPOSE]).stdout)["services"]["vllm"]
    assert service["group_add"] == ["44", str(RENDER_GIDS[index])]


def test_endpoint_audit_lists_old_references(pair):
    hosts, _ = pair
    run = run_pyinfra(hosts[:1], data=NO_SERVICE)
    assert "services/livekit_agent.py:" in run.output
    assert "NEXT_PUBLIC_LLM_PORT default" in run.output
    assert "config/gatus" not in run.output


def test_box_suite_passes_on_both_hosts(pair):
    hosts, _ = pair
    result = box_suite(hosts)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


@pytest.mark.parametrize("breakage, failing_test", [
    ("rm /etc/udev/rules.d/70-bestbox-amd-gpu.rules", "udev_rule"),
    ("chmod 0644 /home/bestbox/BestBox/.env.vllm", "env_file_has_mode"),
    ("chmod 0644 /dev/kfd", "device_nodes_have_mode"),
    ("sed -i 's#localhost:8001#localhost:8080#' /home/bestbox/BestBox/activate.sh",
     "activate_script"),
    ("mv /home/bestbox/BestBox/docs/archive/llama-cpp/scripts/start-llm.sh "
     "/home/bestbox/BestBox/scripts/start-llm.sh", "llamacpp_file"),
])
def test_box_suite_catches_hand_breakage(pair, breakage, failing_test):
    hosts, _ = pair
    host = hosts[0]
    host.run(breakage)
    result = box_suite([host])
    assert result.returncode != 0
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert failed, result.stdout[-3000:]
    assert all(failing_test in line for line in failed), "\n".join(failed)

    if failing_test != "llamacpp_file":
        # The deploy converges the host again. The archive case is put back by
        # hand instead, so the rollback test below finds the archive intact.
        run = run_pyinfra([host], data=NO_SERVICE)
        assert run.returncode == 0, run.output[-4000:]
        assert box_suite([host]).returncode == 0
    else:
        host.run("mv /home/bestbox/BestBox/scripts/start-llm.sh "
                 "/home/bestbox/BestBox/docs/archive/llama-cpp/scripts/start-llm.sh")


def test_rollback_refuses_hand_edited_file(pair):
    hosts, _ = pair
    host = hosts[1]
    host.run("echo '# local change' >> /home/bestbox/BestBox/activate.sh")
    before = host_state(host)
    run = run_pyinfra([host], "rollback.py")
    assert run.returncode != 0
    assert "/home/bestbox/BestBox/activate.sh was changed by hand" in run.output
    assert host_state(host) == before

    # The message gives the command that puts the deployed version back.
    advice = re.search(r"'(cp -p \S+ /home/bestbox/BestBox/activate.sh)'", run.output)
    assert advice, run.output[-3000:]
    host.run(advice.group(1))


def test_rollback_dry_run_changes_nothing(pair):
    hosts, _ = pair
    before = [host_state(host) for host in hosts]
    run = run_pyinfra(hosts, "rollback.py", dry=True, diff=True)
    assert run.returncode == 0, run.output[-4000:]
    assert "--- a/home/bestbox/BestBox/docker-compose.yml" in run.output
    assert [host_state(host) for host in hosts] == before


def test_rollback_restores_the_original_tree(pair):
    hosts, originals = pair
    run = run_pyinfra(hosts, "rollback.py")
    assert run.returncode == 0, run.output[-4000:]
    for host in hosts:
        assert tree_state(host) == originals[host.name], host.name
        assert host.run("ls /etc/udev/rules.d").stdout.strip() == ""


def test_second_rollback_changes_nothing(pair):
    hosts, _ = pair
    before = [host_state(host) for host in hosts]
    run = run_pyinfra(hosts, "rollback.py")
    assert run.returncode == 0, run.output[-4000:]
    assert [host_state(host) for host in hosts] == before


def test_deploy_after_rollback_converges(pair):
    hosts, _ = pair
    run = run_pyinfra(hosts, data=NO_SERVICE)
    assert run.returncode == 0, run.output[-4000:]
    again = run_pyinfra(hosts, data=NO_SERVICE)
    assert again.totals()["success"] == 0, again.output[-4000:]
    assert box_suite(hosts).returncode == 0
