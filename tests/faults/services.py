"""Private PostgreSQL, Redis and RabbitMQ instances that a fault test may stop and restart.

The machine's shared services (5432, 6379, 5672) serve every other test run, CI's included, so
they are never stopped here: each instance below runs from a temporary directory on a free
loopback port, is owned by this test session, and is removed when the session ends.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import redis

from tests.processes import free_port


class ServiceError(RuntimeError):
    pass


def _wait_port(port: int, up: bool, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                is_up = True
        except OSError:
            is_up = False
        if is_up == up:
            return
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} on port {port} did not come {'up' if up else 'down'} "
                               f"within {timeout:.0f}s")
        time.sleep(0.1)


# --- PostgreSQL -------------------------------------------------------------------------------


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise ServiceError(f"PostgreSQL's {name} was not found (/usr/lib/postgresql/*/bin)")
    return path


class PrivatePostgres:
    """A throwaway cluster: initdb + pg_ctl on a temporary directory and a free port, run as the
    `postgres` OS user when the tests run as root (PostgreSQL refuses to run as root)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="zapreply-faults-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            import pwd

            entry = pwd.getpwnam("postgres")
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
        self.server_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        result = subprocess.run([*self._as_postgres, *args], capture_output=True, text=True,
                                timeout=timeout, cwd=self.dir)
        if result.returncode != 0:
            raise ServiceError(f"{' '.join(args[:2])} failed: {result.stdout}{result.stderr}"
                               f"\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def init(self) -> PrivatePostgres:
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync", "--no-instructions")
        return self

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", options, "start", timeout=90)

    def stop(self, mode: str = "fast") -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "-m", mode, "stop",
                  timeout=90)

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.server_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except (ServiceError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


# --- Redis ------------------------------------------------------------------------------------


class PrivateRedis:
    """redis-server with an append-only file, so what was queued survives a restart."""

    kind = "redis"

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="zapreply-faults-redis-"))
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError("redis-server is not installed")
        with open(self.dir / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir),
                 "--daemonize", "no"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        _wait_port(self.port, True, 20, "redis-server")
        deadline = time.monotonic() + 20
        while True:  # the port opens before the append-only file is loaded
            try:
                redis.Redis.from_url(self.url, socket_timeout=2).ping()
                return
            except redis.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM is Redis's SHUTDOWN: the append-only file is flushed)."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None
        _wait_port(self.port, False, 10, "redis-server")

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def purge(self) -> None:
        self.client().flushdb()

    def depth(self) -> tuple[int, int]:
        """(tasks waiting in the queue, tasks fetched by a worker and not acknowledged yet);
        the second includes tasks a killed worker had fetched, until they are redelivered:
        those in its unacked records and the one its last fetch moved to its inflight list."""
        client = self.client()
        return int(client.llen("zapreply")), int(client.hlen("unacked")) + self.inflight()

    def inflight(self) -> int:
        """Tasks a worker's fetch has taken from the queue and not yet recorded as unacked."""
        client = self.client()
        return sum(int(client.llen(key)) for key in client.hkeys("zapreply.inflight"))

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return (self.dir / "redis.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def destroy(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)


# --- RabbitMQ ---------------------------------------------------------------------------------


class PrivateRabbitMQ:
    """A RabbitMQ node of its own: its own node name, port, distribution port, config, plugins
    (none) and Mnesia directory; it registers with the machine's epmd like any other node."""

    kind = "amqp"

    def __init__(self) -> None:
        self.port = free_port()
        self.dist_port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="zapreply-faults-rabbit-"))
        self.node = f"zapfaults{os.getpid()}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self.process: subprocess.Popen | None = None
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
            "log.console = false\n"
        )
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq-env.conf").write_text("")
        self.env = {
            **os.environ,
            # The cookie goes into HOME; rabbitmqctl reads it from there too.
            "HOME": str(self.dir),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbitmq.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    @staticmethod
    def _bin(name: str) -> str:
        # Debian's /usr/sbin wrappers switch to the `rabbitmq` user; the real scripts do not.
        for candidate in (f"/usr/lib/rabbitmq/bin/{name}", shutil.which(name)):
            if candidate and os.path.exists(candidate):
                return candidate
        raise ServiceError(f"RabbitMQ's {name} was not found")

    def start(self) -> None:
        with open(self.dir / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [self._bin("rabbitmq-server")], env=self.env, cwd=self.dir,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            _wait_port(self.port, True, 60, "rabbitmq-server")
        except ServiceError as exc:
            raise ServiceError(f"{exc}\n{self.log_tail()}") from None

    def ctl(self, *args: str, timeout: float = 60) -> str:
        result = subprocess.run([self._bin("rabbitmqctl"), "-n", self.node, *args], env=self.env,
                                cwd=self.dir, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise ServiceError(f"rabbitmqctl {' '.join(args)}: {result.stdout}{result.stderr}")
        return result.stdout

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            self.ctl("shutdown", timeout=60)
        except (ServiceError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None
        _wait_port(self.port, False, 10, "rabbitmq-server")

    def log_tail(self, chars: int = 3000) -> str:
        text = ""
        for path in [self.dir / "server.log", *sorted((self.dir / "log").glob("*.log"))]:
            try:
                text += f"--- {path.name} ---\n" + path.read_text(errors="replace")[-chars:]
            except OSError:
                pass
        return text

    def purge(self) -> None:
        from kombu import Connection

        with Connection(self.url, connect_timeout=5) as conn:
            channel = conn.channel()
            try:
                channel.queue_purge("zapreply")
            except conn.channel_errors:
                pass  # not declared yet

    def depth(self) -> tuple[int, int]:
        """(ready, unacknowledged) messages of the `zapreply` queue, as the broker counts them.
        A killed worker's unacknowledged messages are ready again as soon as its connection
        closes."""
        out = self.ctl("list_queues", "-q", "--no-table-headers", "name", "messages_ready",
                       "messages_unacknowledged", timeout=30)
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "zapreply":
                return int(parts[1]), int(parts[2])
        return 0, 0

    def destroy(self) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=10)
            self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)
