"""Build and cache a Debian sid root filesystem that contains llama-server.

The rootfs is `debootstrap --variant=minbase sid` plus the packages
llama.cpp-tools (llama-server), curl (for container health checks) and python3
(for the vLLM stand-in entrypoint). Building it needs root, debootstrap and the
Debian mirror, and takes about a minute. The result is cached under
`$BESTBOX_TEST_CACHE/standin/` (default /var/cache/bestbox-test/standin/) in two
forms, both named after a hash of the recipe below, so a change to the recipe
builds a new one:

- `sid-llama-KEY.tar`, the tarball that `docker import` turns into an image;
- `sid-llama-KEY/`, the unpacked tree, for running llama-server under chroot.

The mirror is a frozen snapshot whose sid Release file has expired, so apt in
the rootfs is configured to skip the Release validity check.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

SUITE = "sid"
MIRROR = os.environ.get("BESTBOX_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ("llama.cpp-tools", "curl", "python3")
APT_CONFIG = 'Acquire::Check-Valid-Until "false";\n'
# With this policy, invoke-rc.d in a package script starts no daemon.
POLICY_RC_D = "#!/bin/sh\nexit 101\n"
# Bump when the build steps below change in a way the other fields do not show.
RECIPE_VERSION = 1

DEBOOTSTRAP = "/usr/sbin/debootstrap"


class RootfsError(RuntimeError):
    """The rootfs could not be built."""


def recipe_key() -> str:
    """Return a short hash of everything that determines the rootfs contents."""
    recipe = {
        "suite": SUITE,
        "mirror": MIRROR,
        "packages": PACKAGES,
        "apt_config": APT_CONFIG,
        "policy_rc_d": POLICY_RC_D,
        "version": RECIPE_VERSION,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def standin_cache() -> Path:
    from ..engine import cache_root

    return cache_root() / "standin"


def unavailable_reason() -> str | None:
    """Return why the rootfs cannot be built or used here, or None when it can."""
    if os.geteuid() != 0:
        return "building and chrooting into the sid rootfs needs root"
    if tarball_path().is_file():
        return None
    if not os.access(DEBOOTSTRAP, os.X_OK):
        return f"{DEBOOTSTRAP} is missing: install Debian's debootstrap"
    return None


def tarball_path() -> Path:
    return standin_cache() / f"sid-llama-{recipe_key()}.tar"


def tree_path() -> Path:
    return standin_cache() / f"sid-llama-{recipe_key()}"


@contextmanager
def _build_lock():
    """Hold an exclusive lock so that parallel test runs build the rootfs once.

    Work folders found while holding the lock were left by an interrupted
    build or unpack, so they are deleted.
    """
    cache = standin_cache()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "build.lock", "a+") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        for leftover in [*cache.glob("build-*"), *cache.glob("unpack-*"), *cache.glob("*.partial")]:
            log.info("removing %s, left by an interrupted build", leftover)
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        yield


def ensure_tarball() -> Path:
    """Return the cached rootfs tarball, building it first when it is missing."""
    tarball = tarball_path()
    if tarball.is_file():
        return tarball
    with _build_lock():
        if tarball.is_file():
            return tarball
        _build(tarball)
    return tarball


def ensure_tree() -> Path:
    """Return the cached unpacked rootfs, unpacking the tarball first when needed.

    A `.complete` file inside the tree marks a finished unpack, so an
    interrupted one is redone.
    """
    tree = tree_path()
    if (tree / ".complete").is_file():
        return tree
    tarball = ensure_tarball()
    with _build_lock():
        if (tree / ".complete").is_file():
            return tree
        started = time.monotonic()
        shutil.rmtree(tree, ignore_errors=True)
        partial = Path(tempfile.mkdtemp(prefix="unpack-", dir=standin_cache()))
        _run(["tar", "--numeric-owner", "-xpf", str(tarball), "-C", str(partial)])
        (partial / ".complete").write_text(f"{tarball.name}\n")
        partial.rename(tree)
        log.info("unpacked %s in %.1f s", tarball.name, time.monotonic() - started)
    return tree


def _build(tarball: Path) -> None:
    reason = unavailable_reason()
    if reason:
        raise RootfsError(reason)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="build-", dir=standin_cache()))
    root = workdir / "root"
    try:
        log.info("debootstrap %s from %s into %s", SUITE, MIRROR, root)
        _run([DEBOOTSTRAP, "--variant=minbase", SUITE, str(root), MIRROR])
        bootstrapped = time.monotonic()

        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text(POLICY_RC_D)
        policy.chmod(0o755)
        (root / "etc/apt/apt.conf.d/99bestbox-test-snapshot").write_text(APT_CONFIG)

        apt_env = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        _run(["chroot", str(root), "apt-get", "update", "-q"], env=apt_env)
        _run(["chroot", str(root), "apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES], env=apt_env)
        _run(["chroot", str(root), "apt-get", "clean"], env=apt_env)
        installed = time.monotonic()

        # The package lists and the build machine's resolver are of no use in
        # an image: Docker writes its own resolv.conf.
        shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
        (root / "var/lib/apt/lists/partial").mkdir(parents=True)
        (root / "etc/resolv.conf").write_text("")
        _check_contents(root)

        partial = tarball.with_name(tarball.name + ".partial")
        _run(["tar", "--numeric-owner", "-cpf", str(partial), "-C", str(root), "."])
        partial.rename(tarball)

        # The build tree already is the unpacked tarball, so keep it as the
        # cached tree instead of deleting it and unpacking the tarball later.
        tree = tree_path()
        if not (tree / ".complete").is_file():
            shutil.rmtree(tree, ignore_errors=True)
            (root / ".complete").write_text(f"{tarball.name}\n")
            root.rename(tree)
        log.info(
            "built %s in %.0f s (debootstrap %.0f s, apt %.0f s, tar %.0f s)",
            tarball.name, time.monotonic() - started, bootstrapped - started,
            installed - bootstrapped, time.monotonic() - installed,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _check_contents(root: Path) -> None:
    for program in ("usr/bin/llama-server", "usr/bin/curl", "usr/bin/python3"):
        if not (root / program).exists():
            raise RootfsError(f"the sid rootfs has no /{program} after installing {', '.join(PACKAGES)}")


def _run(command: list[str], env: dict[str, str] | None = None) -> None:
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-30:]
        raise RootfsError(f"{' '.join(command)} failed with status {result.returncode}:\n" + "\n".join(output))
