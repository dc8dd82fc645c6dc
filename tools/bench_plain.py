"""The minimal plain `Trainer` + `peft` scripts that `make bench` compares each app's `train` against.

Each takes the app's resolved config (the same flags the app got: model, LoRA, batch, steps, seed) and
does what a user would write from the Hugging Face docs: build the model, wrap it with `get_peft_model`,
prepare the data with the same per-sample work, `Trainer(...).train()`, save the adapter. No callbacks,
no validation, no reports. Only data *generation* is borrowed from the app (the built-in synthetic data
has to be the same data), never its training code.
"""

from __future__ import annotations

import tempfile


def _training_args(t, **extra):
    """Plain TrainingArguments carrying over only what changes the work of a step."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="bench-plain-"),
        per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        seed=t.seed,
        bf16=t.bf16,
        logging_steps=t.logging_steps,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        dataloader_num_workers=t.dataloader_num_workers,
        gradient_checkpointing=t.gradient_checkpointing,
        **extra,
    )


def _lora(lora, task_type=None):
    from peft import LoraConfig

    return LoraConfig(
        r=lora.lora_r,
        lora_alpha=lora.lora_alpha,
        lora_dropout=lora.lora_dropout,
        target_modules="all-linear"
        if list(lora.lora_target_modules) == ["all-linear"]
        else list(lora.lora_target_modules),
        modules_to_save=list(lora.lora_modules_to_save) or None,
        task_type=task_type,
    )


def app_config(module: str, flags: list[str]):
    """The app's resolved `train` config for these flags: exactly what its train() receives."""
    import importlib

    from lora_shared.cli import build_config

    app = importlib.import_module(f"{module}.cli").APP
    cfg, _ = build_config(app, next(c for c in app.commands if c.name == "train"), flags)
    return cfg


def _overrides(s: str | None) -> dict:
    """'a=1,b=[2,3]' -> {'a': 1, 'b': [2, 3]}: the same YAML-valued key=value strings the configs hold."""
    from lora_shared.models import parse_overrides

    return parse_overrides(s)


def plain_vision_cls(cfg) -> None:
    """HF image-classification LoRA guide: ViT/MobileNet + LoRA, torchvision transforms via with_transform."""
    import torch
    from peft import get_peft_model
    from torchvision.transforms import v2
    from transformers import AutoConfig, AutoModelForImageClassification, Trainer, set_seed
    from vision_cls.data import make_demo_dataset

    m, d, lora, t = cfg.model, cfg.data, cfg.lora, cfg.train
    set_seed(t.seed)
    ds = make_demo_dataset(d.demo_images_per_class, d.demo_image_size, t.seed)
    labels = ds.features["label"].names
    kw = {"num_labels": len(labels)}
    if m.model_type:
        config = AutoConfig.for_model(m.model_type, **kw)
        for k, v in _overrides(m.config_overrides).items():
            setattr(config, k, v)
        model = AutoModelForImageClassification.from_config(config)
    else:
        from lora_shared.models import resolve_model_path

        path = resolve_model_path(m.model_name_or_path)
        model = AutoModelForImageClassification.from_pretrained(
            path, ignore_mismatched_sizes=True, dtype=torch.float32, **kw
        )
    size = m.image_size or getattr(model.config, "image_size", 224)
    model = get_peft_model(model, _lora(lora))

    norm = v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    tf = v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(0.7, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(0.2, 0.2, 0.2),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            norm,
        ]
    )

    def transform(batch):
        return {"pixel_values": [tf(im.convert("RGB")) for im in batch["image"]], "labels": batch["label"]}

    def collate(rows):
        return {
            "pixel_values": torch.stack([r["pixel_values"] for r in rows]),
            "labels": torch.tensor([r["labels"] for r in rows]),
        }

    trainer = Trainer(
        model=model,
        args=_training_args(t, remove_unused_columns=False),
        train_dataset=ds.with_transform(transform),
        data_collator=collate,
    )
    trainer.train()
    model.save_pretrained(trainer.args.output_dir)


def plain_text_classifier(cfg) -> None:
    """HF sequence-classification LoRA guide: tokenise with map, DataCollatorWithPadding, Trainer."""
    import torch
    from peft import get_peft_model
    from text_classifier.data import load_splits
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        set_seed,
    )

    m, d, lora, t = cfg.model, cfg.data, cfg.lora, cfg.train
    set_seed(t.seed)
    train_ds, _, labels = load_splits(d, seed=t.seed)
    kw = {"num_labels": len(labels)}
    if m.model_type:
        from text_classifier.model import train_wordpiece  # a random model has no vocabulary to load

        tok = train_wordpiece(train_ds["text"], m.tokenizer_vocab_size)
        config = AutoConfig.for_model(m.model_type, vocab_size=len(tok), pad_token_id=tok.pad_token_id, **kw)
        for k, v in _overrides(m.config_overrides).items():
            setattr(config, k, v)
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        from lora_shared.models import resolve_model_path

        path = resolve_model_path(m.model_name_or_path)
        tok = AutoTokenizer.from_pretrained(path)
        # fp32 like the app: transformers 5 loads the checkpoint's dtype by default (bf16 for Gemma-3), which
        # on a CPU without native bf16 made this side 28x slower and half the memory: not the same work
        model = AutoModelForSequenceClassification.from_pretrained(
            path, ignore_mismatched_sizes=True, dtype=torch.float32, **kw
        )
    model = get_peft_model(model, _lora(lora, "SEQ_CLS"))

    def tokenize(batch):
        enc = tok(batch["text"], truncation=True, max_length=m.max_length)
        return {**enc, "labels": batch["label"]}

    ds = train_ds.map(tokenize, batched=True, remove_columns=train_ds.column_names)
    trainer = Trainer(
        model=model, args=_training_args(t), train_dataset=ds, data_collator=DataCollatorWithPadding(tok)
    )
    trainer.train()
    model.save_pretrained(trainer.args.output_dir)


def plain_causal_lm(m, lora, tok):
    """llm-chat's model as plain transformers + peft build it: a random config (tiny) or a local checkpoint,
    fp32, LoRA on top. The plain script and the TRL peer both train this one."""
    import torch
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    if m.model_type:
        config = AutoConfig.for_model(
            m.model_type,
            vocab_size=len(tok),
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            tie_word_embeddings=True,
            **_overrides(m.config_overrides),
        )
        model = AutoModelForCausalLM.from_config(config, attn_implementation=m.attn_implementation)
    else:
        from lora_shared.models import resolve_model_path

        model = AutoModelForCausalLM.from_pretrained(
            resolve_model_path(m.model_name_or_path),
            dtype=torch.float32,
            attn_implementation=m.attn_implementation,
        )
    return get_peft_model(model, _lora(lora, "CAUSAL_LM"))


def plain_llm_chat(cfg) -> None:
    """Plain causal-LM LoRA SFT: the same tokenised dialogs (assistant-only labels), padded per batch."""
    import torch

    # the built-in dialogs and the tokenizer are the data; tokenising them is done once, before training
    from llm_chat.data import load_splits, tokenize_dialogs
    from llm_chat.model import build_tokenizer
    from transformers import Trainer, set_seed

    m, d, lora, t = cfg.model, cfg.data, cfg.lora, cfg.train
    set_seed(t.seed)
    tok = build_tokenizer(m, t.chat_template_path)
    records = load_splits(d, seed=t.seed)[0]
    ds = tokenize_dialogs(tok, records, t.max_length)
    model = plain_causal_lm(m, lora, tok)
    pad = tok.pad_token_id

    def collate(rows):
        n = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), n), pad, dtype=torch.long)
        labels = torch.full((len(rows), n), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        for i, r in enumerate(rows):
            k = len(r["input_ids"])
            ids[i, :k], labels[i, :k], mask[i, :k] = (
                torch.tensor(r["input_ids"]),
                torch.tensor(r["labels"]),
                1,
            )
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    trainer = Trainer(
        model=model,
        args=_training_args(t, remove_unused_columns=False),
        train_dataset=ds,
        data_collator=collate,
    )
    trainer.train()
    model.save_pretrained(trainer.args.output_dir)


def plain_vision_det(cfg) -> None:
    """HF object-detection guide: torchvision v2 box transforms + the DETR image processor in with_transform,
    AutoModelForObjectDetection + LoRA (heads in modules_to_save), Trainer."""
    import torch
    from peft import get_peft_model
    from torchvision import tv_tensors
    from torchvision.transforms import v2
    from transformers import (
        AutoConfig,
        AutoModelForObjectDetection,
        DetrImageProcessor,
        ResNetConfig,
        Trainer,
        set_seed,
    )
    from vision_det.data import load_splits  # the built-in shapes images are the data

    m, d, lora, t = cfg.model, cfg.data, cfg.lora, cfg.train
    set_seed(t.seed)
    train_ds, _, cats = load_splits(d, seed=t.seed)
    names = [c["name"] for c in cats]
    kw = {"num_labels": len(names), "id2label": dict(enumerate(names))}
    if not m.model_type or m.backbone not in (None, "resnet"):
        raise SystemExit("plain vision-det: only random-init DETRs with a ResNet backbone (the tiny config)")
    if m.backbone:
        backbone = ResNetConfig(out_features=[m.backbone_stage], **_overrides(m.backbone_overrides))
        kw.update(backbone_config=backbone, use_timm_backbone=False, use_pretrained_backbone=False)
    config = AutoConfig.for_model(m.model_type, **kw)
    for k, v in _overrides(m.config_overrides).items():
        setattr(config, k, v)
    model = get_peft_model(AutoModelForObjectDetection.from_config(config), _lora(lora))
    side = m.image_size or 512
    processor = DetrImageProcessor(
        size={"max_height": side, "max_width": side},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    t_ = d.aug_translate
    tf = v2.Compose(
        [
            v2.RandomHorizontalFlip(p=d.aug_hflip),
            v2.RandomAffine(degrees=0.0, translate=(t_, t_), scale=tuple(d.aug_scale)),
            v2.ColorJitter(
                d.aug_color_jitter, d.aug_color_jitter, d.aug_color_jitter, d.aug_color_jitter / 4
            ),
            v2.ClampBoundingBoxes(),
            v2.SanitizeBoundingBoxes(min_size=1.0),
        ]
    )

    def transform(batch):
        images, annotations = [], []
        for image, image_id, o in zip(batch["image"], batch["image_id"], batch["objects"]):
            image = image.convert("RGB")
            w, h = image.size
            boxes = tv_tensors.BoundingBoxes(
                torch.tensor(o["bbox"]).reshape(-1, 4), format="XYWH", canvas_size=(h, w)
            )
            out = tf({"image": image, "boxes": boxes, "labels": torch.tensor(o["category"])})
            anns = [
                {"bbox": b.tolist(), "category_id": int(c), "area": float(b[2] * b[3]), "iscrowd": 0}
                for b, c in zip(out["boxes"], out["labels"])
            ]
            images.append(out["image"])
            annotations.append({"image_id": int(image_id), "annotations": anns})
        enc = processor(images=images, annotations=annotations, return_tensors="pt")
        return {
            "pixel_values": list(enc["pixel_values"]),
            "pixel_mask": list(enc["pixel_mask"]),
            "labels": enc["labels"],
        }

    def collate(rows):
        return {
            "pixel_values": torch.stack([r["pixel_values"] for r in rows]),
            "pixel_mask": torch.stack([r["pixel_mask"] for r in rows]),
            "labels": [r["labels"] for r in rows],
        }

    trainer = Trainer(
        model=model,
        args=_training_args(t, remove_unused_columns=False),
        train_dataset=train_ds.with_transform(transform),
        data_collator=collate,
    )
    trainer.train()
    model.save_pretrained(trainer.args.output_dir)


def plain_vision_pose(cfg) -> None:
    """Top-down heatmap regression, as a user would write it around transformers' ViTPose (which has no
    training loss): a Dataset of person crops, a module adding the MSE-to-Gaussian loss, LoRA, Trainer.
    The crop geometry (`make_sample`) is borrowed from the app: it is the data, not the training loop."""
    import random

    import torch
    from peft import get_peft_model
    from transformers import (
        Trainer,
        VitPoseBackboneConfig,
        VitPoseConfig,
        VitPoseForPoseEstimation,
        set_seed,
    )
    from vision_pose.data import CropSettings, flip_permutation, load_splits, make_sample

    m, d, lora, t = cfg.model, cfg.data, cfg.lora, cfg.train
    set_seed(t.seed)
    train_split, _ = load_splits(d, seed=t.seed)
    names = train_split.schema.names
    if m.model_type != "vitpose":
        raise SystemExit("plain vision-pose: only random-init ViTPose (the tiny config)")
    over = _overrides(m.config_overrides)
    net = VitPoseForPoseEstimation(
        VitPoseConfig(backbone_config=VitPoseBackboneConfig(**over), num_labels=len(names))
    )
    sigma = m.heatmap_sigma

    class WithLoss(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, pixel_values, labels=None):
            heatmaps = self.net(pixel_values=pixel_values).heatmaps
            hh, hw = heatmaps.shape[-2:]
            ys = torch.arange(hh, dtype=torch.float32).view(1, 1, hh, 1)
            xs = torch.arange(hw, dtype=torch.float32).view(1, 1, 1, hw)
            u, v, w = labels[..., 0, None, None], labels[..., 1, None, None], labels[..., 2]
            target = torch.exp(-((xs - u) ** 2 + (ys - v) ** 2) / (2 * sigma**2))
            err = ((heatmaps - target) ** 2).sum((-2, -1))
            return {"loss": (err * w).sum() / w.sum().clamp(min=1.0), "heatmaps": heatmaps}

    model = get_peft_model(WithLoss(net), _lora(lora))
    h, w = net.config.backbone_config.image_size
    with torch.no_grad():
        hh, hw = net(pixel_values=torch.zeros(1, 3, h, w)).heatmaps.shape[-2:]
    st = CropSettings(
        h,
        w,
        hh,
        hw,
        padding=d.box_padding,
        flip_prob=d.flip_prob,
        rotation_deg=d.rotation_deg,
        scale_jitter=d.scale_jitter,
        flip_perm=flip_permutation(names),
    )
    rng = random.Random(t.seed)
    people = train_split.people[: d.max_train_samples] if d.max_train_samples else train_split.people

    class Crops(torch.utils.data.Dataset):
        def __len__(self):
            return len(people)

        def __getitem__(self, i):
            s = make_sample(train_split.pil[people[i]["image_id"]], people[i], st, rng)
            return {"pixel_values": s["pixel_values"], "labels": s["labels"]}

    args = _training_args(t, remove_unused_columns=False, label_names=["labels"])
    trainer = Trainer(model=model, args=args, train_dataset=Crops())
    trainer.train()
    model.save_pretrained(trainer.args.output_dir)


# import name -> plain script; an app without one is benchmarked for everything except overhead
PLAIN = {
    "vision_cls": plain_vision_cls,
    "text_classifier": plain_text_classifier,
    "llm_chat": plain_llm_chat,
    "vision_det": plain_vision_det,
    "vision_pose": plain_vision_pose,
}
