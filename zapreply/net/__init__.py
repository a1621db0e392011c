"""Outbound HTTP plumbing shared by the boundaries: long-lived clients per purpose (`http`) and
a transport that connects only to checked public addresses within a deadline (`egress`).
Imports nothing of zapreply's."""
