"""The sandbox: one gateway command run under an OCI runtime (run is the entry point).

Its config.json (config, seccomp), the runtime (runtime), the network
(network, usernet, netfirst), the host's link to the container (hostlink, gateway_env), its
run dirs and the host state dir (rundirs, statedir), its supervision (supervise),
and whether a bare run may go without it (container). May import launcher.cache and
the shared base modules (embedded, manifest, hostfile, jsonwrite, progress, settings,
errors); never cli, doctor or image.
"""
