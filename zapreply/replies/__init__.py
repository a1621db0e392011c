"""The reply pipeline, run by the workers.

Records what WuzAPI delivered (`inbound`), then answers a conversation under its fenced lease
(`leases`), one typed step at a time (`steps`): `plan` decides what is next, `prompt` builds
the history and system prompt, `generate` asks the model with its tools and stores the draft
through `outbox`, `deliver` sends the outbox rows in order, and `failures` decides between a
retry and the fallback; `responder` drives them for one conversation and is what the worker
tasks call. The burst's media are resolved on the way (`media`); the `sweeper` resumes what a
dead worker left. Uses the rules, storage and both boundaries; the receiver never imports it.
"""
