"""The vllm service and its network, spliced into BestBox's compose file."""

from pyinfra import host

from bestbox.operations import write_planned_file
from bestbox.plan import plan_for

plan = plan_for(host)
write_planned_file(plan, plan.settings.compose_path, verb="Merge the vllm service into")
