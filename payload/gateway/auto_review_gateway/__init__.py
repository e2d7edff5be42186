"""The gateway: the program that runs inside the read-only sandbox rootfs.

It runs on the rootfs's own interpreter with ``-I -S`` and imports only the
standard library; the build ships exactly the stdlib modules imported here.
"""

__version__ = "0.1.0"
