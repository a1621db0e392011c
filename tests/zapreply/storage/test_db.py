"""SQLite files under ZAPREPLY_DATA_DIR are readable by their owner only, whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from zapreply import settings as settings_module
from zapreply.broker.queue import make_celery
from zapreply.storage.db import make_engine


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def embedded(tmp_path: Path, base_env: dict[str, str]) -> Iterator[settings_module.Settings]:
    """Settings of a first run (SQLite database and broker in the data directory), under the
    umask most systems start with."""
    data = tmp_path / "var"
    current = settings_module.load({**base_env, "ZAPREPLY_DATA_DIR": str(data),
                                    "DATABASE_URL": f"sqlite:///{data / 'zapreply.storage.db'}",
                                    "CELERY_BROKER_URL": f"sqla+sqlite:///{data / 'broker.db'}"})
    previous = settings_module.get_settings()
    settings_module.override(current)
    umask = os.umask(0o022)
    try:
        yield current
    finally:
        os.umask(umask)
        settings_module.override(previous)


def test_the_database_its_wal_and_shm_and_the_data_directory_are_private(embedded):
    engine = make_engine(embedded.database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE notes (body TEXT)"))
            connection.execute(text("INSERT INTO notes VALUES ('dados do cliente')"))
        with engine.connect() as connection:
            connection.execute(text("SELECT body FROM notes")).all()
            database = embedded.data_dir / "zapreply.storage.db"
            files = [database, database.with_name("zapreply.storage.db-wal"),
                     database.with_name("zapreply.storage.db-shm")]
            assert all(path.exists() for path in files)
            assert {path.name: mode(path) for path in files} == {
                path.name: 0o600 for path in files}
    finally:
        engine.dispose()
    assert mode(embedded.data_dir) == 0o700


def test_an_existing_database_left_readable_is_tightened(embedded):
    embedded.data_dir.mkdir(mode=0o755)
    database = embedded.data_dir / "zapreply.storage.db"
    database.touch(mode=0o644)
    os.chmod(database, 0o644)

    make_engine(embedded.database_url).dispose()

    assert (mode(database), mode(embedded.data_dir)) == (0o600, 0o700)


def test_the_embedded_brokers_file_is_private(embedded):
    app = make_celery(embedded)
    app.send_task("replies.reply", args=[1])

    broker = embedded.data_dir / "broker.db"
    assert mode(broker) == 0o600
    assert [path.name for path in embedded.data_dir.iterdir()
            if path.name.startswith("broker.db") and mode(path) != 0o600] == []
