"""Queue `zapreply`, playground tasks: answer a turn an operator tried in the console."""

from __future__ import annotations

from worker.app import app
from zapreply.broker.queue import PLAYGROUND_TURN
from zapreply.replies import playground


@app.task(name=PLAYGROUND_TURN)
def answer_turn(turn_id: int) -> str:
    # No retries: a person is watching, and the page shows why it failed.
    return playground.run_turn(turn_id)
