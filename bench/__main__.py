"""`python -m bench` (or `bench/run.sh`): measure the targets of SPEC §7 on this machine and
print one table. See docs/PERFORMANCE.md."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from bench import phases
from bench.harness import Bench, Options
from bench.procs import machine_busy_seconds
from bench.report import Report


def parse_args(argv: list[str] | None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("--gunicorn-workers", type=int, default=2, help="for the receiver and the bare app")
    add("--worker-concurrency", type=int, default=300, help="WORKER_CONCURRENCY")
    add("--worker-processes", type=int, default=2,
        help="how many `celery worker` processes (threads pool: one per core)")
    add("--loadgen", default="auto", choices=["auto", "wrk", "python"],
        help="client of the maximum-rate runs; auto: wrk if installed")
    add("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a server database to connect to for CREATE/DROP DATABASE")
    add("--redis-url", default="redis://127.0.0.1:6379/14",
        help="the bench's own Redis db: flushed at start and end")
    add("--database", default="zapreply_bench",
        help="database and login role, created fresh and dropped at the end")
    add("--db-connection-limit", type=int, default=60,
        help="CONNECTION LIMIT of that role: leaves the shared server's other users room")
    add("--ingest-duration", type=float, default=6.0, help="seconds per ingest round")
    add("--ingest-rounds", type=int, default=2, help="alternating bare/receiver rounds")
    add("--ingest-connections", type=int, default=16)
    add("--half-rate-duration", type=float, default=8.0)
    add("--latency-rate", type=float, default=10.0, help="msg/s for the added-latency run")
    add("--latency-duration", type=float, default=10.0)
    add("--cpu-rate", type=float, default=30.0, help="msg/s for the CPU-per-message run")
    add("--cpu-duration", type=float, default=15.0)
    add("--concurrency-rate", type=float, default=120.0, help="msg/s offered with a slow LLM")
    add("--concurrency-duration", type=float, default=20.0)
    add("--llm-delay", type=float, default=2.0, help="LLM stand-in latency, concurrency run")
    add("--skip-ingest", action="store_true", help="only the pipeline measurements")
    add("--skip-pipeline", action="store_true", help="only the webhook measurements")
    add("--keep-logs", action="store_true", help="keep the processes' logs after the run")
    add("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    names = Options.__dataclass_fields__
    return Options(**{k: v for k, v in vars(args).items() if k in names}), args


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _own_cpu() -> float:
    """CPU of this process and of every process it started and has reaped (all of them,
    once the bench has closed: each master reaps its own workers)."""
    usage = os.times()
    return usage.user + usage.system + usage.children_user + usage.children_system


def _machine_note(wall: float, busy: float, ours: float) -> str:
    cores = os.cpu_count() or 1
    share = 100 / (wall * cores)
    return (f"whole run {wall:.0f} s; the machine's {cores} cores were {busy * share:.0f}% busy: "
            f"{ours * share:.0f}% the bench's own processes, {(busy - ours) * share:.0f}% "
            f"everything else (PostgreSQL and Redis included, and whatever else ran)")


def run(bench: Bench, args: argparse.Namespace, report: Report) -> None:
    bench.start()
    if not args.skip_ingest:
        max_rate = phases.ingest(bench, report)
        phases.half_rate_latency(bench, report, max_rate)
        phases.receiver_memory(bench, report)
        phases.drop_ingest_backlog(bench, report)
    bench.stop("bare")
    if not args.skip_pipeline:
        bench.start_workers()
        phases.added_latency(bench, report)
        phases.pipeline_cpu(bench, report)
        phases.concurrency(bench, report)
    phases.log_errors(bench, report)


def main(argv: list[str] | None = None) -> int:
    options, args = parse_args(argv)
    # Ctrl-C and SIGTERM unwind through `finally`, which stops every process started here.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    log_dir = Path(tempfile.mkdtemp(prefix="zapreply-bench-"))
    bench, report = Bench(options, log_dir), Report()
    started, busy_before, ours_before = time.monotonic(), machine_busy_seconds(), _own_cpu()
    failed = True
    try:
        run(bench, args, report)
        failed = False
    finally:
        bench.close()
        if failed or args.keep_logs:
            print(f"bench: logs kept in {log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
    report.note(_machine_note(time.monotonic() - started, machine_busy_seconds() - busy_before,
                              _own_cpu() - ours_before))
    print(report.render())
    return 1 if args.strict and report.missed else 0


if __name__ == "__main__":
    sys.exit(main())
