"""pytest fixtures for throwaway hosts (see tests/harness/hosts.py).

Load them from a conftest.py with `from tests.harness.hosts_pytest import *`
or `pytest_plugins = ["tests.harness.hosts_pytest"]`.

- `throwaway_hosts`: session-scoped factory. `throwaway_hosts(name=None, **options)`
  starts a host with start_host() options and returns it. Every host it
  started is stopped at the end of the session. `throwaway_hosts.stop(host)`
  stops one earlier.
- `throwaway_host`: a fresh host for one test, stopped after it. Options come
  from `@pytest.mark.host_options(with_docker=True, ...)`.
- `host_session`: the HostSession (key pair and ssh config) of the test run.

Tests that use these fixtures are skipped with the reason when the machine
cannot run hosts (not root, or a required program is missing). Mark such
tests with `@pytest.mark.hosts` so that `-m "not hosts"` deselects them.
"""

from __future__ import annotations

import itertools
import os
import shutil

import pytest

from tests.harness import hosts as hosts_module
from tests.harness import hosts_rootfs

REQUIRED_PROGRAMS = ("ip", "nsenter", "unshare", "mount", "pivot_root", "ssh", "ssh-keygen", "tar", "chroot")


def hosts_unavailable_reason(with_docker: bool = False) -> str | None:
    """Return why throwaway hosts cannot run on this machine, or None when they can."""
    if os.geteuid() != 0:
        return "throwaway hosts need root (network namespaces, mounts, mknod)"
    missing = [program for program in REQUIRED_PROGRAMS if shutil.which(program) is None]
    if missing:
        return f"throwaway hosts need these programs, which are missing: {', '.join(missing)}"
    if shutil.which("debootstrap") is None and not any(hosts_rootfs.cache_dir().glob("rootfs-*.tar")):
        return "throwaway hosts need debootstrap (Debian package debootstrap) or a cached root filesystem"
    if with_docker:
        try:
            hosts_rootfs.find_compose_binary()
        except hosts_rootfs.RootfsBuildError as error:
            return str(error)
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hosts: needs throwaway hosts (root, debootstrap, network namespaces)")
    config.addinivalue_line("markers", "host_options(**options): start_host() options for the throwaway_host fixture")


class HostFactory:
    """Start throwaway hosts on request and stop them all at the end."""

    def __init__(self, session: hosts_module.HostSession):
        self.session = session
        self.hosts: list[hosts_module.ThrowawayHost] = []
        self._numbers = itertools.count(1)

    def __call__(self, name: str | None = None, **options) -> hosts_module.ThrowawayHost:
        reason = hosts_unavailable_reason(with_docker=options.get("with_docker", False))
        if reason:
            pytest.skip(reason)
        name = name or f"box{next(self._numbers)}"
        host = hosts_module.ThrowawayHost(name, session=self.session, **options)
        self.hosts.append(host)
        return host.start()

    def stop(self, host: hosts_module.ThrowawayHost) -> None:
        host.stop()
        if host in self.hosts:
            self.hosts.remove(host)

    def stop_all(self) -> None:
        while self.hosts:
            self.hosts.pop().stop()


@pytest.fixture(scope="session")
def host_session():
    reason = hosts_unavailable_reason()
    if reason:
        pytest.skip(reason)
    session = hosts_module.HostSession()
    yield session
    session.close()


@pytest.fixture(scope="session")
def throwaway_hosts(host_session):
    factory = HostFactory(host_session)
    yield factory
    factory.stop_all()


@pytest.fixture
def throwaway_host(request, throwaway_hosts):
    marker = request.node.get_closest_marker("host_options")
    options = dict(marker.kwargs) if marker else {}
    host = throwaway_hosts(**options)
    yield host
    throwaway_hosts.stop(host)
