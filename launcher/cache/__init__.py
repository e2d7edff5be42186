"""The cache: every path, lock and protocol of <root>/v1, in one package."""
