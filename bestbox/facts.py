"""Custom pyinfra facts for the BestBox vLLM deploy."""

from __future__ import annotations

import base64
import json
import shlex

from pyinfra.api import FactBase

from bestbox.config import REPO_ROOT

PROBE_SCRIPT = (REPO_ROOT / "files" / "probe.py").read_bytes()


class HostSnapshot(FactBase):
    """
    Returns everything the deploy reads from a host, from one remote command.

    The request (a JSON string) names the BestBox user, the groups, the files
    whose content is needed, the paths to stat, and whether to read the GPU,
    model, port and Docker state. The result is the dict printed by
    files/probe.py, for example:

    .. code:: python

        {
            "user": {"uid": 1000, "home": "/home/bestbox", "groups": ["render"], ...},
            "groups": {"render": {"gid": 992}, "video": {"gid": 44}},
            "files": {"/home/bestbox/BestBox/activate.sh": {"exists": True, "sha256": ...}},
            "gpu": {"kfd_nodes": [{"node": "1", "gfx_target_version": 110501}], ...},
        }

    "user" is None when the user does not exist. The fact needs python3 on the host.
    """

    def command(self, request: str) -> str:
        script = base64.b64encode(PROBE_SCRIPT).decode("ascii")
        return f"echo {script} | base64 -d | python3 - {shlex.quote(request)}"

    def process(self, output):
        return json.loads("\n".join(output))

