"""Celery entry point: `celery -A worker worker` (and `celery -A worker flower`)."""

from worker.app import app

__all__ = ["app"]
