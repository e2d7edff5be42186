"""The build of the single file, one module per job (build.py is the entry point).

recipe    inputs: paths, payload/rootfs.toml, pins, BuildError
elf       ELF closure: interpreter, DT_NEEDED, RPATH/RUNPATH resolved inside a root
stdlib    stdlib closure: the modules the gateway imports, byte-compiled
stage     rootfs staging from host (or Nix store) paths; the recipe's contract
tarball   deterministic tar and zstd with fixed parameters
wheels    pinned wheels and the vendored zstandard modules
zipapp    the deterministic zip: launcher, bootstrap, bundle, vendor
manifest  the build <-> launcher contract's values

The launcher never imports this package.
"""
