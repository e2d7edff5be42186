"""Entry point for ``python -m auto_review_gateway``."""

from auto_review_gateway.cli import main

raise SystemExit(main())
