"""Load and validate the deploy configuration.

The defaults live in `group_data/all.py`; pyinfra merges them with inventory
host data and `--data` overrides. `validate()` checks every value before any
operation runs and returns one message per problem. `load_defaults()` reads
the same file outside pyinfra, so tests and scripts share one source.
"""

from __future__ import annotations

import ipaddress
import re
import runpy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
GROUP_DATA_FILE = REPO_ROOT / "group_data" / "all.py"

# Keys that start with one of these prefixes belong to this deploy, so an
# unknown one is a typo rather than another tool's data.
OWNED_PREFIXES = ("bestbox_", "vllm_")
# Keys without an owned prefix that the deploy also reads.
UNPREFIXED_KEYS = ("start_service", "skip_checks")

DURATION_RE = re.compile(r"^[0-9]+$")
SIZE_RE = re.compile(r"^[0-9]+[bkmg]?$", re.IGNORECASE)
IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*$")
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]*\$?$")
ENV_VALUE_RE = re.compile(r"^[^\n\r#'\"\\$`]*$")
GFX_VERSION_RE = re.compile(r"^$|^[0-9]+\.[0-9]+\.[0-9]+$")


class ConfigError(ValueError):
    """One or more configuration values are invalid; `problems` lists them."""

    def __init__(self, host_name: str, problems: list[str]):
        self.host_name = host_name
        self.problems = problems
        lines = [f"Invalid configuration for host {host_name}:"]
        lines += [f"  - {problem}" for problem in problems]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Rule:
    """Accepted values of one key: Python types, an optional check and a description."""

    types: tuple[type, ...]
    allowed: str
    check: Callable[[Any], bool] | None = None


def _is_relative_path(value: str) -> bool:
    return bool(value) and not value.startswith("/") and ".." not in value.split("/")


def _is_absolute_path(value: str) -> bool:
    return value.startswith("/") and ".." not in value.split("/") and "\n" not in value


def _is_home_relative(value: str) -> bool:
    # Cache paths are relative to the BestBox user's home. An absolute path is
    # also accepted. A literal "~" is not, because it would resolve to the home
    # of the user who runs the command.
    return (_is_relative_path(value) or _is_absolute_path(value)) and not value.startswith("~")


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda values: all(isinstance(v, str) and check(v) for v in values)


def _between(low: float, high: float) -> Callable[[Any], bool]:
    return lambda value: low <= value <= high


def _is_bind_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


STRING = (str,)
INTEGER = (int,)
NUMBER = (int, float)
BOOLEAN = (bool,)
LIST = (list, tuple)

SCHEMA: dict[str, Rule] = {
    "bestbox_user": Rule(STRING, "a Linux user name", USER_RE.match),
    "bestbox_path": Rule(STRING, "an absolute path", _is_absolute_path),
    "bestbox_compose_file": Rule(STRING, "a path relative to bestbox_path", _is_relative_path),
    "bestbox_activate_scripts": Rule(
        LIST, "a list of paths relative to bestbox_path", _list_of(_is_relative_path)),
    "bestbox_prometheus_config": Rule(
        STRING, "a path relative to bestbox_path", _is_relative_path),
    "bestbox_llamacpp_port": Rule(INTEGER, "a TCP port from 1 to 65535", _between(1, 65535)),
    "bestbox_stop_llamacpp": Rule(BOOLEAN, "true or false"),
    "bestbox_udev_rule_path": Rule(
        STRING, "a file directly in /etc/udev/rules.d whose name ends in .rules",
        lambda v: re.match(r"^/etc/udev/rules\.d/[A-Za-z0-9_.-]+\.rules$", v)),
    "bestbox_backup_root": Rule(STRING, "an absolute path", _is_absolute_path),
    "bestbox_rollback_keep_created": Rule(BOOLEAN, "true or false"),
    "bestbox_archive_dir": Rule(STRING, "a path relative to bestbox_path", _is_relative_path),
    "bestbox_archive_scripts": Rule(
        LIST, "a list of paths relative to bestbox_path", _list_of(_is_relative_path)),
    "bestbox_archive_docs": Rule(
        LIST, "a list of paths relative to bestbox_path", _list_of(_is_relative_path)),
    "vllm_port": Rule(INTEGER, "a TCP port from 1 to 65535", _between(1, 65535)),
    "vllm_bind_address": Rule(STRING, "an IPv4 or IPv6 address", _is_bind_address),
    "vllm_api_key": Rule(
        STRING, "a string without spaces, quotes, '#', '$' or backslashes",
        lambda v: ENV_VALUE_RE.match(v) is not None and " " not in v),
    "vllm_network": Rule(
        STRING, "a Docker network name other than default, bridge, host or none",
        lambda v: NAME_RE.match(v) and v not in ("default", "bridge", "host", "none")),
    "vllm_model_id": Rule(STRING, "a hub id such as Org/Model", lambda v: v.count("/") == 1),
    "vllm_served_model_name": Rule(STRING, "a model name without spaces", NAME_RE.match),
    "vllm_modelscope_cache": Rule(STRING, "a path relative to the user's home", _is_home_relative),
    "vllm_huggingface_cache": Rule(
        STRING, "a path relative to the user's home", _is_home_relative),
    "vllm_model_subdir": Rule(
        STRING, "a path relative to vllm_modelscope_cache", _is_relative_path),
    "vllm_container_modelscope_cache": Rule(STRING, "an absolute path", _is_absolute_path),
    "vllm_container_huggingface_cache": Rule(STRING, "an absolute path", _is_absolute_path),
    "vllm_dtype": Rule(
        STRING, "one of auto, float16, bfloat16, float32",
        lambda v: v in ("auto", "float16", "half", "bfloat16", "float32", "float")),
    "vllm_gpu_memory_utilization": Rule(
        NUMBER, "a fraction above 0 and at most 0.95", lambda v: 0 < v <= 0.95),
    "vllm_max_model_len": Rule(INTEGER, "an integer from 128 to 262144", _between(128, 262144)),
    "vllm_max_num_seqs": Rule(INTEGER, "an integer from 1 to 1024", _between(1, 1024)),
    "vllm_max_num_batched_tokens": Rule(
        INTEGER, "an integer from 128 to 1048576", _between(128, 1048576)),
    "vllm_enforce_eager": Rule(BOOLEAN, "true or false"),
    "vllm_trust_remote_code": Rule(BOOLEAN, "true or false"),
    "vllm_log_requests": Rule(BOOLEAN, "true or false"),
    "vllm_extra_args": Rule(
        LIST, "a list of strings without newlines", _list_of(lambda v: "\n" not in v)),
    "vllm_pytorch_rocm_arch": Rule(
        STRING, "a gfx target such as gfx1151", lambda v: re.match(r"^gfx[0-9a-f]+$", v)),
    "vllm_hsa_override_gfx_version": Rule(
        STRING, "empty, or a version such as 11.0.0", GFX_VERSION_RE.match),
    "vllm_flash_attention_triton_amd_enable": Rule(
        STRING, "TRUE or FALSE", lambda v: v in ("TRUE", "FALSE")),
    "vllm_hip_visible_devices": Rule(
        STRING, "a comma-separated list of device indexes",
        lambda v: re.match(r"^[0-9]+(,[0-9]+)*$", v)),
    "vllm_hsa_enable_sdma": Rule(STRING, "0 or 1", lambda v: v in ("0", "1")),
    "vllm_container_name": Rule(STRING, "a Docker container name", NAME_RE.match),
    "vllm_image": Rule(STRING, "a Docker image reference", IMAGE_RE.match),
    "vllm_build_image": Rule(BOOLEAN, "true or false"),
    "vllm_build_base_image": Rule(STRING, "a Docker image reference", IMAGE_RE.match),
    "vllm_build_vllm_version": Rule(
        STRING, "a vLLM version such as 0.14.0", lambda v: re.match(r"^[0-9][0-9a-z.+-]*$", v)),
    "vllm_build_tag": Rule(STRING, "a Docker image reference", IMAGE_RE.match),
    "vllm_restart_policy": Rule(
        STRING, "one of no, always, on-failure, unless-stopped",
        lambda v: v in ("no", "always", "on-failure", "unless-stopped")),
    "vllm_ipc_mode": Rule(
        STRING, "host or private", lambda v: v in ("host", "private")),
    "vllm_shm_size": Rule(STRING, "a size such as 16g or 512m", SIZE_RE.match),
    "vllm_seccomp_unconfined": Rule(BOOLEAN, "true or false"),
    "vllm_cap_sys_ptrace": Rule(BOOLEAN, "true or false"),
    "vllm_healthcheck_interval": Rule(INTEGER, "seconds from 1 to 3600", _between(1, 3600)),
    "vllm_healthcheck_timeout": Rule(INTEGER, "seconds from 1 to 600", _between(1, 600)),
    "vllm_healthcheck_retries": Rule(INTEGER, "an integer from 1 to 100", _between(1, 100)),
    "vllm_healthcheck_start_period": Rule(INTEGER, "seconds from 0 to 7200", _between(0, 7200)),
    "vllm_log_max_size": Rule(STRING, "a size such as 100m", SIZE_RE.match),
    "vllm_log_max_file": Rule(INTEGER, "an integer from 1 to 100", _between(1, 100)),
    "start_service": Rule(BOOLEAN, "true or false"),
    "vllm_health_wait_timeout": Rule(INTEGER, "seconds from 10 to 7200", _between(10, 7200)),
    "vllm_health_poll_interval": Rule(INTEGER, "seconds from 1 to 10", _between(1, 10)),
    "vllm_smoke_test": Rule(BOOLEAN, "true or false"),
    "skip_checks": Rule(
        (str, list, tuple), "a list of check ids or a comma-separated string of them"),
    "vllm_min_free_disk_gb": Rule(NUMBER, "gigabytes from 0 to 100000", _between(0, 100000)),
    "vllm_docker_data_root": Rule(STRING, "an absolute path", _is_absolute_path),
    "vllm_benchmark_max_latency_s": Rule(NUMBER, "seconds above 0", lambda v: v > 0),
    "vllm_benchmark_min_success_rate": Rule(NUMBER, "a fraction from 0 to 1", _between(0, 1)),
    "vllm_benchmark_min_total_tokens_per_s": Rule(NUMBER, "tokens/s from 0", lambda v: v >= 0),
}


def load_defaults() -> dict[str, Any]:
    """Return the values of group_data/all.py, without pyinfra."""
    values = runpy.run_path(str(GROUP_DATA_FILE))
    return {key: value for key, value in values.items() if not key.startswith("_")}


def _check_type(key: str, value: Any, rule: Rule) -> str | None:
    # bool is a subclass of int in Python: a port of True is a mistake.
    if isinstance(value, bool) and bool not in rule.types:
        return f"{key}={value!r}: expected {rule.allowed}, got a boolean"
    if not isinstance(value, rule.types):
        return f"{key}={value!r}: expected {rule.allowed}, got {type(value).__name__}"
    return None


def validate(data: dict[str, Any]) -> list[str]:
    """Return one message per invalid, missing or unknown key in data."""
    problems = []

    for key in sorted(data):
        owned = key.startswith(OWNED_PREFIXES) or key in UNPREFIXED_KEYS
        if owned and key not in SCHEMA:
            close = [known for known in SCHEMA if _similar(key, known)]
            hint = f" Did you mean {close[0]}?" if close else ""
            problems.append(
                f"{key}: unknown configuration key.{hint} Known keys are listed in "
                "group_data/all.py.")

    for key, rule in SCHEMA.items():
        if key not in data:
            problems.append(f"{key}: missing; expected {rule.allowed}. Restore it in "
                            "group_data/all.py.")
            continue
        value = data[key]
        problem = _check_type(key, value, rule)
        if problem:
            problems.append(problem)
            continue
        if rule.check is not None and not rule.check(value):
            problems.append(f"{key}={value!r}: expected {rule.allowed}")

    if not problems:
        problems += _cross_checks(data)
    return problems


def _cross_checks(data: dict[str, Any]) -> list[str]:
    problems = []
    address = ipaddress.ip_address(data["vllm_bind_address"])
    if not address.is_loopback and not data["vllm_api_key"]:
        problems.append(
            f"vllm_bind_address={data['vllm_bind_address']!r} publishes vLLM beyond this "
            "host, so vllm_api_key must be set. Set vllm_api_key, or bind to 127.0.0.1.")
    if data["vllm_max_num_batched_tokens"] < data["vllm_max_model_len"]:
        problems.append(
            f"vllm_max_num_batched_tokens={data['vllm_max_num_batched_tokens']} is below "
            f"vllm_max_model_len={data['vllm_max_model_len']}; vLLM rejects this without "
            "chunked prefill. Raise vllm_max_num_batched_tokens or lower vllm_max_model_len.")
    if data["vllm_port"] == data["bestbox_llamacpp_port"]:
        problems.append(
            f"vllm_port={data['vllm_port']} equals bestbox_llamacpp_port; the endpoint "
            "audit needs the old port. Set them to different ports.")
    if data["vllm_healthcheck_timeout"] >= data["vllm_healthcheck_interval"]:
        problems.append(
            f"vllm_healthcheck_timeout={data['vllm_healthcheck_timeout']} must be below "
            f"vllm_healthcheck_interval={data['vllm_healthcheck_interval']}.")
    unknown_checks = [check for check in skip_check_ids(data["skip_checks"])
                      if check not in KNOWN_CHECK_IDS]
    if unknown_checks:
        problems.append(
            f"skip_checks={data['skip_checks']!r}: unknown check ids {unknown_checks}; "
            f"known ids are {', '.join(KNOWN_CHECK_IDS)}.")
    return problems


# Preflight check ids, in the order they run. bestbox/preflight.py implements them.
KNOWN_CHECK_IDS = (
    "gpu", "devices", "amdgpu", "docker", "compose", "rootless", "bestbox",
    "model", "memory", "port", "rocm-env", "disk",
)


def skip_check_ids(value: str | list | tuple) -> list[str]:
    """Return skip_checks as a list of ids, from a list or a comma-separated string."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(part).strip() for part in value]


def _similar(left: str, right: str) -> bool:
    import difflib

    return difflib.SequenceMatcher(None, left, right).ratio() > 0.85


@dataclass(frozen=True)
class Settings:
    """Validated configuration for one host, with the paths derived from it."""

    values: dict[str, Any]

    def __getattr__(self, key: str) -> Any:
        try:
            return self.values[key]
        except KeyError as error:
            raise AttributeError(key) from error

    def path(self, relative: str) -> str:
        """Return the absolute path of a file inside the BestBox checkout."""
        return f"{self.values['bestbox_path'].rstrip('/')}/{relative}"

    @property
    def compose_path(self) -> str:
        return self.path(self.values["bestbox_compose_file"])

    @property
    def env_file_path(self) -> str:
        return self.path(".env.vllm")

    @property
    def llm_base_url(self) -> str:
        return f"http://localhost:{self.values['vllm_port']}/v1"

    @property
    def local_base_url(self) -> str:
        """Return the URL that reaches vLLM from the box itself, on the bound address."""
        address = ipaddress.ip_address(self.values["vllm_bind_address"])
        if address.is_unspecified:
            host = "127.0.0.1" if address.version == 4 else "[::1]"
        else:
            host = f"[{address}]" if address.version == 6 else str(address)
        return f"http://{host}:{self.values['vllm_port']}"

    @property
    def model_dir_in_container(self) -> str:
        base = self.values["vllm_container_modelscope_cache"].rstrip("/")
        return f"{base}/{self.values['vllm_model_subdir']}"

    @property
    def image(self) -> str:
        """The image the service runs: the built tag or the prebuilt image."""
        if self.values["vllm_build_image"]:
            return self.values["vllm_build_tag"]
        return self.values["vllm_image"]

    @property
    def skipped_checks(self) -> list[str]:
        return skip_check_ids(self.values["skip_checks"])

    def home_path(self, home: str, relative: str) -> str:
        """Resolve a cache path against the BestBox user's home on the target host."""
        if relative.startswith("/"):
            return relative
        return f"{home.rstrip('/')}/{relative}"


def settings_from(data: dict[str, Any], host_name: str) -> Settings:
    """Validate data and return Settings, or raise ConfigError listing every problem."""
    relevant = {key: value for key, value in data.items()
                if key in SCHEMA or key.startswith(OWNED_PREFIXES) or key in UNPREFIXED_KEYS}
    problems = validate(relevant)
    if problems:
        raise ConfigError(host_name, problems)
    return Settings(relevant)
