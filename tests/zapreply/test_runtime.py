"""A runtime is bound for the work it serves and unbound after it; with none bound, the
process's own settings and database are read."""

from __future__ import annotations

import pytest

from zapreply.runtime import Runtime
from zapreply.settings import get_settings, load
from zapreply.storage.db import current_database


def test_a_bound_runtime_answers_until_it_is_left_even_by_an_error(settings, base_env) -> None:
    runtime = Runtime.build(load({**base_env, "HISTORY_LIMIT": "7"}))

    with pytest.raises(RuntimeError), runtime.bound():
        assert (get_settings().history_limit, current_database()) == (7, runtime.database)
        raise RuntimeError("the task failed")

    assert get_settings() is settings
    assert current_database() is not runtime.database


def test_runtimes_bound_inside_one_another_unwind_in_order(settings, base_env) -> None:
    outer = Runtime.build(load({**base_env, "HISTORY_LIMIT": "7"}))
    inner = Runtime.build(load({**base_env, "HISTORY_LIMIT": "8"}))

    with outer.bound():
        with inner.bound():
            assert get_settings().history_limit == 8
        assert get_settings().history_limit == 7
    assert get_settings() is settings


def test_with_nothing_bound_one_database_serves_each_url_of_the_process(settings) -> None:
    assert current_database() is current_database()
    assert current_database().url == settings.database_url
    assert current_database().pre_ping is True


def test_a_worker_runtime_skips_pre_ping_and_sizes_its_pool_by_slots(base_env) -> None:
    runtime = Runtime.build(load({**base_env, "WORKER_CONCURRENCY": "40"}), pre_ping=False)

    assert (runtime.database.pre_ping, runtime.database.pool_size) == (False, 25)
