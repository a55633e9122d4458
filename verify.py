"""Check a running vLLM service without changing anything.

    pyinfra inventory.py verify.py

Fails unless the container is healthy, /health returns 200, /v1/models lists
the served name, and plain and streaming chat completions return content.
"""

from pyinfra import local

local.include("tasks/verify.py")
