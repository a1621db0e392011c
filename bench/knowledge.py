"""`python -m bench.knowledge`: how long a knowledge-base search takes with 10,000 passages in
one config, on PostgreSQL (tsvector, GIN) and on SQLite (FTS5), and how long the Python
fallback's vector ranking takes over as many stored vectors. Prints p50 and p95 per database.
See docs/PERFORMANCE.md."""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import psycopg

from zapreply import settings as settings_module
from zapreply.actions import documents, knowledge
from zapreply.replies import knowledge as search_module
from zapreply.storage import knowledge as store
from zapreply.storage.db import reset_engines, session_scope
from zapreply.storage.models import KnowledgePassage, WorkflowConfig

ROOT = Path(__file__).resolve().parent.parent
# A shop's vocabulary, and made-up product names to make the corpus large and varied.
WORDS = """entrega prazo frete taxa cidade capital interior produto camiseta calça vestido
sapato tênis bolsa tamanho cor preto branco azul vermelho estoque disponível troca devolução
garantia defeito nota fiscal pagamento cartão crédito débito boleto pix parcela desconto
cupom promoção horário funcionamento segunda sábado domingo feriado loja endereço retirada
pedido rastreio código correios transportadora embalagem presente atacado varejo preço
valor tabela modelo coleção verão inverno algodão couro sintético lavagem cuidado medida
""".split()


def corpus(passages: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    names = [f"{rng.choice(WORDS)}{n}" for n in range(3000)]
    pool = WORDS * 5 + names
    return [" ".join(rng.choice(pool) for _ in range(rng.randint(120, 180))).capitalize() + "."
            for _ in range(passages)]


def queries(count: int, seed: int = 11) -> list[str]:
    """Broad questions: 2-6 of the shop's common words, each in thousands of passages."""
    rng = random.Random(seed)
    return [" ".join(rng.sample(WORDS, rng.randint(2, 6))) for _ in range(count)]


def narrow_queries(count: int, seed: int = 13) -> list[str]:
    """Questions about one product: its name (in a few passages) and a common word."""
    rng = random.Random(seed)
    return [f"{rng.choice(WORDS)} {rng.choice(WORDS)}{rng.randrange(3000)}"
            for _ in range(count)]


def use_database(url: str) -> None:
    settings_module.override(settings_module.load({"DATABASE_URL": url, **{
        k: v for k, v in os.environ.items() if k == "ZAPREPLY_DATA_DIR"}}))
    reset_engines()
    from alembic import command
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logging"] = False
    command.upgrade(config, "head")


def fill(passages: int, dims: int) -> int:
    """A config with `passages` passages (documents of 50), each with a `dims`-number vector."""
    with session_scope() as session:
        config = WorkflowConfig(name="Bench", instance="bench", model="openai/bench",
                                send={"driver": "wuzapi", "base_url": "http://x", "token": "t"},
                                options={})
        session.add(config)
        session.flush()
        config_id = config.id
    texts = corpus(passages)
    for start in range(0, passages, 50):
        chunk = texts[start:start + 50]
        with session_scope() as session:
            row = knowledge.add_document(session, config_id, documents.from_text(
                f"Catálogo {start // 50}", "\n\n".join(chunk)))
            # One passage per paragraph here, whatever their length: 50 a document.
            store.add_passages(session, row, chunk, "portuguese")
    rng = random.Random(3)
    with session_scope() as session:
        ids = list(session.scalars(KnowledgePassage.__table__.select()
                                   .with_only_columns(KnowledgePassage.id)
                                   .where(KnowledgePassage.workflow_config_id == config_id)))
        store.store_embeddings(session, "bench", [
            (passage_id, [rng.uniform(-1, 1) for _ in range(dims)]) for passage_id in ids])
    return config_id


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return (statistics.median(ordered) * 1000,
            ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000)


def text_search(config_id: int, asked: list[str]) -> tuple[float, float]:
    times = []
    for query in asked:
        started = time.perf_counter()
        with session_scope() as session:
            found = store.search_text(session, config_id, query, language="portuguese",
                                      limit=search_module.CANDIDATES)
            store.passages(session, [p for p, _ in found[:5]])
        times.append(time.perf_counter() - started)
    return percentiles(times)


def measure(config_id: int, count: int, dims: int, vector_rounds: int) -> dict[str, tuple]:
    results = {"full-text, broad queries": text_search(config_id, queries(count)),
               "full-text, one product": text_search(config_id, narrow_queries(count))}
    rng = random.Random(5)
    vector_times = []
    for _ in range(vector_rounds):
        vector = [rng.uniform(-1, 1) for _ in range(dims)]
        started = time.perf_counter()
        with session_scope() as session:
            stored = store.embeddings(session, config_id, "bench", search_module.MAX_VECTORS)
        search_module.nearest(vector, stored, minimum=0.0, limit=search_module.CANDIDATES)
        vector_times.append(time.perf_counter() - started)
    results[f"Python vectors ({dims} dims)"] = percentiles(vector_times)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.knowledge", description=__doc__)
    parser.add_argument("--passages", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--dims", type=int, default=256, help="vector length")
    parser.add_argument("--vector-rounds", type=int, default=20)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a server where a database of the bench's own is made and dropped")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, tuple]] = {}

    name = f"zapreply_bench_knowledge_{os.getpid()}"
    with psycopg.connect(args.postgres, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base = args.postgres.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://",
                                                        1)
        use_database(f"{base}/{name}")
        started = time.perf_counter()
        config_id = fill(args.passages, args.dims)
        print(f"postgresql: {args.passages} passages indexed in "
              f"{time.perf_counter() - started:.1f} s")
        results["postgresql"] = measure(config_id, args.queries, args.dims, args.vector_rounds)
        reset_engines()
    finally:
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    with tempfile.TemporaryDirectory() as directory:
        use_database(f"sqlite:///{directory}/knowledge.db")
        started = time.perf_counter()
        config_id = fill(args.passages, args.dims)
        print(f"sqlite: {args.passages} passages indexed in "
              f"{time.perf_counter() - started:.1f} s")
        results["sqlite"] = measure(config_id, args.queries, args.dims, args.vector_rounds)
        reset_engines()

    print(f"\n{args.passages} passages in one config, {args.queries} queries of each kind; "
          "each search fetches its best 5 passages")
    print(f"{'database':<11} {'what':<32} {'p50 ms':>8} {'p95 ms':>8}")
    for database, rows in results.items():
        for what, (p50, p95) in rows.items():
            print(f"{database:<11} {what:<32} {p50:>8.1f} {p95:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
