"""Forgejo (and Gitea): the ``/api/v1`` client and the webhook deliveries."""
