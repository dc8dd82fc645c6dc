"""LoRA building on peft, and the report of what trains and what it costs on disk."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .config import LoraArgs

logger = logging.getLogger(__name__)

_INIT = {"true": True, "false": False}


def build_lora_config(args: LoraArgs, task_type: str | None = None):
    """Turn `LoraArgs` into a `peft.LoraConfig`.

    Args:
        args: the LoRA fields of the resolved config.
        task_type: a `peft.TaskType` name ("SEQ_CLS", "CAUSAL_LM", ...) or None for custom models.

    Returns:
        The `LoraConfig`.
    """
    from peft import LoraConfig

    targets = args.lora_target_modules
    # peft wants the literal string for its "every linear layer except the head" shortcut.
    target_modules = "all-linear" if targets in (["all-linear"], "all-linear") else list(targets)
    init = _INIT.get(str(args.lora_init).lower(), args.lora_init)
    layers = parse_layers(args.lora_layers)
    if layers and isinstance(target_modules, str):
        from .errors import UsageError

        raise UsageError("lora_layers needs lora_target_modules as module names, not 'all-linear'")
    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=target_modules,
        modules_to_save=list(args.lora_modules_to_save) or None,
        bias=args.lora_bias,
        use_dora=args.use_dora,
        use_rslora=args.use_rslora,
        init_lora_weights=init,
        task_type=task_type,
        layers_to_transform=layers or None,
    )


def parse_layers(spec: str | None) -> list[int]:
    """'12-15' -> [12, 13, 14, 15]; '0,2,4' -> [0, 2, 4]; '' -> [] (every layer)."""
    from .errors import UsageError

    out: list[int] = []
    for part in str(spec or "").replace(" ", "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()) or (hi and int(hi) < int(lo)):
            raise UsageError(f"lora_layers {spec!r}: expected layer indices like '12-23' or '0,2,4'")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return sorted(set(out))


def apply_lora(model, args: LoraArgs, task_type: str | None = None):
    """Wrap `model` with a fresh LoRA adapter; the base weights are frozen.

    Args:
        model: a `transformers.PreTrainedModel` (or any `nn.Module` for custom task types).
        args: the LoRA fields of the resolved config.
        task_type: see `build_lora_config`.

    Returns:
        The `peft.PeftModel`.
    """
    from peft import get_peft_model

    from .errors import UsageError

    declare_no_input_embeddings(model)
    try:
        peft_model = get_peft_model(model, build_lora_config(args, task_type))
    except ValueError as e:
        # peft says "Target modules {...} not found in the base model" - the usual config mistake.
        names = sorted({n.rsplit(".", 1)[-1] for n, _ in model.named_modules() if n})
        raise UsageError(f"LoRA: {e}. Module names in this model include: {', '.join(names[:40])}") from None
    dedupe_modules_to_save(peft_model)
    return peft_model


def declare_no_input_embeddings(model) -> None:
    """Give a model without input embeddings (D-FINE, RT-DETRv2 detectors) an empty one.

    peft asks every model that ties weights for its input embeddings, and transformers raises
    NotImplementedError for these; an empty module says truthfully that nothing is tied to embeddings.
    """
    import torch

    probe = getattr(model, "get_input_embeddings", None)  # plain nn.Modules have none: peft copes
    try:
        if probe is not None:
            probe()
    except NotImplementedError:
        model.get_input_embeddings = torch.nn.Identity  # an instance attribute: this model only


def dedupe_modules_to_save(peft_model) -> None:
    """Drop repeated names from each adapter's `modules_to_save`, keeping their order.

    peft's SEQ_CLS models append "classifier" and "score" to the names given, so a saved adapter config
    read `['score', 'classifier', 'score']`.
    """
    for config in peft_model.peft_config.values():
        names = getattr(config, "modules_to_save", None)
        if names:
            config.modules_to_save = list(dict.fromkeys(names))


@dataclass
class TrainableReport:
    """Numbers of the trainable-parameter report (also saved to the metrics JSON)."""

    trainable_params: int
    total_params: int
    adapter_mb: float | None = None
    base_mb: float | None = None

    @property
    def trainable_pct(self) -> float:
        return 100.0 * self.trainable_params / max(self.total_params, 1)

    def as_dict(self) -> dict[str, float]:
        d = {
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "trainable_pct": round(self.trainable_pct, 4),
        }
        if self.adapter_mb is not None:
            d["adapter_mb"] = round(self.adapter_mb, 3)
        if self.base_mb is not None:
            d["base_mb"] = round(self.base_mb, 3)
            if self.adapter_mb is not None:
                d["adapter_smaller_pct"] = round(100.0 * (1 - self.adapter_mb / self.base_mb), 2)
        return d

    def __str__(self) -> str:
        s = (
            f"trainable params: {self.trainable_params:,} of {self.total_params:,} "
            f"({self.trainable_pct:.2f}%)"
        )
        if self.adapter_mb is not None and self.base_mb is not None:
            s += (
                f"; adapter {self.adapter_mb:.2f} MB vs base {self.base_mb:.2f} MB "
                f"({100 * (1 - self.adapter_mb / self.base_mb):.1f}% smaller)"
            )
        return s


def trainable_report(model, adapter_dir: str | os.PathLike | None = None) -> TrainableReport:
    """Count trainable vs total parameters; with `adapter_dir`, also the saved adapter size vs the base."""
    trainable = total = base_bytes = 0
    for name, p in model.named_parameters():
        n = p.numel()
        total += n
        if p.requires_grad:
            trainable += n
        if "lora_" not in name and "modules_to_save" not in name:
            base_bytes += n * p.element_size()
    adapter_mb = None
    if adapter_dir is not None:
        files = list(Path(adapter_dir).glob("adapter_model.safetensors"))
        if files:
            adapter_mb = files[0].stat().st_size / 1e6
    return TrainableReport(trainable, total, adapter_mb, base_bytes / 1e6)
