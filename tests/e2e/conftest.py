"""Fixtures for end-to-end tests on throwaway hosts reached over SSH.

`throwaway_hosts` (session-scoped factory), `throwaway_host` (one host per
test, options from `@pytest.mark.host_options(...)`) and `host_session` come
from tests/harness/hosts_pytest.py. Every test in this directory needs root
and debootstrap, so each one gets the `hosts` marker.
"""

from pathlib import Path

import pytest

from tests.harness.hosts_pytest import (  # noqa: F401 - pytest finds fixtures by name
    host_session,
    hosts_unavailable_reason,
    pytest_configure,
    throwaway_host,
    throwaway_hosts,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The hook receives the items of every directory, so pick this directory's.
    e2e_dir = Path(__file__).resolve().parent
    reason = hosts_unavailable_reason()
    for item in items:
        if e2e_dir not in Path(item.path).resolve().parents:
            continue
        item.add_marker(pytest.mark.hosts)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
