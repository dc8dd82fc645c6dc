"""Model for llm-chat: causal LM + tokenizer with a chat template (and saving it), LoRA, the packing check,
and inference loading.

`load_for_inference(base, adapter_dirs)` is the one loader that chat, predict, eval, compare, serve and
the web UI share.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from lora_shared.errors import UsageError
from lora_shared.models import from_pretrained
from lora_shared.peft import apply_lora

logger = logging.getLogger(__name__)

# ChatML (Qwen, SmolLM2 and many others use it). Supplied for models without a template: `--chat_template_path
# chatml`. No default system message: a dialog renders exactly the messages it has.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
BUNDLED_TEMPLATES = {"chatml": CHATML}
TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
END_OF_TURN = "<|im_end|>"


# ---------------------------------------------------------------------------------------------- tokenizer
def build_tiny_tokenizer():
    """A byte-level tokenizer built in-process (no download): 256 byte tokens + ChatML specials + template.

    No merges, so every UTF-8 byte is one token (a Chinese character is three): tiny and lossless, which
    is all a random smoke-test model needs.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(TINY_SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=END_OF_TURN,
        pad_token="<|endoftext|>",
        chat_template=CHATML,
        model_max_length=4096,
    )


def read_chat_template(path_or_name: str) -> str:
    """A bundled template name (chatml) or a Jinja file."""
    if path_or_name in BUNDLED_TEMPLATES:
        return BUNDLED_TEMPLATES[path_or_name]
    p = Path(path_or_name).expanduser()
    if not p.is_file():
        raise UsageError(
            f"chat template not found: {p} (pass a Jinja file or one of: {', '.join(BUNDLED_TEMPLATES)})"
        )
    return p.read_text(encoding="utf-8")


def prepare_tokenizer(tokenizer, chat_template_path: str | None = None, where: str = "the model"):
    """Install a supplied chat template, insist on having one, and make sure padding works."""
    if chat_template_path:
        tokenizer.chat_template = read_chat_template(chat_template_path)
    if not getattr(tokenizer, "chat_template", None):
        raise UsageError(f"{where} has no chat template; pass --chat_template_path chatml (or a Jinja file)")
    if tokenizer.pad_token is None:
        # Padding positions never reach the loss (labels -100) nor attention (mask 0), so any token will do.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "left"  # batched generation appends to the right
    return tokenizer


def build_tokenizer(model_args, chat_template_path: str | None = None):
    """The tokenizer of the base model (or the tiny in-process one for random `model_type` runs)."""
    if model_args.model_type:
        tok = build_tiny_tokenizer()
    else:
        from transformers import AutoTokenizer

        tok = from_pretrained(
            AutoTokenizer,
            model_args.model_name_or_path,
            revision=model_args.revision,
            trust_remote_code=model_args.trust_remote_code,
        )
    return prepare_tokenizer(tok, chat_template_path, model_args.model_name_or_path or "the tiny model")


def save_tokenizer(tokenizer, out: Path) -> None:
    """Tokenizer (with its chat template) into `out`, each file replaced atomically."""
    import shutil
    import tempfile

    from lora_shared.io import replace_files_from

    tmp = Path(tempfile.mkdtemp(prefix=".tokenizer.", suffix=".tmp", dir=out))
    try:
        tokenizer.save_pretrained(tmp)
        replace_files_from(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def end_of_turn_ids(tokenizer) -> list[int]:
    """Token ids that end an assistant turn: eos plus ChatML's <|im_end|> when it is a single token."""
    ids = []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    im_end = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id and im_end not in ids:
        ids.append(im_end)
    return ids


# ---------------------------------------------------------------------------------------------- base model
def build_base(model_args, tokenizer, *, for_training: bool):
    """The base causal LM: pretrained weights, or a random model of `model_type` sized to the tokenizer.

    Training loads fp32 master weights (bf16 autocast is the Trainer's job); inference honours torch_dtype.
    """
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {"attn_implementation": model_args.attn_implementation}
    if model_args.model_type:
        from lora_shared.models import parse_overrides
        from transformers import AutoConfig

        # Overrides go to the constructor (not setattr afterwards): configs such as Qwen2 derive fields
        # like layer_types from num_hidden_layers when built.
        try:
            config = AutoConfig.for_model(
                model_args.model_type,
                **{
                    "vocab_size": len(tokenizer),
                    "pad_token_id": tokenizer.pad_token_id,
                    "eos_token_id": tokenizer.eos_token_id,
                    "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
                    "tie_word_embeddings": True,
                    **parse_overrides(model_args.config_overrides),
                },
            )
        except (ValueError, TypeError) as e:
            raise UsageError(f"model_type/config_overrides: {e}") from None
        return AutoModelForCausalLM.from_config(config, **kwargs)
    if not model_args.model_name_or_path:
        raise UsageError("set model_name_or_path (hub id, local dir, offline model name) or model_type")
    if model_args.load_in_4bit:
        kwargs.update(_four_bit_kwargs())
    elif for_training:
        kwargs["dtype"] = torch.float32
    else:
        kwargs["dtype"] = _dtype(model_args.torch_dtype)
    model = from_pretrained(
        AutoModelForCausalLM,
        model_args.model_name_or_path,
        revision=model_args.revision,
        trust_remote_code=model_args.trust_remote_code,
        **kwargs,
    )
    if model_args.load_in_4bit and for_training:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    return model


def _dtype(name: str):
    import torch

    if name == "auto":
        return "auto"
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise UsageError(f"torch_dtype: {name!r} is not one of auto, float32, bfloat16, float16") from None


def _four_bit_kwargs() -> dict:
    """QLoRA: NF4 weights with bf16 compute. bitsandbytes' 4-bit kernels need CUDA."""
    import torch

    if not torch.cuda.is_available():
        raise UsageError(
            "load_in_4bit (QLoRA) needs a CUDA GPU; on CPU train plain LoRA (drop --load_in_4bit)"
        )
    try:
        from transformers import BitsAndBytesConfig
    except ImportError:  # pragma: no cover
        raise UsageError("load_in_4bit needs bitsandbytes: pip install 'llm-chat[qlora]'") from None
    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        ),
        "device_map": {"": 0},
    }


def build_model(model_args, lora_args, tokenizer, output_dir=None):
    """Base model + a fresh LoRA adapter for training.

    With `output_dir`, a random (tiny) base is saved there first with its tokenizer, so the run dir is
    self-contained (eval, chat and serve reload it offline).
    """
    from lora_shared.runs import save_random_base

    base = build_base(model_args, tokenizer, for_training=True)
    if output_dir is not None and model_args.model_type:
        save_random_base(base, output_dir, model_args, processor=tokenizer)
    # No KV cache in training: besides wasting memory, a cache object turns off transformers' detection of
    # packed sequences (block-diagonal mask from position_ids), and packed dialogs would attend to each other.
    base.config.use_cache = False
    return apply_lora(base, lora_args, task_type="CAUSAL_LM")


def keeps_logits_mask(model) -> bool:
    """Whether the model's forward takes a [B, T] bool `logits_to_keep` (LM head only on those positions).

    Checked by one 4-token forward rather than by version: older transformers and custom models either
    lack the argument or read it as a count, and training must then compute every position's logits.
    """
    import inspect

    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if "logits_to_keep" not in inspect.signature(base.forward).parameters:
        return False
    device = next(model.parameters()).device
    keep = torch.tensor([[False, True, True, False]], device=device)
    try:
        with torch.no_grad():
            out = model(
                input_ids=torch.zeros_like(keep, dtype=torch.long), logits_to_keep=keep, use_cache=False
            )
    except (TypeError, ValueError, RuntimeError, IndexError):
        return False
    ok = tuple(out.logits.shape[:-1]) == (2,)
    logger.info("logits: %s", "supervised positions only" if ok else "every position")
    return ok


def packing_is_exact(model, vocab_size: int, varlen: bool = False, atol: float = 1e-4) -> bool:
    """Does this model keep attention per sample when dialogs are packed the way our collator packs them?

    transformers builds a block-diagonal mask from position_ids for sdpa/eager/flash when no attention mask
    is given (and no KV cache is in use); with `varlen` the collator passes the dialog boundaries instead
    (llm_chat.varlen). A model whose attention path ignores either would silently attend across dialogs. We
    pack two short random sequences with the training collator and call the model as the Trainer will (so
    its config decides about the cache): packed logits must equal the separate ones.
    """
    import torch

    from .data import collate_fn

    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, vocab_size, (1, 7), generator=gen)
    b = torch.randint(0, vocab_size, (1, 5), generator=gen)
    features = [{"input_ids": x[0].tolist(), "labels": x[0].tolist()} for x in (a, b)]
    packed = collate_fn(features, 0, packing=True, varlen=varlen)
    packed.pop("labels")
    device = next(model.parameters()).device
    packed = {k: v.to(device) if torch.is_tensor(v) else v for k, v in packed.items()}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            la = model(input_ids=a.to(device)).logits[0].float()
            lb = model(input_ids=b.to(device)).logits[0].float()
            lp = model(**packed).logits[0].float()
    finally:
        model.train(was_training)
    err = max((lp[:7] - la).abs().max().item(), (lp[7:] - lb).abs().max().item())
    scale = max(la.abs().max().item(), 1.0)
    logger.info("packing check: max |packed - separate| logit difference %.2e", err)
    return err <= atol * scale * 10


# ---------------------------------------------------------------------------------------------- inference
def adapter_name(path: str | os.PathLike) -> str:
    """The peft adapter name of an adapter dir: its directory name, made a valid module key."""
    p = Path(path).expanduser().resolve()
    name = p.name if p.name != "adapter" else p.parent.name
    return re.sub(r"[^0-9A-Za-z_-]", "_", name) or "adapter"


def _has_tokenizer(path: Path) -> bool:
    return (path / "tokenizer_config.json").is_file() or (path / "tokenizer.json").is_file()


def load_for_inference(
    base_model: str,
    adapter_dirs: Sequence[str | os.PathLike] = (),
    *,
    chat_template_path: str | None = None,
    torch_dtype: str = "auto",
    attn_implementation: str = "sdpa",
    revision: str = "main",
    device=None,
    trust_remote_code: bool = False,
):
    """(model, tokenizer) ready to generate: `base_model` plus zero or more LoRA adapters.

    `trust_remote_code` as the run was trained with (its resolved config carries it): a remote-code base
    that trained must also load for chat, eval, compare, serve and export.

    Args:
        base_model: hub id, local dir or offline model name (a tiny run's `<run>/base_model`).
        adapter_dirs: trained run dirs; each becomes a peft adapter named after its directory
            (`adapter_name(dir)`); the first is active. With none, the plain base model is returned.
        chat_template_path: template for tokenizers without one (`chatml` or a Jinja file).
        torch_dtype: auto | float32 | bfloat16 | float16 (`inference_dtype`: auto is the checkpoint's,
            but float32 on a CPU without native bf16).
        attn_implementation: sdpa | eager | flash_attention_2.
        revision: hub revision of the base.
        device: torch device; default CUDA when present, else CPU.

    Returns:
        (model in eval mode, tokenizer with a chat template). The tokenizer is the first adapter dir's
        when training saved one there (it carries a supplied template), else the base model's.
    """
    from types import SimpleNamespace

    from lora_shared.cli import find_adapter_dir
    from lora_shared.models import pick_device
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars would interleave with the chat on the terminal
    device = device or pick_device()
    adapters = [find_adapter_dir(d) for d in adapter_dirs]
    tok_source = next((str(d) for d in adapters if _has_tokenizer(d)), base_model)
    tokenizer = from_pretrained(
        AutoTokenizer,
        tok_source,
        revision=revision if tok_source == base_model else "main",
        trust_remote_code=trust_remote_code,
    )
    tokenizer = prepare_tokenizer(tokenizer, chat_template_path, tok_source)
    margs = SimpleNamespace(
        model_type=None,
        model_name_or_path=base_model,
        revision=revision,
        trust_remote_code=trust_remote_code,
        load_in_4bit=False,
        torch_dtype=inference_dtype(torch_dtype, device),
        attn_implementation=attn_implementation,
    )
    model = build_base(margs, tokenizer, for_training=False)
    if adapters:
        model = attach_adapters(model, adapters)
    model.to(device)
    model.eval()
    return model, tokenizer


def inference_dtype(torch_dtype: str, device) -> str:
    """The dtype to load for generation on `device`: `auto` means float32 on a CPU without native bf16.

    Our offline models are saved in bf16 (half the disk), and `auto` would keep them bf16; a CPU without
    AVX512-BF16/AMX (the probe training uses) emulates bf16 matmuls. Measured on 2 AVX2 cores with
    Qwen2.5-Coder-0.5B: a 128-token prompt took 13.5 s of CPU in bf16 vs 2.5 s in fp32, and generate
    1.9 vs 4.0 tok/s on another such CPU. An explicit bfloat16/float16 is kept (half the memory), warned.
    """
    from lora_shared.config import cpu_has_native_bf16

    if getattr(device, "type", str(device)) != "cpu" or torch_dtype == "float32":
        return torch_dtype
    if cpu_has_native_bf16():
        return torch_dtype
    if torch_dtype == "auto":
        logger.info("this CPU has no native bf16 (AVX512-BF16/AMX): generating in float32")
        return "float32"
    if torch_dtype in ("bfloat16", "float16"):
        logger.warning(
            "torch_dtype %s on a CPU without native bf16 (AVX512-BF16/AMX): prompts are processed ~5x slower "
            "than in float32; drop --torch_dtype (auto picks float32 here) unless memory is short",
            torch_dtype,
        )
    return torch_dtype


def attach_adapters(base, adapter_dirs: Sequence[Path]):
    """Load each adapter dir as a named peft adapter; errors if one was trained on another base."""
    from lora_shared.runs import check_adapter_dir
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors import safe_open

    model, seen = None, set()
    for path in adapter_dirs:
        check_adapter_dir(path)  # a cut-short config / weights file is named as such, not as "another model"
        name = adapter_name(path)
        while name in seen:
            name += "_"
        seen.add(name)
        try:
            if model is None:
                model = PeftModel.from_pretrained(base, str(path), adapter_name=name, is_trainable=False)
            else:
                model.load_adapter(str(path), adapter_name=name, is_trainable=False)
        except (RuntimeError, ValueError, KeyError) as e:
            raise UsageError(
                f"{path}: adapter does not fit this base model ({str(e).splitlines()[0][:200]}); "
                "was it trained on another model?"
            ) from None
        with safe_open(str(path / "adapter_model.safetensors"), framework="pt") as f:
            saved = set(f.keys())
        if saved != set(get_peft_model_state_dict(model, adapter_name=name).keys()):
            raise UsageError(
                f"{path}: adapter tensors do not match this base model; trained on another model?"
            )
    model.set_adapter(adapter_name(adapter_dirs[0]))
    return model


def load_for_cfg(cfg, extra_adapters: Sequence[str] = (), *, require_adapter: bool = False):
    """(model, tokenizer) for a parsed CLI config: the base (or tiny random model) + --adapter_dir + extras."""
    from lora_shared.models import pick_device

    adapters = [d for d in [cfg.model.adapter_dir, *extra_adapters] if d]
    if require_adapter and not adapters:
        raise UsageError("pass --adapter_dir (the output_dir of a finished `train` run)")
    if cfg.model.model_type:
        if adapters:
            raise UsageError("--adapter_dir needs the base it was trained on: drop --model_type")
        # No checkpoint to load: a random tiny model with the in-process tokenizer (smoke runs).
        tokenizer = build_tokenizer(cfg.model, cfg.train.chat_template_path)
        model = build_base(cfg.model, tokenizer, for_training=False).to(pick_device()).eval()
        return model, tokenizer
    return load_for_inference(
        cfg.model.model_name_or_path,
        adapters,
        chat_template_path=cfg.train.chat_template_path,
        torch_dtype=cfg.model.torch_dtype,
        attn_implementation=cfg.model.attn_implementation,
        revision=cfg.model.revision,
        trust_remote_code=cfg.model.trust_remote_code,
    )
