"""`bundle export`: the embedded rootfs as a container image (export is the entry point;
its one layer, checked against the manifest, comes from layer).

May import launcher.sandbox (the seccomp profile), launcher.cache (the zstd decoder)
and the shared base modules; never cli or doctor.
"""
