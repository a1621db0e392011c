"""What the fault scenarios share: real worker and receiver processes started with a scenario's
environment, WuzAPI deliveries, the database read back, and waiting for the system to settle."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from tests.conftest import ROOT, fixture_json, signed
from tests.processes import Receiver
from tests.stubs import LLMStub, MessagesStub
from zapreply.storage.models import Event, Message, ReplyRun, WorkflowConfig

ADMIN_TOKEN = "faults-admin-token"
INSTANCE = "loja-faults"

# Every process of a scenario gets these (a scenario may override some). They are short on
# purpose: a dead worker's lease is free after LEASE_SECONDS, the sweeper looks every second,
# retries start at 0.2 s, and Redis hands an unacknowledged task out again after 18 s (the
# settings check wants at least 16). TASK_TIME_LIMIT_SECONDS > LLM_TIMEOUT_SECONDS ×
# (MAX_TOOL_ROUNDS + 1): no scenario uses tools, so MAX_TOOL_ROUNDS=0 lets the LLM timeout stay
# generous (a fresh worker's first litellm call alone takes ~2 s on a busy 2-core machine).
FAULT_ENV = {
    "LLM_TIMEOUT_SECONDS": "8",
    "MAX_TOOL_ROUNDS": "0",
    "TASK_TIME_LIMIT_SECONDS": "9",
    "VISIBILITY_TIMEOUT_SECONDS": "18",
    "LEASE_SECONDS": "5",
    "SWEEP_INTERVAL_SECONDS": "1",
    "SWEEP_GRACE_SECONDS": "2",
    "RETRY_BASE_SECONDS": "0.2",
    "RETRY_MAX_SECONDS": "2",
    "WORKER_CONCURRENCY": "4",
    "CONFIG_CACHE_SECONDS": "0",
}


class Worker:
    """One `celery -A worker worker` process, as deployed (threads pool, one OS process)."""

    def __init__(self, env: dict[str, str], log_path: Path, name: str) -> None:
        self.log_path = log_path
        self.name = name
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "worker", "worker", "--loglevel", "INFO",
                 "--hostname", f"{name}@%h"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        self.started = time.monotonic()
        self.ready_after: float | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = 60) -> Worker:
        deadline = time.monotonic() + timeout
        while b"ready." not in self.log_path.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"worker {self.name} did not start:\n{self.log_tail()}")
            time.sleep(0.05)
        self.ready_after = time.monotonic() - self.started
        return self

    def kill9(self) -> None:
        """SIGKILL: no shutdown handler runs, nothing is acknowledged or requeued by the worker."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


_TEMPLATE = fixture_json("message_text.json")


def delivery(text: str, *, chat: str = "5511900000001", wa_id: str | None = None,
             sent_at: datetime | None = None) -> bytes:
    """A WuzAPI `Message` webhook body (the recorded fixture) with this text, chat, id and
    WhatsApp timestamp (whole seconds, as WhatsApp gives it; now by default)."""
    body = copy.deepcopy(_TEMPLATE)
    info = body["event"]["Info"]
    jid = f"{chat}@s.whatsapp.net"
    info["ID"] = wa_id or f"3A{uuid.uuid4().hex[:18].upper()}"
    info["Timestamp"] = (sent_at or datetime.now(UTC)).replace(microsecond=0).isoformat()
    info["Chat"] = jid
    info["Sender"] = jid
    body["event"]["Message"]["conversation"] = text
    body["event"]["RawMessage"]["conversation"] = text
    body["instanceName"] = INSTANCE
    return json.dumps(body).encode()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             detail: Callable[[], str] | None = None, interval: float = 0.05) -> Any:
    """Poll until predicate() is truthy (and return it), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"
                                 + (f"\n{detail()}" if detail else ""))
        time.sleep(interval)


class Stack:
    """One scenario's view of the system: its database, broker, receiver, stand-ins and the
    workers it started (killed when the scenario ends)."""

    def __init__(self, *, engine: Engine, broker: Any, pg: Any, receiver: Receiver,
                 base_env: dict[str, str], llm: LLMStub, wuzapi: MessagesStub, log_dir: Path,
                 metrics: list[dict[str, Any]], test_name: str,
                 shared: dict[str, Worker]) -> None:
        self.shared = shared
        self.engine = engine
        self.broker = broker
        self.pg = pg
        self.receiver = receiver
        self.base_env = base_env
        self.llm = llm
        self.wuzapi = wuzapi
        self.log_dir = log_dir
        self.metrics = metrics
        self.test_name = test_name
        self.workers: list[Worker] = []
        self.http = httpx.Client(timeout=15)

    # --- processes ----------------------------------------------------------------------------

    def env(self, **overrides: str) -> dict[str, str]:
        return {**os.environ, **self.base_env, **overrides}

    def start_worker(self, wait: bool = True, **overrides: str) -> Worker:
        """A worker of this scenario's own, with its environment (killed when it ends). The
        shared worker is stopped first: no worker with another environment may take tasks."""
        if "worker" in self.shared:
            self.shared.pop("worker").kill()
        name = f"faults{len(self.workers) + 1}-{os.getpid()}"
        worker = Worker(self.env(**overrides), self.log_dir / f"{name}.log", name)
        self.workers.append(worker)
        return worker.wait_ready() if wait else worker

    def worker(self) -> Worker:
        """The worker this broker's scenarios share when they need nothing but FAULT_ENV: it
        starts once (litellm alone takes seconds to load) and is replaced after a failure."""
        worker = self.shared.get("worker")
        if worker is None or worker.process.poll() is not None:
            name = f"faults-shared-{self.broker.kind}-{os.getpid()}"
            worker = Worker(self.env(), self.log_dir.parent / f"{name}.log", name)
            self.shared["worker"] = worker
            worker.wait_ready()
        return worker

    def close(self, failed: bool = False) -> None:
        for worker in self.workers:
            worker.kill()
        if failed and "worker" in self.shared:
            # It may still hold this scenario's tasks: the next scenario gets a fresh one.
            self.shared.pop("worker").kill()
        self.http.close()

    def logs(self) -> str:
        workers = [*self.workers, *([self.shared["worker"]] if "worker" in self.shared else [])]
        parts = [f"--- {w.name} (pid {w.pid}, exit {w.process.poll()}) ---\n{w.log_tail()}"
                 for w in workers]
        return "\n".join(parts)

    # --- data ---------------------------------------------------------------------------------

    def make_config(self, **overrides: Any) -> int:
        values: dict[str, Any] = {
            "name": "Loja", "instance": INSTANCE, "is_active": True,
            "model": "openai/stub-model", "system_prompt": "Você é o atendente da Loja.",
            "send": {"driver": "wuzapi", "base_url": self.wuzapi.url, "token": "faults-token"},
            # Hundreds of replies a minute from one number: what the faults are tested under,
            # not what WhatsApp tolerates (the pace has its own tests, tests/test_pacing.py).
            "debounce_seconds": 0.0, "options": {"send_rate_per_minute": None},
        }
        values.update(overrides)
        with Session(self.engine) as session, session.begin():
            config = WorkflowConfig(**values)
            session.add(config)
            session.flush()
            return config.id

    def post(self, text: str, *, chat: str = "5511900000001", wa_id: str | None = None,
             sent_at: datetime | None = None, body: bytes | None = None) -> httpx.Response:
        if body is None:
            body = delivery(text, chat=chat, wa_id=wa_id, sent_at=sent_at)
        return self.http.post(
            f"{self.receiver.url}/webhooks/wuzapi",
            content=body,
            headers={"Content-Type": "application/json", **signed(body)},
        )

    def post_until_queued(self, body: bytes, timeout: float = 60) -> list[int]:
        """Post like WuzAPI does: a non-2xx answer (or no answer) is retried, here every 0.5 s
        until accepted; returns the statuses seen."""
        statuses: list[int] = []

        def attempt() -> bool:
            try:
                response = self.post("", body=body)
            except httpx.TransportError:
                statuses.append(0)
                return False
            statuses.append(response.status_code)
            return response.status_code == 200

        wait_for(attempt, timeout, "the receiver to accept a delivery",
                 lambda: f"statuses: {statuses}", interval=0.5)
        return statuses

    def query(self, statement: Any) -> list[Any]:
        with Session(self.engine) as session:
            return list(session.scalars(statement))

    def events(self, type_: str | None = None) -> list[Event]:
        statement = select(Event).order_by(Event.id)
        if type_:
            statement = statement.where(Event.type == type_)
        return self.query(statement)

    def runs(self) -> list[ReplyRun]:
        return self.query(select(ReplyRun).order_by(ReplyRun.id))

    def messages(self, role: str | None = None) -> list[Message]:
        statement = select(Message).order_by(Message.id)
        if role:
            statement = statement.where(Message.role == role)
        return self.query(statement)

    def describe(self) -> str:
        try:
            events = [(e.type, e.run_id, e.payload) for e in self.events()]
            runs = [(r.id, r.conversation_id, r.status, r.attempts, r.error) for r in self.runs()]
        except Exception as exc:  # noqa: BLE001 - the database may be the thing that is down
            events, runs = [f"unreadable: {exc}"], []
        try:
            depth = self.broker.depth()
        except Exception as exc:  # noqa: BLE001
            depth = f"unreadable: {exc}"
        return (f"broker (ready, unacked): {depth}\nruns: {runs}\nevents: {events}\n"
                f"sent: {[(r['status'], r['body']) for r in self.wuzapi.requests]}\n"
                f"llm calls: {len(self.llm.requests)}\n{self.logs()}\n"
                f"--- broker ({self.broker.kind}) log ---\n{self.broker.log_tail(2000)}")

    # --- waiting ------------------------------------------------------------------------------

    def open_work(self) -> dict[str, int]:
        """What the database says is still to do: open runs, customer messages no run has
        taken, replies not delivered yet."""
        with Session(self.engine) as session:
            return {
                "running": session.scalar(
                    select(func.count()).select_from(ReplyRun)
                    .where(ReplyRun.status == "running")),
                "unanswered": session.scalar(
                    select(func.count()).select_from(Message)
                    .where(Message.role == "customer", Message.reply_run_id.is_(None))),
                "pending": session.scalar(
                    select(func.count()).select_from(Message)
                    .where(Message.role == "assistant", Message.status == "pending")),
            }

    def wait_settled(self, timeout: float = 30) -> float:
        """Wait until nothing is left to do anywhere: every run final, every customer message
        taken, every outbox row delivered or failed, and no task in the broker, queued or held
        by a worker (a task a worker runs, or holds for a countdown, is unacknowledged until it
        ends). Checked twice in a row. Returns the seconds waited."""
        started = time.monotonic()
        state: dict[str, Any] = {}
        calm = 0

        def settled() -> bool:
            nonlocal calm
            try:
                state.update(self.open_work())
                state["broker (ready, unacked)"] = self.broker.depth()
            except Exception as exc:  # noqa: BLE001 - a service may be restarting
                state["error"] = repr(exc)
                calm = 0
                return False
            state.pop("error", None)
            quiet = (not any(state[k] for k in ("running", "unanswered", "pending"))
                     and state["broker (ready, unacked)"] == (0, 0))
            calm = calm + 1 if quiet else 0
            return calm >= 2

        wait_for(settled, timeout, "every task to finish",
                 lambda: f"state: {state}\n{self.describe()}", interval=0.3)
        return time.monotonic() - started

    def metric(self, name: str, value: Any) -> None:
        self.metrics.append({"test": self.test_name, "broker": self.broker.kind,
                             "name": name, "value": value})

    # --- what the customer got ----------------------------------------------------------------

    def delivered(self) -> list[dict[str, Any]]:
        """Texts the WuzAPI stand-in accepted (not typing or read signals)."""
        return [r for r in self.wuzapi.sent() if r["path"] == "/chat/send/text"]

    def replies_by_chat(self) -> dict[str, list[tuple[str, str]]]:
        """Distinct (message Id, text) pairs WuzAPI accepted, per chat, in order of arrival.
        A repeat with the same Id is the same WhatsApp message, not a second reply."""
        result: dict[str, list[tuple[str, str]]] = {}
        for request in self.delivered():
            chat = request["body"]["Phone"].split("@", 1)[0]
            pair = (request["body"]["Id"], request["body"]["Body"])
            if pair not in result.setdefault(chat, []):
                result[chat].append(pair)
        return result
