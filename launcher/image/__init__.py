"""`bundle export`: the embedded rootfs as a container image (export is the entry point).

May import launcher.sandbox (the seccomp profile), launcher.cache (the zstd decoder)
and the shared base modules; never cli or doctor.
"""
