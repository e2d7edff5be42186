"""The LLM reviewer: its settings, the prompt it sends, the exchange with an OpenAI-compatible
server, and the checking of the answer. May import the rest of ``review`` and ``core``.
"""
