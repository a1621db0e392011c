"""Tools offered to the model. None of them takes a phone number or a chat: every effect is
bound to the conversation being answered, so the model cannot message anyone else."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zapreply.llm.business_tools import Toolbox

SEND_WHATSAPP = "send_whatsapp"
HANDOFF_TO_HUMAN = "handoff_to_human"
SEARCH_KNOWLEDGE = "search_knowledge"
REMEMBER = "remember"
BUILT_IN = frozenset({SEND_WHATSAPP, HANDOFF_TO_HUMAN, SEARCH_KNOWLEDGE, REMEMBER})
MAX_QUERY_CHARS = 500

# The contact's notes (zapreply.replies.memory, with contact_memory): a fact to remember in,
# the answer for the model out; new facts are kept in Effects.facts.
Remember = Callable[[str, "Effects"], str]

# The search of a config's knowledge base (zapreply.replies.knowledge): a query in, the text
# for the model and what the event records out.
KnowledgeSearch = Callable[[str], tuple[str, dict[str, Any]]]

MAX_MESSAGE_CHARS = 4096

SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": SEND_WHATSAPP,
            "description": (
                "Send a WhatsApp message to the customer of this conversation. "
                "Use it for each message you want the customer to receive."
            ),
            "parameters": {
                "type": "object",
                "properties": {"message": {"type": "string", "description": "The text to send."}},
                "required": ["message"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": HANDOFF_TO_HUMAN,
            "description": (
                "Hand this conversation to a human attendant: the bot stops answering it "
                "until a person resumes it. Use when the customer asks for a human or you "
                "cannot help."
            ),
            "parameters": {
                "type": "object",
                "properties": {"reason": {"type": "string", "description": "Why, briefly."}},
                "required": ["reason"],
            },
        },
    },
]

# Offered only to configs with a knowledge base.
KNOWLEDGE_SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": SEARCH_KNOWLEDGE,
        "description": (
            "Search the business's own documents and FAQ (products, prices, policies, hours, "
            "delivery...). Use it before answering any question about the business; answer "
            "from what it returns, never from guesses."
        ),
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string",
                                     "description": "What to look for, in the customer's "
                                                    "words."}},
            "required": ["query"],
        },
    },
}

# Offered only to configs with contact_memory.
REMEMBER_SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": REMEMBER,
        "description": (
            "Note one lasting fact about this customer that will help in later conversations "
            "(a preference, their city, an order they are waiting for). One short sentence; "
            "never passwords, card numbers or health details."
        ),
        "parameters": {
            "type": "object",
            "properties": {"fact": {"type": "string",
                                    "description": "The fact, in one short sentence."}},
            "required": ["fact"],
        },
    },
}


@dataclass
class Effects:
    """What the tools asked for during one run; applied together when the run is stored."""

    messages: list[str] = field(default_factory=list)
    handoff_reason: str | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    # The most send_whatsapp calls one run accepts (MAX_MESSAGES_PER_RUN); those refused past it.
    max_messages: int | None = None
    refused_messages: int = 0
    # Facts the model asked to remember, new to the contact's notes.
    facts: list[str] = field(default_factory=list)


def execute(name: str, raw_arguments: str, effects: Effects,
            business: Toolbox | None = None, knowledge: KnowledgeSearch | None = None,
            memory: Remember | None = None) -> str:
    """Run a tool call; the string returned goes back to the model. Never raises.
    `business`: the tools the config defines (zapreply.llm.business_tools); `knowledge`: its
    knowledge base's search, when it has one; `memory`: the contact's notes, with
    contact_memory."""
    try:
        arguments = json.loads(raw_arguments or "{}")
        if not isinstance(arguments, dict):
            raise ValueError("arguments must be a JSON object")
    except ValueError as exc:
        result = f"error: invalid arguments ({exc})"
        effects.calls.append({"name": name, "arguments": raw_arguments, "result": result})
        return result

    if name == SEND_WHATSAPP:
        message = arguments.get("message")
        if not isinstance(message, str) or not message.strip():
            result = "error: 'message' must be a non-empty string"
        elif effects.max_messages is not None and len(effects.messages) >= effects.max_messages:
            effects.refused_messages += 1
            result = (f"error: not sent; one reply may send at most {effects.max_messages} "
                      "messages and this one has. Stop sending and finish.")
        else:
            effects.messages.append(message.strip()[:MAX_MESSAGE_CHARS])
            result = "ok: message will be delivered to the customer"
    elif name == HANDOFF_TO_HUMAN:
        reason = arguments.get("reason")
        effects.handoff_reason = str(reason or "requested by the assistant")[:500]
        result = "ok: a human attendant will take over; the bot stops answering"
    elif name == SEARCH_KNOWLEDGE and knowledge is not None:
        query = arguments.get("query")
        if not isinstance(query, str) or not query.strip():
            result = "error: 'query' must be a non-empty string"
        else:
            result, details = knowledge(query.strip()[:MAX_QUERY_CHARS])
            effects.calls.append({"name": name, "arguments": arguments, "result": result,
                                  "details": details})
            return result
    elif name == REMEMBER and memory is not None:
        fact = arguments.get("fact")
        result = memory(fact, effects) if isinstance(fact, str) and fact.strip() \
            else "error: 'fact' must be a non-empty string"
    elif business is not None and name in business:
        result, details = business.call(name, arguments)
        effects.calls.append({"name": name, "arguments": arguments, "result": result,
                              "details": details})
        return result
    else:
        result = f"error: unknown tool {name!r}"
    effects.calls.append({"name": name, "arguments": arguments, "result": result})
    return result

