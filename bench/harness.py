"""The system under test, as deployed, on this machine: its own database and Redis db, the
stand-ins, the receiver (and the bare baseline) under gunicorn, the Celery worker, and the load
generator, each its own process. `Bench.close` stops and removes all of it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import services
from bench.loadgen import Bodies, LoadResult, chat_jid
from bench.procs import Child, Supervisor, tree_cpu_seconds, wait_http_ok
from bench.report import percentile
from tests.wire import stamped_now

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "wuzapi" / "message_text.raw.json"
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_post.lua"
INSTANCE = "loja-teste"
ADMIN_TOKEN = "bench-admin-token"
# A model litellm knows (priced, capabilities on file), as a real config names one; the LLM
# stand-in answers whatever model is asked for.
BENCH_MODEL = "openai/gpt-4o-mini"
QUEUE = "zapreply"  # zapreply.broker.queue.QUEUE; not imported, the harness stays out of the app

Tick = Callable[[], None]


@dataclass
class Options:
    gunicorn_workers: int
    worker_concurrency: int
    worker_processes: int
    loadgen: str  # "auto", "wrk" or "python": the client of the maximum-rate runs
    postgres_url: str
    redis_url: str
    database: str
    db_connection_limit: int
    ingest_duration: float
    ingest_rounds: int
    ingest_connections: int
    half_rate_duration: float
    latency_rate: float
    latency_duration: float
    cpu_rate: float
    cpu_duration: float
    concurrency_rate: float
    concurrency_duration: float
    llm_delay: float
    fixture: Path = FIXTURE


@dataclass(frozen=True)
class Throughput:
    """A maximum-rate (closed loop) run against one app."""

    client: str
    rate: float
    p50_ms: float
    p99_ms: float
    requests: int
    failed: int
    client_cpu: float  # seconds, the load generator's
    server_cpu: float  # seconds, the app's gunicorn master and workers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children_cpu() -> float:
    """CPU of this process's children that have exited and been waited for."""
    usage = os.times()
    return usage.children_user + usage.children_system


class Bench:
    def __init__(self, options: Options, log_dir: Path) -> None:
        self.options = options
        self.log_dir = log_dir
        self.supervisor = Supervisor(log_dir)
        self.database_url = services.sqlalchemy_url(options.postgres_url, options.database,
                                                    options.database)
        self.ports = {name: free_port() for name in ("receiver", "bare", "llm", "wuzapi")}
        self.children: dict[str, Child] = {}
        self.bodies = Bodies(options.fixture)
        self._next_number = 0
        self._runs = 0
        self._database_created = False
        # The bare app's CPU per request in the ingest runs: how fast this machine runs this
        # kind of Python now, to read the other CPU figures against (None without them).
        self.bare_cpu_per_request: float | None = None

    # --- URLs and environment ---------------------------------------------------------

    def url(self, name: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "CELERY_BROKER_URL": self.options.redis_url,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "PYTHONUNBUFFERED": "1",
            **extra,
        }

    # --- starting and stopping --------------------------------------------------------

    def start(self) -> None:
        """Fresh database and Redis db, stand-ins, receiver and bare app; one config row."""
        services.recreate_database(self.options.postgres_url, self.options.database,
                                   self.options.db_connection_limit)
        self._database_created = True
        services.migrate(ROOT, self.database_url, self.log_dir / "alembic.log")
        services.flush_redis_db(self.options.redis_url)
        self.children["stubs"] = self.supervisor.start(
            "stubs", [sys.executable, "-m", "bench.stubs",
                      "--llm-port", str(self.ports["llm"]),
                      "--wuzapi-port", str(self.ports["wuzapi"])],
            env=self.env(), cwd=ROOT)
        self._gunicorn("receiver", "webhook_app:create_app()")
        self._gunicorn("bare", "bench.bare_app:create_app()")
        wait_http_ok(self.url("wuzapi", "/_bench/stats"), self.children["stubs"], 15)
        wait_http_ok(self.url("receiver", "/healthz"), self.children["receiver"], 30)
        self._create_config()

    def _gunicorn(self, name: str, app: str) -> None:
        """Both apps get exactly these settings."""
        # Sync workers, as the table has always been measured (gunicorn.conf.py deploys
        # gthread): the ratio compares the two apps, and sync keeps earlier runs comparable.
        argv = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.ports[name]}",
                "--workers", str(self.options.gunicorn_workers),
                "--worker-class", "sync", "--threads", "1"]
        if Path("/dev/shm").is_dir():
            # As the image runs it (Dockerfile): the workers' heartbeat file in memory.
            argv += ["--worker-tmp-dir", "/dev/shm"]
        argv.append(app)
        self.children[name] = self.supervisor.start(name, argv, env=self.env(), cwd=ROOT)

    def _create_config(self) -> None:
        response = httpx.post(
            self.url("receiver", "/api/workflow-configs"),
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10,
            json={
                "name": "Bench", "instance": INSTANCE, "is_active": True,
                "model": BENCH_MODEL, "system_prompt": "Você é o atendente da Loja.",
                "send": {"driver": "wuzapi", "base_url": self.url("wuzapi"),
                         "token": "bench-user-token"},
                "debounce_seconds": 0.0,
                # Every bench message opens a conversation: the flood limit would measure itself.
                "new_conversations_per_minute": None,
                # One number sending 100 replies a second is what the bench measures, not what
                # WhatsApp tolerates: the instance's rate is lifted. The per-chat gap and the
                # daily cap stay on, so each send still reserves its slot (one statement).
                "send_rate_per_minute": None,
            },
        )
        if response.status_code not in (200, 201):
            raise RuntimeError(f"creating the workflow config: {response.status_code} "
                               f"{response.text[:500]}")
        # Posted to the config's secret path, as a deployment's WuzAPI does: the receiver
        # authenticates every webhook.
        self.webhook_path = response.json()["webhook_path"]

    def webhook_url(self, target: str) -> str:
        """Where `target` ("receiver" or "bare", which takes any path under it) gets webhooks."""
        return self.url(target, self.webhook_path)

    def wait_bare_ready(self) -> None:
        # Any answer will do: the bare app has no health route.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url("bare"), timeout=1.0)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"bare app not ready:\n{self.children['bare'].tail()}")

    def stop(self, name: str) -> None:
        child = self.children.pop(name, None)
        if child is not None:
            self.supervisor.stop(child)

    def start_workers(self) -> None:
        """`celery -A worker worker` (N of them, each a threads pool), then a few messages end
        to end, which also wait out litellm's import and its first call."""
        for index in range(self.options.worker_processes):
            self.start_worker(index)
        self._warm_up(self.options.worker_processes)

    def start_worker(self, index: int) -> Child:
        """Worker process `worker-<index>` (again, after bench.soak killed it)."""
        options = self.options
        env = self.env(
            OPENAI_BASE_URL=self.url("llm", "/v1"),
            OPENAI_API_KEY="sk-bench-not-a-real-key",
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            WORKER_POOL="threads",
            WORKER_CONCURRENCY=str(options.worker_concurrency),
            LLM_TIMEOUT_SECONDS="30",
        )
        argv = [sys.executable, "-m", "celery", "-A", "worker", "worker",
                "-P", "threads", "-c", str(options.worker_concurrency),
                "--hostname", f"bench{index}-{os.getpid()}@%h",
                # As deployed (LOG_LEVEL's default, docker-compose): the cost of the log
                # lines counts, and task retries show in the log (log_errors).
                "--loglevel", "INFO"]
        name = f"worker-{index}"
        self.children[name] = self.supervisor.start(name, argv, env=env, cwd=ROOT)
        return self.children[name]

    def _warm_up(self, processes: int) -> None:
        """A worker's first LLM call costs ~1.5 s of CPU (litellm's lazy imports), once per
        process: answer a few messages one at a time (Redis hands each to the worker that has
        waited longest, so every process gets some), then a burst to start the threads."""
        sequential, burst = 3 * processes, 10 * processes
        for _ in range(sequential):
            self._post(self.take_numbers(1))
            if not self.wait_for_replies(1, timeout=120, children=self.workers()):
                raise RuntimeError(f"no reply within 120s:\n{self.children['worker-0'].tail()}")
            self.reset_stubs(llm_delay=0.0)
        first = self.take_numbers(burst)
        for number in range(first, first + burst):
            self._post(number)
        if not self.wait_for_replies(burst, timeout=120, children=self.workers()):
            raise RuntimeError(f"warm-up burst unanswered:\n{self.children['worker-0'].tail()}")

    def _post(self, number: int) -> None:
        httpx.post(self.webhook_url("receiver"), content=self.bodies.body(number),
                   headers={"Content-Type": "application/json"}, timeout=10).raise_for_status()

    def workers(self) -> list[Child]:
        return [child for name, child in self.children.items() if name.startswith("worker-")]

    def close(self) -> None:
        self.supervisor.stop_all()
        if self._database_created:
            try:
                services.drop_database(self.options.postgres_url, self.options.database)
            except Exception as exc:  # noqa: BLE001 - cleanup goes on
                print(f"bench: could not drop {self.options.database}: {exc}", file=sys.stderr)
        try:
            services.flush_redis_db(self.options.redis_url)
        except Exception as exc:  # noqa: BLE001
            print(f"bench: could not flush {self.options.redis_url}: {exc}", file=sys.stderr)

    # --- load ---------------------------------------------------------------------------

    def take_numbers(self, count: int) -> int:
        """Reserve `count` request numbers (message ids and chats); return the first."""
        first = self._next_number
        self._next_number += count
        return first

    def max_rate(self, target: str, *, duration: float, connections: int) -> Throughput:
        """Closed loop against `target` ("receiver" or "bare"): wrk when chosen or found on
        PATH (a quarter of the Python client's CPU per request, and the client shares the
        cores), else bench.loadgen."""
        server = self.children[target].pid
        cpu_before = tree_cpu_seconds(server)
        if self._use_wrk():
            result = self._wrk(target, duration, connections)
        else:
            run = self.load(target, duration=duration, connections=connections)
            result = Throughput(
                "python", run.rate, percentile(run.latencies, 50) * 1000,
                percentile(run.latencies, 99) * 1000, len(run.requests), run.failed,
                run.cpu_seconds, 0.0)
        return Throughput(**{**result.__dict__,
                             "server_cpu": tree_cpu_seconds(server) - cpu_before})

    def _use_wrk(self) -> bool:
        choice = self.options.loadgen
        if choice == "wrk" and shutil.which("wrk") is None:
            raise RuntimeError("--loadgen wrk: wrk is not installed (apt-get install wrk)")
        return choice == "wrk" or (choice == "auto" and shutil.which("wrk") is not None)

    def _wrk(self, target: str, duration: float, connections: int) -> Throughput:
        self._runs += 1
        name = f"wrk-{self._runs}-{target}"
        out = self.log_dir / f"{name}.txt"
        argv = ["wrk", "-t2", f"-c{connections}", f"-d{duration:g}s", "-s", str(WRK_SCRIPT),
                self.webhook_url(target)]
        # Timestamped now, as WuzAPI would: an old timestamp is a backlog, not answered.
        body = self.log_dir / f"{name}.body"
        body.write_bytes(stamped_now(self.options.fixture.read_bytes()))
        env = self.env(FIXTURE=str(body), RUN=str(self._runs))
        cpu_before = _children_cpu()
        child = self.supervisor.start(name, argv, env=env, cwd=ROOT, stdout=out)
        self._wait(lambda: child.process.poll() is not None, duration + 30, None)
        self.supervisor.stop(child)
        summary_line = out.read_text().strip().splitlines()[-1:] or [""]
        if child.process.returncode != 0 or not summary_line[0].startswith("{"):
            raise RuntimeError(f"{name} failed:\n{out.read_text()[-2000:]}{child.tail()}")
        summary = json.loads(summary_line[0])
        return Throughput(
            "wrk", summary["requests"] / (summary["duration_us"] / 1e6),
            summary["p50_us"] / 1000, summary["p99_us"] / 1000, summary["requests"],
            summary["errors"] + summary["non_2xx"], _children_cpu() - cpu_before, 0.0)

    def load(self, target: str, *, duration: float, connections: int | None = None,
             rate: float | None = None, tick: Tick | None = None) -> LoadResult:
        """Run bench.loadgen against `target` ("receiver" or "bare") and wait for it."""
        self._runs += 1
        name = f"loadgen-{self._runs}-{target}"
        # Closed loop: at most ~20k requests/s is far above what 2 cores serve here.
        count = int(rate * duration) if rate else int(20_000 * duration)
        first = self.take_numbers(count + 1)
        argv = [sys.executable, "-m", "bench.loadgen", "--url",
                self.webhook_url(target), "--fixture", str(self.options.fixture),
                "--first", str(first), "--duration", str(duration)]
        argv += ["--rate", str(rate)] if rate else ["--connections", str(connections or 16)]
        out = self.log_dir / f"{name}.json"
        child = self.supervisor.start(name, argv, env=self.env(), cwd=ROOT, stdout=out)
        self._wait(lambda: child.process.poll() is not None, duration + 30, tick)
        self.supervisor.stop(child)
        if child.process.returncode != 0:
            raise RuntimeError(f"{name} failed:\n{child.tail()}")
        return LoadResult.from_json(out.read_text())

    def _wait(self, done: Callable[[], bool], timeout: float, tick: Tick | None,
              interval: float = 0.25) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if tick is not None:
                tick()
            if done():
                return True
            time.sleep(interval)
        return False

    # --- the stand-ins --------------------------------------------------------------------

    def stub_stats(self) -> dict[str, Any]:
        return httpx.get(self.url("wuzapi", "/_bench/stats"), timeout=10).json()

    def sends(self) -> list[tuple[float, str]]:
        """Every send the WuzAPI stand-in received: (its time.monotonic(), Phone)."""
        return [(at, phone) for at, phone in
                httpx.get(self.url("wuzapi", "/_bench/sends"), timeout=30).json()]

    def replies(self, sends: list[tuple[float, str]] | None = None) -> dict[str, float]:
        """When the WuzAPI stand-in received the first reply to each chat."""
        first: dict[str, float] = {}
        for at, phone in self.sends() if sends is None else sends:
            first.setdefault(phone, at)
        return first

    def reset_stubs(self, llm_delay: float) -> None:
        httpx.post(self.url("wuzapi", "/_bench/reset"), timeout=10).raise_for_status()
        httpx.post(self.url("wuzapi", "/_bench/config"), json={"llm_delay": llm_delay},
                   timeout=10).raise_for_status()

    def wait_for_replies(self, count: int, *, timeout: float, tick: Tick | None = None,
                         children: list[Child] | None = None) -> bool:
        def done() -> bool:
            for child in children or []:
                if child.process.poll() is not None:
                    raise RuntimeError(f"{child.name} exited:\n{child.tail()}")
            return int(self.stub_stats()["send_count"]) >= count

        return self._wait(done, timeout, tick)

    def wait_for_every_reply(self, result: LoadResult, *, timeout: float,
                             tick: Tick | None = None) -> bool:
        """Until every accepted webhook's chat got a reply (a count of sends is not enough: a
        message re-sent after a timed-out send, same WhatsApp id, counts twice)."""
        chats = {chat_jid(number) for number in result.started()}
        return self._wait(lambda: chats <= self.replies().keys(), timeout, tick, interval=1.0)

    def reply_latencies(self, result: LoadResult) -> tuple[list[float], int]:
        """Seconds from each webhook POST's start to its reply at the stand-in; and how many
        accepted webhooks got no reply."""
        replied = self.replies()
        latencies = []
        for number, started in result.started().items():
            at = replied.get(chat_jid(number))
            if at is not None:
                latencies.append(at - started)
        return latencies, len(result.ok) - len(latencies)
