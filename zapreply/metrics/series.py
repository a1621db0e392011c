"""The series. Names of the LLM's follow OpenTelemetry's GenAI semantic conventions as
Prometheus spells them (`gen_ai.client.operation.duration` in seconds →
`gen_ai_client_operation_duration_seconds`, `gen_ai.client.token.usage` →
`gen_ai_client_token_usage`), with their bucket boundaries. Labels hold only bounded, public
values (an outcome, a reason kind, a model name from a config): never a phone number, a
message, a token or an instance's secret path."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# What the receiver answered a webhook (README, "Metrics").
QUEUED, IGNORED, DUPLICATE = "queued", "ignored", "duplicate"
BAD_REQUEST, UNAUTHORIZED, TOO_LARGE, TIMEOUT, UNAVAILABLE = (
    "bad_request", "unauthorized", "too_large", "timeout", "unavailable")
OUTCOMES = (QUEUED, IGNORED, DUPLICATE, BAD_REQUEST, UNAUTHORIZED, TOO_LARGE, TIMEOUT,
            UNAVAILABLE)
# The refusals, by the HTTP status the receiver answers them with.
REFUSAL_OF_STATUS = {400: BAD_REQUEST, 401: UNAUTHORIZED, 408: TIMEOUT, 413: TOO_LARGE,
                     503: UNAVAILABLE}
# Why a reply run failed for good.
LLM, SEND, NO_REPLY = "llm", "send", "no_reply"
FAILURE_REASONS = (LLM, SEND, NO_REPLY)

webhooks = Counter("zapreply_webhooks", "Webhooks the receiver answered, by outcome",
                   ["outcome"])
# Children made once: the webhook's hot path is a dict lookup and an increment.
_webhook_outcome = {outcome: webhooks.labels(outcome) for outcome in OUTCOMES}

reply_latency = Histogram(
    "zapreply_reply_latency_seconds",
    "Seconds from a customer's last message of a burst being recorded (as its webhook came) "
    "to the first message of its reply being sent",
    buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600))

runs_failed = Counter("zapreply_runs_failed", "Reply runs that failed for good, by reason",
                      ["reason"])
_run_failed_reason = {reason: runs_failed.labels(reason) for reason in FAILURE_REASONS}

_GENAI = ["gen_ai_operation_name", "gen_ai_system", "gen_ai_request_model"]
llm_duration = Histogram(
    "gen_ai_client_operation_duration_seconds", "GenAI operation duration (an LLM call)", _GENAI,
    buckets=(0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96,
             81.92))
llm_tokens = Histogram(
    "gen_ai_client_token_usage", "Tokens used by an LLM call, input and output",
    [*_GENAI, "gen_ai_token_type"],
    buckets=(1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216,
             67108864))


def webhook(outcome: str) -> None:
    _webhook_outcome[outcome].inc()


def webhook_refused(status: int) -> None:
    outcome = REFUSAL_OF_STATUS.get(status)
    if outcome is not None:
        _webhook_outcome[outcome].inc()


def run_failed(reason: str) -> None:
    _run_failed_reason[reason].inc()


def reply_sent(seconds: float) -> None:
    reply_latency.observe(max(seconds, 0.0))


def llm_call(model: str, seconds: float, input_tokens: int | None,
             output_tokens: int | None) -> None:
    """One chat completion. `model` is litellm's "provider/name": the provider is the GenAI
    system (litellm's default, openai, when there is none)."""
    system, _, name = model.partition("/")
    if not name:
        system, name = "openai", model
    labels = ("chat", system, name)
    llm_duration.labels(*labels).observe(max(seconds, 0.0))
    if input_tokens is not None:
        llm_tokens.labels(*labels, "input").observe(input_tokens)
    if output_tokens is not None:
        llm_tokens.labels(*labels, "output").observe(output_tokens)
