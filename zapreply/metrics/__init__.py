"""Figures for Prometheus: the series each process counts (`series`), and how they are served
(`serving`). Plumbing: imports prometheus_client and nothing of ours but the settings, so the
receiver, the pipeline and the console may all count into it.

Receivers and workers count what passes through them and each host serves its own figures on
a port of its own (never the public webhook port); the console's /metrics serves the figures
read from the database and the broker, once for the whole deployment (docs/SECURITY.md says
who may reach which; README, "Metrics", how to scrape them)."""
