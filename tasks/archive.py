"""Archive the llama.cpp scripts and documents, with a README on restoring them."""

from pyinfra import host

from bestbox.operations import archived_file, directory, write_planned_file
from bestbox.plan import archive_pairs, plan_for

plan = plan_for(host)
settings = plan.settings
snapshot = plan.snapshot
archive_dir = settings.path(settings.bestbox_archive_dir)

for path in (settings.path("docs/archive"), archive_dir, f"{archive_dir}/scripts",
             f"{archive_dir}/docs"):
    directory(
        name=f"Ensure directory {path}",
        path=path, owner=settings.bestbox_user, group=plan.user_group, mode=0o755,
        current=snapshot["paths"].get(path, {}), backup_root=settings.bestbox_backup_root,
        fix_existing=False,
    )

for source, destination in archive_pairs(settings):
    archived_file(
        name=f"Archive {source}",
        source=source, destination=destination,
        source_entry=snapshot["paths"].get(source, {}),
        destination_entry=snapshot["paths"].get(destination, {}),
        owner=settings.bestbox_user, group=plan.user_group,
        backup_root=settings.bestbox_backup_root,
    )

write_planned_file(plan, f"{archive_dir}/README.md")
