"""The vLLM container's env file, .env.vllm, rendered from the configuration."""

from pyinfra import host

from bestbox.operations import write_planned_file
from bestbox.plan import plan_for

plan = plan_for(host)
write_planned_file(plan, plan.settings.env_file_path)
