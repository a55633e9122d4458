"""Custom pyinfra operations: files with backups and atomic writes, and archive moves.

Each operation takes the current state of its path from the HostSnapshot fact
(one remote read for the whole deploy), decides what to change, and yields
shell commands. Before a file is modified, moved or created, a line goes into
this run's backup manifest, and a modified file's original is copied into the
run's backup folder, so rollback can restore it byte for byte. New content is
uploaded to a temporary file in the same directory and renamed into place, so
a killed deploy leaves either the old or the new file.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import json
import os
import shlex
import time
from io import BytesIO

from pyinfra import host, logger
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation
from pyinfra.context import state

# One backup folder per pyinfra run, named by the UTC time the run started.
RUN_ID = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def run_dir(backup_root: str) -> str:
    return f"{backup_root.rstrip('/')}/{RUN_ID}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def current_bytes(entry: dict) -> bytes | None:
    """Return a file's content from its snapshot entry, or None when unknown."""
    if not entry.get("exists") or "content" not in entry:
        return None
    return base64.b64decode(entry["content"])


def _manifest_command(backup_root: str, record: dict) -> StringCommand:
    folder = run_dir(backup_root)
    line = json.dumps(record, sort_keys=True)
    return StringCommand(
        "mkdir", "-p", "-m", "0700", QuoteString(folder), "&&",
        "printf", "'%s\\n'", QuoteString(line), ">>", QuoteString(f"{folder}/manifest.jsonl"),
    )


def _attributes(entry: dict) -> dict | None:
    if not entry.get("exists"):
        return None
    return {key: entry.get(key) for key in ("sha256", "mode", "owner", "group")}


def show_diff(path: str, old: bytes | None, new: bytes | None) -> None:
    """Log a unified diff between old and new content when pyinfra runs with --diff."""
    if not state.config.DIFF:
        return
    old_lines = old.decode("utf-8", "replace").splitlines(keepends=True) if old else []
    new_lines = new.decode("utf-8", "replace").splitlines(keepends=True) if new else []
    before = f"a{path}" if old is not None else "/dev/null"
    after = f"b{path}" if new is not None else "/dev/null"
    diff = list(difflib.unified_diff(old_lines, new_lines, before, after))
    if not diff:
        return
    host.log(f"Diff for {path}:", logger.info)
    for line in diff:
        logger.info("  %s", line.rstrip("\n"))


@operation()
def managed_file(
    path: str,
    content: bytes,
    mode: int,
    owner: str,
    group: str,
    current: dict,
    backup_root: str,
    verify_command: str | None = None,
):
    """
    Write a file atomically, with a backup and a manifest line, when it differs.

    + path: absolute path on the host
    + content: the desired bytes
    + mode, owner, group: the desired attributes (mode as an int, e.g. 0o640)
    + current: this path's entry from the HostSnapshot fact
    + backup_root: folder that contains one backup folder per run
    + verify_command: a command run on the uploaded temporary file before it
      replaces the old one, with {path} standing for that file; a non-zero
      exit stops the deploy and leaves the old file in place

    .. code:: python

        managed_file(
            name="Render /etc/udev/rules.d/70-bestbox-amd-gpu.rules",
            path="/etc/udev/rules.d/70-bestbox-amd-gpu.rules",
            content=rule_text.encode(), mode=0o644, owner="root", group="root",
            current=snapshot["files"][path], backup_root="/var/backups/bestbox-vllm",
        )
    """
    new_sha = sha256(content)
    exists = bool(current.get("exists"))
    same_content = exists and current.get("sha256") == new_sha
    same_attributes = exists and current.get("mode") == mode and \
        current.get("owner") == owner and current.get("group") == group

    # Nothing to do: the file already has this content and these attributes.
    if same_content and same_attributes:
        host.noop(f"{path} is already up to date")
        return

    written = f"{run_dir(backup_root)}/written{path}"
    record = {"path": path, "before": _attributes(current), "after_sha256": new_sha,
              "mode": mode, "owner": owner, "group": group, "written": written}

    # Only the owner or mode differ: fix them in place.
    if same_content:
        yield _manifest_command(backup_root, dict(record, action="attributes"))
        yield StringCommand("chown", QuoteString(f"{owner}:{group}"), QuoteString(path))
        yield StringCommand("chmod", f"{mode:o}", QuoteString(path))
        return

    show_diff(path, current_bytes(current), content)
    directory, name = os.path.split(path)
    temporary = f"{directory}/.{name}.bestbox-new"

    # The file exists with other content: save the original first.
    if exists:
        saved = f"{run_dir(backup_root)}/files{path}"
        yield _manifest_command(backup_root, dict(record, action="modify", backup=saved))
        yield StringCommand("mkdir", "-p", QuoteString(os.path.dirname(saved)), "&&",
                            "cp", "-p", QuoteString(path), QuoteString(saved))
    # The file is new: record that the deploy created it.
    else:
        yield _manifest_command(backup_root, dict(record, action="create"))

    yield FileUploadCommand(BytesIO(content), temporary)
    yield StringCommand("chown", QuoteString(f"{owner}:{group}"), QuoteString(temporary))
    yield StringCommand("chmod", f"{mode:o}", QuoteString(temporary))
    if verify_command:
        yield StringCommand(verify_command.format(path=shlex.quote(temporary)), "||",
                            "{", "rm", "-f", QuoteString(temporary), ";", "exit", "1", ";", "}")
    yield StringCommand("mv", "-f", QuoteString(temporary), QuoteString(path))
    # A copy of what was written lets an operator put it back after a hand
    # edit, which rollback needs before it restores the original.
    yield StringCommand("mkdir", "-p", QuoteString(os.path.dirname(written)), "&&",
                        "cp", "-p", QuoteString(path), QuoteString(written))


@operation()
def archived_file(source: str, destination: str, source_entry: dict,
                  destination_entry: dict, owner: str, group: str, backup_root: str):
    """
    Move a file into the archive folder, keeping its content and mode.

    + source, destination: absolute paths on the host
    + source_entry, destination_entry: their HostSnapshot entries
    + owner, group: owner of any archive folder that has to be created

    A destination that contains a different file is a conflict. The deploy's
    planning step rejects it before any operation runs, so it is not handled here.
    """
    source_exists = bool(source_entry.get("exists"))
    destination_exists = bool(destination_entry.get("exists"))

    # Already archived, and the original path is free.
    if destination_exists and not source_exists:
        host.noop(f"{source} is already archived as {destination}")
        return

    # Neither copy exists: report it, since there is nothing to archive.
    if not source_exists:
        host.noop(f"{source} does not exist, so there is nothing to archive")
        logger.warning("%s: %s is missing, so it was not archived", host.name, source)
        return

    record = {"action": "move", "path": source, "to": destination,
              "before": _attributes(source_entry)}
    # The same file is in both places, left by an interrupted run: drop the source.
    if destination_exists:
        record["action"] = "remove-duplicate"
        record["backup"] = f"{run_dir(backup_root)}/files{source}"
        yield _manifest_command(backup_root, record)
        yield StringCommand("mkdir", "-p", QuoteString(os.path.dirname(record["backup"])), "&&",
                            "cp", "-p", QuoteString(source), QuoteString(record["backup"]))
        yield StringCommand("rm", "-f", QuoteString(source))
        return

    # Move it: rename keeps content, mode, owner and timestamps.
    yield _manifest_command(backup_root, record)
    yield StringCommand("install", "-d", "-o", QuoteString(owner), "-g", QuoteString(group),
                        QuoteString(os.path.dirname(destination)))
    yield StringCommand("mv", "-n", QuoteString(source), QuoteString(destination))


@operation()
def directory(path: str, owner: str, group: str, mode: int, current: dict, backup_root: str,
              record: bool = True, fix_existing: bool = True):
    """
    Create a directory with an owner and mode, or give an existing one the owner.

    + current: this path's HostSnapshot entry
    + record: whether the manifest notes the creation, so rollback removes it
    + fix_existing: whether an existing directory gets this owner and group. Its
      mode is left alone, because a user may keep ~/.cache private on purpose.
    """
    is_directory = current.get("exists") and current.get("type") == "directory"
    owned = current.get("owner") == owner and current.get("group") == group

    # Already there, and either owned as requested or left as it is.
    if is_directory and (owned or not fix_existing):
        host.noop(f"directory {path} is already present")
        return

    # Present but owned by someone else: hand it over.
    if is_directory:
        yield StringCommand("chown", QuoteString(f"{owner}:{group}"), QuoteString(path))
        return

    if record:
        yield _manifest_command(backup_root, {"action": "create-directory", "path": path})
    yield StringCommand("install", "-d", "-o", QuoteString(owner), "-g", QuoteString(group),
                        "-m", f"{mode:o}", QuoteString(path))

def write_planned_file(plan, path: str, verb: str = "Render") -> None:
    """Call managed_file for a file in the host's plan, named "<verb> <path>"."""
    spec = plan.files[path]
    managed_file(
        name=f"{verb} {path}",
        path=spec.path, content=spec.content, mode=spec.mode, owner=spec.owner,
        group=spec.group, current=plan.snapshot["files"].get(path, {}),
        backup_root=plan.settings.bestbox_backup_root, verify_command=spec.verify_command,
    )
