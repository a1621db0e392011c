"""What a receiver or worker process builds at start lives as long as the process: it is frozen
out of the garbage collector's full collections (a full walk of it stalled every request or
slot of the process). Each check runs in a fresh interpreter, as gunicorn and Celery start one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_RECEIVER = """
import gc, json
from webhook_app import create_app
before = gc.get_freeze_count()
create_app()
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(),
                  "left": len(gc.get_objects())}))
"""

_WORKER = """
import gc, json
from celery import signals
import worker
before = gc.get_freeze_count()
signals.worker_init.send(sender=None)
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(),
                  "left": len(gc.get_objects())}))
"""


def _run(code: str, env: dict[str, str]) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_the_receivers_startup_objects_are_frozen(base_env, migrated) -> None:
    counts = _run(_RECEIVER, {**base_env, "PATH": "/usr/bin:/bin"})
    assert counts["before"] == 0
    # Flask, SQLAlchemy and the models: tens of thousands of objects, nearly all frozen.
    assert counts["frozen"] > 20_000
    assert counts["left"] < counts["frozen"] / 10


def test_the_workers_startup_objects_are_frozen_after_litellm_is_warmed_up(
    base_env, migrated
) -> None:
    counts = _run(_WORKER, {**base_env, "PATH": "/usr/bin:/bin", "WORKER_NICE": "0"})
    assert counts["before"] == 0
    # litellm's import is by far the largest part: hundreds of thousands of objects.
    assert counts["frozen"] > 100_000
    assert counts["left"] < counts["frozen"] / 10
