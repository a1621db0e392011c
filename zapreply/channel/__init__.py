"""The WhatsApp channel boundary: WuzAPI's and LivChat's wire formats.

Owns parsing and verifying WuzAPI webhooks (`wuzapi`) and talking to the messages APIs: send,
typing presence, mark-read (`messaging`). Pure wire code: never imports the database, the
conversation rules, the reply pipeline or the LLM, so the receiver can load it in milliseconds.
"""
