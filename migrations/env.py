from logging.config import fileConfig

from alembic import context

from zapreply.settings import get_settings
from zapreply.storage.db import make_engine
from zapreply.storage.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _include_name(name, type_, parent_names) -> bool:  # type: ignore[no-untyped-def]
    # SQLite's FTS5 index of the knowledge passages and its shadow tables are the migration's
    # own (a virtual table SQLAlchemy does not describe).
    return not (type_ == "table" and (name or "").startswith("knowledge_passages_fts"))


def _on_this_dialect(obj, dialect: str) -> bool:  # type: ignore[no-untyped-def]
    # An index made for one database only (`Index(...).ddl_if(dialect=...)`, the PostgreSQL
    # GIN index of the passages) is no difference on the others.
    condition = getattr(obj, "_ddl_if", None)
    return condition is None or condition.dialect in (None, dialect)


def run_migrations_offline() -> None:
    context.configure(
        url=get_settings().database_url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is None:
        settings = get_settings()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.database_url)
        with engine.connect() as connection:
            _run(connection)
        engine.dispose()
    else:
        _run(connectable)


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        include_name=_include_name,
        include_object=lambda obj, name, type_, reflected, compare_to: _on_this_dialect(
            obj, connection.dialect.name),
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
