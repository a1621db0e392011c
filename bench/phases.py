"""The measurements of SPEC §7, one function each, in the order the harness runs them."""

from __future__ import annotations

import math
import os
import re
from collections import Counter

from bench import services
from bench.harness import QUEUE, Bench, Throughput
from bench.procs import (
    children_of,
    machine_busy_seconds,
    rss_bytes,
    tree_cpu_seconds,
    tree_rss_bytes,
)
from bench.report import Goal, Report, Row, percentile

MB = 1024 * 1024


def _ms(seconds: float) -> float:
    return seconds * 1000


def _ingest_detail(run: Throughput) -> str:
    return (f"p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms; "
            f"{_ms(run.server_cpu / max(run.requests, 1)):.2f} ms CPU/request")


def ingest(bench: Bench, report: Report) -> float:
    """Maximum webhook rate of the receiver and of the bare app, alternating rounds; the best
    round of each counts (the one least disturbed by anything else on the machine)."""
    options = bench.options
    bench.wait_bare_ready()
    for target in ("bare", "receiver"):  # warm-up: imports, first connections
        bench.max_rate(target, duration=1.0, connections=options.ingest_connections)
    best: dict[str, Throughput] = {}
    for _round in range(options.ingest_rounds):
        for target in ("bare", "receiver"):
            run = bench.max_rate(target, duration=options.ingest_duration,
                                 connections=options.ingest_connections)
            if target not in best or run.rate > best[target].rate:
                best[target] = run
    bare, receiver = best["bare"], best["receiver"]
    bench.bare_cpu_per_request = bare.server_cpu / max(bare.requests, 1)
    ratio = receiver.rate / bare.rate if bare.rate else math.nan
    report.add(
        Row("webhook ingest, bare Flask baseline", bare.rate, "{:.0f} req/s",
            detail=_ingest_detail(bare)),
        Row("webhook ingest, zapreply receiver", receiver.rate, "{:.0f} req/s",
            detail=_ingest_detail(receiver)),
        Row("ingest ratio receiver / bare", ratio, "{:.2f}", Goal(">=", 0.6)),
    )
    client_cpu = sum(run.client_cpu for run in best.values())
    requests = sum(run.requests for run in best.values())
    report.note(
        f"ingest: {options.gunicorn_workers} gunicorn sync workers for each app, {bare.client} "
        f"closed loop with {options.ingest_connections} connections, best of "
        f"{options.ingest_rounds} alternating {options.ingest_duration:g} s rounds; a new "
        f"connection per request (sync workers close it). The load generator shares the "
        f"2 cores ({client_cpu / max(requests, 1) * 1e6:.0f} µs CPU per request). The Celery "
        f"worker was not running: tasks only queued in Redis. Failed requests: receiver "
        f"{receiver.failed}, bare {bare.failed}."
    )
    return receiver.rate


def half_rate_latency(bench: Bench, report: Report, max_rate: float) -> None:
    """Latency at half the receiver's maximum rate, open loop: a request every 1/rate s
    whatever the answers, each on its own connection, as WuzAPI's concurrent deliveries."""
    rate = max(max_rate / 2, 1.0)
    result = bench.load("receiver", duration=bench.options.half_rate_duration, rate=rate)
    # The same client at the same rate against the bare app: what the client and the machine
    # add to any app's tail at this rate.
    bare = bench.load("bare", duration=bench.options.half_rate_duration, rate=rate)
    report.add(Row(f"webhook p99 at half max rate ({rate:.0f} req/s)",
                   _ms(percentile(result.latencies, 99)), "{:.1f} ms", Goal("<=", 25, "ms"),
                   detail=f"p50 {_ms(percentile(result.latencies, 50)):.1f} ms; "
                          f"{result.rate:.0f} req/s answered; the bare app at the same rate: "
                          f"p99 {_ms(percentile(bare.latencies, 99)):.1f} ms, "
                          f"p50 {_ms(percentile(bare.latencies, 50)):.1f} ms"))
    if result.failed:
        report.note(f"half-rate run: webhooks failed: {result.failures()}")
    report.note(f"half-rate run: the Python client (bench.loadgen) used "
                f"{result.cpu_seconds / max(len(result.requests), 1) * 1e6:.0f} µs CPU per "
                f"request, on the same 2 cores")


def receiver_memory(bench: Bench, report: Report) -> None:
    def worker_rss(name: str) -> list[int]:
        return [rss_bytes(pid) for pid in children_of(bench.children[name].pid)]

    sizes, bare = worker_rss("receiver"), worker_rss("bare")
    master = rss_bytes(bench.children["receiver"].pid)
    report.add(Row("receiver RSS per gunicorn worker (max)", max(sizes, default=0) / MB,
                   "{:.1f} MB", Goal("<=", 80, "MB"),
                   detail=f"{len(sizes)} workers after the ingest runs; master "
                          f"{master / MB:.0f} MB; bare app {max(bare, default=0) / MB:.0f} MB"))


def drop_ingest_backlog(bench: Bench, report: Report) -> None:
    dropped = services.drop_queue(bench.options.redis_url, QUEUE)
    report.note(f"the {dropped} tasks queued by the ingest runs were deleted before the worker "
                f"started")


def added_latency(bench: Bench, report: Report) -> None:
    """Webhook POST start -> reply at the WuzAPI stand-in, stand-ins answering at once."""
    options = bench.options
    bench.reset_stubs(llm_delay=0.0)
    result = bench.load("receiver", duration=options.latency_duration, rate=options.latency_rate)
    bench.wait_for_replies(len(result.ok), timeout=60)
    latencies, missing = bench.reply_latencies(result)
    detail = f"{options.latency_rate:g} msg/s, {len(latencies)} messages"
    report.add(
        Row("added latency p50 (webhook → reply sent)", _ms(percentile(latencies, 50)),
            "{:.1f} ms", Goal("<=", 50, "ms"), detail=detail),
        Row("added latency p99 (webhook → reply sent)", _ms(percentile(latencies, 99)),
            "{:.1f} ms", Goal("<=", 200, "ms")),
    )
    if missing or result.failed:
        report.note(f"added-latency run: {missing} accepted messages got no reply; "
                    f"webhooks failed: {result.failures()}")


def pipeline_cpu(bench: Bench, report: Report) -> None:
    """CPU of the receiver and worker process trees per message answered."""
    options = bench.options
    receiver = bench.children["receiver"].pid
    workers = [child.pid for child in bench.workers()]

    def workers_cpu() -> float:
        return sum(tree_cpu_seconds(pid) for pid in workers)

    bench.reset_stubs(llm_delay=0.0)
    before = {"receiver": tree_cpu_seconds(receiver), "worker": workers_cpu(),
              "redis": services.redis_cpu_seconds(options.redis_url)}
    pg_before = services.postgres_backend_cpu(options.postgres_url, options.database)
    result = bench.load("receiver", duration=options.cpu_duration, rate=options.cpu_rate)
    bench.wait_for_replies(len(result.ok), timeout=60)
    stats = bench.stub_stats()
    replies = int(stats["send_count"])
    used = {"receiver": tree_cpu_seconds(receiver) - before["receiver"],
            "worker": workers_cpu() - before["worker"],
            "redis": services.redis_cpu_seconds(options.redis_url) - before["redis"]}
    pg_after = services.postgres_backend_cpu(options.postgres_url, options.database)
    postgres = sum(cpu - pg_before.get(pid, 0.0) for pid, cpu in pg_after.items())
    per = {name: _ms(seconds / max(replies, 1)) for name, seconds in used.items()}
    report.add(
        Row("pipeline CPU per message (receiver + worker)", per["receiver"] + per["worker"],
            "{:.1f} ms", Goal("<=", 15, "ms"),
            detail=f"receiver {per['receiver']:.1f} + worker {per['worker']:.1f}; "
                   f"{replies} replies at {options.cpu_rate:g} msg/s, "
                   f"{stats['other_calls'] / max(replies, 1):.1f} presence/markread calls each"),
        Row("  services per message (Postgres + Redis)",
            _ms(postgres / max(replies, 1)) + per["redis"], "{:.1f} ms",
            detail=f"Postgres backends {_ms(postgres / max(replies, 1)):.1f} + "
                   f"Redis {per['redis']:.1f}"),
    )
    if bench.bare_cpu_per_request:
        gauge = _ms(bench.bare_cpu_per_request)
        report.note(
            f"pipeline CPU against the machine's speed: {per['receiver'] + per['worker']:.1f} ms "
            f"a message is {(per['receiver'] + per['worker']) / gauge:.0f} times the bare app's "
            f"CPU per request in this run's ingest ({gauge:.2f} ms); 15 ms is 40 times 0.37 ms, "
            f"the bare app's figure in the quietest run seen (docs/PERFORMANCE.md)")
    if replies < len(result.ok):
        report.note(f"pipeline-CPU run: only {replies} of {len(result.ok)} messages answered "
                    f"within the wait")


class _CpuShares:
    """CPU seconds of each part of the machine over a stretch of the run: the processes under
    test, the services, the bench's own stand-ins and load generator, and everything else."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.before = self._read()

    def _read(self) -> dict[str, float]:
        bench, options = self.bench, self.bench.options
        return {
            "workers": sum(tree_cpu_seconds(child.pid) for child in bench.workers()),
            "receiver": tree_cpu_seconds(bench.children["receiver"].pid),
            "Postgres": services.postgres_server_cpu(options.postgres_url),
            "Redis": services.redis_cpu_seconds(options.redis_url),
            "stand-ins": tree_cpu_seconds(bench.children["stubs"].pid),
            "machine": machine_busy_seconds(),
        }

    def per_reply_ms(self, replies: int, load_generator_cpu: float) -> dict[str, float]:
        after = self._read()
        used = {name: after[name] - self.before[name] for name in after}
        used["load generator"] = load_generator_cpu
        parts = [name for name in used if name != "machine"]
        used["other"] = max(used["machine"] - sum(used[name] for name in parts), 0.0)
        return {name: _ms(seconds / max(replies, 1)) for name, seconds in used.items()}


def concurrency(bench: Bench, report: Report) -> None:
    """Slow LLM (2 s): replies per second sustained, LLM calls open at once, worker memory."""
    options = bench.options
    workers = [child.pid for child in bench.workers()]
    bench.reset_stubs(llm_delay=options.llm_delay)
    peak_rss = 0
    shares = _CpuShares(bench)

    def sample() -> None:
        nonlocal peak_rss
        peak_rss = max(peak_rss, sum(tree_rss_bytes(pid) for pid in workers))

    result = bench.load("receiver", duration=options.concurrency_duration,
                        rate=options.concurrency_rate, tick=sample)
    bench.wait_for_every_reply(result, timeout=options.llm_delay + 60, tick=sample)
    stats = bench.stub_stats()
    sends = bench.sends()  # one snapshot: the backlog may still be draining
    replied = bench.replies(sends)
    cpu = shares.per_reply_ms(len(replied), result.cpu_seconds)
    # Steady state: from when the first replies are due (LLM delay + 2 s) to the end of the
    # offered load; replies after it are the backlog draining.
    window_start, window_end = result.start + options.llm_delay + 2.0, result.end
    in_window = sum(1 for at in replied.values() if window_start <= at <= window_end)
    sustained = in_window / max(window_end - window_start, 1e-9)
    latencies, missing = bench.reply_latencies(result)
    report.add(
        Row(f"replies/s sustained (LLM {options.llm_delay:g} s, "
            f"{options.concurrency_rate:g} msg/s offered)", sustained, "{:.1f}",
            Goal(">=", 100),
            detail=f"{len(latencies)}/{len(result.ok)} answered; reply p50 "
                   f"{percentile(latencies, 50):.2f} s, p99 {percentile(latencies, 99):.2f} s"),
        Row("conversations in flight (max LLM calls open)", stats["llm_max_in_flight"],
            "{:.0f}", Goal(">=", 200),
            detail=f"{stats['llm_requests']} LLM calls"),
        Row(f"worker RSS (max; {options.worker_processes} × pool threads "
            f"× {options.worker_concurrency})",
            peak_rss / MB, "{:.0f} MB", Goal("<=", 1536, "MB")),
    )
    cores = os.cpu_count() or 1
    report.note(
        "concurrency run, the machine's CPU per reply (all of it, from the first webhook to "
        f"the last reply): {cpu['machine']:.1f} ms, which caps 2 cores at "
        f"{cores * 1000 / max(cpu['machine'], 1e-9):.0f} replies/s — "
        + ", ".join(f"{name} {cpu[name]:.1f}" for name in
                    ("workers", "receiver", "Postgres", "Redis", "stand-ins",
                     "load generator", "other"))
    )
    repeated = len(sends) - len(replied)
    if repeated:
        report.note(f"concurrency run: {repeated} replies were sent again with the same "
                    f"WhatsApp id (a send whose answer or whose recording failed is retried, "
                    f"with the same id; WhatsApp keeps one)")
    if missing or result.failed:
        report.note(f"concurrency run: {missing} accepted messages got no reply within "
                    f"{options.llm_delay + 60:g} s after the load; webhooks failed: "
                    f"{result.failures()}")


# A log line's timestamp and a task's id: what makes every line of one kind different.
_LOG_NOISE = re.compile(r"^\[[^]]*\]\s*|\[[0-9a-f-]{36}\]")


def log_errors(bench: Bench, report: Report) -> None:
    """Errors (and task retries) the receiver and workers logged during the run, by their
    first line."""
    for log in sorted(bench.log_dir.glob("*.log")):
        if not log.name.startswith(("receiver", "worker-")):
            continue
        errors = Counter(
            _LOG_NOISE.sub("", line).strip()[:140]
            for line in log.read_text(errors="replace").splitlines()
            if "ERROR/" in line or "CRITICAL/" in line or "[ERROR]" in line
            or "too many" in line.lower() or "] retry: " in line
        )
        if errors:
            top = "; ".join(f"{n} × {text}" for text, n in errors.most_common(3))
            report.note(f"{log.stem} logged {sum(errors.values())} errors: {top}")
