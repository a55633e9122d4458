"""Run the pyinfra command line and count the remote commands and uploads it makes.

    python benchmarks/count_pyinfra.py OUTPUT.json PYINFRA-ARGUMENTS...

Wraps the SSH connector's run_shell_command and put_file, runs pyinfra as the
`pyinfra` command would, and writes {"commands": N, "uploads": N, "exit": N}
to OUTPUT.json when pyinfra exits. deploy_timing.py runs it.
"""

import atexit
import json
import sys

from pyinfra.connectors.ssh import SSHConnector

counts = {"commands": 0, "uploads": 0, "exit": None}
_run_shell_command = SSHConnector.run_shell_command
_put_file = SSHConnector.put_file


def counted_run_shell_command(self, *args, **kwargs):
    counts["commands"] += 1
    return _run_shell_command(self, *args, **kwargs)


def counted_put_file(self, *args, **kwargs):
    counts["uploads"] += 1
    return _put_file(self, *args, **kwargs)


SSHConnector.run_shell_command = counted_run_shell_command
SSHConnector.put_file = counted_put_file


def write_counts(path: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(counts, handle)


if __name__ == "__main__":
    output = sys.argv[1]
    sys.argv = ["pyinfra", *sys.argv[2:]]
    atexit.register(write_counts, output)
    from pyinfra_cli.main import main

    try:
        main()
    except SystemExit as exit_request:
        counts["exit"] = exit_request.code if isinstance(exit_request.code, int) else 1
        raise
    counts["exit"] = 0
