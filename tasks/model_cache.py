"""Model cache directories under the BestBox user's home, owned by that user."""

from pyinfra import host

from bestbox.operations import directory
from bestbox.plan import cache_directories, home_key, plan_for

plan = plan_for(host)
settings = plan.settings

# Parents come first, so ~/.cache is created by this user, never by root.
for relative in cache_directories(settings):
    path = settings.home_path(plan.home, relative)
    directory(
        name=f"Ensure cache directory {path}",
        path=path, owner=settings.bestbox_user, group=plan.user_group, mode=0o755,
        current=plan.snapshot["paths"].get(home_key(relative), {}),
        backup_root=settings.bestbox_backup_root, record=False,
        # The cache directories must belong to the user; a parent such as
        # ~/.cache is only created when missing.
        fix_existing=relative in (settings.vllm_modelscope_cache, settings.vllm_huggingface_cache),
    )
