"""Checks that the throwaway hosts behave like the target box where the deploy looks.

These tests start real hosts (debootstrap root filesystem, network namespace,
sshd) and reach them over SSH with pyinfra and testinfra, so they need root.
"""

from __future__ import annotations

import filecmp
import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import hosts as hosts_module
from tests.harness.hosts_fake import GiB, FakeModel

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
FIXTURE = REPO_ROOT / "tests/fixtures/bestbox-tree"
NETLINK_KOBJECT_UEVENT = 15


def _env() -> dict:
    return dict(os.environ, PATH=f"{VENV_BIN}:{os.environ['PATH']}")


def _netns_names() -> list[str]:
    output = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in output.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def box(throwaway_hosts):
    """One default host shared by the read-only checks in this module."""
    host = throwaway_hosts("harness-box", model=True)
    yield host
    throwaway_hosts.stop(host)


# --- SSH access -----------------------------------------------------------------


def test_pyinfra_cli_with_key(box):
    result = subprocess.run(
        [str(VENV_BIN / "pyinfra"), "--yes", *box.pyinfra_args(), box.address, "exec", "--", "id"],
        capture_output=True, text=True, env=_env(), timeout=120,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "uid=0(root)" in result.stdout + result.stderr


def test_pyinfra_inventory_with_ssh_config(box, tmp_path):
    inventory = hosts_module.write_pyinfra_inventory(tmp_path / "inventory.py", [box])
    text = inventory.read_text()
    assert box.address in text
    # The ssh config file (read by paramiko) supplies user and key here.
    config_inventory = tmp_path / "inventory_config.py"
    data = box.pyinfra_data(use_ssh_config=True)
    config_inventory.write_text(f"boxes = [({box.address!r}, {data!r})]\n")
    result = subprocess.run(
        [str(VENV_BIN / "pyinfra"), "--yes", str(config_inventory), "exec", "--", "hostname"],
        capture_output=True, text=True, env=_env(), timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "harness-box" in result.stdout + result.stderr


def test_testinfra_ssh_backend(box, tmp_path):
    test_file = tmp_path / "test_remote.py"
    test_file.write_text(
        "def test_remote(host):\n"
        "    assert host.user().name == 'root'\n"
        "    assert host.group('render').exists\n"
        "    assert host.file('/home/bestbox/BestBox/docker-compose.yml').user == 'bestbox'\n"
        "    assert host.run('test -c /dev/kfd').rc == 0\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         f"--hosts=ssh://{box.address}", f"--ssh-config={box.ssh_config}", str(test_file)],
        capture_output=True, text=True, env=_env(), timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_ssh_config_names_every_host(box):
    config = box.ssh_config.read_text()
    assert f"Host {box.address} {box.name}" in config
    for option in ("ControlMaster auto", "ControlPath", "ControlPersist", "StrictHostKeyChecking no",
                   "UserKnownHostsFile /dev/null"):
        assert option in config


def test_testinfra_python_api(box):
    remote = box.testinfra_host()
    assert remote.check_output("hostname") == "harness-box"


# --- Fake hardware ----------------------------------------------------------------


def test_kfd_topology_reports_gfx1151(box):
    nodes = box.run("grep -H gfx_target_version /sys/class/kfd/kfd/topology/nodes/*/properties").stdout
    assert "nodes/0/properties:gfx_target_version 0" in nodes
    assert "nodes/1/properties:gfx_target_version 110501" in nodes
    assert box.run("cat /sys/class/kfd/kfd/topology/nodes/1/name").stdout.strip() == "gfx1151"


def test_device_nodes_are_char_devices(box):
    for path in ("/dev/kfd", "/dev/dri/card1", "/dev/dri/renderD128"):
        mode = int(box.run(["stat", "-c", "%f", path]).stdout.strip(), 16)
        assert stat.S_ISCHR(mode), path
    owner = box.run(["stat", "-c", "%U:%g:%a", "/dev/kfd"]).stdout.strip()
    assert owner == f"root:{box.render_gid}:660"


def test_device_nodes_reach_no_device(box):
    # The majors are ones no driver registered here, so opening fails with ENXIO.
    result = box.run("head -c1 /dev/kfd", check=False)
    assert result.returncode != 0
    assert "No such device or address" in result.stderr


def test_drm_memory_and_amdgpu_module(box):
    device = "/sys/class/drm/card1/device"
    assert int(box.run(f"cat {device}/mem_info_vram_total").stdout) == 96 * GiB
    assert int(box.run(f"cat {device}/mem_info_gtt_total").stdout) == 16 * GiB
    assert box.run("test -d /sys/module/amdgpu", check=False).returncode == 0
    box.set_gpu_memory(vram_total=512 << 20)
    try:
        assert int(box.run(f"cat {device}/mem_info_vram_total").stdout) == 512 << 20
    finally:
        box.set_gpu_memory(vram_total=96 * GiB)


def test_bestbox_user_and_groups(box):
    groups = box.run("id -nG bestbox").stdout.split()
    assert "render" in groups
    assert "video" in groups
    assert box.run("getent passwd bestbox").stdout.split(":")[5] == "/home/bestbox"
    assert int(box.run("getent group render").stdout.split(":")[2]) == box.render_gid
    assert box.run("id -un", user="bestbox").stdout.strip() == "bestbox"


def test_fixture_tree_copied_unchanged(box):
    checkout = box.root / "home/bestbox/BestBox"
    for source in FIXTURE.rglob("*"):
        copy = checkout / source.relative_to(FIXTURE)
        assert copy.exists(), copy
        if source.is_file():
            assert filecmp.cmp(source, copy, shallow=False), copy
            assert stat.S_IMODE(copy.stat().st_mode) == stat.S_IMODE(source.stat().st_mode), copy
    owners = box.run("find /home/bestbox/BestBox ! -user bestbox | head -5").stdout
    assert owners == ""


def test_model_standin_sizes(box):
    model = FakeModel()
    listing = box.run(["sh", "-c", f"cd {box.model_dir} && stat -c '%n %s' *.safetensors"]).stdout
    sizes = {line.split()[0]: int(line.split()[1]) for line in listing.splitlines()}
    assert len(sizes) == 16
    assert sum(sizes.values()) == model.total_size
    index = json.loads(box.run(f"cat {box.model_dir}/model.safetensors.index.json").stdout)
    assert set(index["weight_map"].values()) == set(sizes)
    assert index["metadata"]["total_size"] == model.total_size


def test_host_cannot_change_machine_kernel(box):
    sysctl = box.run("echo 1 > /proc/sys/vm/drop_caches", check=False)
    assert "Read-only file system" in sysctl.stderr
    uevent = box.run("echo change > /sys/class/net/lo/uevent", check=False)
    assert "Read-only file system" in uevent.stderr


def test_host_routes_only_to_its_link(box):
    routes = box.run("ip -4 route").stdout.strip().splitlines()
    assert len(routes) == 1
    assert routes[0].startswith(str(hosts_module._slot_subnet(box.state.slot)))


# --- Options -------------------------------------------------------------------------


def test_render_gids_differ_between_hosts(throwaway_hosts):
    first = throwaway_hosts("gid-a", render_gid=104, fixture=None)
    second = throwaway_hosts("gid-b", render_gid=992, fixture=None)
    try:
        first_gid = int(first.run("getent group render").stdout.split(":")[2])
        second_gid = int(second.run("getent group render").stdout.split(":")[2])
        assert (first_gid, second_gid) == (104, 992)
        assert first.run("stat -c %g /dev/kfd").stdout.strip() == "104"
        assert second.run("stat -c %g /dev/dri/renderD128").stdout.strip() == "992"
    finally:
        throwaway_hosts.stop(first)
        throwaway_hosts.stop(second)


def test_default_render_gids_differ(throwaway_hosts):
    first = throwaway_hosts("default-gid-a", fixture=None)
    second = throwaway_hosts("default-gid-b", fixture=None)
    try:
        first_gid = first.run("getent group render").stdout.split(":")[2]
        second_gid = second.run("getent group render").stdout.split(":")[2]
        assert first_gid != second_gid
        assert {int(first_gid), int(second_gid)} <= set(hosts_module.RENDER_GID_CHOICES)
    finally:
        throwaway_hosts.stop(first)
        throwaway_hosts.stop(second)


@pytest.mark.host_options(
    gfx_target_version=110000, render_node=False, amdgpu_loaded=False, vram_total=512 << 20,
    meminfo_total=128 * GiB, kernel_cmdline="BOOT_IMAGE=/vmlinuz ttm.pages_limit=30720000", fixture=None,
)
def test_host_options_change_facts(throwaway_host):
    host = throwaway_host
    assert "gfx_target_version 110000" in host.run("cat /sys/class/kfd/kfd/topology/nodes/1/properties").stdout
    assert host.run("test -e /dev/dri/renderD128", check=False).returncode == 1
    assert host.run("test -e /sys/module/amdgpu", check=False).returncode == 1
    assert int(host.run("cat /sys/class/drm/card1/device/mem_info_vram_total").stdout) == 512 << 20
    assert "MemTotal:       134217728 kB" in host.run("cat /proc/meminfo").stdout
    assert "ttm.pages_limit=30720000" in host.run("cat /proc/cmdline").stdout
    assert host.run("test -d /home/bestbox/BestBox", check=False).returncode == 1


@pytest.mark.host_options(model=FakeModel(total_size=1000 * 16, missing_shards=(3,)), fixture=None)
def test_model_shard_removal(throwaway_host):
    host = throwaway_host
    names = host.run(f"ls {host.model_dir}").stdout.split()
    assert "model-00003-of-00016.safetensors" not in names
    assert "model-00004-of-00016.safetensors" in names
    host.remove_model_shard(4)
    assert host.run(f"test -e {host.model_dir}/model-00004-of-00016.safetensors", check=False).returncode == 1


# --- Teardown ----------------------------------------------------------------------------


def test_teardown_removes_everything(throwaway_hosts):
    host = throwaway_hosts("teardown", fixture=None, with_udevd=True)
    state = host.state
    assert state.netns in _netns_names()
    assert Path(f"/sys/class/net/{state.veth_host}").exists()
    assert hosts_module._pid_alive(state.init_pid, state.init_start)

    throwaway_hosts.stop(host)

    assert state.netns not in _netns_names()
    assert not Path(f"/sys/class/net/{state.veth_host}").exists()
    assert not Path(state.dir).exists()
    assert not hosts_module._pid_alive(state.init_pid, state.init_start)
    assert not hosts_module._pid_alive(state.unshare_pid, state.unshare_start)
    assert not hosts_module._pid_alive(state.udevd_pid, state.udevd_start)
    assert f"Host {state.address} " not in host.ssh_config.read_text()
    host.stop()  # a second stop is a no-op


def test_teardown_after_failed_test(throwaway_hosts):
    # A test body that raises still leaves no namespace behind.
    netns = None
    with pytest.raises(AssertionError):
        with throwaway_hosts("failing", fixture=None) as host:
            netns = host.netns
            assert host.run("false", check=False).returncode == 0
    assert netns not in _netns_names()


def test_reaper_removes_host_of_dead_process(throwaway_hosts):
    host = throwaway_hosts("orphan", fixture=None)
    exited = subprocess.Popen(["true"])
    exited.wait()
    host.state.owner_pid = exited.pid
    host._save_state()

    reaped = hosts_module.reap_stale_hosts()

    assert "orphan" in reaped
    assert host.state.netns not in _netns_names()
    assert not Path(host.state.dir).exists()
    throwaway_hosts.stop(host)


# --- udevd and Docker inside the host ---------------------------------------------------


@pytest.mark.host_options(with_udevd=True, fixture=None)
def test_udevd_reload_and_verify(throwaway_host, tmp_path):
    host = throwaway_host
    assert host.run("udevadm control --reload", check=False).returncode == 0
    if host.recipe.suite == "bookworm":
        pytest.skip("udevadm verify needs systemd 253 or later; bookworm has 252")
    good = 'SUBSYSTEM=="kfd", GROUP="render", MODE="0660"\n'
    bad = 'SUBSYSTEM=="kfd", GROUP="render", MODE=0660 FOO\n'
    host.run("cat > /tmp/good.rules", input=good)
    host.run("cat > /tmp/bad.rules", input=bad)
    assert host.run("udevadm verify /tmp/good.rules", check=False).returncode == 0
    assert host.run("udevadm verify /tmp/bad.rules", check=False).returncode == 1


def _read_change_events(sock: socket.socket, seconds: float) -> list[bytes]:
    events = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            message = sock.recv(65536)
        except socket.timeout:
            break
        if message.startswith(b"change@"):
            events.append(message.split(b"\0", 1)[0])
    return events


@pytest.mark.host_options(with_udevd=True, fixture=None)
def test_udev_trigger_reaches_no_real_device(throwaway_host):
    host = throwaway_host
    dev_before = sorted(os.listdir("/dev"))
    # Kernel uevents of this machine's network namespace (netlink group 1).
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT) as sock:
        sock.bind((0, 1))
        # Control: a change event on the harness's own veth end shows up.
        Path(f"/sys/class/net/{host.state.veth_host}/uevent").write_text("change\n")
        assert _read_change_events(sock, 2.0), "the uevent monitor saw no event at all"

        trigger = host.run("udevadm trigger --action=change --subsystem-match=net "
                           "--subsystem-match=block --subsystem-match=drm", check=False)
        events = _read_change_events(sock, 2.0)
    assert events == []
    assert "Read-only file system" in trigger.stderr or trigger.returncode == 0
    assert sorted(os.listdir("/dev")) == dev_before


@pytest.mark.host_options(with_docker=True, fixture=None, model=FakeModel(total_size=16 << 20))
def test_docker_compose_inside_host(throwaway_host):
    host = throwaway_host
    host.import_image("bestbox/standin:test")
    compose = f"""
services:
  web:
    image: bestbox/standin:test
    command: [ "python3", "-m", "http.server", "8000" ]
    ports:
      - "127.0.0.1:8001:8000"
    devices:
      - /dev/kfd
      - /dev/dri
    group_add:
      - "{host.render_gid}"
    ipc: host
    volumes:
      - /home/bestbox/.cache/modelscope:/root/.cache/modelscope:ro
    networks: [ bestbox-llm ]
    healthcheck:
      test: [ "CMD", "curl", "-sf", "http://localhost:8000/" ]
      interval: 2s
      timeout: 2s
      retries: 15
networks:
  bestbox-llm:
    name: bestbox-llm
"""
    host.run("mkdir -p /srv/app && cat > /srv/app/docker-compose.yml", input=compose)
    assert host.run("docker compose version").stdout.startswith("Docker Compose version v2")
    host.run("cd /srv/app && docker compose up -d --wait", timeout=180)
    assert host.run("curl -sf -o /dev/null -w '%{http_code}' http://127.0.0.1:8001/").stdout == "200"
    inside = host.run(
        "docker exec app-web-1 sh -c 'id -G; stat -c %t:%T /dev/kfd; ls /dev/dri | tr \"\\n\" \" \"; echo; "
        "ls /root/.cache/modelscope/hub/models/Qwen/Qwen3-30B-A3B-Instruct-2507 | wc -l'"
    ).stdout.split("\n")
    assert str(host.render_gid) in inside[0].split()
    major, minor = host.devices["/dev/kfd"]
    assert inside[1] == f"{major:x}:{minor:x}"
    assert "renderD128" in inside[2]
    assert int(inside[3]) > 16
    # `docker exec` must land in the container, never in this machine's root.
    assert host.run("docker exec app-web-1 test -e /var/tmp/bbt", check=False).returncode == 1


# --- Command line ---------------------------------------------------------------------------


def test_cli_up_list_down():
    command = [sys.executable, "-m", "tests.harness.hosts"]
    up = subprocess.run([*command, "up", "--count", "1", "--prefix", "clitest", "--json"],
                        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert up.returncode == 0, up.stderr
    started = json.loads(up.stdout)
    name, address, ssh_config = started[0]["name"], started[0]["address"], started[0]["ssh_config"]
    try:
        ssh = subprocess.run(["ssh", "-F", ssh_config, address, "hostname"], capture_output=True, text=True,
                             timeout=60)
        assert ssh.stdout.strip() == name
        listing = subprocess.run([*command, "list", "--json"], capture_output=True, text=True, cwd=REPO_ROOT)
        assert name in [item["name"] for item in json.loads(listing.stdout)]
    finally:
        down = subprocess.run([*command, "down", name], capture_output=True, text=True, cwd=REPO_ROOT,
                              timeout=120)
    assert down.returncode == 0, down.stderr
    listing = subprocess.run([*command, "list", "--json"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert name not in [item["name"] for item in json.loads(listing.stdout)]
