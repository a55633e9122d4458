"""Move a BestBox box from llama.cpp to vLLM in a ROCm container.

    pyinfra inventory.py deploy.py --dry --diff   # show what would change
    pyinfra inventory.py deploy.py                # apply

Every host is validated and checked (tasks/prepare.py) before any task below
changes anything.
"""

from pyinfra import local

for task in (
    "tasks/prepare.py",
    "tasks/gpu_access.py",
    "tasks/model_cache.py",
    "tasks/archive.py",
    "tasks/env_file.py",
    "tasks/compose_service.py",
    "tasks/scripts.py",
    "tasks/activate.py",
    "tasks/prometheus.py",
    "tasks/service.py",
    "tasks/audit.py",
):
    local.include(task)
