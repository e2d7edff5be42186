# auto-review through Nix: the same build.py, fed with Nix store paths.
#
# No flake.lock is committed: its content hashes cannot be computed offline. The user's
# first `nix flake lock` (or `nix build`) writes it for the pinned branch below.
#
#   nix build .#rootfs        the rootfs tree (chosen files + their ELF closure only)
#   nix build .#auto-review   the single file (build.py --rootfs), also the default; the
#                             release files (SHA256SUMS, SBOM, provenance) beside it in bin/
#   nix build .#oci           the OCI image layout (auto-review bundle export --oci)
#   nix flake check           nix/check-rootfs.py against the real rootfs and single file
#   nix run                   the single file
{
  description = "auto-review: a pull-request review gateway shipped as one file";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});

      # Only what build.py reads; the filter keeps caches and build output out of the hash.
      src = nixpkgs.lib.cleanSourceWith {
        src = ./.;
        filter = path: type:
          let base = baseNameOf path; in
          !(builtins.elem base [ ".git" "dist" "build" "__pycache__" ".venv" "result" ]);
      };

      # Reproducible dates: the flake source's last modification.
      epoch = toString (self.lastModified or 1);

      perSystem = system: pkgs:
        let
          # The sandbox's interpreter: CPython 3.11 (the gateway's pinned PyYAML wheel
          # is cp311) with ssl (python3Minimal has none).
          python = pkgs.python311;
          # The builder's interpreter: build.py needs zstandard; strip comes from binutils.
          buildPython = pkgs.python311.withPackages (ps: [ ps.zstandard ]);
          git = pkgs.gitMinimal;
          wheels = (import ./nix/wheels.nix { inherit (pkgs) fetchurl; }).${system};

          # The source with the pinned wheels in build.py's wheel cache.
          prepareSource = ''
            cp -r ${src} source
            chmod -R u+w source
            mkdir -p source/build/wheels
            for w in ${toString wheels}; do
              cp "$w" "source/build/wheels/$(stripHash "$w")"
            done
          '';

          rootfs = pkgs.runCommand "auto-review-rootfs" {
            nativeBuildInputs = [ python ];
            SOURCE_DATE_EPOCH = epoch;
          } ''
            ${prepareSource}
            python3 -I source/nix/assemble-rootfs.py assemble \
              --src source --out $out --wheels source/build/wheels \
              --exe git=${git}/bin/git \
              --exe git-remote-http=${git}/libexec/git-core/git-remote-http \
              --exe git-remote-https=${git}/libexec/git-core/git-remote-https \
              --exe python=${python}/bin/python3 \
              --site ${python.pkgs.cryptography}/${python.sitePackages} \
              --site ${python.pkgs.cffi}/${python.sitePackages} \
              --dlopen ${pkgs.openssl.out}/lib/ossl-modules/legacy.so \
              --file /etc/ssl/certs/ca-certificates.crt=${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt
          '';

          auto-review = pkgs.runCommand "auto-review-${(builtins.fromTOML (builtins.readFile ./pyproject.toml)).project.version}" {
            nativeBuildInputs = [ buildPython pkgs.binutils ];
            SOURCE_DATE_EPOCH = epoch;
            # The source has no .git here: the provenance names the flake's revision.
            AUTO_REVIEW_SOURCE_COMMIT = self.rev or self.dirtyRev or "unknown";
            meta.mainProgram = "auto-review";
          } ''
            ${prepareSource}
            # The store keeps only r-x/r--; restore the modes the host build writes.
            cp -r ${rootfs} rootfs
            chmod -R u+w rootfs
            python3 source/nix/assemble-rootfs.py normalize --src source rootfs
            mkdir -p $out/bin
            python3 source/build.py --rootfs rootfs --out $out/bin/auto-review
          '';

          # The image whose only layer is the embedded rootfs (same diff_id).
          oci = pkgs.runCommand "auto-review-oci" {
            nativeBuildInputs = [ buildPython ];
            SOURCE_DATE_EPOCH = epoch;
          } ''
            export HOME=$TMPDIR
            python3 ${auto-review}/bin/auto-review bundle export --oci $out
          '';
        in
        {
          packages = {
            inherit rootfs auto-review oci;
            default = auto-review;
          };

          apps.default = {
            type = "app";
            program = "${auto-review}/bin/auto-review";
          };

          checks = {
            # The real rootfs and the single file built from it, not this file's text.
            rootfs = pkgs.runCommand "auto-review-check-rootfs" {
              nativeBuildInputs = [ buildPython pkgs.gnutar ];
            } ''
              ${prepareSource}
              # The store tree itself: contract, symlinks, ELF closure.
              python3 source/nix/check-rootfs.py --src source ${rootfs}
              # What the single file carries: unpacked, it packs to the manifest's diff_id.
              mkdir unpacked
              python3 -c 'import sys, zipfile, zstandard; z = zipfile.ZipFile(sys.argv[1]); sys.stdout.buffer.write(zstandard.ZstdDecompressor().decompressobj().decompress(z.read("bundle/rootfs.tar.zst")))' \
                ${auto-review}/bin/auto-review > rootfs.tar
              tar -x -p -f rootfs.tar -C unpacked
              python3 source/nix/check-rootfs.py --src source unpacked --app ${auto-review}/bin/auto-review
              touch $out
            '';
            inherit auto-review;
          };

          devShells.default = pkgs.mkShell {
            packages = [
              buildPython
              buildPython.pkgs.pytest
              buildPython.pkgs.hypothesis
              buildPython.pkgs.platformdirs
              pkgs.ruff
              pkgs.runc
              pkgs.crun
              pkgs.git
              pkgs.zstd
              pkgs.openssl
              pkgs.binutils
              pkgs.skopeo
              pkgs.umoci
            ];
          };
        };

      all = forAll perSystem;
      pick = attr: nixpkgs.lib.mapAttrs (_system: outs: outs.${attr}) all;
    in
    {
      packages = pick "packages";
      apps = pick "apps";
      checks = pick "checks";
      devShells = pick "devShells";
    };
}
