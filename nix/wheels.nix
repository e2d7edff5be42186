# The wheels build.py vendors (versions pinned in pyproject.toml), as fixed-output
# fetches: each sha256 is the one PyPI publishes for that file. The Nix builds put
# them in build.py's wheel cache (build/wheels), so pip never runs in the sandbox.
# Update together with the pins in pyproject.toml.
{ fetchurl }:
let
  wheel = url: sha256: fetchurl { inherit url sha256; };
in
{
  x86_64-linux = [
    (wheel "https://files.pythonhosted.org/packages/71/60/917329f640924b18ff085ab889a11c763e0b573da888e8404ff486657602/pyyaml-6.0.3-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl"
      "b8bb0864c5a28024fac8a632c443c87c5aa6f215c0b126c449ae1a150412f31d")
    (wheel "https://files.pythonhosted.org/packages/fd/e5/6d36f92a197c3c17729a2125e29c169f460538a7d939a27eaaa6dcfcba8e/zstandard-0.25.0-cp310-cp310-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
      "4b6d83057e713ff235a12e73916b6d356e3084fd3d14ced499d84240f3eecee0")
    (wheel "https://files.pythonhosted.org/packages/bb/1f/e9cfd801a3f9190bf3e759c422bbfd2247db9d7f3d54a56ecde70137791a/zstandard-0.25.0-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
      "9300d02ea7c6506f00e627e287e0492a5eb0371ec1670ae852fefffa6164b072")
    (wheel "https://files.pythonhosted.org/packages/53/60/7be26e610767316c028a2cbedb9a3beabdbe33e2182c373f71a1c0b88f36/zstandard-0.25.0-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
      "5a56ba0db2d244117ed744dfa8f6f5b366e14148e00de44723413b2f3938a902")
    (wheel "https://files.pythonhosted.org/packages/63/4b/e3678b4e776db00f9f7b2fe58e547e8928ef32727d7a1ff01dea010f3f13/zstandard-0.25.0-cp313-cp313-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
      "8e735494da3db08694d26480f1493ad2cf86e99bdd53e8e9771b2752a5c0246a")
  ];
  aarch64-linux = [
    (wheel "https://files.pythonhosted.org/packages/0c/62/d2eb46264d4b157dae1275b573017abec435397aa59cbcdab6fc978a8af4/pyyaml-6.0.3-cp311-cp311-manylinux2014_aarch64.manylinux_2_17_aarch64.manylinux_2_28_aarch64.whl"
      "10892704fc220243f5305762e276552a0395f7beb4dbf9b14ec8fd43b57f126c")
    (wheel "https://files.pythonhosted.org/packages/73/28/a44bdece01bca027b079f0e00be3b6bd89a4df180071da59a3dd7381665b/zstandard-0.25.0-cp310-cp310-manylinux2014_aarch64.manylinux_2_17_aarch64.whl"
      "e05ab82ea7753354bb054b92e2f288afb750e6b439ff6ca78af52939ebbc476d")
    (wheel "https://files.pythonhosted.org/packages/3b/13/2b7ed68bd85e69a2069bcc72141d378f22cae5a0f3b353a2c8f50ef30c1b/zstandard-0.25.0-cp311-cp311-manylinux2014_aarch64.manylinux_2_17_aarch64.whl"
      "01582723b3ccd6939ab7b3a78622c573799d5d8737b534b86d0e06ac18dbde4a")
    (wheel "https://files.pythonhosted.org/packages/1e/15/efef5a2f204a64bdb5571e6161d49f7ef0fffdbca953a615efbec045f60f/zstandard-0.25.0-cp312-cp312-manylinux2014_aarch64.manylinux_2_17_aarch64.whl"
      "6dffecc361d079bb48d7caef5d673c88c8988d3d33fb74ab95b7ee6da42652ea")
    (wheel "https://files.pythonhosted.org/packages/6d/db/ddb11011826ed7db9d0e485d13df79b58586bfdec56e5c84a928a9a78c1c/zstandard-0.25.0-cp313-cp313-manylinux2014_aarch64.manylinux_2_17_aarch64.whl"
      "bfc4e20784722098822e3eee42b8e576b379ed72cca4a7cb856ae733e62192ea")
  ];
}
