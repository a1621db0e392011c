"""A config's options: one definition per option (type, default, choices, check, meaning), from
which the admin API's validation, the defaults it shows and the frozen `Options` the pipeline
reads all come. Stored in WorkflowConfig.options as JSON, only the options a client set."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any


class InvalidConfig(ValueError):
    pass


def _check_timezone(name: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidConfig(f"unknown timezone {name!r} (use an IANA name like "
                            "'America/Sao_Paulo')") from None


def _check_opening_hours(schedule: Any) -> None:
    from zapreply.rules.hours import BadSchedule, validate

    try:
        validate(schedule)
    except BadSchedule as exc:
        raise InvalidConfig(str(exc)) from None


def _check_bot_number(value: Any) -> None:
    from zapreply.rules.text import bot_id

    numbers = value if isinstance(value, list) else [value]
    if not numbers or not all(isinstance(v, str) and bot_id(v) for v in numbers):
        raise InvalidConfig("option 'bot_number' must be the bot's phone number or JID "
                            "(e.g. '5511900000099' or '100000000000099@lid'), or a list of them")


def _check_retention_days(days: int) -> None:
    if days < 0:
        raise InvalidConfig("option 'retention_days' must not be negative")
    if not 1 <= days <= 36500:
        raise InvalidConfig("option 'retention_days' must be from 1 to 36500 days, or null "
                            "to keep messages and events forever")


def _check_non_empty(name: str) -> Callable[[Any], None]:
    # An option that names something: an empty string would only fail later, at a customer's
    # message.
    def check(value: Any) -> None:
        if isinstance(value, str) and not value.strip():
            raise InvalidConfig(f"option '{name}' must not be empty")
    return check


# PostgreSQL's built-in text search configurations (stemming and stop words per language).
KNOWLEDGE_LANGUAGES = (
    "simple", "arabic", "armenian", "basque", "catalan", "danish", "dutch", "english",
    "finnish", "french", "german", "greek", "hindi", "hungarian", "indonesian", "irish",
    "italian", "lithuanian", "nepali", "norwegian", "portuguese", "romanian", "russian",
    "serbian", "spanish", "swedish", "tamil", "turkish", "yiddish",
)


def _check_similarity(value: float) -> None:
    if not 0 <= value <= 1:
        raise InvalidConfig("option 'knowledge_min_similarity' must be from 0 to 1")


def _check_results(value: int) -> None:
    if not 1 <= value <= 20:
        raise InvalidConfig("option 'knowledge_results' must be from 1 to 20")


def _check_notes_max_chars(value: int) -> None:
    from zapreply.rules.notes import MAX_NOTES_CHARS

    if not 50 <= value <= MAX_NOTES_CHARS:
        raise InvalidConfig(f"option 'contact_notes_max_chars' must be from 50 to "
                            f"{MAX_NOTES_CHARS}")

def _check_positive(name: str) -> Callable[[Any], None]:
    # Zero would mean "never": a limit that stops the bot is a pause, not a pace (null lifts it).
    def check(value: Any) -> None:
        if not value > 0:
            raise InvalidConfig(f"option '{name}' must be greater than 0, or null for no limit")
    return check


def _check_at_most(name: str, most: float) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value > most:
            raise InvalidConfig(f"option '{name}' must be at most {most:g}")
    return check


def _option(default: Any, doc: str, types: tuple[type, ...], *, choices: tuple[str, ...] = (),
            check: Callable[[Any], None] | None = None) -> Any:
    meta = {"types": types, "choices": choices, "check": check, "doc": doc}
    if isinstance(default, list):
        return field(default_factory=list, metadata=meta)
    return field(default=default, metadata=meta)


NUMBER = (int, float)


@dataclass(frozen=True, slots=True)
class Options:
    """Every option, the default where a config leaves it out. A stored `null` stays None, so
    readers keep their own fallback where None means something else than the default."""

    temperature: float | None = _option(None, "passed to the model; None: the provider's",
                                        NUMBER)
    max_tokens: int | None = _option(None, "passed to the model; None: the provider's", (int,))
    history_limit: int | None = _option(None, "past messages the model sees; None: "
                                        "HISTORY_LIMIT", (int,))
    fallback_text: str | None = _option(None, "sent instead of a raw error when a reply cannot "
                                        "be produced; None sends nothing", (str,))
    handoff_text: str | None = _option(None, "sent when the model hands the conversation to a "
                                       "human; None sends nothing", (str,))
    human_pause_minutes: float | None = _option(30.0, "how long a message typed by the "
                                                "business on its phone pauses the bot", NUMBER)
    resume_keyword: str | None = _option(None, "typed by the business on its phone: the bot "
                                         "takes the conversation back at once", (str,))
    reset_keyword: str | None = _option(None, "typed by the customer: the conversation starts a "
                                        "fresh context", (str,))
    session_idle_hours: float | None = _option(24.0, "after this long without messages, the "
                                               "model no longer sees the earlier ones", NUMBER)
    max_input_chars: int | None = _option(5000, "longer customer messages are cut to this many "
                                          "characters before reaching the model", (int,))
    rate_limit_per_minute: int | None = _option(30, "more customer messages than this in a "
                                                "minute are recorded but not answered", (int,))
    # A flood of strangers must not buy a model call each.
    new_conversations_per_minute: int | None = _option(
        120, "conversations the instance opens in a minute past this are recorded but not "
        "answered; None: no limit", (int,))
    loop_guard_replies: int | None = _option(10, "more replies than this in loop_guard_minutes "
                                             "(another bot answering ours) pauses the "
                                             "conversation until an operator resumes it", (int,))
    loop_guard_minutes: float | None = _option(2.0, "the loop guard's window", NUMBER)
    timezone: str | None = _option("UTC", "for the prompt's {now}, {date}, {time} and "
                                   "{weekday}, opening_hours and a budget's day", (str,),
                                   check=_check_timezone)
    typing_indicator: bool | None = _option(True, "WuzAPI shows typing… while the reply is "
                                            "produced and sent", (bool,))
    typing_ms_per_char: float | None = _option(0, "a pause per character before each message",
                                               NUMBER)
    typing_max_seconds: float | None = _option(4.0, "the cap on that pause", NUMBER)
    split_paragraphs: bool | None = _option(True, "replies split at blank lines go out as "
                                            "several messages", (bool,))
    mark_read: bool | None = _option(False, "customer messages marked read when the bot starts "
                                     "answering", (bool,))
    trigger: str | None = _option("all", "who gets answered: every message, messages matching "
                                  "trigger_keywords, or those no other config wants", (str,),
                                  choices=("all", "keyword", "fallback"))
    trigger_operator: str | None = _option("contains", "how trigger_keywords match", (str,),
                                           choices=("equals", "contains", "starts_with",
                                                    "regex"))
    trigger_keywords: list[str] | None = _option([], "what a keyword trigger matches", (list,))
    allow_contacts: list[str] | None = _option(None, "phone numbers or JIDs; when set, the only "
                                               "contacts answered", (list,))
    deny_contacts: list[str] | None = _option([], "phone numbers or JIDs never answered",
                                              (list,))
    tools: list[dict[str, Any]] | None = _option([], "HTTP endpoints of the business the model "
                                                 "may call (zapreply.llm.business_tools)",
                                                 (list,))
    tool_private_hosts: list[str] | None = _option([], "tool hosts that may resolve to private "
                                                   "or loopback addresses", (list,))
    daily_token_budget: int | None = _option(None, "LLM tokens a config may spend per day (in "
                                             "timezone); see zapreply.rules.budget", (int,))
    daily_cost_budget: float | None = _option(None, "USD a config may spend per day", NUMBER)
    budget_action: str | None = _option("fallback", "once a budget is spent: send "
                                        "fallback_text, or pause the conversation for a person",
                                        (str,), choices=("fallback", "handoff"))
    groups: str | None = _option("off", "group chats ignored, answered, or answered only when "
                                 "the bot is mentioned or quoted", (str,),
                                 choices=("off", "on", "mention"))
    bot_number: str | list[str] | None = _option(None, "the bot's own number or JID (or a "
                                                 "list: its @lid too), to recognise mentions",
                                                 (str, list), check=_check_bot_number)
    opening_hours: dict[str, Any] | None = _option(None, "weekly schedule in timezone; None: "
                                                   "always open", (dict,),
                                                   check=_check_opening_hours)
    away_message: str | None = _option(None, "sent once per closed window outside "
                                       "opening_hours", (str,))
    outside_hours: str | None = _option("away", "outside opening_hours: keep messages "
                                        "unanswered, or answer anyway", (str,),
                                        choices=("away", "answer"))
    transcribe_audio: bool | None = _option(True, "voice notes and audio transcribed and "
                                            "answered as text (zapreply.replies.media)", (bool,))
    transcription_model: str | None = _option("whisper-1", "any litellm transcription model",
                                              (str,),
                                              check=_check_non_empty("transcription_model"))
    transcription_language: str | None = _option(None, "an ISO-639-1 hint such as 'pt'",
                                                 (str,))
    vision: str | None = _option("auto", "images go to the model as pictures: when litellm "
                                 "knows it takes them, always, or never", (str,),
                                 choices=("auto", "always", "never"))
    media_fallback_text: str | None = _option(None, "sent without asking the model when "
                                              "nothing the customer sent can be understood",
                                              (str,))
    retention_days: int | None = _option(180, "messages and events older than this are "
                                         "deleted (zapreply.actions.privacy); None keeps them",
                                         (int,), check=_check_retention_days)
    knowledge_language: str | None = _option(
        "portuguese", "the language of the knowledge base's full-text search on PostgreSQL "
        "(stemming, stop words; zapreply.storage.knowledge)", (str,),
        choices=KNOWLEDGE_LANGUAGES)
    knowledge_results: int | None = _option(5, "passages search_knowledge gives the model at "
                                            "most", (int,), check=_check_results)
    knowledge_only: bool | None = _option(False, "the model is told to answer only from the "
                                          "knowledge base, and told plainly when a search "
                                          "finds nothing relevant", (bool,))
    embedding_model: str | None = _option(None, "a litellm embedding model: passages are also "
                                          "found by vector similarity; None: full-text search "
                                          "only", (str,),
                                          check=_check_non_empty("embedding_model"))
    knowledge_min_similarity: float | None = _option(
        0.5, "with embedding_model, the cosine similarity below which a passage the full-text "
        "search did not match counts as not relevant", NUMBER, check=_check_similarity)
    contact_memory: bool | None = _option(False, "the model gets a remember tool to note "
                                          "facts about the customer, and sees the contact's "
                                          "notes in every session (zapreply.rules.notes)",
                                          (bool,))
    contact_notes_max_chars: int | None = _option(1000, "the length a contact's notes keep "
                                                  "from remember: the oldest facts are dropped "
                                                  "past it", (int,),
                                                  check=_check_notes_max_chars)

    max_message_age_minutes: float | None = _option(
        30.0, "a customer message WhatsApp timestamped longer ago than this when it reached "
        "the receiver (a backlog after a reconnect) is recorded, not answered; None: any age",
        NUMBER, check=_check_positive("max_message_age_minutes"))
    stale_action: str | None = _option(
        "ignore", "what a message older than max_message_age_minutes gets: nothing, a pause "
        "for a person, or one reply to the newest of each conversation", (str,),
        choices=("ignore", "handoff", "answer_latest"))
    # WhatsApp bans numbers that send like machines (docs in the README, "Pacing").
    send_rate_per_minute: int | None = _option(
        30, "messages the instance sends in any 60 s at most, spaced evenly; None: no limit",
        (int,), check=_check_positive("send_rate_per_minute"))
    min_send_interval_seconds: float | None = _option(
        2.0, "the least time between two messages to the same chat; None: no gap", NUMBER,
        check=_check_at_most("min_send_interval_seconds", 3600))
    daily_new_conversations: int | None = _option(
        50, "chats the bot writes to per day (in timezone) that wrote nothing in the last 24 "
        "hours (WhatsApp's business-initiated conversations); later ones wait for the next "
        "day; None: no limit", (int,), check=_check_positive("daily_new_conversations"))

    @classmethod
    def of(cls, stored: Mapping[str, Any] | None) -> Options:
        """The options of a stored (already validated) mapping; names no longer defined are
        left out."""
        if not stored:
            return _DEFAULT
        return cls(**{name: value for name, value in stored.items() if name in DEFINITIONS})


DEFINITIONS: dict[str, Field[Any]] = {f.name: f for f in fields(Options)}
DEFAULTS: dict[str, Any] = {
    f.name: f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
    for f in DEFINITIONS.values()
}
_DEFAULT = Options()


def check(name: str, value: Any) -> None:
    """Refuse a value the option cannot take (None is every option's way back to its default
    behaviour)."""
    definition = DEFINITIONS.get(name)
    if definition is None:
        raise InvalidConfig(f"unknown option '{name}'")
    if value is None:
        return
    expected: tuple[type, ...] = definition.metadata["types"]
    if isinstance(value, bool) != (bool in expected) or not isinstance(value, expected):
        raise InvalidConfig(f"option '{name}' has the wrong type")
    if definition.metadata["check"] is not None:
        definition.metadata["check"](value)
    choices = definition.metadata["choices"]
    if choices and value not in choices:
        raise InvalidConfig(f"option '{name}' must be one of: {', '.join(choices)}")
    if isinstance(value, list) and name != "tools" \
            and not all(isinstance(v, str) and v for v in value):
        raise InvalidConfig(f"option '{name}' must be a list of non-empty strings")
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        raise InvalidConfig(f"option '{name}' must not be negative")
