"""The task queue: Celery's configuration and the task names (`queue`), the receiver's
publisher, and kombu's Redis transport with one client per channel (`redis_transport`).
Imports neither the pipeline nor litellm: the receiver publishes by task name."""
