"""Plan a rollback from the backup manifests that deploy runs left on the host.

Only runs not yet rolled back count. For each path they touched, the first
entry keeps the original (a backup copy, or "absent" for a file the deploy
created) and the last entry keeps the checksum the deploy wrote. A file whose
current checksum is neither was changed by hand after the deploy, and the
rollback stops, naming it, before it changes anything.
"""

from __future__ import annotations

import json

import gevent
import gevent.lock
from dataclasses import dataclass, field

from pyinfra.api.exceptions import DeployError

from bestbox.config import Settings, settings_from
from bestbox.facts import HostSnapshot
from bestbox.plan import snapshot_request

# Created files are removed unless bestbox_rollback_keep_created is true.


@dataclass
class FileRestore:
    path: str
    action: str  # "restore", "remove" or "attributes"
    backup: str | None = None
    mode: int | None = None
    owner: str | None = None
    group: str | None = None


@dataclass
class MoveBack:
    archived: str
    original: str


@dataclass
class RollbackPlan:
    settings: Settings
    snapshot: dict
    runs: list[str] = field(default_factory=list)
    restores: list[FileRestore] = field(default_factory=list)
    moves: list[MoveBack] = field(default_factory=list)
    directories: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    backup_contents: dict = field(default_factory=dict)


def _pending_entries(snapshot: dict) -> tuple[list[str], list[dict]]:
    runs, entries = [], []
    for run in snapshot["backups"]:
        if run["rolled_back"]:
            continue
        runs.append(run["run"])
        entries += run["entries"]
    return runs, entries


def plan_rollback(host, settings: Settings) -> RollbackPlan:
    """Read the host and decide every step of the rollback; problems are collected."""
    snapshot = host.get_fact(HostSnapshot, request=snapshot_request(settings, preflight=False))
    plan = RollbackPlan(settings, snapshot)
    plan.runs, entries = _pending_entries(snapshot)

    files: dict[str, list[dict]] = {}
    moves: dict[str, dict] = {}
    for entry in entries:
        action = entry.get("action")
        if action in ("modify", "create", "attributes"):
            files.setdefault(entry["path"], []).append(entry)
        elif action in ("move", "remove-duplicate") and entry["path"] not in moves:
            moves[entry["path"]] = entry
        elif action == "create-directory" and entry["path"] not in plan.directories:
            plan.directories.append(entry["path"])

    # The backups' content is read in a second pass, so --diff can show it.
    backups = sorted({history[0]["backup"] for history in files.values()
                      if history[0]["action"] == "modify"} |
                     {entry["backup"] for entry in moves.values() if entry.get("backup")})
    if backups:
        extra = json.loads(snapshot_request(settings, preflight=False))
        extra.update(content_paths=backups, stat_paths=[], docker=False, audit=None,
                     model_dir=None)
        plan.backup_contents = host.get_fact(
            HostSnapshot, request=json.dumps(extra, sort_keys=True))["files"]

    for path, history in files.items():
        _plan_file(plan, path, history)
    for source, entry in moves.items():
        _plan_move(plan, source, entry)
    return plan


def _current(plan: RollbackPlan, path: str) -> dict:
    return plan.snapshot["files"].get(path) or plan.snapshot["paths"].get(path) or {}


def _plan_file(plan: RollbackPlan, path: str, history: list[dict]) -> None:
    first, last = history[0], history[-1]
    current = _current(plan, path)
    if "exists" not in current:
        plan.problems.append(f"{path}: not read by the rollback snapshot; rollback cannot "
                             "check it. Report this as a bug.")
        return
    original = first.get("before")
    current_sha = current.get("sha256") if current.get("exists") else None
    original_sha = original["sha256"] if original else None
    written = {entry["after_sha256"] for entry in history}

    # Already back to the original.
    if current_sha == original_sha and (
            original is None or (current.get("mode") == original["mode"]
                                 and current.get("owner") == original["owner"])):
        return
    if current_sha not in written and current_sha != original_sha:
        state = "was deleted" if current_sha is None else "was changed by hand"
        if last.get("written"):
            fix = (f"Save your changes elsewhere, put back the deployed version with "
                   f"'cp -p {last['written']} {path}', and rerun the rollback")
        else:
            fix = "Save your changes elsewhere, put back the deployed version, and rerun"
        if first["action"] == "modify":
            fix += f"; or restore the original yourself from {first['backup']}"
        plan.problems.append(
            f"{path} {state} after the deploy wrote it (sha256 {current_sha or '-'}, the "
            f"deploy wrote {last['after_sha256']}), so rollback will not overwrite it. "
            f"{fix}.")
        return

    if first["action"] == "create":
        if plan.settings.bestbox_rollback_keep_created:
            plan.notes.append(f"{path} was created by the deploy and is kept.")
            return
        plan.restores.append(FileRestore(path, "remove"))
    elif first["action"] == "modify":
        backup = first["backup"]
        saved = plan.backup_contents.get(backup, {})
        if saved.get("sha256") != original_sha:
            plan.problems.append(f"{path}: its backup {backup} is missing or damaged, so "
                                 "rollback cannot restore the original.")
            return
        plan.restores.append(FileRestore(path, "restore", backup, original["mode"],
                                         original["owner"], original["group"]))
    else:
        plan.restores.append(FileRestore(path, "attributes", None, original["mode"],
                                         original["owner"], original["group"]))


def _plan_move(plan: RollbackPlan, source: str, entry: dict) -> None:
    snapshot_paths = plan.snapshot["paths"]
    source_entry = snapshot_paths.get(source, {})
    if entry["action"] == "remove-duplicate":
        if not source_entry.get("exists"):
            plan.restores.append(FileRestore(source, "restore", entry["backup"],
                                             entry["before"]["mode"], entry["before"]["owner"],
                                             entry["before"]["group"]))
        return
    destination = entry["to"]
    destination_entry = snapshot_paths.get(destination, {})
    if source_entry.get("exists"):
        if destination_entry.get("exists"):
            plan.problems.append(f"{source} exists again and {destination} is still archived; "
                                 "rollback will not choose between them. Remove one, then rerun.")
        return
    if not destination_entry.get("exists"):
        plan.problems.append(f"{destination} is missing, so {source} cannot be restored. "
                             "Restore it from git in the BestBox checkout.")
        return
    if destination_entry.get("sha256") != (entry.get("before") or {}).get("sha256"):
        plan.problems.append(f"{destination} was changed after it was archived; rollback will "
                             f"not move it back to {source}. Move it by hand.")
        return
    plan.moves.append(MoveBack(destination, source))


def check(plans: dict[str, RollbackPlan]) -> None:
    reports = []
    for name, plan in plans.items():
        if plan.problems:
            lines = "\n".join(f"  - {problem}" for problem in plan.problems)
            reports.append(f"Rollback of host {name} stopped; nothing was changed:\n{lines}")
    if reports:
        raise DeployError("\n\n".join(reports))


_plans: dict[str, RollbackPlan] = {}
# pyinfra runs the deploy file for every host at once, in greenlets: the first
# plans all hosts, and the others wait and reuse the result.
_planning_lock = gevent.lock.Semaphore()


def plan_all(inventory) -> dict[str, RollbackPlan]:
    """Plan the rollback of every active host once; raise if any host has problems."""
    with _planning_lock:
        if not _plans:
            targets = inventory.get_active_hosts()
            jobs = [gevent.spawn(plan_rollback, target,
                                 settings_from(target.data.dict(), target.name))
                    for target in targets]
            gevent.joinall(jobs, raise_error=True)
            for target, job in zip(targets, jobs):
                _plans[target.name] = job.value
        check(_plans)
    return _plans
