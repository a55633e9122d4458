"""Throwaway Debian hosts that look like an AMD Strix Halo box, reached over real SSH.

Each host is a copy of a cached Debian root filesystem (see hosts_rootfs.py)
with its own network namespace, linked to this machine by a veth pair with a
private /30. Its sshd runs chrooted into the copy under
`unshare --mount --pid --uts --fork --kill-child --propagation private`, so
pyinfra and testinfra reach it over SSH while this machine's /etc stays
untouched. Inside that private mount namespace the host gets a fake KFD
topology and DRM tree, /dev/kfd and /dev/dri nodes, a `render` group with a
per-host GID, the user `bestbox` and the BestBox checkout fixture. On request
it also runs systemd-udevd and a Docker engine in the same namespaces.

Python use:

    from tests.harness.hosts import start_host
    with start_host("box1", render_gid=992) as host:
        host.run("cat /sys/class/kfd/kfd/topology/nodes/1/properties")
        subprocess.run(["pyinfra", "--yes", *host.pyinfra_args(), host.address, "exec", "--", "id"])

Command line (hosts stay up until `down`):

    python -m tests.harness.hosts up --count 2 [--docker] [--json]
    python -m tests.harness.hosts list
    python -m tests.harness.hosts down [--all | NAME ...]

Everything needs root. Teardown kills the host's processes by PID, deletes
its network namespace and veth pair and removes its root filesystem copy.
It runs from `stop()`, from an atexit hook and from `down`, and is idempotent.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import ipaddress
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Sequence

from tests.harness import hosts_fake as fake
from tests.harness import hosts_rootfs as rootfs

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_TREE = REPO_ROOT / "tests/fixtures/bestbox-tree"
# Short on purpose: ControlPath sockets live below it and a Unix socket path
# must stay under 108 bytes.
DEFAULT_WORKDIR = "/var/tmp/bbt"
# Test hosts take /30 subnets from this range. BESTBOX_TEST_NET overrides it.
DEFAULT_NETWORK = "10.213.0.0/16"
# GIDs that the render group has had on real boxes. Hosts started without an
# explicit render_gid take them in turn, so two hosts of a session differ.
RENDER_GID_CHOICES = (992, 109, 110, 104)
BESTBOX_USER = "bestbox"
BESTBOX_CHECKOUT = "/home/bestbox/BestBox"

SSHD_START_TIMEOUT_S = 20.0
DOCKERD_START_TIMEOUT_S = 60.0


class HostError(RuntimeError):
    """Raised when a throwaway host cannot be started, reached or stopped."""


class HostCommandError(subprocess.CalledProcessError):
    """Raised by ThrowawayHost.run(check=True); the message includes the output."""

    def __str__(self) -> str:
        text = super().__str__()
        for label, stream in (("stdout", self.output), ("stderr", self.stderr)):
            if stream and stream.strip():
                text += f"\n{label}:\n{stream.strip()[-4000:]}"
        return text


def workdir() -> Path:
    return Path(os.environ.get("BESTBOX_TEST_WORKDIR", DEFAULT_WORKDIR))


def _run(argv: Sequence[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), text=True, capture_output=True, **kwargs)
    if check and result.returncode != 0:
        raise HostCommandError(result.returncode, list(argv), result.stdout, result.stderr)
    return result


def _process_start_time(pid: int) -> int | None:
    """Return the start time of `pid` in clock ticks, or None when it is gone.

    Stored next to each PID, it keeps teardown from killing a process that
    reused the PID after the original one exited.
    """
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return int(fields[19])


def _pid_alive(pid: int | None, start_time: int | None) -> bool:
    if not pid:
        return False
    current = _process_start_time(pid)
    return current is not None and (start_time is None or current == start_time)


def _kill(pid: int | None, start_time: int | None, sig: int) -> None:
    if _pid_alive(pid, start_time):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(pid: int | None, start_time: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid, start_time):
        if time.monotonic() > deadline:
            return False
        # Reap it when this process is its parent, or it stays a zombie.
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    return True


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- SSH session: key pair and ssh config ------------------------------------


class HostSession:
    """A key pair and an ssh config file shared by the hosts of one test run.

    The ssh config has one `Host ADDRESS NAME` block per live host, with
    ControlMaster so that testinfra's ssh backend reuses one connection, and
    with host key checking off because every host is new.
    """

    def __init__(self, name: str | None = None, directory: Path | None = None):
        self.name = name or f"s{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.dir = directory or workdir() / "sessions" / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        self.ssh_key = self.dir / "id_ed25519"
        self.ssh_config = self.dir / "ssh_config"
        self.control_dir = self.dir / "cm"
        self.control_dir.mkdir(exist_ok=True)
        if not self.ssh_key.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"bestbox-test-{self.name}",
                  "-f", str(self.ssh_key)])
        self.hosts: dict[str, ThrowawayHost] = {}
        self.hosts_started = 0
        self.write_ssh_config()

    def next_render_gid(self) -> int:
        """Return the default render GID for the next host, so consecutive hosts differ."""
        gid = RENDER_GID_CHOICES[self.hosts_started % len(RENDER_GID_CHOICES)]
        self.hosts_started += 1
        return gid

    @property
    def public_key(self) -> str:
        return (self.ssh_key.parent / (self.ssh_key.name + ".pub")).read_text()

    def ssh_config_block(self, name: str, address: str) -> str:
        return (
            f"Host {address} {name}\n"
            f"    HostName {address}\n"
            "    User root\n"
            "    Port 22\n"
            f"    IdentityFile {self.ssh_key}\n"
            "    IdentitiesOnly yes\n"
            "    BatchMode yes\n"
            "    StrictHostKeyChecking no\n"
            "    UserKnownHostsFile /dev/null\n"
            "    LogLevel ERROR\n"
            "    ConnectTimeout 10\n"
            "    ControlMaster auto\n"
            f"    ControlPath {self.control_dir}/%C\n"
            "    ControlPersist 120s\n"
            "    ServerAliveInterval 15\n"
        )

    def write_ssh_config(self) -> None:
        """Rewrite the ssh config file for the live hosts, atomically."""
        blocks = [self.ssh_config_block(host.name, host.address) for host in self.hosts.values()]
        text = "# Throwaway test hosts, written by tests/harness/hosts.py.\n\n" + "\n".join(blocks)
        partial = self.ssh_config.with_suffix(".partial")
        partial.write_text(text)
        partial.chmod(0o600)
        partial.replace(self.ssh_config)

    def close(self) -> None:
        """Stop the session's hosts and delete its key pair, ssh config and control sockets."""
        for host in list(self.hosts.values()):
            host.stop()
        for socket_path in self.control_dir.glob("*"):
            _run(["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "unused"], check=False, timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)


def _reap_stale_sessions() -> None:
    """Delete session directories whose process (the number after "s" in the name) has exited."""
    for directory in (workdir() / "sessions").glob("s*-*"):
        pid_text = directory.name[1:].split("-", 1)[0]
        if pid_text.isdigit() and not _pid_alive(int(pid_text), None):
            shutil.rmtree(directory, ignore_errors=True)


_default_session: HostSession | None = None


def default_session() -> HostSession:
    global _default_session
    if _default_session is None:
        _reap_stale_sessions()
        _default_session = HostSession()
    return _default_session


# --- Network slots --------------------------------------------------------------


def _network() -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(os.environ.get("BESTBOX_TEST_NET", DEFAULT_NETWORK))


def _slot_subnet(slot: int) -> ipaddress.IPv4Network:
    network = _network()
    return ipaddress.IPv4Network((int(network.network_address) + 4 * slot, 30))


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    used = []
    for line in _run(["ip", "-4", "-o", "addr", "show"]).stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            used.append(ipaddress.IPv4Interface(parts[parts.index("inet") + 1]).network)
    for line in _run(["ip", "-4", "route", "show", "table", "all"], check=False).stdout.splitlines():
        target = line.split()[0] if line.split() else ""
        if target and target[0].isdigit():
            with contextlib.suppress(ValueError):
                used.append(ipaddress.IPv4Network(target, strict=False))
    return [net for net in used if net.prefixlen > 0]


def _reserve_slot(state_root: Path) -> int:
    """Reserve a free /30 for a new host and return its slot number.

    A slot is free when no state directory claims it, no netns or veth of
    that name exists and no address or route on this machine overlaps it.
    """
    with _locked(state_root / "slots.lock"):
        claimed = set()
        for state_file in state_root.glob("*/state.json"):
            with contextlib.suppress(ValueError, OSError, KeyError):
                claimed.add(json.loads(state_file.read_text())["slot"])
        netns = set(_run(["ip", "netns", "list"], check=False).stdout.split())
        in_use = _networks_in_use()
        slots = _network().num_addresses // 4
        for slot in range(1, slots):
            if (
                slot in claimed
                or (state_root / f"slot-{slot}").exists()
                or f"bbt{slot}" in netns
                or Path(f"/sys/class/net/bbt{slot}h").exists()
            ):
                continue
            subnet = _slot_subnet(slot)
            if any(subnet.overlaps(net) for net in in_use):
                continue
            reservation = state_root / f"slot-{slot}"
            reservation.mkdir(parents=True, exist_ok=False)
            (reservation / "state.json").write_text(json.dumps({"slot": slot, "reserved_by": os.getpid()}))
            return slot
    raise HostError(f"no free /30 left in {_network()}; run `python -m tests.harness.hosts down --all`")


# --- The host -------------------------------------------------------------------


@dataclasses.dataclass
class HostState:
    """Everything teardown needs, stored as JSON in the host's directory."""

    name: str
    slot: int
    address: str
    gateway: str
    netns: str
    veth_host: str
    dir: str
    root: str
    session_dir: str
    owner_pid: int
    detached: bool = False
    unshare_pid: int | None = None
    unshare_start: int | None = None
    init_pid: int | None = None
    init_start: int | None = None
    dockerd_pid: int | None = None
    dockerd_start: int | None = None
    udevd_pid: int | None = None
    udevd_start: int | None = None
    cgroup_parent: str | None = None


class ThrowawayHost:
    """One throwaway host. Create it with start_host()."""

    def __init__(
        self,
        name: str,
        *,
        render_gid: int | None = None,
        video_gid: int = 44,
        gfx_target_version: int | Sequence[int] = 110501,
        render_node: bool = True,
        kfd_node: bool = True,
        amdgpu_loaded: bool = True,
        vram_total: int = 96 * fake.GiB,
        gtt_total: int = 16 * fake.GiB,
        with_docker: bool = False,
        with_udevd: bool = False,
        model: fake.FakeModel | bool | None = None,
        fixture: Path | None = FIXTURE_TREE,
        bestbox_groups: Sequence[str] = ("video", "render", "sudo"),
        meminfo_total: int | None = None,
        kernel_cmdline: str | None = None,
        suite: str | None = None,
        session: HostSession | None = None,
        detached: bool = False,
    ):
        versions = (gfx_target_version,) if isinstance(gfx_target_version, int) else tuple(gfx_target_version)
        self.name = name
        self.session = session or default_session()
        self.gpu = fake.GpuSpec(
            gfx_target_versions=versions,
            render_node=render_node,
            kfd_node=kfd_node,
            amdgpu_loaded=amdgpu_loaded,
            vram_total=vram_total,
            gtt_total=gtt_total,
        )
        self.requested_render_gid = render_gid
        self.video_gid = video_gid
        self.with_docker = with_docker
        self.with_udevd = with_udevd
        self.model = fake.FakeModel() if model is True else (model or None)
        self.fixture = fixture
        self.bestbox_groups = tuple(bestbox_groups)
        self.meminfo_total = meminfo_total
        self.kernel_cmdline = kernel_cmdline
        self.suite = suite
        self.detached = detached
        self.state: HostState | None = None
        self.recipe: rootfs.RootfsRecipe | None = None
        self.render_gid: int | None = None
        self.devices: dict[str, tuple[int, int]] = {}
        self._stopped = False

    # -- public attributes ---------------------------------------------------

    @property
    def address(self) -> str:
        return self._require_state().address

    @property
    def gateway(self) -> str:
        """This machine's address on the host's veth link, the only address the host can reach."""
        return self._require_state().gateway

    @property
    def root(self) -> Path:
        """The host's root filesystem, as a path on this machine."""
        return Path(self._require_state().root)

    @property
    def dir(self) -> Path:
        return Path(self._require_state().dir)

    @property
    def netns(self) -> str:
        return self._require_state().netns

    @property
    def ssh_key(self) -> Path:
        return self.session.ssh_key

    @property
    def ssh_config(self) -> Path:
        return self.session.ssh_config

    @property
    def fakesys(self) -> Path:
        """This machine's directory that is bind-mounted over the host's fake /sys parts."""
        return self.dir / "fakesys"

    @property
    def model_dir(self) -> str:
        """Absolute path of the model stand-in on the host."""
        model = self.model or fake.FakeModel()
        return f"/home/{BESTBOX_USER}/{model.subdir}"

    def _require_state(self) -> HostState:
        if self.state is None:
            raise HostError(f"host {self.name} is not started")
        return self.state

    def __repr__(self) -> str:
        address = self.state.address if self.state else "not started"
        return f"<ThrowawayHost {self.name} {address}>"

    def __enter__(self) -> "ThrowawayHost":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- commands --------------------------------------------------------------

    def ssh_command(self, command: str | Sequence[str], user: str | None = None) -> list[str]:
        """Return the ssh argv that runs `command` on the host (as root, or as `user`)."""
        text = command if isinstance(command, str) else shlex.join(command)
        if user and user != "root":
            text = f"runuser -u {shlex.quote(user)} -- /bin/sh -c {shlex.quote(text)}"
        return ["ssh", "-F", str(self.ssh_config), self.address, "--", text]

    def run(
        self,
        command: str | Sequence[str],
        *,
        check: bool = True,
        user: str | None = None,
        timeout: float | None = 300,
        input: str | None = None,
    ) -> subprocess.CompletedProcess:
        """Run `command` on the host over SSH and return the completed process (text output).

        A string goes to the remote shell as is. A list is quoted first.
        """
        argv = self.ssh_command(command, user=user)
        result = subprocess.run(argv, text=True, capture_output=True, timeout=timeout, input=input,
                                stdin=None if input is not None else subprocess.DEVNULL)
        if result.returncode == 255 and "ssh:" in result.stderr:
            raise HostError(f"ssh to {self.name} ({self.address}) failed: {result.stderr.strip()}")
        if check and result.returncode != 0:
            raise HostCommandError(result.returncode, argv, result.stdout, result.stderr)
        return result

    def nsenter_command(self, argv: Sequence[str]) -> list[str]:
        """Return argv that runs a command inside the host's namespaces and root, without SSH."""
        state = self._require_state()
        if not _pid_alive(state.init_pid, state.init_start):
            raise HostError(f"host {self.name} is not running")
        return ["nsenter", "-t", str(state.init_pid), "-m", "-u", "-n", "-p", "-r", "-w", "--", *argv]

    def exec(self, argv: Sequence[str], check: bool = True, timeout: float | None = 120) -> subprocess.CompletedProcess:
        return _run(self.nsenter_command(argv), check=check, timeout=timeout)

    # -- pyinfra and testinfra ---------------------------------------------------

    def pyinfra_data(self, use_ssh_config: bool = False) -> dict:
        """Return pyinfra host data that reaches this host with no known_hosts writes.

        With use_ssh_config the key and user come from the session's ssh config
        file, which pyinfra reads with paramiko.
        """
        data = {
            "ssh_known_hosts_file": "/dev/null",
            "ssh_strict_host_key_checking": "off",
            "ssh_allow_agent": False,
            "ssh_look_for_keys": False,
        }
        if use_ssh_config:
            data["ssh_config_file"] = str(self.ssh_config)
        else:
            data.update({"ssh_user": "root", "ssh_key": str(self.ssh_key), "ssh_port": 22})
        return data

    def pyinfra_args(self) -> list[str]:
        """Return pyinfra command-line options (before the inventory) that reach this host."""
        args = ["--ssh-user", "root", "--ssh-key", str(self.ssh_key), "--ssh-port", "22"]
        for key, value in self.pyinfra_data().items():
            if key.startswith("ssh_") and key not in ("ssh_user", "ssh_key", "ssh_port"):
                args += ["--data", f"{key}={value}"]
        return args

    def testinfra_host(self):
        """Return a testinfra Host that talks to this host over the ssh:// backend."""
        import testinfra

        return testinfra.get_host(f"ssh://{self.address}", ssh_config=str(self.ssh_config))

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> "ThrowawayHost":
        if self.state is not None:
            raise HostError(f"host {self.name} was already started")
        state_root = workdir() / "hosts"
        reap_stale_hosts()
        tarball, self.recipe = rootfs.ensure_rootfs_with_fallback(suite=self.suite, with_docker=self.with_docker)

        slot = _reserve_slot(state_root)
        subnet = _slot_subnet(slot)
        host_dir = state_root / f"slot-{slot}"
        gateway, address = (str(ip) for ip in list(subnet.hosts())[:2])
        self.state = HostState(
            name=self.name, slot=slot, address=address, gateway=gateway,
            netns=f"bbt{slot}", veth_host=f"bbt{slot}h", dir=str(host_dir), root=str(host_dir / "root"),
            session_dir=str(self.session.dir), owner_pid=os.getpid(), detached=self.detached,
        )
        self._save_state()
        _register(self)

        started = time.monotonic()
        try:
            self._materialize_rootfs(tarball)
            self._customize_rootfs()
            self._build_fakes()
            self._create_network()
            self._start_init()
            self.session.hosts[self.name] = self
            self.session.write_ssh_config()
            self._wait_for_ssh()
            if self.with_udevd:
                self.start_udevd()
            if self.with_docker:
                self.start_docker()
        except BaseException:
            self.stop()
            raise
        log.info("host %s up at %s in %.1f s", self.name, self.address, time.monotonic() - started)
        return self

    def _materialize_rootfs(self, tarball: Path) -> None:
        """Give the host its own writable root filesystem.

        The default is an overlay mount (on this machine's mount namespace, so
        `root` is browsable from here) over the unpacked cache, which takes
        milliseconds. BESTBOX_TEST_ROOTFS_MODE=copy unpacks the tarball into
        the host's directory instead, which takes a few seconds.
        """
        mode = os.environ.get("BESTBOX_TEST_ROOTFS_MODE", "overlay")
        if mode not in ("overlay", "copy"):
            raise HostError(f"invalid BESTBOX_TEST_ROOTFS_MODE {mode!r}: use overlay or copy")
        # Docker's overlay2 driver cannot sit on an overlay file system, so
        # the engine's data root is a plain directory bind-mounted in.
        (self.dir / "docker-data").mkdir(mode=0o710)
        if mode == "overlay":
            lower = rootfs.ensure_extracted(tarball)
            upper, work = self.dir / "upper", self.dir / "work"
            for directory in (upper, work, self.root):
                directory.mkdir()
            result = _run(["mount", "-t", "overlay", "overlay", "-o",
                           f"lowerdir={lower},upperdir={upper},workdir={work}", str(self.root)], check=False)
            if result.returncode == 0:
                return
            log.warning("overlay mount failed (%s); unpacking the root filesystem instead", result.stderr.strip())
            self.root.rmdir()
        rootfs.extract_rootfs(tarball, self.root)

    def _save_state(self) -> None:
        state = self._require_state()
        path = Path(state.dir) / "state.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(dataclasses.asdict(state), indent=2))
        partial.replace(path)

    def _chroot(self, *argv: str) -> None:
        _run(["chroot", str(self.root), *argv])

    def _group_gid(self, group: str) -> int | None:
        for line in (self.root / "etc/group").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == group:
                return int(fields[2])
        return None

    def _group_with_gid(self, gid: int) -> str | None:
        for line in (self.root / "etc/group").read_text().splitlines():
            fields = line.split(":")
            if len(fields) > 2 and int(fields[2]) == gid:
                return fields[0]
        return None

    def _set_group_gid(self, group: str, gid: int) -> None:
        """Give `group` the GID `gid`, moving any other group that has it to a free GID."""
        current = self._group_gid(group)
        if current == gid:
            return
        holder = self._group_with_gid(gid)
        if holder and holder != group:
            used = {int(line.split(":")[2]) for line in (self.root / "etc/group").read_text().splitlines()}
            free = next(candidate for candidate in range(900, 100, -1) if candidate not in used)
            self._chroot("groupmod", "-g", str(free), holder)
        if current is None:
            self._chroot("groupadd", "-g", str(gid), group)
        else:
            self._chroot("groupmod", "-g", str(gid), group)

    def _user_ids(self, user: str) -> tuple[int, int]:
        for line in (self.root / "etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == user:
                return int(fields[2]), int(fields[3])
        raise HostError(f"user {user} not found in {self.root}/etc/passwd")

    def _customize_rootfs(self) -> None:
        root = self.root
        state = self._require_state()
        render_gid = self.requested_render_gid
        if render_gid is None:
            render_gid = self.session.next_render_gid()
        self._set_group_gid("video", self.video_gid)
        self._set_group_gid("render", render_gid)
        self.render_gid = render_gid
        for group in self.bestbox_groups:
            self._chroot("usermod", "-a", "-G", group, BESTBOX_USER)

        (root / "etc/hostname").write_text(self.name + "\n")
        (root / "etc/hosts").write_text(
            f"127.0.0.1\tlocalhost\n127.0.1.1\t{self.name}\n{state.address}\t{self.name}\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
        )
        ssh_dir = root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(self.session.public_key)
        (ssh_dir / "authorized_keys").chmod(0o600)

        # The tarball's /run may hold files from the build. /dev/ptmx must
        # point into the host's own devpts instance.
        run_dir = root / "run"
        for entry in run_dir.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        (run_dir / "sshd").mkdir(mode=0o755)
        (run_dir / "lock").mkdir(mode=0o1777)
        ptmx = root / "dev/ptmx"
        if ptmx.exists() or ptmx.is_symlink():
            ptmx.unlink()
        ptmx.symlink_to("pts/ptmx")
        (root / ".oldroot").mkdir(exist_ok=True)

        uid, gid = self._user_ids(BESTBOX_USER)
        if self.fixture is not None:
            checkout = root / BESTBOX_CHECKOUT.lstrip("/")
            shutil.copytree(self.fixture, checkout, symlinks=True)
            _run(["chown", "-R", f"{uid}:{gid}", str(checkout)])
        if self.model is not None:
            self.set_model(self.model)

    def _build_fakes(self) -> None:
        uid_root = 0
        fakesys = self.fakesys
        if fakesys.exists():
            shutil.rmtree(fakesys)
        (fakesys / "class").mkdir(parents=True)
        (fakesys / "proc").mkdir()
        if self.gpu.kfd_node:
            fake.build_kfd_tree(fakesys / "class/kfd", self.gpu, cpu_cores=32)
        fake.build_drm_tree(fakesys / "class/drm", self.gpu)
        if self.gpu.amdgpu_loaded:
            fake.build_amdgpu_module(fakesys / "module/amdgpu")
        # Only an existing /proc file can be covered by a bind mount. A kernel
        # built without module support has no /proc/modules, and then lsmod
        # fails on the host too.
        if Path("/proc/modules").exists():
            (fakesys / "proc/modules").write_text(
                fake.fake_modules_file(Path("/proc/modules").read_text(), self.gpu.amdgpu_loaded))
        if self.meminfo_total:
            (fakesys / "proc/meminfo").write_text(
                fake.fake_meminfo_file(Path("/proc/meminfo").read_text(), self.meminfo_total))
        if self.kernel_cmdline is not None:
            (fakesys / "proc/cmdline").write_text(self.kernel_cmdline.rstrip("\n") + "\n")

        # Real DRM nodes use major 226 and KFD a dynamic one. Majors that no
        # driver registered on this machine keep the nodes from reaching a
        # real device: opening one fails with ENXIO.
        drm_major = fake.unregistered_char_major((fake.DRM_MAJOR, 242, 241, 240))
        kfd_major = fake.unregistered_char_major((235, 236, 237, 238, 239, 243, 244))
        dev = self.root / "dev"
        render_gid = self.render_gid
        video_gid = self._group_gid("video")
        if self.gpu.kfd_node:
            fake.make_char_device(dev / "kfd", kfd_major, 0, uid_root, render_gid, 0o660)
            self.devices["/dev/kfd"] = (kfd_major, 0)
        card = f"/dev/dri/card{self.gpu.card_index}"
        fake.make_char_device(self.root / card.lstrip("/"), drm_major, self.gpu.card_index, uid_root, video_gid, 0o660)
        self.devices[card] = (drm_major, self.gpu.card_index)
        if self.gpu.render_node:
            render = f"/dev/dri/renderD{self.gpu.render_minor}"
            fake.make_char_device(self.root / render.lstrip("/"), drm_major, self.gpu.render_minor,
                                  uid_root, render_gid, 0o660)
            self.devices[render] = (drm_major, self.gpu.render_minor)

    def _create_network(self) -> None:
        state = self._require_state()
        guest = f"bbt{state.slot}g"
        _run(["ip", "netns", "add", state.netns])
        _run(["ip", "link", "add", state.veth_host, "type", "veth", "peer", "name", guest])
        _run(["ip", "link", "set", guest, "netns", state.netns])
        _run(["ip", "addr", "add", f"{state.gateway}/30", "dev", state.veth_host])
        _run(["ip", "link", "set", state.veth_host, "up"])
        in_ns = ["ip", "-n", state.netns]
        _run([*in_ns, "link", "set", "lo", "up"])
        _run([*in_ns, "link", "set", guest, "name", "eth0"])
        _run([*in_ns, "addr", "add", f"{state.address}/30", "dev", "eth0"])
        _run([*in_ns, "link", "set", "eth0", "up"])
        # Only a route to this machine's end of the veth pair exists, so the
        # host cannot reach any other network.

    def _init_script(self) -> str:
        root = shlex.quote(str(self.root))
        fakesys = shlex.quote(str(self.fakesys))
        stage = shlex.quote(str(self.dir / "stage"))
        lines = [
            "set -eu",
            f"R={root}; F={fakesys}; S={stage}; D={shlex.quote(str(self.dir / 'docker-data'))}",
            'mkdir -p "$R/var/lib/docker"',
            'mkdir -p "$S/class" "$S/module"',
            # The root must be a mount point: dockerd and runc change the
            # propagation of "/" and pivot_root into it, which fails otherwise.
            'mount --bind "$R" "$R"',
            'mount --bind "$D" "$R/var/lib/docker"',
            # /proc for the new PID namespace. Kernel-wide sysctls are read-only
            # so that nothing on the host changes this machine's kernel settings.
            # The per-namespace net sysctls stay writable for Docker.
            'mount -t proc -o nosuid,nodev,noexec proc "$R/proc"',
            'mount --bind "$R/proc/sys" "$R/proc/sys"',
            'mount -o remount,bind,ro "$R/proc/sys"',
            'mount --bind "$R/proc/sys/net" "$R/proc/sys/net"',
            'mount -o remount,bind,rw "$R/proc/sys/net"',
            'if [ -e "$R/proc/sysrq-trigger" ]; then',
            '  mount --bind "$R/proc/sysrq-trigger" "$R/proc/sysrq-trigger"',
            '  mount -o remount,bind,ro "$R/proc/sysrq-trigger"',
            'fi',
            'for f in cmdline meminfo modules; do',
            '  if [ -e "$F/proc/$f" ]; then mount --bind "$F/proc/$f" "$R/proc/$f"; fi',
            'done',
            # A read-only sysfs of the host's network namespace: writes to a
            # real device's uevent file (udevadm trigger) fail with EROFS.
            'mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"',
            # /sys/class and /sys/module become tmpfs copies that bind the real
            # entries back, except drm, kfd and amdgpu, which come from $F.
            'mount --bind "$R/sys/class" "$S/class"',
            'mount --bind "$R/sys/module" "$S/module"',
            'for top in class module; do',
            '  mount -t tmpfs -o mode=755,size=4m tmpfs "$R/sys/$top"',
            '  for d in "$S/$top"/*; do',
            '    n=${d##*/}',
            '    case "$top/$n" in class/drm|class/kfd|module/amdgpu) continue;; esac',
            '    mkdir "$R/sys/$top/$n"',
            '    mount --bind "$d" "$R/sys/$top/$n"',
            '  done',
            '  for d in "$F/$top"/*; do',
            '    [ -e "$d" ] || continue',
            '    n=${d##*/}',
            '    mkdir "$R/sys/$top/$n"',
            '    mount --bind "$d" "$R/sys/$top/$n"',
            '  done',
            '  mount -o remount,ro "$R/sys/$top"',
            'done',
            'umount -l "$S/class" "$S/module"',
        ]
        if self.with_docker:
            lines.append('mount --rbind /sys/fs/cgroup "$R/sys/fs/cgroup"')
        lines += [
            'mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$R/dev/pts"',
            'mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/dev/shm"',
            f"hostname {shlex.quote(self.name)}",
            # pivot_root, not chroot: the root of the mount namespace has to be
            # the host's root filesystem. `docker exec` joins a container with
            # setns(), which moves the process to the namespace's root mount,
            # so under a plain chroot it would land in this machine's "/".
            'cd "$R"',
            'pivot_root . .oldroot',
            'umount -l /.oldroot',
            'rmdir /.oldroot',
            'exec /usr/sbin/sshd -D -e',
        ]
        return "\n".join(lines) + "\n"

    def _start_init(self) -> None:
        state = self._require_state()
        log_file = open(self.dir / "sshd.log", "ab")
        argv = [
            "nsenter", f"--net=/run/netns/{state.netns}",
            "unshare", "--mount", "--pid", "--uts", "--fork", "--kill-child", "--propagation", "private",
            "/bin/sh", "-c", self._init_script(),
        ]
        with log_file:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                                       start_new_session=True)
        # nsenter execs unshare, so the Popen PID is unshare's.
        state.unshare_pid = process.pid
        state.unshare_start = _process_start_time(process.pid)
        self._popen = process
        self._save_state()

        deadline = time.monotonic() + SSHD_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise HostError(f"host {self.name} failed to start (exit {process.returncode}):\n"
                                + self._log_tail("sshd.log"))
            for child in _children(process.pid):
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{child}/comm").read_text().strip() == "sshd":
                        state.init_pid = child
                        state.init_start = _process_start_time(child)
                        self._save_state()
                        return
            time.sleep(0.02)
        raise HostError(f"sshd of host {self.name} did not start within {SSHD_START_TIMEOUT_S} s:\n"
                        + self._log_tail("sshd.log"))

    def _log_tail(self, name: str, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.dir / name).read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _wait_for_ssh(self) -> None:
        deadline = time.monotonic() + SSHD_START_TIMEOUT_S
        while True:
            with contextlib.suppress(OSError), socket.create_connection((self.address, 22), timeout=1):
                break
            if time.monotonic() > deadline:
                raise HostError(f"port 22 of host {self.name} ({self.address}) is not reachable:\n"
                                + self._log_tail("sshd.log"))
            time.sleep(0.05)
        result = self.run("true", check=False, timeout=30)
        if result.returncode != 0:
            raise HostError(f"ssh login to host {self.name} failed: {result.stderr.strip()}\n"
                            + self._log_tail("sshd.log"))

    # -- daemons inside the host ---------------------------------------------------

    def _spawn(self, argv: Sequence[str], log_name: str) -> subprocess.Popen:
        with open(self.dir / log_name, "ab") as log_file:
            return subprocess.Popen(self.nsenter_command(argv), stdin=subprocess.DEVNULL, stdout=log_file,
                                    stderr=log_file, start_new_session=True)

    def _find_in_host(self, command_name: str) -> int | None:
        """Return the PID (as this machine numbers it) of a process called `command_name` in the host.

        Daemons started with nsenter are children of nsenter, not of the
        host's sshd, so the search goes by PID namespace.
        """
        state = self._require_state()
        namespace = _pid_namespace(state.init_pid)
        for pid in _pids_in_namespace(namespace):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == command_name[:15]:
                    return pid
        return None

    def start_udevd(self) -> None:
        """Start systemd-udevd in the host so that `udevadm control` and `udevadm settle` work.

        It gets no kernel uevents for this machine's devices (they go to the
        initial network namespace only), and the host's sysfs is read-only.
        """
        state = self._require_state()
        if _pid_alive(state.udevd_pid, state.udevd_start):
            return
        self._spawn(["/usr/lib/systemd/systemd-udevd", "--resolve-names=never"], "udevd.log")
        deadline = time.monotonic() + 10
        while self.exec(["udevadm", "control", "--ping"], check=False, timeout=5).returncode != 0:
            if time.monotonic() > deadline:
                raise HostError(f"systemd-udevd of host {self.name} did not start:\n" + self._log_tail("udevd.log"))
            time.sleep(0.1)
        state.udevd_pid = self._find_in_host("systemd-udevd")
        state.udevd_start = _process_start_time(state.udevd_pid) if state.udevd_pid else None
        self._save_state()

    def start_docker(self) -> None:
        """Start dockerd inside the host, in the same namespaces and chroot as its sshd.

        The engine creates no iptables rules, enables no forwarding and has no
        default bridge. Published ports work through docker-proxy. Container
        cgroups go below a parent named after the host, under the engine's own
        cgroup, so teardown can find and remove them.
        """
        state = self._require_state()
        if not (self.root / "usr/sbin/dockerd").exists():
            raise HostError(f"host {self.name} has no Docker engine: start it with with_docker=True")
        if _pid_alive(state.dockerd_pid, state.dockerd_start):
            return
        state.cgroup_parent = f"bestbox-test-{state.netns}"
        self._save_state()
        self._spawn([
            "/usr/sbin/dockerd",
            "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none",
            "--storage-driver=overlay2",
            "--exec-opt", "native.cgroupdriver=cgroupfs",
            f"--cgroup-parent={state.cgroup_parent}",
            "--data-root=/var/lib/docker", "--exec-root=/run/docker",
            "-H", "unix:///run/docker.sock", "--pidfile=/run/docker.pid",
        ], "dockerd.log")
        deadline = time.monotonic() + DOCKERD_START_TIMEOUT_S
        while self.exec(["docker", "version", "--format", "{{.Server.Version}}"], check=False,
                        timeout=15).returncode != 0:
            if time.monotonic() > deadline:
                raise HostError(f"dockerd of host {self.name} did not start:\n" + self._log_tail("dockerd.log"))
            time.sleep(0.2)
        state.dockerd_pid = self._find_in_host("dockerd")
        state.dockerd_start = _process_start_time(state.dockerd_pid) if state.dockerd_pid else None
        self._save_state()

    def import_image(self, tag: str, tarball: Path | None = None) -> None:
        """Import a root filesystem tarball into the host's engine as image `tag`.

        No registry is reachable, so images come from tarballs. The default is
        the cached base root filesystem (Debian with python3 and curl).
        """
        if tarball is None:
            tarball, _ = rootfs.ensure_rootfs_with_fallback(suite=self.recipe.suite if self.recipe else None)
        with self.staged_for_engine(tarball, "import-image.tar") as inside:
            self.exec(["docker", "import", "--change", 'CMD ["/bin/sh"]', inside, tag], timeout=600)

    @contextlib.contextmanager
    def staged_for_engine(self, path: Path, name: str):
        """Make a file of this machine readable to the host's engine; yield its path inside.

        The engine's data root is a plain directory on this machine, so a hard
        link from the cache usually works where the overlay would not. The
        staged file is removed afterwards.
        """
        staged = self.dir / "docker-data" / name
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()
        try:
            os.link(path, staged)
        except OSError:
            shutil.copyfile(path, staged)
        try:
            yield f"/var/lib/docker/{name}"
        finally:
            staged.unlink(missing_ok=True)

    # -- fake hardware and model ---------------------------------------------------

    def set_gpu_memory(self, vram_total: int | None = None, gtt_total: int | None = None) -> None:
        """Change the mem_info_*_total values (bytes) that the running host reports."""
        if vram_total is not None:
            self.gpu.vram_total = vram_total
        if gtt_total is not None:
            self.gpu.gtt_total = gtt_total
        fake.set_drm_memory(self.fakesys / "class/drm", self.gpu)

    def set_model(self, model: fake.FakeModel | None) -> None:
        """Write the model stand-in into the bestbox user's ModelScope cache, or remove it with None."""
        current = self.model or fake.FakeModel()
        directory = self.root / "home" / BESTBOX_USER / current.subdir
        if directory.exists():
            shutil.rmtree(directory)
        self.model = model
        if model is None:
            return
        uid, gid = self._user_ids(BESTBOX_USER)
        directory = self.root / "home" / BESTBOX_USER / model.subdir
        home = self.root / "home" / BESTBOX_USER
        fake.write_fake_model(directory, model, uid, gid)
        # Every directory between the home and the model belongs to the user, as on a real box.
        parent = directory.parent
        while parent != home:
            os.chown(parent, uid, gid)
            parent = parent.parent

    def remove_model_shard(self, number: int) -> None:
        """Delete shard `number` (1-based) of the model stand-in."""
        model = self.model or fake.FakeModel()
        path = self.root / "home" / BESTBOX_USER / model.subdir / model.shard_name(number)
        path.unlink()
        self.model = dataclasses.replace(model, missing_shards=(*model.missing_shards, number))

    # -- teardown ---------------------------------------------------------------

    def stop(self) -> None:
        """Stop the host and remove everything it created. Safe to call more than once."""
        if self.state is None or self._stopped:
            return
        self._stopped = True
        self.session.hosts.pop(self.name, None)
        with contextlib.suppress(OSError):
            self.session.write_ssh_config()
        with contextlib.suppress(Exception):
            _run(["ssh", "-F", str(self.ssh_config), "-O", "exit", self.address], check=False, timeout=5)
        teardown_state(self.state)
        _unregister(self)


def _children(pid: int | None) -> list[int]:
    if not pid:
        return []
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                with open(f"/proc/{pid}/task/{task}/children") as handle:
                    children.extend(int(child) for child in handle.read().split())
    return children


def _pid_namespace(pid: int | None) -> str | None:
    if not pid:
        return None
    with contextlib.suppress(OSError):
        return os.readlink(f"/proc/{pid}/ns/pid")
    return None


def _pids_in_namespace(namespace: str | None) -> list[int]:
    if namespace is None:
        return []
    return [
        int(entry.name) for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _pid_namespace(int(entry.name)) == namespace
    ]


def _remove_cgroups(parent_name: str) -> None:
    """Remove the (empty) container cgroups that the host's engine left below `parent_name`."""
    base = Path("/sys/fs/cgroup")
    if not base.exists():
        return
    for hierarchy in base.iterdir():
        for found in list(hierarchy.rglob(parent_name)):
            if not found.is_dir():
                continue
            for directory in sorted((d for d in found.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with contextlib.suppress(OSError):
                found.rmdir()


def teardown_state(state: HostState) -> None:
    """Stop a host's processes and remove its netns, veth pair and files. Idempotent."""
    # sshd is PID 1 of the host's PID namespace: when it exits the kernel
    # kills every other process in that namespace, dockerd and containers
    # included. dockerd gets no chance to stop its containers first, which
    # would take at least their 10 s stop timeout, and nothing of the engine
    # survives the host. unshare itself ignores SIGTERM, so it gets SIGKILL
    # only when sshd will not go.
    namespace = _pid_namespace(state.init_pid) if _pid_alive(state.init_pid, state.init_start) else None
    _kill(state.init_pid, state.init_start, signal.SIGTERM)
    if not _wait_gone(state.init_pid, state.init_start, 5):
        _kill(state.init_pid, state.init_start, signal.SIGKILL)
        _wait_gone(state.init_pid, state.init_start, 5)
    if not _wait_gone(state.unshare_pid, state.unshare_start, 5):
        _kill(state.unshare_pid, state.unshare_start, signal.SIGKILL)
        _wait_gone(state.unshare_pid, state.unshare_start, 5)
    for pid in _pids_in_namespace(namespace):
        log.warning("killing leftover process %s of host %s", pid, state.name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    # Also reaps nsenter processes that this Python process started.
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass

    if state.cgroup_parent:
        _remove_cgroups(state.cgroup_parent)

    netns = _run(["ip", "netns", "list"], check=False).stdout.split()
    if state.netns in netns:
        _run(["ip", "netns", "delete", state.netns], check=False)
    if Path(f"/sys/class/net/{state.veth_host}").exists():
        _run(["ip", "link", "delete", state.veth_host], check=False)

    host_dir = Path(state.dir)
    _unmount_below(host_dir)
    if host_dir.exists():
        # Deleting an engine's data root can take most of a minute on a busy
        # disk. The directory is renamed at once, which frees the slot, and a
        # detached rm deletes it. reap_stale_hosts() removes what an
        # interrupted rm left.
        trash = host_dir.parent / f"trash-{host_dir.name}-{uuid.uuid4().hex[:8]}"
        host_dir.rename(trash)
        subprocess.Popen(["rm", "-rf", "--one-file-system", str(trash)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _unmount_below(directory: Path) -> None:
    """Lazily unmount anything still mounted below `directory` in this mount namespace."""
    prefix = str(directory.resolve()) + "/"
    with open("/proc/self/mountinfo") as handle:
        targets = [line.split()[4] for line in handle]
    for target in sorted((t for t in targets if t.startswith(prefix)), key=len, reverse=True):
        _run(["umount", "-l", target], check=False)


# --- registry, atexit and stale hosts ------------------------------------------------

_live_hosts: dict[int, ThrowawayHost] = {}


def _register(host: ThrowawayHost) -> None:
    if not host.detached:
        _live_hosts[id(host)] = host


def _unregister(host: ThrowawayHost) -> None:
    _live_hosts.pop(id(host), None)


def stop_all() -> None:
    """Stop every host that this process started and did not detach, and close the default session."""
    global _default_session
    for host in list(_live_hosts.values()):
        try:
            host.stop()
        except Exception:  # noqa: BLE001 - teardown must go on for the other hosts
            log.exception("teardown of host %s failed", host.name)
    if _default_session is not None and not _default_session.hosts:
        _default_session.close()
        _default_session = None


atexit.register(stop_all)


def _stop_all_then_die(signum, frame) -> None:
    stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


# atexit hooks do not run when SIGTERM kills the process, so the hosts are
# stopped first and the signal is then delivered again with its default
# action. Raising SystemExit instead would not end a pytest run, because
# pytest reports it as a failure of the current test and goes on.
if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
    with contextlib.suppress(ValueError):  # not in the main thread
        signal.signal(signal.SIGTERM, _stop_all_then_die)


def load_states() -> list[HostState]:
    states = []
    fields = {field.name for field in dataclasses.fields(HostState)}
    for path in sorted((workdir() / "hosts").glob("slot-*/state.json")):
        with contextlib.suppress(ValueError, OSError, TypeError):
            data = json.loads(path.read_text())
            if "name" in data:
                states.append(HostState(**{key: value for key, value in data.items() if key in fields}))
            elif not _pid_alive(data.get("reserved_by"), None):
                # A reservation whose process died before writing its state.
                shutil.rmtree(path.parent, ignore_errors=True)
    return states


TRASH_MAX_AGE_S = 600


def reap_stale_hosts() -> list[str]:
    """Tear down hosts whose owning process died without detaching them; return their names.

    Also deletes host directories that teardown renamed more than
    TRASH_MAX_AGE_S ago and whose background rm did not finish.
    """
    for trash in (workdir() / "hosts").glob("trash-*"):
        with contextlib.suppress(OSError):
            if time.time() - trash.stat().st_mtime > TRASH_MAX_AGE_S:
                _unmount_below(trash)
                _run(["rm", "-rf", "--one-file-system", str(trash)], check=False)
    reaped = []
    for state in load_states():
        if not state.detached and not _pid_alive(state.owner_pid, None):
            log.warning("removing host %s left behind by dead process %s", state.name, state.owner_pid)
            teardown_state(state)
            reaped.append(state.name)
    return reaped


def start_host(name: str, **options) -> ThrowawayHost:
    """Start a throwaway host called `name` and return it once SSH works.

    Keyword options:
    - render_gid, video_gid: GIDs of the render and video groups. Without
      render_gid, the hosts of a session take 992, 109, 110 and 104 in turn.
    - gfx_target_version: an int, or a list with one entry per GPU node.
    - render_node, kfd_node, amdgpu_loaded: drop /dev/dri/renderD128,
      /dev/kfd with the KFD topology, or /sys/module/amdgpu when False.
    - vram_total, gtt_total: the mem_info_*_total values, in bytes.
    - with_docker, with_udevd: run dockerd or systemd-udevd inside the host.
    - model: a FakeModel, True for the default stand-in, or None.
    - fixture: a directory copied to /home/bestbox/BestBox, or None.
    - bestbox_groups: supplementary groups of the bestbox user.
    - meminfo_total: bytes. Replaces /proc/meminfo with a rescaled static copy.
    - kernel_cmdline: replaces /proc/cmdline.
    - suite, session, detached: Debian suite, HostSession, and whether the
      atexit hook leaves the host running.
    """
    return ThrowawayHost(name, **options).start()


def write_pyinfra_inventory(
    path: Path, hosts: Sequence[ThrowawayHost], group: str = "boxes", data: dict | None = None
) -> Path:
    """Write a pyinfra inventory file listing `hosts` with the SSH data that reaches them.

    `data` is merged into every host's data, for deploy settings such as
    `skip_checks`.
    """
    lines = ["# Throwaway test hosts, written by tests/harness/hosts.py.", f"{group} = ["]
    for host in hosts:
        host_data = {**host.pyinfra_data(), **(data or {})}
        lines.append(f"    ({host.address!r}, {host_data!r}),")
    lines.append("]")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    # The command line lives in hosts_cli.py; this keeps `python -m tests.harness.hosts` working.
    from tests.harness.hosts_cli import main

    sys.exit(main())
