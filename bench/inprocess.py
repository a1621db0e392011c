"""The worker's CPU per message, in one process, without Celery's transport: what the code
itself costs, steadier than the whole-pipeline figure on a shared machine.

    .venv/bin/python -m bench.inprocess [--messages 300] [--profile out.prof]

A fresh PostgreSQL database, the stand-ins in their own process (their CPU is not counted),
one config; then each message goes through `worker.inbound.handle_inbound` exactly as a task
would run it (record, claim, LLM, store, send, close), one after the other, on this thread.
Prints CPU per message (`time.process_time`: every thread of the process, litellm's logging
thread included), SQL statements and transactions per message, and, with --profile, the
cProfile self time by package (this thread only). Also the CPU of the PostgreSQL server
processes that served the run, per message: the other side of every statement.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import services
from bench.harness import BENCH_MODEL, ROOT, find_fixture, free_port
from bench.procs import cpu_seconds, wait_http_ok

DATABASE = "zapreply_inprocess"
INSTANCE = "bench-instance"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess")
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--warm-up", type=int, default=30)
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--profile", type=Path, help="write cProfile stats here and summarise")
    parser.add_argument("--turns", type=int, default=1,
                        help="messages per chat, one after the other (1: every message a new "
                             "conversation)")
    parser.add_argument("--threads", type=int, default=1,
                        help="answer the messages from this many threads at once")
    parser.add_argument("--show-sql", action="store_true",
                        help="print the statements of the last message")
    parser.add_argument("--model", default=BENCH_MODEL,
                        help="the config's model (the LLM stand-in answers any)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=JSON",
                        help="a config option, e.g. typing_indicator=false")
    args = parser.parse_args(argv)

    llm_port, wuzapi_port = free_port(), free_port()
    database_url = services.sqlalchemy_url(args.postgres_url, DATABASE, DATABASE)
    services.recreate_database(args.postgres_url, DATABASE, 20)
    stubs = None
    try:
        log = Path(tempfile.mkdtemp(prefix="zapreply-inprocess-"))
        services.migrate(ROOT, database_url, log / "alembic.log")
        stubs = subprocess.Popen(
            [sys.executable, "-m", "bench.stubs", "--llm-port", str(llm_port),
             "--wuzapi-port", str(wuzapi_port)], cwd=ROOT,
            stdout=open(log / "stubs.log", "wb"), stderr=subprocess.STDOUT)
        os.environ.update(
            DATABASE_URL=database_url, CELERY_BROKER_URL="memory://",
            OPENAI_BASE_URL=f"http://127.0.0.1:{llm_port}/v1",
            OPENAI_API_KEY="sk-bench-not-a-real-key", LITELLM_LOCAL_MODEL_COST_MAP="True",
            WORKER_CONCURRENCY="8",
        )
        wait_http_ok(f"http://127.0.0.1:{wuzapi_port}/_bench/stats", StubProcess(stubs), 15)
        options = {name: json.loads(value) for name, value in
                   (item.split("=", 1) for item in args.option)}
        # Every bench message opens a conversation: the flood limit would measure itself.
        options.setdefault("new_conversations_per_minute", None)
        _run(args, wuzapi_port, options)
    finally:
        if stubs is not None:
            stubs.terminate()
            stubs.wait(10)
        services.drop_database(args.postgres_url, DATABASE)
    return 0


class StubProcess:
    """Enough of bench.procs.Child for wait_http_ok."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.process = popen

    def tail(self, chars: int = 3000) -> str:
        return ""


def _run(args: argparse.Namespace, wuzapi_port: int, options: dict[str, Any]) -> None:
    from sqlalchemy import event

    from worker.app import app  # noqa: F401 - registers the tasks
    from worker.inbound import handle_inbound
    from zapreply.channel import wuzapi
    from zapreply.llm.chat import warm_up
    from zapreply.storage.db import get_engine, session_scope
    from zapreply.storage.models import WorkflowConfig

    with session_scope() as session:
        config = WorkflowConfig(
            name="Bench", instance=INSTANCE, is_active=True, model=args.model,
            system_prompt="Você é o atendente da Loja.", debounce_seconds=0.0,
            send={"driver": "wuzapi", "base_url": f"http://127.0.0.1:{wuzapi_port}",
                  "token": "bench-user-token"},
            options=options,
        )
        session.add(config)
        session.flush()
        config_id = config.id
    warm_up()

    fixture = json.loads(find_fixture().read_text())
    statements: Counter[str] = Counter()
    last: list[str] = []
    transactions = [0]
    engine = get_engine()

    @event.listens_for(engine, "before_cursor_execute")
    def _count(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        statements[statement.split(None, 1)[0].upper()] += 1
        last.append(" ".join(statement.split())[:160])

    @event.listens_for(engine, "commit")
    def _commit(conn: Any) -> None:
        transactions[0] += 1

    def payload(number: int) -> dict[str, Any]:
        body = json.loads(json.dumps(fixture))
        info = body["event"]["Info"]
        chat = f"55119{number // args.turns:08d}@s.whatsapp.net"
        info.update(ID=f"3AINPROC{number:012d}", Chat=chat, Sender=chat)
        envelope = wuzapi.parse_envelope("application/json", json.dumps(body).encode())
        message = wuzapi.read_message(envelope)
        assert not isinstance(message, str), message
        return message.as_payload()

    for number in range(args.warm_up):
        handle_inbound(config_id, INSTANCE, payload(number))
    bodies = [payload(number) for number in range(args.warm_up, args.warm_up + args.messages)]
    statements.clear()
    transactions[0] = 0
    profiler = cProfile.Profile(time.thread_time) if args.profile else None
    # Every thread's CPU: litellm hands its logging of each call to a thread of its own.
    backends = _backend_pids(args.postgres_url)
    server_started = sum(cpu_seconds(pid) for pid in backends)
    started, wall = time.process_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    results: Counter[str] = Counter()
    if args.threads > 1:
        import threading


        def work(part: list[dict[str, Any]]) -> None:
            for body in part:
                results[handle_inbound(config_id, INSTANCE, body)] += 1

        threads = [threading.Thread(target=work, args=(bodies[i::args.threads],))
                   for i in range(args.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        for body in bodies:
            last.clear()
            results[handle_inbound(config_id, INSTANCE, body)] += 1
    if profiler:
        profiler.disable()
    cpu, wall = time.process_time() - started, time.perf_counter() - wall
    opened = _backend_pids(args.postgres_url) - backends
    server = sum(cpu_seconds(pid) for pid in backends) - server_started \
        + sum(cpu_seconds(pid) for pid in opened)
    count = args.messages
    print(f"messages: {count}  results: {dict(results)}")
    print(f"worker CPU per message: {cpu / count * 1000:.2f} ms "
          f"(wall {wall / count * 1000:.2f} ms); PostgreSQL's backends "
          f"{server / count * 1000:.2f} ms ({len(backends | opened)} connections)")
    print(f"SQL statements per message: {sum(statements.values()) / count:.1f} "
          f"({', '.join(f'{k} {v / count:.1f}' for k, v in statements.most_common())}); "
          f"commits per message: {transactions[0] / count:.1f}")
    if args.show_sql:
        print("\n".join(last))
    if profiler:
        profiler.dump_stats(args.profile)
        _by_package(args.profile)


def _backend_pids(server_url: str) -> set[int]:
    """The PostgreSQL server processes serving the bench database's connections (the server
    runs on this machine), asked on a connection of their own."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as connection:
        return {pid for (pid,) in connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (DATABASE,))}


def _by_package(path: Path) -> None:
    stats = pstats.Stats(str(path))
    totals: Counter[str] = Counter()
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():
        totals[_package(filename)] += tottime
    total = sum(totals.values()) or 1.0
    print("self time by package:")
    for name, seconds in totals.most_common(14):
        print(f"  {name:<24} {seconds / total * 100:5.1f} %")


def _package(filename: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    if filename.startswith(str(ROOT)):
        return Path(filename).relative_to(ROOT).parts[0]
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins"
    return "stdlib"


if __name__ == "__main__":
    sys.exit(main())
