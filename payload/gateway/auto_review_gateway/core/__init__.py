"""Shared ground for every stage: the review's data (``model``), names and SHAs, one JSON
request over HTTPS and its retries, metrics, the log, bounded host files, the launcher's
fds and the CA bundle. Imports nothing of the gateway outside ``core``.
"""
