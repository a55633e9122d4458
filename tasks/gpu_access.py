"""GPU device access: render and video groups, the udev rule, device node modes."""

from pyinfra import host
from pyinfra.api import StringCommand
from pyinfra.operations import server

from bestbox.operations import write_planned_file
from bestbox.plan import plan_for

plan = plan_for(host)
settings = plan.settings
snapshot = plan.snapshot

for group_name, gid in plan.new_groups.items():
    server.shell(
        name=f"Create group {group_name} with GID {gid}",
        commands=[StringCommand("groupadd", "--system", "--gid", str(gid), group_name)],
    )

missing_groups = [name for name in ("render", "video") if name not in snapshot["user"]["groups"]]
if missing_groups:
    server.shell(
        name=f"Add {settings.bestbox_user} to the groups {', '.join(missing_groups)}",
        commands=[StringCommand("usermod", "--append", "--groups", ",".join(missing_groups),
                                settings.bestbox_user)],
    )
    host.log(f"{settings.bestbox_user} gets the new group membership at the next login.")

write_planned_file(plan, settings.bestbox_udev_rule_path)
if plan.changes(settings.bestbox_udev_rule_path):
    server.shell(
        name="Reload udev rules and apply them to the KFD and render nodes",
        commands=["udevadm control --reload-rules",
                  "udevadm trigger --subsystem-match=kfd --subsystem-match=drm"],
    )

# udevadm trigger applies the rule on a running system; setting the nodes
# directly also covers hosts where udev events are not delivered.
device_nodes = [snapshot["gpu"]["kfd"]] + snapshot["gpu"]["render_nodes"]
wrong = [node["path"] for node in device_nodes
         if node.get("exists") and (node.get("group") != "render" or node.get("mode") != 0o660)]
if wrong:
    server.shell(
        name=f"Give {', '.join(wrong)} the group render and mode 0660",
        commands=[StringCommand("chgrp", "render", *wrong), StringCommand("chmod", "0660", *wrong)],
    )
