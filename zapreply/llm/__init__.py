"""The LLM boundary: everything that talks to a model provider or a business's tools.

Owns litellm calls and transcription (`chat`), the built-in tools' schemas and effects
(`tools`), and the business's HTTP tools (`business_tools`). Errors say whether a retry can
help. Never imports the database or the reply pipeline; only workers import it (litellm costs
~3 s and ~165 MB a process).
"""
