"""Bring the vllm service up when it differs from the compose file, then prove it responds."""

import os

from pyinfra import host
from pyinfra.api import StringCommand
from pyinfra.operations import python, server

from bestbox import service
from bestbox.operations import write_planned_file
from bestbox.plan import DOCKERFILE, plan_for

plan = plan_for(host)
settings = plan.settings
docker = plan.snapshot["docker"]
container = docker.get("container")
compose = ["docker", "compose", "--project-directory", settings.bestbox_path,
           "-f", settings.compose_path]

holders = plan.snapshot["port"]["holders"]
llama_servers = [h["pid"] for h in holders if h["comm"] == "llama-server"]
if settings.bestbox_stop_llamacpp and llama_servers:
    server.shell(
        name=f"Stop llama-server (pid {', '.join(map(str, llama_servers))}) on port "
             f"{settings.vllm_port}",
        commands=[StringCommand("kill", *map(str, llama_servers)),
                  # llama-server takes about a second to exit after SIGTERM.
                  f"for i in $(seq 1 30); do kill -0 {' '.join(map(str, llama_servers))} "
                  "2>/dev/null || exit 0; sleep 1; done; exit 1"],
    )

if not settings.start_service:
    host.noop("start_service is false, so the vllm container is left as it is")
else:
    if settings.vllm_build_image:
        dockerfile = settings.path(DOCKERFILE)
        write_planned_file(plan, dockerfile)
    if settings.vllm_build_image and not docker["images"].get(settings.image):
        server.shell(
            name=f"Build the image {settings.image} from templates/Dockerfile.vllm.j2",
            commands=[StringCommand("docker", "build", "-t", settings.image,
                                    "-f", dockerfile, os.path.dirname(dockerfile))],
        )

    files_changed = plan.changes(settings.compose_path) or plan.changes(settings.env_file_path)
    running = container is not None and container["status"] == "running"
    hash_differs = container is None or docker.get("compose_hash") != container.get("config_hash")

    if files_changed or hash_differs or not running:
        # --no-deps keeps every other service of the compose file as it is.
        # The snapshot read the config hash before this run wrote the compose
        # and env files, so a changed file forces the container to be recreated.
        up = compose + ["up", "-d", "--no-deps"]
        if files_changed and container is not None:
            up.append("--force-recreate")
        server.shell(name="Start or recreate the vllm container",
                     commands=[StringCommand(*up, "vllm")])
        python.call(
            name=f"Wait up to {settings.vllm_health_wait_timeout} s for vLLM /health",
            function=service.wait_for_health, host=host, settings=settings,
        )
        if settings.vllm_smoke_test:
            python.call(name="Smoke-test /v1/models and chat completions",
                        function=service.smoke_test, host=host, settings=settings)
    else:
        host.noop("the vllm container already runs the current compose configuration")
