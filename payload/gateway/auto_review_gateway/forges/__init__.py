"""The forges: one :class:`~auto_review_gateway.forges.client.ForgeClient` protocol,
Forgejo and GitHub each in a package of its own (client, webhook parsing, auth,
settings), and what both share: the bodies sent, the webhook steps, the re-review rule,
the publication of a review.

May import ``intake`` and ``core``; never ``review``, ``jobs``, ``web`` or ``commands``.
"""
