"""Options, settings and fixtures of the converged-box suite.

The suite reads the expected state from group_data/all.py through
bestbox.config, the same way the deploy does, with the --bestbox-data
overrides on top. Targets come from testinfra's --hosts option. Without
--hosts every test here is skipped, so a plain `pytest tests` on a developer
machine never checks that machine by accident.
"""

from __future__ import annotations

import difflib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# `bestbox` is imported from this checkout however pytest was started.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bestbox.config import SCHEMA, ConfigError, Settings, load_defaults, settings_from  # noqa: E402
from bestbox.plan import BENCHMARK_SCRIPT, SCRIPT_TEMPLATES, archive_pairs, cache_directories  # noqa: E402
from bestbox.render import render_template  # noqa: E402

BOX_DIR = Path(__file__).resolve().parent
SETTINGS_KEY = pytest.StashKey[Settings]()
GPU_GROUPS = ("render", "video")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bestbox", "BestBox converged-box checks")
    group.addoption(
        "--bestbox-data",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override one value of group_data/all.py, as the deploy's --data did. "
             "Repeatable. Values are parsed like pyinfra's --data: true/false, an "
             "integer, JSON, or else a string.",
    )
    group.addoption(
        "--require-service",
        action="store_true",
        default=False,
        help="Fail the container and HTTP checks when the vLLM container does not "
             "exist, instead of skipping them.",
    )


def parse_value(text: str):
    """Parse one --bestbox-data value by the rules of pyinfra's --data.

    The rules of pyinfra 3.10 (pyinfra_cli.util.parse_cli_arg): "true" and
    "false" in any case are booleans, then an integer, then JSON, else the
    text itself. pyinfra_cli is not imported because importing it
    monkey-patches the whole test process with gevent.
    """
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_overrides(items: list[str]) -> dict:
    """Return the --bestbox-data values as a dict, parsed like pyinfra's --data."""
    overrides = {}
    for item in items:
        if "=" not in item:
            raise pytest.UsageError(
                f"--bestbox-data {item!r} is invalid: expected KEY=VALUE, for example "
                "--bestbox-data vllm_port=8002.")
        key, value = item.split("=", 1)
        key = key.strip()
        if key not in SCHEMA:
            close = difflib.get_close_matches(key, SCHEMA, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise pytest.UsageError(
                f"--bestbox-data {key}: unknown configuration key.{hint} The keys are the "
                "names defined in group_data/all.py.")
        overrides[key] = parse_value(value)
    return overrides


@dataclass(frozen=True, repr=False)
class RedactedSettings(Settings):
    """Settings whose repr lists no values, because pytest prints the repr of
    objects in a failed assert and the values include vllm_api_key."""

    def __repr__(self) -> str:
        return "Settings(group_data/all.py with the --bestbox-data overrides)"


def pytest_configure(config: pytest.Config) -> None:
    data = load_defaults()
    data.update(parse_overrides(config.getoption("bestbox_data")))
    try:
        settings = settings_from(data, "every host of this run")
        config.stash[SETTINGS_KEY] = RedactedSettings(settings.values)
    except ConfigError as error:
        problems = "\n".join(f"  - {problem}" for problem in error.problems)
        raise pytest.UsageError(
            "Invalid configuration (group_data/all.py with the --bestbox-data "
            f"overrides):\n{problems}\nFix the --bestbox-data values.") from None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("hosts") is not None:
        return
    skip = pytest.mark.skip(
        reason="no target host: pass --hosts, for example --hosts=ssh://root@strix-01 "
               "or --hosts=local:// on the box itself")
    for item in items:
        if BOX_DIR in Path(str(item.path)).parents:
            item.add_marker(skip)


def _relative_id(settings: Settings, path: str) -> str:
    prefix = settings.bestbox_path.rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else path


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize the lists that the configuration defines, one test per item."""
    settings = metafunc.config.stash[SETTINGS_KEY]
    names = metafunc.fixturenames

    if "gpu_group" in names:
        metafunc.parametrize("gpu_group", GPU_GROUPS)
    if "archive_pair" in names:
        pairs = archive_pairs(settings)
        metafunc.parametrize("archive_pair", pairs,
                             ids=[_relative_id(settings, source) for source, _ in pairs])
    if "script_path" in names:
        paths = [settings.path(f"scripts/{name}") for name in SCRIPT_TEMPLATES]
        paths.append(settings.path(BENCHMARK_SCRIPT))
        metafunc.parametrize("script_path", paths,
                             ids=[_relative_id(settings, path) for path in paths])
    if "activate_script" in names:
        paths = [settings.path(relative) for relative in settings.bestbox_activate_scripts]
        metafunc.parametrize("activate_script", paths,
                             ids=[_relative_id(settings, path) for path in paths])
    if "cache_directory" in names:
        relatives = cache_directories(settings)
        metafunc.parametrize("cache_directory", relatives, ids=relatives)
    if "env_key" in names:
        metafunc.parametrize("env_key", list(_expected_env(settings)))


def env_assignments(text: str) -> list[tuple[str, str]]:
    """Return the (KEY, VALUE) pairs of an env file in order, without blank or comment lines."""
    pairs = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        key, value = stripped.split("=", 1)
        pairs.append((key.strip(), value))
    return pairs


def _expected_env(settings: Settings) -> dict[str, str]:
    return dict(env_assignments(render_template("env.vllm.j2", settings)))


@dataclass(frozen=True)
class Account:
    """The BestBox user as the target host's passwd and group databases list it."""

    name: str
    uid: int
    gid: int
    home: str
    primary_group: str


@pytest.fixture(scope="session")
def settings(pytestconfig: pytest.Config) -> Settings:
    """The validated configuration: group_data/all.py plus --bestbox-data."""
    return pytestconfig.stash[SETTINGS_KEY]


@pytest.fixture(scope="session")
def expected_env(settings: Settings) -> dict[str, str]:
    """The KEY=VALUE pairs of templates/env.vllm.j2 rendered from the settings."""
    return _expected_env(settings)


@pytest.fixture(scope="module")
def env_file(host, settings: Settings):
    """The env file on the host; fails the test when it is missing."""
    env_file = host.file(settings.env_file_path)
    if not env_file.is_file:
        pytest.fail(f"the env file {settings.env_file_path} is missing")
    return env_file


@pytest.fixture(scope="module")
def env_pairs(env_file) -> list[tuple[str, str]]:
    """The (KEY, VALUE) pairs of the env file on the host, in file order."""
    return env_assignments(env_file.content_string)


@pytest.fixture(scope="module")
def bestbox_account(host, settings: Settings) -> Account:
    """Read the BestBox user with `getent passwd` and its primary group with `getent group`."""
    user = settings.bestbox_user
    passwd = host.run("getent passwd -- %s", user)
    if passwd.rc != 0:
        pytest.fail(f"the BestBox user {user} does not exist on the host "
                    f"(getent passwd exited {passwd.rc}); check bestbox_user")
    fields = passwd.stdout.strip().split(":")
    gid = int(fields[3])
    group = host.run("getent group -- %s", str(gid))
    primary_group = group.stdout.split(":")[0] if group.rc == 0 else str(gid)
    return Account(name=user, uid=int(fields[2]), gid=gid, home=fields[5],
                   primary_group=primary_group)


@pytest.fixture(scope="module")
def group_gids(host) -> dict[str, int | None]:
    """Map render and video to their numeric GIDs from `getent group`, None when missing."""
    gids: dict[str, int | None] = {}
    for name in GPU_GROUPS:
        result = host.run("getent group -- %s", name)
        gids[name] = int(result.stdout.split(":")[2]) if result.rc == 0 else None
    return gids


@pytest.fixture(scope="module")
def vllm_container(host, settings: Settings, pytestconfig: pytest.Config) -> dict:
    """Return the container's State from `docker inspect`, or skip when it does not exist.

    With --require-service a missing container fails the test instead.
    """
    name = settings.vllm_container_name
    result = host.run("docker container inspect --format '{{json .State}}' -- %s", name)
    if result.rc == 0:
        return json.loads(result.stdout)

    if result.rc == 127:
        reason = "the docker command is not installed"
    else:
        reason = f"docker container inspect {name} failed: {result.stderr.strip()}"
    if pytestconfig.getoption("require_service"):
        pytest.fail(f"{reason} (--require-service is set)")
    pytest.skip(f"{reason}; the service checks need the running container "
                "(pass --require-service to fail instead)")
