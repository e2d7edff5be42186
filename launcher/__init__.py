"""auto-review launcher: runs on the host, from inside the single file."""
