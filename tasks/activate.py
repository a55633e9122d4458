"""One active LLM_BASE_URL export, pointing at vLLM, in each activate script."""

from pyinfra import host

from bestbox.operations import write_planned_file
from bestbox.plan import plan_for

plan = plan_for(host)
settings = plan.settings

for relative in settings.bestbox_activate_scripts:
    path = settings.path(relative)
    # A missing script is left out of the plan, with a warning.
    if path in plan.files:
        write_planned_file(plan, path, verb="Set LLM_BASE_URL in")
