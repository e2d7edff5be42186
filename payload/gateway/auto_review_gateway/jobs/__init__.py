"""Jobs: what a job is (``spec``), the durable queue (``queue``), the worker pool and its
retry policy (``workers``), and the job each forge runs (``forgejo_job``, ``github_job``).

May import ``forges``, ``review`` and ``core``; never ``web`` or ``commands``.
"""
