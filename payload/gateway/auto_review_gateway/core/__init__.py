"""Shared ground for every stage: the review's data (``model``), names and SHAs, one JSON
request over HTTPS and its retries, metrics, the log, bounded host files, the launcher's
fds, the CA bundle, repository text escaped for a terminal or Markdown (``escape``) and
where a git server redirects (``redirect``). Imports nothing of the gateway outside ``core``.
"""
