"""CPU of one LLM call as the worker makes it: `zapreply.llm.chat.complete` (litellm, a chat
completion with the reply tools) against the bench's LLM stand-in, beside a plain httpx POST of
the same request.

    .venv/bin/python -m bench.llm_call [--model openai/gpt-4o-mini] [--calls 300]
                                        [--openai-sdk] [--profile out.prof]
    .venv/bin/python -m bench.llm_call --compare [--rounds 2]

The stand-in runs in its own process (its CPU is not counted). After `llm.warm_up()` and
--warm-up calls, prints per call: this thread's CPU (`time.thread_time`) and the process's
(`time.process_time`, which adds litellm's logging thread). --openai-sdk sends the call
through the OpenAI SDK, litellm's handler before zapreply switched it to litellm's own HTTP
handler (zapreply.settings.apply_litellm_environment); --compare runs both, alternating, each
in a fresh process.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import subprocess
import sys
import time

from bench.harness import BENCH_MODEL, ROOT, free_port
from bench.inprocess import StubProcess
from bench.procs import wait_http_ok

HANDLER_SWITCH = "EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.llm_call")
    parser.add_argument("--model", default=BENCH_MODEL)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warm-up", type=int, default=30)
    parser.add_argument("--openai-sdk", action="store_true",
                        help="litellm's OpenAI SDK handler instead of its HTTP handler")
    parser.add_argument("--profile", help="write cProfile stats (thread CPU) here")
    parser.add_argument("--compare", action="store_true",
                        help="both handlers, alternating, each in a fresh process")
    parser.add_argument("--rounds", type=int, default=2, help="with --compare")
    args = parser.parse_args(argv)
    if args.compare:
        return _compare(args)

    llm_port, wuzapi_port = free_port(), free_port()
    stubs = subprocess.Popen(
        [sys.executable, "-m", "bench.stubs", "--llm-port", str(llm_port),
         "--wuzapi-port", str(wuzapi_port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        os.environ.update(OPENAI_BASE_URL=f"http://127.0.0.1:{llm_port}/v1",
                          OPENAI_API_KEY="sk-bench-not-a-real-key",
                          LITELLM_LOCAL_MODEL_COST_MAP="True")
        if args.openai_sdk:
            os.environ[HANDLER_SWITCH] = "false"
        wait_http_ok(f"http://127.0.0.1:{wuzapi_port}/_bench/stats", StubProcess(stubs), 15)
        _measure(args, llm_port)
    finally:
        stubs.terminate()
        stubs.wait(10)
    return 0


def _measure(args: argparse.Namespace, llm_port: int) -> None:
    import httpx

    from zapreply.llm import chat as llm
    from zapreply.llm import tools

    messages = [{"role": "system", "content": "Você é o atendente da Loja."},
                {"role": "user", "content": "Olá, quero saber o preço"}]

    def call() -> llm.Completion:
        return llm.complete(model=args.model, messages=messages, tools=tools.SCHEMAS, timeout=10)

    llm.warm_up()
    for _ in range(args.warm_up):
        call()
    profile = cProfile.Profile(time.thread_time) if args.profile else None
    thread, process = time.thread_time(), time.process_time()
    if profile:
        profile.enable()
    for _ in range(args.calls):
        completion = call()
    if profile:
        profile.disable()
    thread, process = time.thread_time() - thread, time.process_time() - process
    if profile:
        profile.dump_stats(args.profile)

    url = f"http://127.0.0.1:{llm_port}/v1/chat/completions"
    body = {"model": args.model.split("/", 1)[-1], "messages": messages, "tools": tools.SCHEMAS}
    with httpx.Client() as client:
        for _ in range(args.warm_up):
            client.post(url, json=body).json()
        plain = time.thread_time()
        for _ in range(args.calls):
            client.post(url, json=body).json()
        plain = time.thread_time() - plain

    handler = "litellm-http" if os.environ.get(HANDLER_SWITCH, "").lower() == "true" \
        else "openai-sdk"
    per_call = 1000 / args.calls
    print(f"{args.model} via {handler}: {thread * per_call:.2f} ms CPU/call on the calling "
          f"thread, {process * per_call:.2f} ms with litellm's logging thread; httpx POST "
          f"{plain * per_call:.2f} ms (cost {completion.cost}, tokens "
          f"{completion.prompt_tokens}+{completion.completion_tokens}"
          f"{', profiled' if profile else ''})", flush=True)


def _compare(args: argparse.Namespace) -> int:
    base = [sys.executable, "-m", "bench.llm_call", "--model", args.model,
            "--calls", str(args.calls), "--warm-up", str(args.warm_up)]
    for _ in range(args.rounds):
        for extra in (["--openai-sdk"], []):
            subprocess.run(base + extra, cwd=ROOT, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
