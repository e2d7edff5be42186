"""Entry point of gateway.pyz: the zipapp runs this file."""

from auto_review_gateway.cli import main

raise SystemExit(main())
