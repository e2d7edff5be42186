"""The review: repository -> ``.auto_review.yaml`` -> diff -> context -> reviewers ->
findings -> verdict (``pipeline``), with git access, diff parsing, the configuration
(read as plain YAML: ``plainyaml``), the built-in rules, the LLM reviewer (``llm``) and
rendering.

May import ``core`` only: it knows no forge, no queue and no HTTP server.
"""
