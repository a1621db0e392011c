"""`python -m bench.soak`: the pipeline at a set rate for a set time, a worker killed (`kill -9`)
and started again every few minutes, as a supervisor would; then answered, duplicates, the
recovery after each kill and every process's memory over time.

    python -m bench.soak --minutes 15 --rate 60 --kill-every 180

"Recovery" after a kill: from the kill to the last reply to a customer who wrote before it (the
slowest customer the kill delayed). Takes the system under test from bench.harness, with the
bench's defaults (`python -m bench --help`) for everything not given here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.__main__ import parse_args as bench_options
from bench.harness import Bench
from bench.loadgen import chat_jid
from bench.procs import tree_rss_bytes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=60.0, help="webhooks per second")
    parser.add_argument("--kill-every", type=float, default=180.0, help="seconds")
    parser.add_argument("--llm-delay", type=float, default=1.5, help="LLM stand-in latency")
    parser.add_argument("--sample-every", type=float, default=30.0,
                        help="seconds between memory samples")
    parser.add_argument("--redis-url", default=None,
                        help="a Redis of the soak's own (flushed at start and end; a shared "
                             "server's db may be another run's): python -m bench's default if "
                             "not given")
    parser.add_argument("--keep-logs", action="store_true")
    return parser.parse_args(argv)


class Soak:
    def __init__(self, bench: Bench, args: argparse.Namespace) -> None:
        self.bench = bench
        self.args = args
        self.kills: list[tuple[float, str]] = []  # (time.monotonic(), worker name)
        self.memory: list[tuple[float, dict[str, int]]] = []
        self.started = 0.0
        self._next_kill = 0.0
        self._next_sample = 0.0
        self._victim = 0

    def run(self) -> None:
        bench = self.bench
        bench.start()
        bench.stop("bare")  # the soak measures the pipeline only
        bench.start_workers()
        bench.reset_stubs(llm_delay=self.args.llm_delay)
        self.started = time.monotonic()
        self._next_kill = self.started + self.args.kill_every
        self._next_sample = self.started
        duration = self.args.minutes * 60
        result = bench.load("receiver", duration=duration, rate=self.args.rate, tick=self.tick)
        answered_all = bench.wait_for_every_reply(result, timeout=180, tick=self.sample)
        self.sample(force=True)
        self.report(result, answered_all)

    def tick(self) -> None:
        now = time.monotonic()
        if now >= self._next_kill:
            self._next_kill = now + self.args.kill_every
            self.kill_and_restart()
        self.sample()

    def kill_and_restart(self) -> None:
        workers = self.bench.workers()
        child = workers[self._victim % len(workers)]
        self._victim += 1
        index = int(child.name.rsplit("-", 1)[1])
        os.killpg(child.pid, signal.SIGKILL)
        self.kills.append((time.monotonic(), child.name))
        child.process.wait(timeout=10)
        self.bench.supervisor.children.remove(child)
        self.bench.start_worker(index)  # what a supervisor does

    def sample(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_sample:
            return
        self._next_sample = now + self.args.sample_every
        sizes = {name: tree_rss_bytes(child.pid) for name, child in self.bench.children.items()
                 if name == "receiver" or name.startswith("worker-")}
        self.memory.append((now - self.started, sizes))

    def recorded(self, chats: list[str]) -> set[str]:
        """Which of these chats have a customer message in the database."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.bench.database_url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(text(
                    "SELECT c.chat_jid FROM messages m JOIN conversations c"
                    " ON c.id = m.conversation_id WHERE m.role = 'customer'"
                    " AND c.chat_jid = ANY(:chats)"), {"chats": chats})
                return {row[0] for row in rows}
        finally:
            engine.dispose()

    def report(self, result, answered_all: bool) -> None:  # type: ignore[no-untyped-def]
        bench = self.bench
        sends = bench.sends()
        replied = bench.replies(sends)
        accepted = result.started()
        chats = {chat_jid(number): at for number, at in accepted.items()}
        answered = sum(1 for chat in chats if chat in replied)
        per_chat: dict[str, int] = {}
        for _, phone in sends:
            per_chat[phone] = per_chat.get(phone, 0) + 1
        duplicates = sum(1 for chat in chats if per_chat.get(chat, 0) > 1)
        unanswered = sorted(chat for chat in chats if chat not in replied)
        print(f"soak: {self.args.minutes:g} min at {self.args.rate:g} msg/s, LLM "
              f"{self.args.llm_delay:g} s, a worker killed every {self.args.kill_every:g} s "
              f"({len(self.kills)} kills), {self.bench.options.worker_processes} workers × "
              f"{self.bench.options.worker_concurrency} threads")
        print(f"webhooks accepted {len(accepted)}, refused {result.failed} "
              f"({result.failures()}); answered {answered}/{len(chats)}"
              f"{'' if answered_all else ' (NOT ALL)'}; chats with more than one send "
              f"{duplicates}")
        if unanswered:
            recorded = self.recorded(unanswered[:20])
            for chat in unanswered[:20]:
                print(f"  unanswered: {chat}, accepted at {chats[chat] - self.started:.1f} s, "
                      f"{'recorded' if chat in recorded else 'never recorded'}")
        for killed_at, name in self.kills:
            waiting = [replied[chat] for chat, at in chats.items()
                       if at < killed_at and chat in replied and replied[chat] > killed_at]
            recovery = max(waiting) - killed_at if waiting else 0.0
            print(f"kill of {name} at {killed_at - self.started:6.0f} s: last reply to a "
                  f"customer who wrote before it {recovery:5.1f} s later "
                  f"({len(waiting)} answered after the kill)")
        names = sorted({name for _, sizes in self.memory for name in sizes})
        print("memory (RSS, MB): " + "  ".join(f"{name:>10}" for name in names))
        for at, sizes in self.memory:
            cells = "  ".join(f"{sizes[name] / 2**20:10.0f}" if name in sizes else f"{'-':>10}"
                              for name in names)
            print(f"  at {at:6.0f} s       {cells}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options, _ = bench_options(["--redis-url", args.redis_url] if args.redis_url else [])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    log_dir = Path(tempfile.mkdtemp(prefix="zapreply-soak-"))
    bench = Bench(options, log_dir)
    failed = True
    try:
        Soak(bench, args).run()
        failed = False
    finally:
        bench.close()
        if failed or args.keep_logs:
            print(f"soak: logs kept in {log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
