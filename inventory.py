"""Hosts to deploy to.

By default the deploy runs on this machine (@local). To target boxes over SSH:

- set BESTBOX_HOSTS to a comma-separated list of addresses, optionally with
  user@ and :port (BESTBOX_SSH_KEY names a private key for all of them), or
- list them in STRIX_HALO_HOSTS below, each with its own ssh_user, ssh_port
  and ssh_key, and any per-host override of group_data/all.py.
"""

import os

# Per-host SSH settings and configuration overrides, for example:
# ("strix-01.lan", {"ssh_user": "admin", "ssh_port": 22, "ssh_key": "~/.ssh/id_ed25519",
#                   "_sudo": True, "bestbox_user": "alice",
#                   "bestbox_path": "/home/alice/BestBox"}),
STRIX_HALO_HOSTS = []


def _hosts_from_environment(value):
    hosts = []
    key = os.environ.get("BESTBOX_SSH_KEY")
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        data = {}
        if "@" in item:
            data["ssh_user"], item = item.split("@", 1)
        if item.count(":") == 1:
            item, port = item.split(":")
            data["ssh_port"] = int(port)
        if key:
            data["ssh_key"] = key
        hosts.append((item, data))
    return hosts


_from_environment = _hosts_from_environment(os.environ.get("BESTBOX_HOSTS", ""))

if _from_environment:
    strix_halo = _from_environment
elif STRIX_HALO_HOSTS:
    strix_halo = STRIX_HALO_HOSTS
else:
    strix_halo = ["@local"]
