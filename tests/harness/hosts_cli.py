"""Command line for throwaway hosts: `python -m tests.harness.hosts up|down|list|build|prune`.

`up` starts hosts that stay up after the command exits, in a shared session
directory (`$BESTBOX_TEST_WORKDIR/sessions/cli`) whose ssh config lists every
running `up` host. `down` stops them, and `down --all` also removes hosts
that crashed test runs left behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable

from tests.harness import hosts_fake as fake
from tests.harness import hosts_rootfs as rootfs
from tests.harness.hosts import (
    HostSession,
    HostState,
    ThrowawayHost,
    _pid_alive,
    load_states,
    start_host,
    teardown_state,
    workdir,
)


def _describe(state: HostState) -> dict:
    session_dir = Path(state.session_dir)
    return {
        "name": state.name,
        "address": state.address,
        "ssh_key": str(session_dir / "id_ed25519"),
        "ssh_config": str(session_dir / "ssh_config"),
        "root": state.root,
        "netns": state.netns,
        "running": _pid_alive(state.init_pid, state.init_start),
        "docker": bool(state.dockerd_pid),
    }


def _cli_up(args: argparse.Namespace) -> int:
    session = HostSession(name="cli", directory=workdir() / "sessions" / "cli")
    # Keep the hosts that earlier `up` calls left in this session in its ssh config.
    for state in load_states():
        if state.session_dir == str(session.dir) and _pid_alive(state.init_pid, state.init_start):
            stub = ThrowawayHost(state.name, session=session, detached=True)
            stub.state = state
            session.hosts[state.name] = stub
    session.hosts_started = len(session.hosts)
    used_names = {state.name for state in load_states()}
    started = []
    render_gids = list(args.render_gid or [])
    for index in range(args.count):
        number = index + 1
        while f"{args.prefix}{number}" in used_names:
            number += 1
        name = f"{args.prefix}{number}"
        used_names.add(name)
        options = {"with_docker": args.docker, "with_udevd": args.udevd, "session": session, "detached": True,
                   "model": fake.FakeModel() if args.model else None}
        if render_gids:
            options["render_gid"] = render_gids[index % len(render_gids)]
        started.append(start_host(name, **options))
    described = [_describe(host.state) for host in started]
    if args.json:
        print(json.dumps(described, indent=2))
    else:
        for item in described:
            print(f"{item['name']}\t{item['address']}")
        print(f"ssh -F {session.ssh_config} {described[0]['address']}" if described else "")
    return 0


def _cli_down(args: argparse.Namespace) -> int:
    states = load_states()
    if not args.all and not args.names:
        print("name the hosts to stop, or pass --all", file=sys.stderr)
        return 2
    chosen = [state for state in states if args.all or state.name in args.names]
    missing = set(args.names) - {state.name for state in chosen}
    for state in chosen:
        teardown_state(state)
        print(f"stopped {state.name}")
    cli_session = workdir() / "sessions" / "cli"
    if cli_session.exists():
        remaining = [state for state in load_states() if state.session_dir == str(cli_session)]
        session = HostSession(name="cli", directory=cli_session)
        for state in remaining:
            stub = ThrowawayHost(state.name, session=session, detached=True)
            stub.state = state
            session.hosts[state.name] = stub
        session.write_ssh_config()
    if missing:
        print(f"no such host: {', '.join(sorted(missing))}", file=sys.stderr)
        return 1
    return 0


def _cli_list(args: argparse.Namespace) -> int:
    described = [_describe(state) for state in load_states()]
    if args.json:
        print(json.dumps(described, indent=2))
    else:
        for item in described:
            status = "running" if item["running"] else "stopped"
            print(f"{item['name']}\t{item['address']}\t{status}\t{item['ssh_config']}")
    return 0


def _cli_build(args: argparse.Namespace) -> int:
    tarball, recipe = rootfs.ensure_rootfs_with_fallback(suite=args.suite, with_docker=args.docker)
    print(f"{tarball} ({recipe.suite})")
    return 0


def _cli_prune(args: argparse.Namespace) -> int:
    """Delete cached root filesystems that no current recipe names and no host uses."""
    current = set()
    for suite in (rootfs.DEFAULT_SUITE, rootfs.FALLBACK_SUITE):
        for with_docker in (False, True):
            current.add(rootfs.RootfsRecipe(suite=suite, with_docker=with_docker).tarball_name())
    with open("/proc/self/mountinfo") as handle:
        mounts = handle.read()
    for tarball in sorted(rootfs.cache_dir().glob("rootfs-*.tar")):
        unpacked = tarball.with_suffix(".d")
        if tarball.name in current or f"lowerdir={unpacked}" in mounts:
            continue
        for path in (tarball, unpacked, tarball.with_suffix(".log")):
            if path.is_dir():
                subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)
            else:
                path.unlink(missing_ok=True)
        print(f"removed {tarball.name}")
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.hosts", description="Start and stop throwaway test hosts.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start hosts that stay up until `down`")
    up.add_argument("--count", type=int, default=1, help="number of hosts to start (default 1)")
    up.add_argument("--prefix", default="box", help="host name prefix (default box)")
    up.add_argument("--docker", action="store_true", help="run a Docker engine inside each host")
    up.add_argument("--udevd", action="store_true", help="run systemd-udevd inside each host")
    up.add_argument("--model", action="store_true", help="add the sparse model stand-in")
    up.add_argument("--render-gid", type=int, action="append",
                    help="render GID; repeat to give hosts different GIDs (default: 992, 109, 110, 104 in turn)")
    up.add_argument("--json", action="store_true", help="print the hosts as JSON")
    up.set_defaults(handler=_cli_up)
    down = commands.add_parser("down", help="stop hosts and remove their files")
    down.add_argument("names", nargs="*", help="host names")
    down.add_argument("--all", action="store_true", help="stop every host, including ones left by dead processes")
    down.set_defaults(handler=_cli_down)
    listing = commands.add_parser("list", help="list the hosts")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_cli_list)
    build = commands.add_parser("build", help="build the cached root filesystem only")
    build.add_argument("--suite", help="Debian suite (default trixie, falling back to bookworm)")
    build.add_argument("--docker", action="store_true", help="build the variant with Docker")
    build.set_defaults(handler=_cli_build)
    prune = commands.add_parser("prune", help="delete cached root filesystems of old recipes")
    prune.set_defaults(handler=_cli_prune)
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if os.geteuid() != 0:
        print("throwaway hosts need root (network namespaces, mounts, mknod)", file=sys.stderr)
        return 1
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
