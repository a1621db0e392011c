"""Use cases shared by every front door (admin API, CLI): replaying a failed run, a contact's
export and erasure, retention. Each raises typed errors the front doors turn into their own
answers, so they cannot drift apart."""
