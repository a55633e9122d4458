"""Return a host to its llama.cpp state from the deploy's backups."""

import os

from pyinfra import host, inventory, logger
from pyinfra.api import StringCommand
from pyinfra.operations import server

from bestbox.operations import current_bytes, show_diff
from bestbox.rollback import plan_all

plan = plan_all(inventory)[host.name]
settings = plan.settings
snapshot = plan.snapshot
for note in plan.notes:
    logger.info("%s: %s", host.name, note)

container = snapshot["docker"].get("container")
if container is not None:
    server.shell(
        name=f"Stop and remove the container {settings.vllm_container_name} and its network",
        commands=[StringCommand("docker", "rm", "-f", settings.vllm_container_name),
                  # Compose made the network for this service alone; another
                  # container still attached to it keeps it.
                  StringCommand("docker", "network", "rm", settings.vllm_network,
                                ">/dev/null", "2>&1", "||", "true")],
    )
else:
    host.noop(f"the container {settings.vllm_container_name} does not exist")

for move in plan.moves:
    server.shell(
        name=f"Move {move.archived} back to {move.original}",
        commands=[StringCommand("mv", "-n", move.archived, move.original)],
    )

for restore in plan.restores:
    current = snapshot["files"].get(restore.path) or snapshot["paths"].get(restore.path) or {}
    if restore.action == "remove":
        show_diff(restore.path, current_bytes(current), None)
        server.shell(name=f"Remove {restore.path}, which the deploy created",
                     commands=[StringCommand("rm", "-f", restore.path)])
        continue
    if restore.action == "restore":
        show_diff(restore.path, current_bytes(current),
                  current_bytes(plan.backup_contents.get(restore.backup, {})))
        directory, name = os.path.split(restore.path)
        temporary = f"{directory}/.{name}.bestbox-restore"
        commands = [StringCommand("cp", "-p", restore.backup, temporary),
                    StringCommand("chown", f"{restore.owner}:{restore.group}", temporary),
                    StringCommand("chmod", f"{restore.mode:o}", temporary),
                    StringCommand("mv", "-f", temporary, restore.path)]
        verb = "Restore"
    else:
        commands = [StringCommand("chown", f"{restore.owner}:{restore.group}", restore.path),
                    StringCommand("chmod", f"{restore.mode:o}", restore.path)]
        verb = "Restore the owner and mode of"
    server.shell(name=f"{verb} {restore.path} from the backup", commands=commands)

# Directories the deploy created, deepest first; one that still contains other files stays.
for path in sorted(plan.directories, key=len, reverse=True):
    if snapshot["paths"].get(path, {}).get("exists"):
        server.shell(name=f"Remove the directory {path} if it is empty",
                     commands=[StringCommand("rmdir", "--ignore-fail-on-non-empty", path)])

if any(r.path == settings.bestbox_udev_rule_path for r in plan.restores):
    server.shell(name="Reload udev rules",
                 commands=["udevadm control --reload-rules || true"])

if plan.runs:
    folders = [f"{settings.bestbox_backup_root}/{run}/rolled-back" for run in plan.runs]
    server.shell(name=f"Mark {len(plan.runs)} deploy runs as rolled back",
                 commands=[StringCommand("touch", *folders)])
else:
    host.noop("no deploy run is left to roll back")
