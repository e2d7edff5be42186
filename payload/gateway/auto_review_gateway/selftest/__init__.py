"""The sandbox self-test (``check``): one probe per boundary property, and the thin
syscall wrappers the probes and ``probe`` use. May import ``core`` only.
"""
