"""The preflight checks end to end: a host that is not ready stops the deploy unchanged.

Each test breaks one thing on its own throwaway host and runs the real
deploy over SSH. It then checks that pyinfra exits non-zero, that the host's
report names the check and the value it found, and that `host_state()` is
the same before and after the run.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.deploying import NO_SERVICE, DeployRun, host_state, run_pyinfra
from tests.harness.hosts_fake import QWEN3_30B_A3B_CONFIG, FakeModel, GiB

# Options of a host that passes every check. Each test changes one of them.
READY_HOST = {"with_docker": True, "with_udevd": True, "model": True, "meminfo_total": 128 * GiB}

# The memory test sets these vLLM values, so its expected figures do not
# depend on the defaults in group_data/all.py.
MAX_MODEL_LEN = 2048
MAX_NUM_SEQS = 8
GPU_MEMORY_UTILIZATION = 0.9

COMPOSE_PLUGIN_PATHS = ("/usr/libexec/docker/cli-plugins/docker-compose",
                        "/usr/local/lib/docker/cli-plugins/docker-compose")

# A fake docker-compose v1, there only to show that the compose check reports
# the v1 version it finds. Like real v1, it prints the bare version for `--short`.
COMPOSE_V1_STANDIN = """#!/bin/sh
if [ "$1" = version ] && [ "$2" = --short ]; then echo 1.29.2; exit 0; fi
if [ "$1" = version ]; then echo "docker-compose version 1.29.2, build 5becea4c"; exit 0; fi
echo "docker-compose 1.29.2 stand-in: only the version command works" >&2
exit 1
"""

# Rootless Docker cannot run in these hosts, so this wrapper fakes a rootless
# daemon. It adds the "name=rootless" security option that a rootless engine
# reports to the real `docker info` output, and passes every other command
# to the real client.
ROOTLESS_DOCKER_WRAPPER = """#!/bin/sh
if [ "$1" = info ] && [ "$2" = --format ]; then
  case "$3" in
    *SecurityOptions*)
      /usr/bin/docker "$@" | sed 's/"name=seccomp,profile=builtin"/&,"name=rootless"/'
      exit 0 ;;
  esac
fi
exec /usr/bin/docker "$@"
"""

PORT = 8001
LLAMA_SERVER_PIDS = ("for p in /proc/[0-9]*; do "
                     '[ "$(cat $p/comm 2>/dev/null)" = llama-server ] && echo ${p#/proc/}; '
                     "done; true")
PORT_OPEN = f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {PORT}), 1)\""


def ready_host(name: str, **changes):
    """Return a host_options marker for a host called `name` with READY_HOST plus `changes`."""
    return pytest.mark.host_options(name=name, **{**READY_HOST, **changes})


def report(run: DeployRun, host) -> list[str]:
    """Return the problem lines that the deploy listed for `host`, without the indent."""
    # The first report shares its line with pyinfra's "--> pyinfra error in ..." prefix.
    header = f"Host {host.address} is not ready; nothing was changed:"
    lines = run.output.splitlines()
    starts = [number for number, line in enumerate(lines) if line.endswith(header)]
    assert len(starts) == 1, f"expected one report for {host.address}:\n{run.output[-4000:]}"
    problems = []
    for line in lines[starts[0] + 1:]:
        if not line.startswith("  - "):
            break
        problems.append(line[4:])
    return problems


def errors_of(run: DeployRun, host, check_id: str) -> str:
    """Return the error lines of check `check_id` in the report for `host`, joined."""
    found = [line for line in report(run, host) if line.startswith(f"[{check_id}] error: ")]
    assert found, f"no [{check_id}] error for {host.address}:\n{run.output[-4000:]}"
    return "\n".join(found)


def failing_checks(run: DeployRun, host) -> set[str]:
    """Return the ids of the checks that the report for `host` lists, e.g. {"gpu"}."""
    return {line[1:line.index("]")] for line in report(run, host)}


def llama_server_pids(host) -> list[int]:
    return [int(pid) for pid in host.run(LLAMA_SERVER_PIDS).stdout.split()]


def start_llama_server_standin(host) -> int:
    """Start a process called llama-server that listens on PORT in the host, and return its pid.

    A copy of python3 under that name gets the comm `llama-server`, which is
    what the port check and the stop task look for.
    """
    host.run("install -m 0755 /usr/bin/python3 /usr/local/bin/llama-server")
    host.run(f"cd /; setsid nohup llama-server -m http.server {PORT} --bind 127.0.0.1 "
             "> /dev/null 2>&1 < /dev/null &")
    deadline = time.monotonic() + 15
    while host.run(PORT_OPEN, check=False).returncode != 0:
        assert time.monotonic() < deadline, f"the llama-server stand-in is not listening on {PORT}"
        time.sleep(0.1)
    pids = llama_server_pids(host)
    assert len(pids) == 1, pids
    return pids[0]


def gtt_limit_bytes(host) -> int | None:
    """Return the ttm.pages_limit of the host in bytes, or None when the ttm module is absent.

    The host's /sys/module shows this machine's real modules apart from
    amdgpu, so a machine that loads ttm for its own graphics caps the GTT.
    """
    result = host.run("cat /sys/module/ttm/parameters/pages_limit && getconf PAGE_SIZE",
                      check=False)
    if result.returncode != 0:
        return None
    pages, page_size = (int(value) for value in result.stdout.split())
    return pages * page_size


@pytest.mark.parametrize("check_id, expected", [
    pytest.param("gpu", ["the KFD topology lists gfx1100, not gfx1151"],
                 marks=ready_host("pf-gfx", gfx_target_version=110000), id="wrong-gfx"),
    pytest.param("devices", ["no /dev/dri/renderD* node exists."],
                 marks=ready_host("pf-render", render_node=False), id="no-render-node"),
    pytest.param("model", ["1 of 16 shards listed in the index are missing",
                           "model-00005-of-00016.safetensors"],
                 marks=ready_host("pf-shard", model=FakeModel(missing_shards=(5,))),
                 id="missing-shard"),
])
def test_broken_host_stops_deploy(throwaway_host, check_id, expected):
    host = throwaway_host
    before = host_state(host)

    run = run_pyinfra([host])

    assert run.returncode != 0, run.output[-4000:]
    assert failing_checks(run, host) == {check_id}
    message = errors_of(run, host, check_id)
    for fragment in expected:
        assert fragment in message
    assert host_state(host) == before


@ready_host("pf-memory", vram_total=8 * GiB, gtt_total=8 * GiB)
def test_too_little_memory_stops_deploy(throwaway_host):
    host = throwaway_host
    gtt = 8 * GiB
    limit = gtt_limit_bytes(host)
    if limit is not None:
        gtt = min(gtt, limit)
    gpu_memory = 8 * GiB + gtt
    # Per token, the KV cache stores keys and values for every layer and KV head,
    # 2 bytes (bfloat16) per value.
    config = QWEN3_30B_A3B_CONFIG
    kv_per_token = (2 * config["num_hidden_layers"] * config["num_key_value_heads"]
                    * config["head_dim"] * 2)
    needed = FakeModel().total_size + kv_per_token * MAX_MODEL_LEN * MAX_NUM_SEQS
    before = host_state(host)

    run = run_pyinfra([host], data={"vllm_max_model_len": MAX_MODEL_LEN,
                                    "vllm_max_num_seqs": MAX_NUM_SEQS,
                                    "vllm_gpu_memory_utilization": GPU_MEMORY_UTILIZATION})

    assert run.returncode != 0, run.output[-4000:]
    assert failing_checks(run, host) == {"memory"}
    message = errors_of(run, host, "memory")
    assert f"the model needs {needed / GiB:.1f} GiB" in message
    assert f"vLLM may use only {gpu_memory * GPU_MEMORY_UTILIZATION / GiB:.1f} GiB" in message
    assert f"{gpu_memory / GiB:.1f} GiB of VRAM plus GTT x {GPU_MEMORY_UTILIZATION}" in message
    assert "ttm.pages_limit" in message
    assert "vllm_gpu_memory_utilization" in message
    assert "vllm_max_model_len" in message
    assert host_state(host) == before


@ready_host("pf-compose")
def test_compose_v1_only_stops_deploy(throwaway_host):
    host = throwaway_host
    host.run(["rm", "-f", *COMPOSE_PLUGIN_PATHS])
    host.run("cat > /usr/local/bin/docker-compose && chmod 0755 /usr/local/bin/docker-compose",
             input=COMPOSE_V1_STANDIN)
    assert host.run("docker compose version", check=False).returncode != 0
    before = host_state(host)

    run = run_pyinfra([host])

    assert run.returncode != 0, run.output[-4000:]
    assert failing_checks(run, host) == {"compose"}
    message = errors_of(run, host, "compose")
    assert "docker-compose v1 1.29.2 is installed" in message
    assert "the Compose v2 plugin is missing" in message
    assert host_state(host) == before


@ready_host("pf-rootless")
def test_rootless_daemon_stops_deploy(throwaway_host):
    host = throwaway_host
    host.run("cat > /usr/local/bin/docker && chmod 0755 /usr/local/bin/docker",
             input=ROOTLESS_DOCKER_WRAPPER)
    assert "rootless" in host.run("docker info --format '{{json .SecurityOptions}}'").stdout
    before = host_state(host)

    run = run_pyinfra([host])

    assert run.returncode != 0, run.output[-4000:]
    assert failing_checks(run, host) == {"rootless"}
    message = errors_of(run, host, "rootless")
    assert "the Docker daemon runs rootless" in message
    assert "cannot pass /dev/kfd through" in message
    assert host_state(host) == before


@ready_host("pf-port")
def test_port_held_by_llama_server(throwaway_host):
    host = throwaway_host
    pid = start_llama_server_standin(host)
    before = host_state(host)

    run = run_pyinfra([host])

    assert run.returncode != 0, run.output[-4000:]
    assert failing_checks(run, host) == {"port"}
    message = errors_of(run, host, "port")
    assert f"port {PORT} is held by llama-server (pid {pid}:" in message
    assert host_state(host) == before
    assert llama_server_pids(host) == [pid]

    # With bestbox_stop_llamacpp the check passes and tasks/service.py stops the process.
    run = run_pyinfra([host], data={**NO_SERVICE, "bestbox_stop_llamacpp": "true"})

    assert run.returncode == 0, run.output[-4000:]
    assert "[port] error" not in run.output
    assert f"Stop llama-server (pid {pid}) on port {PORT}" in run.output
    assert llama_server_pids(host) == []
    assert host.run(PORT_OPEN, check=False).returncode != 0


@ready_host("pf-dry", gfx_target_version=110000)
def test_dry_run_reports_same_problems(throwaway_host):
    host = throwaway_host
    before = host_state(host)

    applied = run_pyinfra([host])
    dry = run_pyinfra([host], dry=True, diff=True)

    assert applied.returncode != 0, applied.output[-4000:]
    assert dry.returncode != 0, dry.output[-4000:]
    assert "gfx1100" in errors_of(dry, host, "gpu")
    assert report(dry, host) == report(applied, host)
    assert "+++ b/" not in dry.output
    assert host_state(host) == before


@ready_host("pf-skip", gfx_target_version=110000)
def test_skip_checks_warns_and_passes(throwaway_host):
    host = throwaway_host

    run = run_pyinfra([host], data={**NO_SERVICE, "skip_checks": "gpu"})

    assert run.returncode == 0, run.output[-4000:]
    assert "[gpu] warning: check skipped by skip_checks." in run.output
    assert "[gpu] error" not in run.output
    assert "gfx1100" not in run.output


@ready_host("pf-config", gfx_target_version=110000)
def test_invalid_configuration_reads_no_host(throwaway_host):
    host = throwaway_host
    before = host_state(host)

    run = run_pyinfra([host], data={"vllm_port": 70000, "vllm_max_model_lenght": 4096})

    assert run.returncode != 0, run.output[-4000:]
    assert f"Invalid configuration for host {host.address}:" in run.output
    assert "vllm_port=70000: expected a TCP port from 1 to 65535" in run.output
    assert "vllm_max_model_lenght: unknown configuration key." in run.output
    assert "Did you mean vllm_max_model_len?" in run.output
    # This host fails the gpu check, so the absence of that check's report
    # shows that the deploy stopped before it read the host.
    assert "[gpu]" not in run.output
    assert "is not ready" not in run.output
    assert host_state(host) == before


def test_one_broken_host_stops_all(throwaway_hosts):
    broken = throwaway_hosts("pf-multi-broken", **READY_HOST, render_node=False)
    try:
        ready = throwaway_hosts("pf-multi-ready", **READY_HOST)
        try:
            before = [host_state(broken), host_state(ready)]

            run = run_pyinfra([broken, ready])

            assert run.returncode != 0, run.output[-4000:]
            assert failing_checks(run, broken) == {"devices"}
            assert "no /dev/dri/renderD* node exists." in errors_of(run, broken, "devices")
            assert f"Host {ready.address} is not ready" not in run.output
            assert run.output.count(" is not ready; nothing was changed:") == 1
            assert [host_state(broken), host_state(ready)] == before
        finally:
            throwaway_hosts.stop(ready)
    finally:
        throwaway_hosts.stop(broken)
