"""The start, stop, restart, monitor and rollback scripts, and the benchmark client."""

from pyinfra import host

from bestbox.operations import write_planned_file
from bestbox.plan import BENCHMARK_SCRIPT, SCRIPT_TEMPLATES, plan_for

plan = plan_for(host)
settings = plan.settings

for name in SCRIPT_TEMPLATES:
    write_planned_file(plan, settings.path(f"scripts/{name}"))
write_planned_file(plan, settings.path(BENCHMARK_SCRIPT), verb="Install")
