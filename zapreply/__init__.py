"""zapreply: answers WhatsApp messages with an LLM."""
