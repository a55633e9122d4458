"""Health and smoke checks of the running service; these only read."""

from pyinfra import host
from pyinfra.api.exceptions import DeployError

from bestbox import service
from bestbox.config import settings_from

settings = settings_from(host.data.dict(), host.name)
state = service.read_state(host, settings)
if state.http != 200 or state.status != "running":
    raise DeployError(
        f"{host.name}: vLLM is not healthy: container {state.status or 'missing'}, health "
        f"{state.health}, /health HTTP {state.http or 'no answer'}. Start it with "
        f"{settings.path('scripts/start-vllm.sh')} or rerun the deploy.")
try:
    service.smoke_test(host, settings)
except service.ServiceError as error:
    raise DeployError(str(error)) from None
host.noop("vLLM is healthy and answers chat completions")
