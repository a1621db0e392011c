"""The task queue: Celery's configuration and the task names (`queue`), the receiver's
publisher (Celery's `send_task`, or the Redis fast path of `redis_fast_publish` when
PUBLISH_FAST_PATH=redis), and kombu's Redis transport with one client per channel
(`redis_transport`). Imports neither the pipeline nor litellm: the receiver publishes by task
name."""
