"""Prometheus's LLM scrape target, moved from the llama.cpp port to the vLLM port."""

from pyinfra import host

from bestbox.operations import write_planned_file
from bestbox.plan import plan_for

plan = plan_for(host)
path = plan.settings.path(plan.settings.bestbox_prometheus_config)

# The plan leaves the file out, with a warning, when it is missing or has no
# LLM scrape job.
if path in plan.files:
    write_planned_file(plan, path, verb="Point the LLM scrape target in")
