"""The build of the single file, one module per job (build.py is the entry point).

recipe    inputs: paths, payload/rootfs.toml, pins, BuildError
elf       ELF closure: interpreter, DT_NEEDED, RPATH/RUNPATH resolved inside a root
stdlib    stdlib closure: the modules the gateway imports, byte-compiled
stage     rootfs staging from host (or Nix store) paths; the recipe's contract
tarball   deterministic tar and zstd with fixed parameters
wheels    pinned wheels, fetched once into build/wheels
zipapp    the deterministic zip: launcher, bootstrap, bundle, vendor
vendor    the vendored zstandard for every ABI, one xz blob
manifest  the build <-> launcher contract's values
origins   where each rootfs file came from (dpkg, Nix store, wheels, ours)
sbom      the SPDX 2.3 document
provenance  the SLSA v1 in-toto statement
release   SHA256SUMS and its ssh-keygen signature

The launcher never imports this package.
"""
