"""The real deploy brings up the vLLM container on a throwaway host, over SSH.

One host with its own Docker engine goes through the service's life cycle in
file order, so the tests depend on each other's effects. The steps are the
first deploy, checks inside the container, verify.py, a second deploy that
changes nothing, dry runs, a changed flag, a changed env file, a private IPC
namespace, a stopped container, and two containers that never become
healthy. The deploy is the one an operator runs (`pyinfra inventory.py
deploy.py`, start_service=true). Only the image is swapped, through
`--data vllm_image=...`, for the stand-in of tests/harness/standin, which is
loaded into the host's engine from a saved tarball (see standin_host.py).

What the stand-in does not cover:

- ROCm and the GPU. The container gets the host's fake /dev/kfd and /dev/dri
  nodes, which reach no device, and nothing in it opens them. The ROCm
  variables of the env file are checked for their values in the container,
  not for their effect.
- vLLM itself: engine start-up, memory sizing and its exact API behaviour.
  llama.cpp's llama-server on the CPU responds instead.
- The real model. The model mount must exist, but a tiny built-in model
  responds. Start-up takes about a second instead of minutes, so the health
  wait is tested with a container that fails at start and with one that
  never becomes healthy.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.e2e import standin_host
from tests.e2e.deploying import DeployRun, box_suite, host_state, run_pyinfra
from tests.harness.hosts_fake import GiB

STANDIN = {"vllm_image": standin_host.IMAGE}
CONTAINER = "bestbox-vllm"
CHECKOUT = "/home/bestbox/BestBox"
ENV_FILE = f"{CHECKOUT}/.env.vllm"
MODEL_MOUNTS = ("/root/.cache/modelscope", "/root/.cache/huggingface")
# vllm_shm_size in group_data/all.py is "16g", which Docker reads as GiB.
SHM_SIZE_BYTES = 16 * GiB
SHM_MARKER = "/dev/shm/svc-e2e-marker"
# Docker runs the first health check one vllm_healthcheck_interval (30 s by
# default) after the start.
DOCKER_HEALTH_WAIT_S = 90
# A failed start must stop the deploy long before any health timeout.
FAST_FAILURE_LIMIT_S = 60
NEVER_HEALTHY_TIMEOUT_S = 20


@pytest.fixture(scope="module")
def box(throwaway_hosts):
    reason = standin_host.unavailable_reason()
    if reason:
        pytest.skip(f"the stand-in vLLM image cannot be built: {reason}")
    # Built before the host starts, so no host waits for a cold build.
    tarball = standin_host.ensure_tarball()
    host = throwaway_hosts("svc-e2e", model=True, with_docker=True, with_udevd=True,
                           meminfo_total=128 * GiB)
    standin_host.load_image(host, tarball)
    yield host
    throwaway_hosts.stop(host)


def deploy(host, *, dry: bool = False, **data: str) -> DeployRun:
    """Run deploy.py with the stand-in image and the given --data overrides.

    A dry run also gets --diff, because pyinfra lists the operations it would
    run only while it detects changes, which -y skips.
    """
    return run_pyinfra([host], dry=dry, diff=dry, data={**STANDIN, **data})


def tail(run: DeployRun) -> str:
    return run.output[-5000:]


def inspect(host) -> dict:
    output = host.run(["docker", "container", "inspect", CONTAINER]).stdout
    return json.loads(output)[0]


def identity(host) -> tuple[str, str]:
    """Return the container's id and start time, which change when it is recreated or restarted."""
    info = inspect(host)
    return info["Id"], info["State"]["StartedAt"]


def in_container(host, *argv: str, check: bool = True):
    return host.run(["docker", "exec", CONTAINER, *argv], check=check)


def group_gid(host, group: str) -> int:
    entry = host.run(["getent", "group", group]).stdout.strip()
    return int(entry.split(":")[2])


def env_file_values(host) -> dict[str, str]:
    values = {}
    for line in host.run(["cat", ENV_FILE]).stdout.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def shm_size(host, inside: bool) -> int:
    command = ["df", "-B1", "--output=size", "/dev/shm"]
    output = in_container(host, *command).stdout if inside else host.run(command).stdout
    return int(output.split()[-1])


def wait_for_docker_health(host, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        health = (inspect(host)["State"].get("Health") or {}).get("Status")
        if health != "starting" or time.monotonic() > deadline:
            return health
        time.sleep(1)


# --- First deploy -------------------------------------------------------------------


def test_deploy_starts_healthy_service(box):
    run = deploy(box)
    assert run.returncode == 0, tail(run)
    assert run.totals()["error"] == 0
    assert "Start or recreate the vllm container" in run.output
    assert "vLLM is healthy after" in run.output, tail(run)
    assert "smoke tests passed" in run.output, tail(run)
    info = inspect(box)
    assert info["State"]["Status"] == "running"
    assert info["Config"]["Image"] == standin_host.IMAGE


def test_container_passes_docker_health_check(box):
    assert wait_for_docker_health(box, DOCKER_HEALTH_WAIT_S) == "healthy"


def test_box_suite_passes_with_service(box):
    result = box_suite([box], "--require-service", "--bestbox-data",
                       f"vllm_image={standin_host.IMAGE}")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


# --- Inside the container -----------------------------------------------------------


def test_container_has_gpu_device_nodes(box):
    listing = in_container(box, "ls", "-l", "/dev/kfd", "/dev/dri").stdout
    kfd = [line for line in listing.splitlines() if line.endswith(" /dev/kfd")]
    assert len(kfd) == 1, listing
    assert kfd[0].startswith("c"), listing
    major, minor = box.devices["/dev/kfd"]
    assert f" {major}, {minor} " in kfd[0]
    render = [line for line in listing.splitlines() if line.endswith(" renderD128")]
    assert len(render) == 1, listing
    assert render[0].startswith("c"), listing


def test_container_has_video_and_render_gids(box):
    gids = in_container(box, "id", "-G").stdout.split()
    assert str(group_gid(box, "video")) in gids
    assert str(group_gid(box, "render")) in gids
    # The harness sets the render GID per host, unlike Debian's default, so
    # the check above compared a value that belongs to this host.
    assert group_gid(box, "render") == box.render_gid


@pytest.mark.parametrize("mount", MODEL_MOUNTS)
def test_model_mount_is_read_only(box, mount):
    result = in_container(box, "touch", f"{mount}/svc-write-probe", check=False)
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr


def test_model_directory_is_visible(box):
    model_dir = f"{MODEL_MOUNTS[0]}/hub/models/Qwen/Qwen3-30B-A3B-Instruct-2507"
    assert in_container(box, "test", "-f", f"{model_dir}/config.json", check=False).returncode == 0


def test_container_environment_equals_env_file(box):
    expected = env_file_values(box)
    assert "HSA_OVERRIDE_GFX_VERSION" in expected
    assert "HF_HUB_OFFLINE" in expected
    actual = dict(line.split("=", 1) for line in in_container(box, "env").stdout.splitlines()
                  if "=" in line)
    assert {key: actual.get(key) for key in expected} == expected


def test_host_ipc_shares_host_shm(box):
    assert inspect(box)["HostConfig"]["IpcMode"] == "host"
    box.run(f"echo svc-e2e > {SHM_MARKER}")
    try:
        seen = in_container(box, "cat", SHM_MARKER, check=False)
    finally:
        box.run(["rm", "-f", SHM_MARKER])
    assert seen.stdout.strip() == "svc-e2e"
    assert shm_size(box, inside=True) == shm_size(box, inside=False)


# --- verify.py and a second deploy ----------------------------------------------------


def test_verify_passes_and_changes_nothing(box):
    before_state, before_identity = host_state(box), identity(box)
    run = run_pyinfra([box], "verify.py", data=STANDIN)
    assert run.returncode == 0, tail(run)
    assert "smoke tests passed" in run.output
    assert run.totals()["success"] == 0
    assert identity(box) == before_identity
    assert host_state(box) == before_state


def test_second_deploy_changes_nothing(box):
    before_state, before_identity = host_state(box), identity(box)
    run = deploy(box)
    assert run.returncode == 0, tail(run)
    totals = run.totals()
    assert totals["success"] == 0, tail(run)
    assert totals["error"] == 0
    assert "Start or recreate the vllm container" not in run.output
    assert "vLLM is healthy after" not in run.output
    assert identity(box) == before_identity
    assert host_state(box) == before_state


def test_dry_run_of_changed_flag_leaves_container(box):
    before_state, before_identity = host_state(box), identity(box)
    run = deploy(box, dry=True, vllm_max_num_seqs="4")
    assert run.returncode == 0, tail(run)
    # The dry run plans the recreation but does not run it.
    assert "Start or recreate the vllm container" in run.output
    assert "vLLM is healthy after" not in run.output
    assert identity(box) == before_identity
    assert host_state(box) == before_state


def test_changed_flag_recreates_container(box):
    before_id, _ = identity(box)
    run = deploy(box, vllm_max_num_seqs="4")
    assert run.returncode == 0, tail(run)
    assert "Start or recreate the vllm container" in run.output
    assert "vLLM is healthy after" in run.output, tail(run)
    assert "smoke tests passed" in run.output
    info = inspect(box)
    assert info["Id"] != before_id
    command = info["Config"]["Cmd"]
    assert command[command.index("--max-num-seqs") + 1] == "4"


def test_env_file_change_recreates_container(box):
    before_id, _ = identity(box)
    # The same flags as the deploy before, so only the env file changes.
    run = deploy(box, vllm_max_num_seqs="4", vllm_hsa_override_gfx_version="11.5.1")
    assert run.returncode == 0, tail(run)
    assert "smoke tests passed" in run.output
    assert inspect(box)["Id"] != before_id
    assert env_file_values(box)["HSA_OVERRIDE_GFX_VERSION"] == "11.5.1"
    assert in_container(box, "printenv", "HSA_OVERRIDE_GFX_VERSION").stdout.strip() == "11.5.1"


def test_private_ipc_gets_configured_shm_size(box):
    before_id, _ = identity(box)
    run = deploy(box, vllm_ipc_mode="private")
    assert run.returncode == 0, tail(run)
    assert "smoke tests passed" in run.output
    info = inspect(box)
    assert info["Id"] != before_id
    assert info["HostConfig"]["IpcMode"] == "private"
    assert shm_size(box, inside=True) == SHM_SIZE_BYTES
    box.run(f"echo svc-e2e > {SHM_MARKER}")
    try:
        seen = in_container(box, "test", "-e", SHM_MARKER, check=False)
    finally:
        box.run(["rm", "-f", SHM_MARKER])
    assert seen.returncode == 1


# --- A stopped container ----------------------------------------------------------------


def test_verify_fails_on_stopped_container(box):
    box.run(["docker", "stop", CONTAINER], timeout=60)
    run = run_pyinfra([box], "verify.py", data=STANDIN)
    assert run.returncode != 0
    assert "vLLM is not healthy: container exited" in run.output, tail(run)


def test_dry_run_leaves_stopped_container_stopped(box):
    before_state, before_identity = host_state(box), identity(box)
    run = deploy(box, dry=True, vllm_ipc_mode="private")
    assert run.returncode == 0, tail(run)
    assert "Start or recreate the vllm container" in run.output
    assert inspect(box)["State"]["Status"] == "exited"
    assert identity(box) == before_identity
    assert host_state(box) == before_state


# --- Containers that never become healthy ---------------------------------------------


def test_bad_flag_fails_fast_with_container_log(box):
    started = time.monotonic()
    run = deploy(box, vllm_extra_args='["--no-such-flag"]')
    elapsed = time.monotonic() - started
    assert run.returncode != 0
    assert elapsed < FAST_FAILURE_LIMIT_S, tail(run)
    stopped = re.search(rf"container {CONTAINER} is (exited|restarting) after (\d+) s", run.output)
    assert stopped, tail(run)
    assert int(stopped.group(2)) < FAST_FAILURE_LIMIT_S / 2
    assert "unrecognized arguments: --no-such-flag" in run.output, tail(run)
    assert "smoke tests passed" not in run.output


def test_never_healthy_container_fails_at_timeout(box):
    tag = standin_host.build_never_healthy_image(box)
    started = time.monotonic()
    run = deploy(box, vllm_image=tag,
                 vllm_health_wait_timeout=str(NEVER_HEALTHY_TIMEOUT_S),
                 vllm_healthcheck_interval="2", vllm_healthcheck_timeout="1")
    elapsed = time.monotonic() - started
    assert run.returncode != 0
    assert elapsed >= NEVER_HEALTHY_TIMEOUT_S
    assert f"did not become healthy within {NEVER_HEALTHY_TIMEOUT_S} s" in run.output, tail(run)
    state = re.search(r"\(container running, health (starting|unhealthy), /health HTTP 503\)",
                      run.output)
    assert state, tail(run)
    assert "STANDIN_NEVER_HEALTHY=1" in run.output, tail(run)
    assert "smoke tests passed" not in run.output


def test_no_other_compose_service_was_started(box):
    services = box.run(["docker", "compose", "-f", f"{CHECKOUT}/docker-compose.yml",
                        "config", "--services"]).stdout.split()
    assert len(services) > 1
    names = box.run(["docker", "ps", "--all", "--format", "{{.Names}}"]).stdout.split()
    assert names == [CONTAINER]
