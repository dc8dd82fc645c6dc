"""Model for text-classifier: any AutoModelForSequenceClassification + LoRA, its tokenizer (or a WordPiece
trained in-process for random tiny models) and the class-weighted loss."""

from __future__ import annotations

import logging
from pathlib import Path

from lora_shared.config import LoraArgs
from lora_shared.errors import UsageError
from lora_shared.hfload import name_published_base
from lora_shared.models import from_pretrained
from lora_shared.peft import apply_lora
from lora_shared.runs import load_adapter, load_base_model, read_labels, save_random_base

logger = logging.getLogger(__name__)

TOKENIZER_DIR = "tokenizer"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "auto": "auto",
}


# ---------------------------------------------------------------- tokenizer
def train_wordpiece(texts: list[str], vocab_size: int = 3000):
    """A BERT-style WordPiece tokenizer trained on `texts` (CJK split per character, as in BERT).

    For random (tiny) models, which have no tokenizer of their own: every character of the texts
    gets an id (limit_alphabet is lifted), so Chinese never maps to [UNK] on the training data.
    """
    from tokenizers import BertWordPieceTokenizer, processors
    from transformers import PreTrainedTokenizerFast

    wp = BertWordPieceTokenizer(lowercase=True, handle_chinese_chars=True)
    # The trainer drops characters once the alphabet exceeds vocab_size (they would all become [UNK]),
    # so the vocabulary is never allowed below alphabet + specials; merges fill whatever is left.
    alphabet = len({ch for t in texts for ch in t.lower() if not ch.isspace()})
    wp.train_from_iterator(
        texts,
        vocab_size=max(vocab_size, alphabet + len(SPECIAL_TOKENS) + 1),
        min_frequency=1,
        limit_alphabet=100_000,
        special_tokens=SPECIAL_TOKENS,
    )
    # Trained from empty, so the [CLS] ... [SEP] template has to be attached now that the ids exist.
    wp._tokenizer.post_processor = processors.BertProcessing(
        ("[SEP]", wp.token_to_id("[SEP]")), ("[CLS]", wp.token_to_id("[CLS]"))
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=wp._tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def build_tokenizer(
    model_args, train_texts: list[str] | None = None, output_dir=None, reuse_saved: bool = False
):
    """The tokenizer: --tokenizer_name_or_path, else the model's own, else (random model) a trained WordPiece.

    A WordPiece trained here is saved to `<output_dir>/tokenizer` and `model_args.tokenizer_name_or_path`
    points there afterwards, so the resolved config (and predict) reload the very same vocabulary.
    With `reuse_saved` (a resumed run) that saved vocabulary is loaded instead of trained again: the
    `tokenizers` trainer is not deterministic across processes, and the checkpoint's weights belong
    to the ids it was trained with.
    """
    from transformers import AutoTokenizer

    saved = Path(output_dir) / TOKENIZER_DIR if output_dir is not None else None
    if reuse_saved and model_args.model_type and not model_args.tokenizer_name_or_path and saved.is_dir():
        model_args.tokenizer_name_or_path = str(saved.resolve())
    if model_args.tokenizer_name_or_path or not model_args.model_type:
        source = model_args.tokenizer_name_or_path or model_args.model_name_or_path
        if not source:
            raise UsageError("set model_name_or_path (or tokenizer_name_or_path / model_type)")
        tok = from_pretrained(AutoTokenizer, source, revision=model_args.revision)
    else:
        if not train_texts:
            raise UsageError("a random --model_type model needs training texts to build its tokenizer")
        tok = train_wordpiece(train_texts, model_args.tokenizer_vocab_size)
        if output_dir is not None:
            from lora_shared.io import atomic_dir

            target = Path(output_dir) / TOKENIZER_DIR
            with atomic_dir(target) as tmp:
                tok.save_pretrained(tmp)
            model_args.tokenizer_name_or_path = str(target.resolve())
    if model_args.truncation_side not in ("right", "left"):
        raise UsageError(f"truncation_side must be right | left, got {model_args.truncation_side!r}")
    tok.truncation_side = model_args.truncation_side
    if tok.pad_token is None:
        # Decoder-only LMs often ship without a pad token; EOS is the usual stand-in. The
        # classifier pools the last *non-pad* token, so padding must be distinguishable.
        if tok.eos_token is None:
            raise UsageError("tokenizer has neither a pad nor an eos token; pass --tokenizer_name_or_path")
        tok.pad_token = tok.eos_token
    return tok


# ---------------------------------------------------------------- model
def build_base(model_args, labels: list[str], tokenizer):
    """The base classifier with a head for `labels` (a pretrained head of another size is replaced)."""
    from transformers import AutoModelForSequenceClassification

    id2label = dict(enumerate(labels))
    kwargs = {
        "num_labels": len(labels),
        "id2label": id2label,
        "label2id": {v: k for k, v in id2label.items()},
        "pad_token_id": tokenizer.pad_token_id,
    }
    if model_args.model_type:
        kwargs["vocab_size"] = len(tokenizer)
    else:
        dtype = _DTYPES.get(str(model_args.model_dtype).lower())
        if dtype is None:
            raise UsageError(f"model_dtype must be float32 | bfloat16 | auto, got {model_args.model_dtype!r}")
        kwargs["dtype"] = dtype
        kwargs["ignore_mismatched_sizes"] = True  # new label set: the old head is dropped on purpose
    model = load_base_model(AutoModelForSequenceClassification, model_args, **kwargs)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def build_model(model_args, lora_args: LoraArgs, labels: list[str], tokenizer, output_dir=None):
    """Base model + a fresh LoRA adapter (the classification head trains fully: modules_to_save).

    With `output_dir`, a randomly initialised (tiny) base is saved there first, before LoRA wraps it.
    """
    base = build_base(model_args, labels, tokenizer)
    if output_dir is not None:
        save_random_base(base, output_dir, model_args)
        name_published_base(base, model_args, output_dir)  # what AutoPeftModel loads the base from
    # SEQ_CLS: peft also keeps the usual head names ("classifier", "score") trainable and saved.
    return apply_lora(base, lora_args, task_type="SEQ_CLS")


def for_plain_transformers(tokenizer, model_args):
    """The tokenizer as saved next to the adapter and the export: it cuts at the run's `max_length`.

    `pipeline("text-classification", truncation=True)` then sees what `predict` sees.
    """
    tokenizer.model_max_length = model_args.max_length
    return tokenizer


# ---------------------------------------------------------------- loss
def weighted_cross_entropy(outputs, labels, num_items_in_batch=None, *, weights):
    """Class-weighted cross-entropy, as a Trainer `compute_loss_func` (no Trainer subclass needed).

    Why a weighted loss rather than a WeightedRandomSampler: every example is still seen exactly once
    per epoch (a sampler repeats minority texts and skips majority ones at random), runs stay
    deterministic, and the eval loss is weighted the same way. The sum is divided by the number of
    labels in the whole accumulated batch, which keeps gradient accumulation exact; with balanced
    weights (mean weight 1 over the data) its scale matches the unweighted loss.
    """
    import torch
    import torch.nn.functional as F

    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    # float32 even when the forward ran in bf16: a bf16 softmax over the logits loses precision.
    w = torch.as_tensor(weights, device=logits.device, dtype=torch.float32)
    loss = F.cross_entropy(logits.float(), labels.view(-1), weight=w, reduction="sum")
    denom = num_items_in_batch if num_items_in_batch is not None else labels.numel()
    return loss / denom


# ---------------------------------------------------------------- reload a trained run
def load_trained(cfg):
    """(model with adapter, tokenizer, labels) for eval / predict / interactive / export."""
    if not cfg.model.adapter_dir:
        raise UsageError("pass --adapter_dir (the output_dir of a finished `train` run)")
    labels = read_labels(cfg.model.adapter_dir, "text-classifier")
    tokenizer = build_tokenizer(cfg.model)
    base = build_base(cfg.model, labels, tokenizer)
    model = load_adapter(base, Path(cfg.model.adapter_dir))
    return model, tokenizer, labels
