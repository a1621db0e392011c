"""Use cases shared by every front door (admin API, CLI, and any to come): workflow configs,
conversations (pause, resume, read), the event log, replaying a failed run, a contact's
export and erasure, retention. Each takes a Session (or opens its own transaction where it
must retry) and plain values, validates everything, and raises the typed errors of
`zapreply.actions.errors`; the front doors only parse their input and format the answer, so
they cannot drift apart.

Actions import the rules and storage; they never import the reply pipeline, the LLM or the
channel boundary, nor anything of a front door (Flask, argparse)."""
