"""The vllm service and its network in BestBox's compose file."""

from __future__ import annotations

import difflib
import json

import pytest
import yaml

from bestbox import compose
from bestbox.compose import published_port, vllm_command

# Marker comments around the blocks the deploy writes, by block name.
MARKERS = {
    "service": (compose.SERVICE_BEGIN, compose.SERVICE_END),
    "network": (compose.NETWORK_BEGIN, compose.NETWORK_END),
}

# Keys of the vllm service with one expected value each, as dotted paths.
SERVICE_FIELDS = (
    "image",
    "container_name",
    "restart",
    "env_file",
    "command",
    "ports",
    "devices",
    "ipc",
    "shm_size",
    "security_opt",
    "cap_add",
    "volumes",
    "healthcheck.test",
    "healthcheck.interval",
    "healthcheck.timeout",
    "healthcheck.retries",
    "healthcheck.start_period",
    "logging.driver",
    "logging.options",
    "networks",
)


@pytest.fixture(scope="module")
def compose_text(host, settings) -> str:
    compose_file = host.file(settings.compose_path)
    if not compose_file.is_file:
        pytest.fail(f"the compose file {settings.compose_path} is missing")
    return compose_file.content_string


@pytest.fixture(scope="module")
def compose_document(compose_text, settings) -> dict:
    try:
        return yaml.safe_load(compose_text)
    except yaml.YAMLError as error:
        pytest.fail(f"{settings.compose_path} is not valid YAML: {error}")


@pytest.fixture(scope="module")
def vllm_service(compose_document, settings) -> dict:
    services = compose_document.get("services") or {}
    if "vllm" not in services:
        pytest.fail(f"{settings.compose_path} has no vllm service; found {sorted(services)}")
    return services["vllm"]


def _model_mounts(settings, home: str) -> list[str]:
    modelscope = settings.home_path(home, settings.vllm_modelscope_cache)
    huggingface = settings.home_path(home, settings.vllm_huggingface_cache)
    return [f"{modelscope}:{settings.vllm_container_modelscope_cache}:ro",
            f"{huggingface}:{settings.vllm_container_huggingface_cache}:ro"]


def expected_service_fields(settings, home: str) -> dict:
    """Return the expected value of every key in SERVICE_FIELDS; None means absent."""
    return {
        "image": settings.image,
        "container_name": settings.vllm_container_name,
        "restart": settings.vllm_restart_policy,
        "env_file": [".env.vllm"],
        "command": vllm_command(settings),
        "ports": [published_port(settings)],
        "devices": ["/dev/kfd:/dev/kfd", "/dev/dri:/dev/dri"],
        "ipc": settings.vllm_ipc_mode,
        "shm_size": settings.vllm_shm_size,
        "security_opt": ["seccomp=unconfined"] if settings.vllm_seccomp_unconfined else None,
        "cap_add": ["SYS_PTRACE"] if settings.vllm_cap_sys_ptrace else None,
        "volumes": _model_mounts(settings, home),
        "healthcheck.test": ["CMD", "curl", "-fsS",
                             f"http://localhost:{settings.vllm_port}/health"],
        "healthcheck.interval": f"{settings.vllm_healthcheck_interval}s",
        "healthcheck.timeout": f"{settings.vllm_healthcheck_timeout}s",
        "healthcheck.retries": settings.vllm_healthcheck_retries,
        "healthcheck.start_period": f"{settings.vllm_healthcheck_start_period}s",
        "logging.driver": "json-file",
        "logging.options": {"max-size": settings.vllm_log_max_size,
                            "max-file": str(settings.vllm_log_max_file)},
        "networks": [settings.vllm_network],
    }


def _lookup(mapping: dict, dotted: str):
    value = mapping
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


@pytest.mark.parametrize("field", SERVICE_FIELDS)
def test_vllm_service_has_configured_value(vllm_service, settings, bestbox_account, field):
    expected = expected_service_fields(settings, bestbox_account.home)[field]
    assert _lookup(vllm_service, field) == expected


def test_vllm_service_adds_numeric_gpu_gids(vllm_service, group_gids):
    # The ROCm images have no render group, so the compose file must carry
    # this host's numeric GIDs rather than group names.
    assert group_gids["video"] is not None, "the group video does not exist"
    assert group_gids["render"] is not None, "the group render does not exist"
    group_add = [str(gid) for gid in vllm_service.get("group_add") or []]
    assert group_add == [str(group_gids["video"]), str(group_gids["render"])]


def test_vllm_model_mounts_are_read_only(vllm_service):
    volumes = [str(volume) for volume in vllm_service.get("volumes") or []]
    writable = [volume for volume in volumes if not volume.endswith(":ro")]
    assert volumes, "the vllm service mounts no model cache"
    assert writable == []


def test_vllm_model_mounts_are_under_bestbox_home(vllm_service, settings, bestbox_account):
    caches = [cache for cache in (settings.vllm_modelscope_cache, settings.vllm_huggingface_cache)
              if not cache.startswith("/")]
    if not caches:
        pytest.skip("both cache paths are absolute in the configuration")
    sources = [str(volume).split(":", 1)[0] for volume in vllm_service.get("volumes") or []]
    expected = [settings.home_path(bestbox_account.home, cache) for cache in caches]
    unmounted = [path for path in expected if path not in sources]
    assert unmounted == []


def test_vllm_service_matches_rendered_block(vllm_service, settings, bestbox_account,
                                             group_gids):
    # Catches keys that the table above does not list, such as a key added by hand.
    inputs = compose.ServiceInputs(bestbox_account.home, group_gids["video"],
                                   group_gids["render"])
    rendered = yaml.safe_load("services:\n" + compose.render_service(settings, inputs))
    assert vllm_service == rendered["services"]["vllm"]


def test_vllm_network_is_declared(compose_document, settings):
    networks = compose_document.get("networks") or {}
    assert networks.get(settings.vllm_network) == {"name": settings.vllm_network}


@pytest.mark.parametrize("block", sorted(MARKERS))
def test_compose_has_one_marked_block(compose_text, block):
    begin, end = MARKERS[block]
    lines = compose_text.splitlines()
    assert sum(line.startswith(begin) for line in lines) == 1
    assert sum(line.startswith(end) for line in lines) == 1


# --- The rest of the file, compared with the copy saved before the first change


@pytest.fixture(scope="module")
def original_compose_text(host, settings) -> str:
    """Return the compose file as it was before the deploy first changed it.

    The deploy copies a file into BACKUP_ROOT/RUN/files/PATH before changing
    it and records the copy in BACKUP_ROOT/RUN/manifest.jsonl. RUN is a UTC
    timestamp, so the first run in sorted order contains the original.
    """
    root = settings.bestbox_backup_root.rstrip("/")
    listing = host.run("ls -1 -- %s", root)
    if listing.rc != 0:
        pytest.skip(f"cannot list the backups in {root} ({listing.stderr.strip()}), so the "
                    "services of the original compose file are unknown")
    for run in sorted(listing.stdout.split()):
        manifest = host.file(f"{root}/{run}/manifest.jsonl")
        if not manifest.is_file:
            continue
        for line in manifest.content_string.splitlines():
            record = json.loads(line)
            if record.get("path") == settings.compose_path and record.get("action") == "modify":
                saved = host.file(record["backup"])
                if not saved.is_file:
                    pytest.fail(f"the manifest {manifest.path} names the backup "
                                f"{record['backup']}, which is missing")
                return saved.content_string
    pytest.skip(f"no backup of {settings.compose_path} under {root}, so the services of the "
                "original compose file are unknown")


def _services(text: str) -> dict:
    return (yaml.safe_load(text) or {}).get("services") or {}


def test_compose_keeps_original_services(compose_document, original_compose_text):
    original = _services(original_compose_text)
    current = compose_document.get("services") or {}
    missing = sorted(name for name in original if name not in current)
    assert missing == []


def test_compose_leaves_original_services_unchanged(compose_document, original_compose_text):
    original = _services(original_compose_text)
    current = compose_document.get("services") or {}
    changed = sorted(name for name in original
                     if name != "vllm" and name in current and current[name] != original[name])
    assert changed == []


def _without_marked_blocks(text: str) -> list[str]:
    kept = []
    inside = False
    for line in text.splitlines():
        if any(line.startswith(begin) for begin, _ in MARKERS.values()):
            inside = True
        if not inside:
            kept.append(line)
        if any(line.startswith(end) for _, end in MARKERS.values()):
            inside = False
    return kept


def test_compose_text_outside_marked_blocks_is_unchanged(compose_text, original_compose_text):
    # The deploy splices text in and rewrites nothing, so apart from the marked
    # blocks it may only have added the blank lines that separate them.
    original = original_compose_text.splitlines()
    current = _without_marked_blocks(compose_text)
    matcher = difflib.SequenceMatcher(None, original, current, autojunk=False)
    changes = []
    for tag, first, last, new_first, new_last in matcher.get_opcodes():
        if tag == "equal":
            continue
        if tag == "insert" and not any(line.strip() for line in current[new_first:new_last]):
            continue
        changes.append(f"{tag} original lines {first + 1}-{last}: "
                       f"{original[first:last]} -> {current[new_first:new_last]}")
    assert changes == []
