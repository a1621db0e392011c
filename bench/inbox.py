"""`python -m bench.inbox`: how long the console's inbox and a long conversation take with
100,000 conversations and 1,000,000 messages in PostgreSQL (and, with --sqlite, the same rows
in a SQLite file). Prints the median and p95 of each case, and PostgreSQL's plan of any case
slower than --explain-ms. See docs/PERFORMANCE.md.

The database is the bench's own (`zapreply_bench_inbox_<pid>`, dropped at the end), migrated
to head and filled by `generate_series` in a few statements: 5 configs with 40/25/20/10/5 % of
the conversations, a year of activity, 4 % paused by a person, 2 % waiting for a human after
a handoff, 2 % paused until a moment past; messages spread unevenly (a few conversations hold
thousands), one conversation with --long messages; a reply run per ~3 messages, 4 % failed,
each with its `llm.completed` event.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import event, insert, select, text

from bench.knowledge import use_database
from zapreply.actions import inbox, transcripts
from zapreply.storage.db import get_engine, reset_engines, session_scope
from zapreply.storage.models import (
    Conversation,
    Event,
    Message,
    ReplyRun,
    WorkflowConfig,
    utcnow,
)

FIRST = ["Maria", "Ana", "Francisca", "Antônia", "Adriana", "Juliana", "Márcia", "Fernanda",
         "Patrícia", "Aline", "José", "João", "Antônio", "Francisco", "Carlos", "Paulo", "Pedro",
         "Lucas", "Luiz", "Marcos", "Luís", "Gabriel", "Rafael", "Daniel", "Marcelo", "Bruno",
         "Eduardo", "Felipe", "Raimundo", "Rodrigo", "Beatriz", "Camila", "Larissa", "Letícia"]
LAST = ["Silva", "Santos", "Oliveira", "Souza", "Rodrigues", "Ferreira", "Alves", "Pereira",
        "Lima", "Gomes", "Costa", "Ribeiro", "Martins", "Carvalho", "Almeida", "Lopes", "Soares",
        "Fernandes", "Vieira", "Barbosa", "Rocha", "Dias", "Nascimento", "Andrade", "Moreira",
        "Nunes", "Marques", "Machado", "Mendes", "Freitas", "Cardoso", "Ramos", "Gonçalves"]
WORDS = """oi olá bom dia boa tarde noite tudo bem obrigado obrigada por favor quero saber
preço valor entrega frete prazo pedido produto camiseta calça vestido tênis bolsa tamanho cor
preto branco azul estoque disponível troca devolução garantia pagamento cartão pix boleto
parcela desconto cupom promoção horário loja endereço retirada rastreio código correios
amanhã hoje semana sábado pode ser confirma certo claro aguardo perfeito combinado ok sim não
""".split()
# A phrase in a dozen messages (a search that finds few), and one in none.
RARE = "protocolo 7731-XQ"
ABSENT = "inexistentezzq"
PASSWORD = "bench password, not a secret"

SEED_SQL = """
SELECT setseed(0.42);
INSERT INTO workflow_configs (name, instance, is_active, model, system_prompt, send,
    debounce_seconds, webhook_secret, options, created_at, updated_at)
SELECT 'Loja ' || n, 'loja-' || n, true, 'openai/bench', '',
    '{"driver": "wuzapi", "base_url": "http://wuzapi.invalid", "token": "t"}', 2,
    md5(n::text), '{}', now(), now()
FROM generate_series(1, 5) n;

INSERT INTO conversations (instance, chat_jid, contact_phone, contact_name,
    workflow_config_id, status, paused_until, pause_reason, lease_token, created_at, updated_at)
SELECT 'loja-' || k, phone || '@s.whatsapp.net', phone,
    CASE WHEN r_name < 0.1 THEN NULL ELSE
        (%(first)s::text[])[1 + floor(r_name * 10 * %(nfirst)s)::int %% %(nfirst)s] || ' ' ||
        (%(last)s::text[])[1 + floor(r_last * %(nlast)s)::int] END,
    k,
    CASE WHEN r_state < 0.90 OR r_state >= 0.98 THEN 'active' ELSE 'paused' END,
    CASE WHEN r_state >= 0.90 AND r_state < 0.94 THEN now() + interval '30 minutes'
         WHEN r_state >= 0.96 AND r_state < 0.98 THEN now() - interval '2 hours' END,
    CASE WHEN r_state >= 0.90 AND r_state < 0.94 THEN 'taken over in the console'
         WHEN r_state >= 0.94 AND r_state < 0.96 THEN 'handoff to human'
         WHEN r_state >= 0.96 AND r_state < 0.98 THEN 'business replied' END,
    0, created, created + r_upd * (now() - created)
FROM (
    SELECT g,
        CASE WHEN r_inst < 0.40 THEN 1 WHEN r_inst < 0.65 THEN 2 WHEN r_inst < 0.85 THEN 3
             WHEN r_inst < 0.95 THEN 4 ELSE 5 END AS k,
        '55' || (11 + g %% 80) || '9' || lpad(((g::bigint * 7919) %% 100000000)::text, 8, '0')
            AS phone,
        now() - random() * interval '365 days' AS created,
        r_inst, r_name, r_last, r_state, r_upd
    FROM (SELECT g, random() r_inst, random() r_name, random() r_last, random() r_state,
                 sqrt(random()) r_upd
          FROM generate_series(1, %(conversations)s) g) r
) s;

-- Runs: one per ~3 messages, spread like the messages; 4 %% failed, 2 %% skipped.
INSERT INTO reply_runs (conversation_id, workflow_config_id, status, attempts, error,
    created_at, finished_at)
SELECT c.id, c.workflow_config_id, s.status, 1,
    CASE WHEN s.status = 'failed' THEN 'llm: the provider answered 500' END,
    c.created_at + s.at * (c.updated_at - c.created_at),
    c.created_at + s.at * (c.updated_at - c.created_at) + interval '3 seconds'
FROM (SELECT 1 + floor(%(conversations)s * power(random(), 2))::int AS cid, random() AS at,
             CASE WHEN random() < 0.04 THEN 'failed' WHEN random() < 0.02 THEN 'skipped'
                  ELSE 'sent' END AS status
      FROM generate_series(1, %(runs)s)) s
JOIN conversations c ON c.id = s.cid
ORDER BY 6;

-- Each conversation's last message at its last activity, then the rest spread unevenly.
INSERT INTO messages (conversation_id, instance, role, content, wa_message_id, media_type,
    status, extra, created_at)
SELECT c.id, c.instance, 'customer',
    array_to_string(ARRAY(SELECT (%(words)s::text[])[1 + floor(random() * %(nwords)s)::int]
                          FROM generate_series(1, 3 + c.id %% 10)), ' '),
    'L' || c.id, NULL, NULL, '{}', c.updated_at
FROM conversations c;

INSERT INTO messages (conversation_id, instance, role, content, wa_message_id, media_type,
    status, extra, created_at)
SELECT c.id, c.instance, s.role,
    array_to_string(ARRAY(SELECT (%(words)s::text[])[1 + floor(random() * %(nwords)s)::int]
                          FROM generate_series(1, 3 + s.g %% 12)), ' '),
    CASE WHEN s.role = 'assistant' THEN NULL ELSE 'M' || s.g END,
    CASE WHEN s.media < 0.03 THEN 'image' END,
    CASE WHEN s.role = 'customer' THEN NULL ELSE 'sent' END, '{}',
    c.created_at + s.at * (c.updated_at - c.created_at)
FROM (SELECT g, CASE WHEN g %% 1000 = 0 THEN %(long_id)s
                     ELSE 1 + floor(%(conversations)s * power(random(), 2))::int END AS cid,
             random() AS at, random() AS media,
             CASE WHEN random() < 0.5 THEN 'customer' WHEN random() < 0.9 THEN 'assistant'
                  ELSE 'business' END AS role
      FROM generate_series(1, %(spread)s) g) s
JOIN conversations c ON c.id = s.cid
ORDER BY 9;

-- The long conversation.
INSERT INTO messages (conversation_id, instance, role, content, wa_message_id, media_type,
    status, extra, created_at)
SELECT c.id, c.instance, CASE WHEN g %% 2 = 0 THEN 'customer' ELSE 'assistant' END,
    array_to_string(ARRAY(SELECT (%(words)s::text[])[1 + floor(random() * %(nwords)s)::int]
                          FROM generate_series(1, 3 + g %% 12)), ' '),
    CASE WHEN g %% 2 = 0 THEN 'X' || g END, NULL,
    CASE WHEN g %% 2 = 1 THEN 'sent' END, '{}',
    c.updated_at - (%(long)s - g) * interval '1 minute'
FROM conversations c, generate_series(1, %(long)s) g
WHERE c.id = %(long_id)s;

UPDATE messages SET content = content || ' ' || %(rare)s
WHERE id IN (SELECT id FROM messages WHERE id %% 83333 = 7);

-- The long conversation's replies belong to runs of their own, with their events.
INSERT INTO reply_runs (conversation_id, workflow_config_id, status, attempts, created_at,
    finished_at)
SELECT m.conversation_id, c.workflow_config_id, 'sent', 1, m.created_at, m.created_at
FROM messages m JOIN conversations c ON c.id = m.conversation_id
WHERE m.conversation_id = %(long_id)s AND m.role = 'assistant';
UPDATE messages m SET reply_run_id = r.id
FROM reply_runs r
WHERE m.conversation_id = %(long_id)s AND m.role = 'assistant'
    AND r.conversation_id = m.conversation_id AND r.created_at = m.created_at;

INSERT INTO events (type, conversation_id, run_id, payload, created_at)
SELECT 'llm.completed', r.conversation_id, r.id,
    jsonb_build_object('model', 'openai/bench', 'prompt_tokens', 812,
                       'completion_tokens', 64, 'cost', 0.00021, 'latency_ms', 930),
    r.created_at
FROM reply_runs r ORDER BY r.id;
INSERT INTO events (type, conversation_id, run_id, payload, created_at)
SELECT 'message.received', m.conversation_id, NULL, '{}', m.created_at
FROM messages m WHERE m.role = 'customer' ORDER BY m.id;
"""


def seed(url: str, conversations: int, messages: int, long: int) -> None:
    # The long conversation: a recent one in the largest config.
    long_id = conversations
    params = {
        "first": FIRST, "nfirst": len(FIRST), "last": LAST, "nlast": len(LAST),
        "words": WORDS, "nwords": len(WORDS), "conversations": conversations,
        "runs": messages // 3, "spread": messages - conversations - long, "long": long,
        "long_id": long_id, "rare": RARE,
    }
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in _statements(SEED_SQL):
            conn.execute(statement, params if "%(" in statement else None)
        conn.execute("UPDATE conversations SET updated_at = now() WHERE id = %s", (long_id,))
        conn.execute("VACUUM ANALYZE")


def _statements(script: str) -> list[str]:
    cleaned = "\n".join(line for line in script.splitlines()
                        if not line.lstrip().startswith("--"))
    return [part.strip() for part in cleaned.split(";") if part.strip()]


def copy_to_sqlite(pg_url: str, sqlite_url: str) -> None:
    """The same rows in a SQLite file migrated to head (through SQLAlchemy, so its types store
    them as the app does)."""
    use_database(sqlite_url)
    engine = get_engine()
    with psycopg.connect(pg_url) as source, engine.begin() as target:
        for model in (WorkflowConfig, Conversation, ReplyRun, Message, Event):
            table = model.__table__
            names = [column.name for column in table.columns]
            cursor = source.cursor(name=f"copy_{table.name}")
            cursor.execute(f"SELECT {', '.join(names)} FROM {table.name} ORDER BY id")
            while rows := cursor.fetchmany(20_000):
                target.execute(insert(table), [dict(zip(names, row, strict=True))
                                               for row in rows])
        target.exec_driver_sql("ANALYZE")


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return (statistics.median(ordered) * 1000,
            ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000)


class Statements:
    """The SQL a case runs (its first statement is the one explained when it is slow)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []
        self.on = False

    def __call__(self, conn: Any, cursor: Any, statement: str, parameters: Any,
                 context: Any, executemany: bool) -> None:
        if self.on:
            self.seen.append((statement, parameters))


def cases(long_id: int, deep_cursor: tuple[datetime, int]) -> dict[str, dict[str, Any]]:
    return {
        "first page": {},
        "deep page (cursor at ~70 %)": {"before": deep_cursor},
        "instance (5 % of rows)": {"instance": "loja-5"},
        "config (40 %)": {"config_id": 1},
        "config (5 %), deep": {"config_id": 5, "before": deep_cursor},
        "state: bot": {"state": inbox.State.BOT},
        "state: paused by a person": {"state": inbox.State.PAUSED},
        "state: waiting for a human": {"state": inbox.State.HANDOFF},
        "state: last run failed": {"state": inbox.State.FAILED},
        "state: failed, instance 5 %": {"state": inbox.State.FAILED, "instance": "loja-5"},
        "search name (common)": {"search": "maria"},
        "search name (one person)": {"search": "Letícia Gonçalves"},
        "search phone (one)": {"search": "9" + str((long_id * 7919) % 100_000_000).zfill(8)},
        "search text, many": {"search": "obrigado"},
        "search text, few": {"search": RARE},
        "search text, none": {"search": ABSENT},
        "search two letters, few": {"search": "xq"},
        "search none + instance": {"search": ABSENT, "instance": "loja-5"},
    }


def time_inbox(rounds: int, now: datetime, arguments: dict[str, Any],
               statements: Statements) -> tuple[tuple[float, float], int]:
    times, found = [], 0
    for attempt in range(rounds + 1):
        statements.on = attempt == 0
        started = time.perf_counter()
        with session_scope() as session:
            found = len(inbox.list_inbox(session, now=now, **arguments).rows)
        elapsed = time.perf_counter() - started
        statements.on = False
        if attempt:  # the first run warms the plan cache and the pages
            times.append(elapsed)
    return percentiles(times), found


def time_call(rounds: int, call: Callable[[], Any]) -> tuple[float, float]:
    times = []
    for attempt in range(rounds + 1):
        started = time.perf_counter()
        call()
        if attempt:
            times.append(time.perf_counter() - started)
    return percentiles(times)


def explain(statement: str, parameters: Any) -> str:
    with get_engine().connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
        return "\n".join(row[0] for row in rows)


def console_client(data_dir: str) -> Any:
    """A signed-in admin's test client of the console on the bench's database."""
    from console_app import create_app
    from zapreply.actions import operators
    from zapreply.settings import get_settings

    app = create_app({"DATABASE_URL": get_settings().database_url,
                      "ZAPREPLY_DATA_DIR": data_dir,
                      "CELERY_BROKER_URL": f"sqla+sqlite:///{data_dir}/broker.db"})
    with session_scope() as session:
        operators.add_operator(session, "bench", PASSWORD, "admin", actor="bench")
    client = app.test_client()
    login = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', login)
    assert token, "the sign-in page has no CSRF token"
    signed_in = client.post("/login", data={"username": "bench", "password": PASSWORD,
                                            "csrf_token": token.group(1)})
    assert signed_in.status_code == 302, signed_in.status_code
    return client


def measure(database: str, rounds: int, explain_ms: float, data_dir: str
            ) -> list[tuple[str, str, float, float, int]]:
    now = utcnow()
    with session_scope() as session:
        long_id = session.scalar(select(Message.conversation_id).group_by(
            Message.conversation_id).order_by(text("count(*) DESC")).limit(1))
        total = session.scalar(select(text("count(*)")).select_from(Conversation))
        deep = session.execute(select(Conversation.updated_at, Conversation.id).order_by(
            Conversation.updated_at.desc(), Conversation.id.desc())
            .offset(int(total * 0.7)).limit(1)).one()
        long_messages = session.scalar(select(text("count(*)")).select_from(Message)
                                       .where(Message.conversation_id == long_id))
    statements = Statements()
    event.listen(get_engine(), "before_cursor_execute", statements)
    results = []
    slow: list[tuple[str, str, Any]] = []
    for name, arguments in cases(long_id, (deep[0], deep[1])).items():
        statements.seen.clear()
        (p50, p95), found = time_inbox(rounds, now, arguments, statements)
        results.append((database, f"inbox: {name}", p50, p95, found))
        if database == "postgresql" and p50 > explain_ms and statements.seen:
            slow.append((name, *statements.seen[0]))
    event.remove(get_engine(), "before_cursor_execute", statements)

    def page_of_long() -> None:
        with session_scope() as session:
            transcripts.transcript(session, long_id)

    results.append((database, f"transcript of {long_messages:,} messages", *time_call(
        rounds, page_of_long), transcripts.TRANSCRIPT_LIMIT))
    client = console_client(data_dir)
    for name, path in (("GET / (first page)", "/"),
                       ("GET /?q=<text, none>", f"/?q={ABSENT}"),
                       ("GET /?state=failed", "/?state=failed"),
                       (f"GET /conversations/<{long_messages:,} messages>",
                        f"/conversations/{long_id}")):
        def get(path: str = path) -> None:
            response = client.get(path)
            assert response.status_code == 200, response.status_code
        results.append((database, name, *time_call(rounds, get), 0))
    for name, statement, parameters in slow:
        print(f"\n--- {database}: {name} ---\n{statement}\n{parameters}\n"
              f"{explain(statement, parameters)}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inbox", description=__doc__)
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--long", type=int, default=20_000,
                        help="messages of the one long conversation")
    parser.add_argument("--rounds", type=int, default=30, help="timed runs of each case")
    parser.add_argument("--explain-ms", type=float, default=50.0,
                        help="print PostgreSQL's plan of a case whose median is slower")
    parser.add_argument("--sqlite", action="store_true",
                        help="also copy the rows into a SQLite file and time it")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a server where a database of the bench's own is made and dropped")
    args = parser.parse_args(argv)
    results = []
    name = f"zapreply_bench_inbox_{os.getpid()}"
    server = args.postgres.rsplit("/", 1)[0]
    with psycopg.connect(args.postgres, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            use_database(f"{server.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}")
            started = time.perf_counter()
            seed(f"{server}/{name}", args.conversations, args.messages, args.long)
            print(f"postgresql: seeded and analysed in {time.perf_counter() - started:.0f} s")
            _sizes(f"{server}/{name}")
            results += measure("postgresql", args.rounds, args.explain_ms, data_dir)
            reset_engines()
            if args.sqlite:
                started = time.perf_counter()
                copy_to_sqlite(f"{server}/{name}", f"sqlite:///{data_dir}/inbox.db")
                print(f"sqlite: copied in {time.perf_counter() - started:.0f} s")
                results += measure("sqlite", args.rounds, args.explain_ms, data_dir)
                reset_engines()
    finally:
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"\n{args.conversations:,} conversations, {args.messages:,} messages; "
          f"{args.rounds} timed runs of each case (after one untimed); page of "
          f"{inbox.PAGE_SIZE}")
    print(f"{'database':<11} {'case':<44} {'p50 ms':>8} {'p95 ms':>8} {'rows':>5}")
    for database, what, p50, p95, found in results:
        print(f"{database:<11} {what:<44} {p50:>8.1f} {p95:>8.1f} {found:>5}")
    return 0


def _sizes(url: str) -> None:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT relname, pg_size_pretty(pg_total_relation_size(oid)) FROM pg_class "
            "WHERE relname IN ('conversations', 'messages', 'reply_runs', 'events') "
            "ORDER BY relname").fetchall()
        indexes = conn.execute(
            "SELECT indexrelname, pg_size_pretty(pg_relation_size(indexrelid)) "
            "FROM pg_stat_user_indexes WHERE indexrelname ~ %s ORDER BY 1",
            (r"^ix_(conversations|messages)_(search|content|config)",)).fetchall()
    print("sizes (with indexes): " + ", ".join(f"{n} {s}" for n, s in rows))
    if indexes:
        print("search indexes: " + ", ".join(f"{n} {s}" for n, s in indexes))



if __name__ == "__main__":
    raise SystemExit(main())
