"""HTTP in: the listening server, one request's handling, what each path answers
(``endpoints``), ``/readyz`` and ``POST /reviews/ci``.

May import ``jobs``, ``forges``, ``intake`` and ``core``; never ``commands``.
"""
