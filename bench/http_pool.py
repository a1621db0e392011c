"""CPU per request of many threads posting through httpx clients, as a worker's threads do:
one client for the process, `zapreply.net.http.SHARDS` clients (each thread on one), or one per
thread.

    .venv/bin/python -m bench.http_pool [--threads 300] [--seconds 15] [--rounds 2]
                                        [--llm-delay 0.5]

Each thread posts a chat completion to the bench's LLM stand-in (in its own process, answering
after --llm-delay) over and over. Each layout runs in a fresh process, alternating, and prints
this process's CPU per request (`time.process_time`) and the requests per second. httpcore walks
every connection of a pool, under its lock, on each request and each response, so what a
request costs grows with the connections one pool holds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

from bench.harness import ROOT, free_port
from bench.inprocess import StubProcess
from bench.procs import wait_http_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_pool")
    parser.add_argument("--threads", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--llm-delay", type=float, default=0.5)
    parser.add_argument("--clients", type=int, help=argparse.SUPPRESS)  # one measurement
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.clients:
        print(json.dumps(_measure(args.url, args.clients, args.threads, args.seconds)))
        return 0

    from zapreply.net.http import SHARDS

    llm_port, wuzapi_port = free_port(), free_port()
    stubs = subprocess.Popen(
        [sys.executable, "-m", "bench.stubs", "--llm-port", str(llm_port),
         "--wuzapi-port", str(wuzapi_port), "--llm-delay", str(args.llm_delay)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http_ok(f"http://127.0.0.1:{wuzapi_port}/_bench/stats", StubProcess(stubs), 15)
        url = f"http://127.0.0.1:{llm_port}/v1/chat/completions"
        for _ in range(args.rounds):
            for clients in (1, SHARDS, args.threads):
                out = subprocess.run(
                    [sys.executable, "-m", "bench.http_pool", "--clients", str(clients),
                     "--threads", str(args.threads), "--seconds", str(args.seconds),
                     "--url", url],
                    cwd=ROOT, check=True, capture_output=True, text=True).stdout
                result = json.loads(out)
                print(f"{clients:4d} client(s), {args.threads} threads: "
                      f"{result['cpu_ms_per_request']:.2f} ms CPU/request, "
                      f"{result['requests_per_second']:.0f} requests/s", flush=True)
    finally:
        stubs.terminate()
        stubs.wait(10)
    return 0


def _measure(url: str, clients: int, threads: int, seconds: float) -> dict[str, float]:
    import httpx

    from zapreply.net.http import ssl_context

    share = -(-threads // clients)
    pool = [httpx.Client(verify=ssl_context(),
                         limits=httpx.Limits(max_connections=share,
                                             max_keepalive_connections=share))
            for _ in range(clients)]
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "oi"}]}
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def post(index: int) -> None:
        client = pool[index % clients]
        start.wait()
        while time.monotonic() < stop_at[0]:
            client.post(url, json=body).read()
            counts[index] += 1

    workers = [threading.Thread(target=post, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    cpu, wall = time.process_time(), time.monotonic()
    stop_at[0] = wall + seconds
    start.wait()
    for worker in workers:
        worker.join()
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    done = max(sum(counts), 1)
    return {"cpu_ms_per_request": cpu * 1000 / done, "requests_per_second": done / wall}


if __name__ == "__main__":
    sys.exit(main())
