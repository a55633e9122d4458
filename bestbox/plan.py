"""Plan a deploy for every host before any operation runs.

`prepare()` validates the configuration of every inventory host, reads each
host's snapshot (one remote command per host, in parallel), runs the
preflight checks and works out every file the deploy will write. Problems on
any host stop the whole deploy with one list per host, before the first
change. The task modules then read the finished plan of the current host.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import gevent
import gevent.lock
from pyinfra import logger
from pyinfra.api.exceptions import DeployError

from bestbox import compose, edits
from bestbox.config import ConfigError, Settings, settings_from
from bestbox.facts import HostSnapshot
from bestbox.operations import current_bytes
from bestbox.preflight import Finding, run_checks
from bestbox.render import REPO_ROOT, render_template

SCRIPT_TEMPLATES = ("start-vllm.sh", "stop-vllm.sh", "restart-vllm.sh",
                    "rollback-to-llamacpp.sh", "monitor-vllm.sh")
BENCHMARK_SCRIPT = "scripts/benchmark_vllm.py"
# Path of the rendered Dockerfile when vllm_build_image is true, relative to bestbox_path.
DOCKERFILE = "docker/vllm-rocm/Dockerfile"
# Folders the endpoint audit does not read: version control, environments,
# dependencies, and the archive the deploy made itself.
AUDIT_SKIP_DIRS = (".git", "venv", "venv-cuda", ".venv", "node_modules", "__pycache__",
                   ".next", "docs/archive")


@dataclass
class FileSpec:
    """One file the deploy writes: its content and attributes."""

    path: str
    content: bytes
    mode: int
    owner: str
    group: str
    verify_command: str | None = None


@dataclass
class HostPlan:
    settings: Settings
    snapshot: dict
    findings: list[Finding] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    files: dict[str, FileSpec] = field(default_factory=dict)
    new_groups: dict[str, int] = field(default_factory=dict)
    gids: dict[str, int] = field(default_factory=dict)

    @property
    def home(self) -> str:
        return self.snapshot["user"]["home"]

    @property
    def user_group(self) -> str:
        return self.snapshot["user"]["primary_group"]

    def changes(self, path: str) -> bool:
        """Return whether the deploy will write path in this run."""
        spec = self.files.get(path)
        if spec is None:
            return False
        entry = self.snapshot["files"].get(path, {})
        return not (entry.get("exists") and entry.get("sha256") == _sha(spec.content)
                    and entry.get("mode") == spec.mode and entry.get("owner") == spec.owner
                    and entry.get("group") == spec.group)


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


_plans: dict[str, HostPlan] = {}


def archive_destination(settings: Settings, relative: str, kind: str) -> str:
    return settings.path(f"{settings.bestbox_archive_dir}/{kind}/{os.path.basename(relative)}")


def archive_pairs(settings: Settings) -> list[tuple[str, str]]:
    """Return (source, destination) absolute paths of every file to archive."""
    pairs = [(settings.path(p), archive_destination(settings, p, "scripts"))
             for p in settings.bestbox_archive_scripts]
    pairs += [(settings.path(p), archive_destination(settings, p, "docs"))
              for p in settings.bestbox_archive_docs]
    return pairs


def managed_paths(settings: Settings) -> list[str]:
    """Return every file whose content the deploy writes or edits."""
    paths = [settings.bestbox_udev_rule_path, settings.env_file_path, settings.compose_path,
             settings.path(settings.bestbox_prometheus_config),
             settings.path(f"{settings.bestbox_archive_dir}/README.md"),
             settings.path(BENCHMARK_SCRIPT), settings.path(DOCKERFILE)]
    paths += [settings.path(f"scripts/{name}") for name in SCRIPT_TEMPLATES]
    paths += [settings.path(p) for p in settings.bestbox_activate_scripts]
    return paths


def snapshot_request(settings: Settings, preflight: bool = True) -> str:
    archive_dir = settings.path(settings.bestbox_archive_dir)
    stat_paths = [settings.bestbox_path, archive_dir, f"{archive_dir}/scripts",
                  f"{archive_dir}/docs", settings.path("docs/archive"),
                  ]
    for cache in cache_directories(settings):
        stat_paths.append(home_key(cache))
    for source, destination in archive_pairs(settings):
        stat_paths += [source, destination]
    request = {
        "user": settings.bestbox_user,
        "groups": ["render", "video"],
        "content_paths": managed_paths(settings),
        "stat_paths": stat_paths,
        "backup_root": settings.bestbox_backup_root,
        "preflight": preflight,
        "disk_paths": [settings.vllm_docker_data_root, settings.bestbox_path],
        "port": settings.vllm_port,
        "model_dir": home_key(f"{settings.vllm_modelscope_cache}/{settings.vllm_model_subdir}"),
        "docker": True,
        "container": settings.vllm_container_name,
        "project_directory": settings.bestbox_path,
        "compose_file": settings.compose_path,
        "service": "vllm",
        "images": [settings.image],
        "audit": {
            "root": settings.bestbox_path,
            "patterns": [(kind, pattern.pattern) for kind, pattern in
                         edits.old_endpoint_patterns(settings.bestbox_llamacpp_port)],
            "skip_dirs": list(AUDIT_SKIP_DIRS),
        },
    }
    return json.dumps(request, sort_keys=True)


def cache_directories(settings: Settings) -> list[str]:
    """Return the cache directories and their parents below the home, parents first."""
    found = []
    for cache in (settings.vllm_modelscope_cache, settings.vllm_huggingface_cache):
        if cache.startswith("/"):
            found.append(cache)
            continue
        parts = cache.split("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if prefix not in found:
                found.append(prefix)
    return found


def home_key(path: str) -> str:
    """Return the snapshot key of a path relative to the BestBox user's home."""
    return path if path.startswith("/") else f"~/{path}"


def _free_system_gid(used: set[int], planned: set[int]) -> int:
    """Return the highest free GID below 1000, as groupadd --system picks."""
    for gid in range(999, 99, -1):
        if gid not in used and gid not in planned:
            return gid
    raise DeployError("No free system GID between 100 and 999 for the render or video group.")


def _plan_groups(plan: HostPlan) -> None:
    used = set(plan.snapshot["used_gids"])
    for name in ("video", "render"):
        found = plan.snapshot["groups"].get(name)
        if found:
            plan.gids[name] = found["gid"]
        else:
            gid = _free_system_gid(used, set(plan.new_groups.values()))
            plan.new_groups[name] = gid
            plan.gids[name] = gid


def _plan_archive(plan: HostPlan) -> None:
    snapshot = plan.snapshot
    for source, destination in archive_pairs(plan.settings):
        source_entry = snapshot["paths"].get(source, {})
        destination_entry = snapshot["paths"].get(destination, {})
        if source_entry.get("exists") and destination_entry.get("exists") and \
                source_entry.get("sha256", "a") != destination_entry.get("sha256", "b"):
            plan.problems.append(
                f"[archive] {destination} already exists and differs from {source}; the "
                "deploy overwrites neither. Compare the two, keep one, then rerun the deploy.")


def _render_files(plan: HostPlan, host_name: str) -> None:
    settings, snapshot = plan.settings, plan.snapshot
    user, group = settings.bestbox_user, plan.user_group

    def existing(path: str) -> bytes | None:
        return current_bytes(snapshot["files"].get(path, {}))

    def keep_mode(path: str, default: int) -> int:
        entry = snapshot["files"].get(path, {})
        return entry.get("mode", default) if entry.get("exists") else default

    def add(path: str, content: str | bytes, mode: int, owner: str = user,
            owner_group: str = group, verify: str | None = None) -> None:
        data = content.encode("utf-8") if isinstance(content, str) else content
        plan.files[path] = FileSpec(path, data, mode, owner, owner_group, verify)

    udev_verify = "udevadm verify {path}" if snapshot["udevadm_verify"] else None
    add(settings.bestbox_udev_rule_path, render_template("udev-amd-gpu.rules.j2", settings),
        0o644, "root", "root", udev_verify)
    add(settings.env_file_path, render_template("env.vllm.j2", settings), 0o640)

    inputs = compose.ServiceInputs(plan.home, plan.gids["video"], plan.gids["render"])
    compose_text = existing(settings.compose_path)
    if compose_text is None:
        plan.problems.append(f"[compose] {settings.compose_path} is missing or unreadable, so "
                             "the vllm service cannot be merged into it. Restore it from git.")
    else:
        try:
            merged = compose.merge(compose_text.decode("utf-8"),
                                   compose.render_service(settings, inputs),
                                   compose.render_network(settings),
                                   settings.vllm_network, settings.compose_path)
            add(settings.compose_path, merged, keep_mode(settings.compose_path, 0o644))
        except compose.ComposeMergeError as error:
            plan.problems.append(f"[compose] {error}")

    for name in SCRIPT_TEMPLATES:
        template = f"scripts/{name}.j2"
        if not (REPO_ROOT / "templates" / template).exists():
            template = f"{name}.j2"
        add(settings.path(f"scripts/{name}"), render_template(template, settings), 0o755)
    add(settings.path(BENCHMARK_SCRIPT), (REPO_ROOT / BENCHMARK_SCRIPT).read_bytes(), 0o755)
    add(settings.path(f"{settings.bestbox_archive_dir}/README.md"),
        render_template("archive-README.md.j2", settings,
                        archive_scripts=settings.bestbox_archive_scripts,
                        archive_docs=settings.bestbox_archive_docs), 0o644)

    if settings.vllm_build_image:
        add(settings.path(DOCKERFILE), render_template("Dockerfile.vllm.j2", settings), 0o644)

    for relative in settings.bestbox_activate_scripts:
        path = settings.path(relative)
        text = existing(path)
        if text is None:
            logger.warning("%s: %s is missing, so LLM_BASE_URL was not set in it.",
                           host_name, path)
        else:
            try:
                edits.check_llm_base_url_lines(text.decode("utf-8"), path)
            except edits.ActivateEditError as error:
                plan.problems.append(f"[activate] {error}")
                continue
            add(path, edits.set_llm_base_url(text.decode("utf-8"), settings.llm_base_url),
                keep_mode(path, 0o755))

    prometheus = settings.path(settings.bestbox_prometheus_config)
    text = existing(prometheus)
    if text is None:
        logger.warning("%s: %s is missing, so the LLM scrape target was not updated.",
                       host_name, prometheus)
    else:
        try:
            add(prometheus, edits.set_llm_scrape_port(
                text.decode("utf-8"), settings.vllm_port, prometheus), keep_mode(prometheus, 0o644),
                snapshot["files"][prometheus].get("owner", user),
                snapshot["files"][prometheus].get("group", group))
        except edits.PrometheusEditError as error:
            logger.warning("%s: %s", host_name, error)


def _check_file_types(plan: HostPlan) -> None:
    """Reject anything but a regular file or a real directory where the deploy writes.

    Root follows symbolic links, so a link that the checkout's owner placed
    could make the deploy write elsewhere; a directory cannot be replaced.
    """
    for path, spec in plan.files.items():
        entry = plan.snapshot["files"].get(path, {})
        if entry.get("exists") and entry.get("type") != "file":
            plan.problems.append(
                f"[files] {path} is a {entry.get('type')}, not a regular file, so the deploy "
                "will not write it. Move it aside, then rerun the deploy.")
    archive_dir = plan.settings.path(plan.settings.bestbox_archive_dir)
    for path in (plan.settings.path("docs/archive"), archive_dir, f"{archive_dir}/scripts",
                 f"{archive_dir}/docs"):
        entry = plan.snapshot["paths"].get(path, {})
        if entry.get("exists") and entry.get("type") != "directory":
            plan.problems.append(
                f"[archive] {path} is a {entry.get('type')}, not a directory, so the deploy "
                "will not archive files into it. Move it aside, then rerun the deploy.")


def plan_host(host, data: dict) -> HostPlan:
    """Validate, read and check one host, and return its plan (problems included)."""
    settings = settings_from(data, host.name)
    snapshot = host.get_fact(HostSnapshot, request=snapshot_request(settings))
    if not snapshot:
        raise DeployError(f"{host.name}: reading the host failed (the HostSnapshot fact returned "
                          "nothing); rerun with -v to see the remote error.")
    plan = HostPlan(settings, snapshot)
    plan.findings = run_checks(settings, snapshot)
    plan.problems += [str(f) for f in plan.findings if f.error]
    if snapshot["user"] is None:
        return plan
    _plan_groups(plan)
    _plan_archive(plan)
    _render_files(plan, host.name)
    _check_file_types(plan)
    return plan


# pyinfra runs the deploy file for every host at once, in greenlets, so the
# first greenlet plans all hosts and the others wait for it.
_planning_lock = gevent.lock.Semaphore()


def prepare(inventory) -> None:
    """Plan every active host once, and raise DeployError listing all problems."""
    with _planning_lock:
        if _failure is not None:
            raise DeployError(_failure)
        hosts = [h for h in inventory.get_active_hosts() if h.name not in _plans]
        if hosts:
            _prepare_hosts(hosts)


_failure: str | None = None


def _prepare_hosts(hosts) -> None:
    global _failure

    config_errors = []
    valid = []
    for target in hosts:
        try:
            settings_from(target.data.dict(), target.name)
            valid.append(target)
        except ConfigError as error:
            config_errors.append(str(error))
    if config_errors:
        # Configuration is checked on every host before any host is read.
        _failure = "\n\n".join(config_errors)
        raise DeployError(_failure)

    jobs = {target.name: gevent.spawn(plan_host, target, target.data.dict()) for target in valid}
    gevent.joinall(list(jobs.values()))
    reports = []
    for target in valid:
        job = jobs[target.name]
        if job.exception is not None:
            raise job.exception
        plan = job.value
        _plans[target.name] = plan
        for finding in plan.findings:
            if not finding.error:
                logger.warning("%s: %s", target.name, finding)
        if plan.problems:
            lines = "\n".join(f"  - {problem}" for problem in plan.problems)
            reports.append(f"Host {target.name} is not ready; nothing was changed:\n{lines}")
    if reports:
        _failure = "\n\n".join(reports)
        raise DeployError(_failure)


def plan_for(host) -> HostPlan:
    return _plans[host.name]
