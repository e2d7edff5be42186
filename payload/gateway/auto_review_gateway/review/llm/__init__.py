"""The LLM reviewer: the prompt it sends, the exchange with an OpenAI-compatible
server, and the checking of the answer. May import ``review``'s models through ``core``."""
