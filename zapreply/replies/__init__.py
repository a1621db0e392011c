"""The reply pipeline, run by the workers.

Records what WuzAPI delivered (`inbound`), then answers a conversation under its fenced lease
(`leases`): plan the run, build the history and prompt, generate with tools, store the outbox,
deliver (`responder`), with the burst's media resolved on the way (`media`); the `sweeper`
resumes what a dead worker left. Uses the rules, storage and both boundaries; the receiver
never imports it.
"""
