"""Data for llm-chat: dialog files (OpenAI messages, ShareGPT, Alpaca) and built-in sets -> validated
messages -> token ids with an assistant-only loss mask -> padded or padding-free (packed) batches.

A normalised record is {"messages": [{"role", "content"}, ...], **metadata}: an optional system message
first, then user/assistant turns alternating, ending with the assistant.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from lora_shared.errors import DataError, UsageError

logger = logging.getLogger(__name__)

BUILTIN = ("customer_service", "banking", "multitask")
FORMATS = ("openai", "sharegpt", "alpaca")
IGNORE_INDEX = -100

# Keys seen in the wild for the same thing, mapped onto one spelling (the report lists what was renamed).
_MESSAGES_KEYS = ("messages", "conversation", "conversations", "dialog", "dialogue", "turns", "chat")
_ROLE_KEYS = ("role", "from", "speaker", "author")
_CONTENT_KEYS = ("content", "value", "text", "message")
_ROLE_ALIASES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "customer": "user",
    "question": "user",
    "prompter": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
    "answer": "assistant",
    "agent": "assistant",
}
_ALPACA_KEYS = {
    "instruction": ("instruction", "prompt", "query", "question"),
    "input": ("input", "context"),
    "output": ("output", "response", "answer", "completion"),
}


@dataclass
class LoadReport:
    """What loading a source did: counts per format, renamed keys, skipped records (shown to the user)."""

    source: str
    records: int = 0
    formats: Counter = field(default_factory=Counter)
    renamed: Counter = field(default_factory=Counter)
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [f"{self.source}: {self.records} dialogs"]
        if self.formats:
            parts.append("formats " + ", ".join(f"{k}={v}" for k, v in sorted(self.formats.items())))
        if self.renamed:
            parts.append("normalised " + ", ".join(f"{k} ({v}x)" for k, v in sorted(self.renamed.items())))
        if self.skipped:
            parts.append(f"skipped {self.skipped} bad record(s), e.g. {self.skipped_examples[0]}")
        return "; ".join(parts)


# ---------------------------------------------------------------------------------------------- formats
def _text(value, where: str) -> str:
    """Content as a string: plain text, or OpenAI's list of parts [{"type": "text", "text": ...}]."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        texts = [p.get("text") for p in value if p.get("type", "text") == "text"]
        if all(isinstance(t, str) for t in texts):
            return "".join(texts)
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        return value["text"]
    raise ValueError(f"{where}: content must be text, got {type(value).__name__}")


def _first_key(d: dict, keys, report: LoadReport | None, canonical: str):
    for k in keys:
        if k in d:
            if k != canonical and report is not None:
                report.renamed[f"{k}->{canonical}"] += 1
            return d[k]
    return None


def detect_format(record: dict) -> str:
    """openai (messages of role/content), sharegpt (conversations of from/value), or alpaca (instruction/output)."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    for k in _MESSAGES_KEYS:
        turns = record.get(k)
        if isinstance(turns, list):
            first = next((t for t in turns if isinstance(t, dict)), {})
            return "sharegpt" if ("from" in first or "value" in first) else "openai"
    if any(k in record for k in _ALPACA_KEYS["instruction"]) and any(
        k in record for k in _ALPACA_KEYS["output"]
    ):
        return "alpaca"
    raise ValueError(
        f"unknown record format (keys: {', '.join(sorted(record)) or 'none'}); expected messages (OpenAI), "
        "conversations (ShareGPT) or instruction/output (Alpaca)"
    )


def _messages_from_turns(turns: list, report: LoadReport | None) -> list[dict]:
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise ValueError(f"turn {i}: expected an object with role and content, got {type(turn).__name__}")
        role = _first_key(turn, _ROLE_KEYS, report, "role")
        content = _first_key(turn, _CONTENT_KEYS, report, "content")
        if role is None:
            raise ValueError(f"turn {i}: no role (expected one of {', '.join(_ROLE_KEYS)})")
        if content is None:
            raise ValueError(f"turn {i}: no content (expected one of {', '.join(_CONTENT_KEYS)})")
        canon = _ROLE_ALIASES.get(str(role).strip().lower())
        if canon is None:
            raise ValueError(f"turn {i}: unknown role {role!r} (use system, user or assistant)")
        if canon != role and report is not None:
            report.renamed[f"role {role}->{canon}"] += 1
        out.append({"role": canon, "content": _text(content, f"turn {i}")})
    return out


def _alpaca_messages(record: dict, report: LoadReport | None) -> list[dict]:
    instruction = _text(_first_key(record, _ALPACA_KEYS["instruction"], report, "instruction"), "instruction")
    extra = _first_key(record, _ALPACA_KEYS["input"], report, "input")
    output = _text(_first_key(record, _ALPACA_KEYS["output"], report, "output"), "output")
    messages = []
    if record.get("system"):
        messages.append({"role": "system", "content": _text(record["system"], "system")})
    # Alpaca's history: [[user, assistant], ...] earlier turns.
    for i, pair in enumerate(record.get("history") or []):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise ValueError(f"history[{i}]: expected [user, assistant]")
        messages += [
            {"role": "user", "content": _text(pair[0], f"history[{i}]")},
            {"role": "assistant", "content": _text(pair[1], f"history[{i}]")},
        ]
    user = instruction if not extra else f"{instruction}\n\n{_text(extra, 'input')}"
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return messages


def to_messages(record: dict, fmt: str = "auto", report: LoadReport | None = None) -> tuple[list[dict], str]:
    """Normalise one record of any supported format into (messages, detected format).

    Args:
        record: a parsed JSON object.
        fmt: auto | openai | sharegpt | alpaca (auto detects per record).
        report: counts renamed keys / roles when given.

    Returns:
        The messages (role in system/user/assistant, content a string) and the format name. Raises
        ValueError with the reason when the record cannot be read (the caller adds file:line).
    """
    found = detect_format(record)
    if fmt != "auto" and found != fmt and not {found, fmt} <= {"openai", "sharegpt"}:
        raise ValueError(f"record looks like {found}, but --data_format is {fmt}")
    if found == "alpaca":
        messages = _alpaca_messages(record, report)
    else:
        key = next(k for k in _MESSAGES_KEYS if isinstance(record.get(k), list))
        canonical = "messages" if found == "openai" else "conversations"
        if key != canonical and report is not None:
            report.renamed[f"{key}->{canonical}"] += 1
        messages = _messages_from_turns(record[key], report)
        if record.get("system") and not (messages and messages[0]["role"] == "system"):
            messages.insert(0, {"role": "system", "content": _text(record["system"], "system")})
    validate_messages(messages)
    return messages, found


def validate_messages(messages: list[dict]) -> None:
    """System (optional) first, then user/assistant alternating from user, ending with assistant; no empty text."""
    if not messages:
        raise ValueError("no messages")
    body = messages[1:] if messages[0]["role"] == "system" else messages
    if not body:
        raise ValueError("only a system message: add a user turn and an assistant answer")
    for i, m in enumerate(messages):
        if not m["content"].strip():
            raise ValueError(f"turn {i} ({m['role']}): empty content")
    offset = len(messages) - len(body)
    for i, m in enumerate(body):
        want = "user" if i % 2 == 0 else "assistant"
        if m["role"] != want:
            raise ValueError(
                f"turn {i + offset}: expected {want}, got {m['role']} (roles must alternate user/assistant"
                + (", system only first)" if m["role"] == "system" else ")")
            )
    if body[-1]["role"] != "assistant":
        raise ValueError(
            "last turn is a user message: nothing to learn; end each dialog with an assistant answer"
        )


# ---------------------------------------------------------------------------------------------- reading
def _iter_json_records(path: Path):
    """(line number, parsed object or the JSON error) for JSONL, or for a JSON array file (number = index+1)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:  # a file saved in GBK/Latin-1, or one bad line pasted in
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 ({e.reason}); re-save the file as UTF-8") from None
    if path.suffix == ".json" or text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            yield e.lineno, e
            return
        if isinstance(data, dict):
            data = next((v for v in data.values() if isinstance(v, list)), [data])
        if not isinstance(data, list):
            yield 1, ValueError("expected a JSON array of records")
            return
        for i, rec in enumerate(data):
            yield i + 1, rec
        return
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as e:
            yield n, e


def read_dialogs(
    path: str | Path, fmt: str = "auto", skip_bad: bool = False
) -> tuple[list[dict], LoadReport]:
    """Read and validate a JSONL/JSON file of dialogs. A bad record is a DataError naming file:line, or is
    skipped and counted when `skip_bad`."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"dataset file not found: {path}")
    if fmt not in ("auto", *FORMATS):
        raise UsageError(f"data_format: {fmt!r} is not one of auto, {', '.join(FORMATS)}")
    report = LoadReport(str(path))
    out = []
    for line, rec in _iter_json_records(path):
        try:
            if isinstance(rec, Exception):
                raise ValueError(f"not valid JSON ({rec.msg if hasattr(rec, 'msg') else rec})")
            messages, found = to_messages(rec, fmt, report)
        except (ValueError, TypeError) as e:
            where = f"{path}:{line}"
            if not skip_bad:
                raise DataError(f"{where}: {e}; fix the record or pass --skip_bad_records") from None
            report.skipped += 1
            if len(report.skipped_examples) < 3:
                report.skipped_examples.append(f"{where}: {e}")
            continue
        meta = {k: v for k, v in rec.items() if k not in (*_MESSAGES_KEYS, "system", "history")}
        if found == "alpaca":
            meta = {k: v for k, v in meta.items() if not any(k in ks for ks in _ALPACA_KEYS.values())}
        out.append({**meta, "messages": messages})
        report.formats[found] += 1
    report.records = len(out)
    if not out:
        raise DataError(
            f"{path}: no valid dialogs" + (f" ({report.skipped} skipped)" if report.skipped else "")
        )
    return out, report


def builtin_path(name: str, split: str) -> Path:
    """The committed JSONL of a built-in set: builtin_data/<name>_<train|test>.jsonl."""
    return Path(str(resources.files("llm_chat.builtin_data") / f"{name}_{split}.jsonl"))


def load_source(
    spec: str, split: str, fmt: str = "auto", skip_bad: bool = False
) -> tuple[list[dict], LoadReport]:
    """One item of --dataset: a built-in name (its `split`) or a file (whole file)."""
    if spec in BUILTIN:
        records, report = read_dialogs(builtin_path(spec, split), "openai", False)
        report.source = f"{spec} ({split})"
        for r in records:
            r.setdefault("source", spec)
        return records, report
    if not Path(spec).expanduser().exists():
        raise UsageError(f"dataset {spec!r}: not a file nor a built-in set ({', '.join(BUILTIN)})")
    records, report = read_dialogs(Path(spec).expanduser(), fmt, skip_bad)
    for r in records:
        r.setdefault("source", Path(spec).stem)
    return records, report


def _specs(value: str | None) -> list[str]:
    return [s.strip() for s in (value or "").split(",") if s.strip()]


def add_system_prompt(records: list[dict], system_prompt: str | None) -> None:
    """Give dialogs without a system message the configured one (in place)."""
    if not system_prompt:
        return
    for r in records:
        if r["messages"][0]["role"] != "system":
            r["messages"].insert(0, {"role": "system", "content": system_prompt})


def load_splits(data_args, seed: int = 42) -> tuple[list[dict], list[dict], list[LoadReport]]:
    """(train dialogs, held-out dialogs, reports). Built-in sets bring their test split; files are split by
    val_fraction unless --eval_dataset is given."""
    specs = _specs(data_args.dataset)
    if not specs:
        raise UsageError("dataset is empty: name a built-in set or a file")
    train, held, reports = [], [], []
    for spec in specs:
        recs, rep = load_source(spec, "train", data_args.data_format, data_args.skip_bad_records)
        reports.append(rep)
        if spec in BUILTIN:
            train += recs
            if not data_args.eval_dataset:
                test, rep_t = load_source(spec, "test")
                held += test
                reports.append(rep_t)
        elif data_args.eval_dataset:
            train += recs
        else:
            rng = random.Random(seed)
            order = list(range(len(recs)))
            rng.shuffle(order)
            n_val = int(round(len(recs) * data_args.val_fraction)) if len(recs) > 1 else 0
            held += [recs[i] for i in order[:n_val]]
            train += [recs[i] for i in order[n_val:]]
    for spec in _specs(data_args.eval_dataset):
        recs, rep = load_source(spec, "test", data_args.data_format, data_args.skip_bad_records)
        held += recs
        reports.append(rep)
    random.Random(seed).shuffle(train)
    if data_args.max_train_samples:
        train = train[: data_args.max_train_samples]
    if data_args.max_eval_samples:
        held = held[: data_args.max_eval_samples]
    add_system_prompt(train, data_args.system_prompt)
    add_system_prompt(held, data_args.system_prompt)
    for rep in reports:
        logger.info("data: %s", rep)
    return train, held, reports


# ---------------------------------------------------------------------------------------------- tokenising
def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The chat template's text for `messages`."""
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def assistant_char_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """(full text, [(start, end)] character spans of each assistant turn, end-of-turn token included).

    Each span is the difference between the text up to the turn with the generation prompt and the text
    including the turn, so it covers exactly what the model must generate. Templates that rewrite earlier
    turns (Qwen3 drops old <think> blocks) break this prefix property and are reported.
    """
    full = render(tokenizer, messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:i], add_generation_prompt=True)
        upto = render(tokenizer, messages[: i + 1])
        if not (upto.startswith(before) and full.startswith(upto)):
            raise UsageError(
                "the chat template renders earlier turns differently once later turns exist, so assistant "
                "tokens cannot be located; supply a prefix-stable template with --chat_template_path"
            )
        end = len(upto.rstrip())  # the template's trailing newline after <|im_end|> is not generated
        spans.append((len(before), end))
    return full, spans


def tokenize_dialog(tokenizer, messages: list[dict], max_length: int | None = None) -> dict | None:
    """input_ids + labels (-100 outside assistant turns) for one dialog; None if nothing trainable fits."""
    full, spans = assistant_char_spans(tokenizer, messages)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [IGNORE_INDEX] * len(ids)
    for i, (start, end) in enumerate(offsets):
        if end > start and any(s <= start < e for s, e in spans):
            labels[i] = ids[i]
    if max_length and len(ids) > max_length:
        ids, labels = ids[:max_length], labels[:max_length]
    if all(lab == IGNORE_INDEX for lab in labels):
        return None
    return {"input_ids": ids, "labels": labels}


def tokenize_dialogs(tokenizer, records: list[dict], max_length: int | None, what: str = "train"):
    """A datasets.Dataset of tokenised dialogs (dropping, and counting, those with no assistant token left)."""
    from datasets import Dataset
    from tqdm.auto import tqdm

    rows, dropped, cut = [], 0, 0
    for r in tqdm(records, desc=f"tokenising {what}", leave=False, disable=len(records) < 200):
        row = tokenize_dialog(tokenizer, r["messages"], max_length)
        if row is None:
            dropped += 1
            continue
        cut += bool(max_length) and len(row["input_ids"]) >= max_length
        rows.append(row)
    if dropped or cut:
        logger.warning(
            "%s: %d dialog(s) cut at max_length=%s, %d dropped (no assistant token within it)",
            what,
            cut,
            max_length,
            dropped,
        )
    if not rows:
        raise DataError(f"{what}: no dialog has an assistant token within max_length={max_length}")
    lengths = [len(r["input_ids"]) for r in rows]
    logger.info("%s: %d dialogs, %d tokens (max %d)", what, len(rows), sum(lengths), max(lengths))
    return Dataset.from_list(rows)


# ---------------------------------------------------------------------------------------------- batching
def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit-decreasing: group sample indices into rows of at most `capacity` tokens (longer ones alone)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        slot = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if slot is None:
            rows.append([i])
            room.append(capacity - lengths[i])
        else:
            rows[slot].append(i)
            room[slot] -= lengths[i]
    return rows


def collate_fn(
    features: list[dict],
    pad_token_id: int,
    packing: bool = False,
    pack_length: int | None = None,
    supervised_logits: bool = False,
) -> dict:
    """Batch tokenised dialogs.

    packing=False: right-padded [B, T] with an attention mask. packing=True (padding-free): dialogs
    concatenated with position_ids restarting at 0 for each one and no attention mask, from which
    transformers builds a block-diagonal causal mask, so no dialog sees another. A dialog's first token is a
    prompt token (label -100), so the shifted loss never predicts across a boundary. With `pack_length`
    the dialogs are bin-packed into several rows of at most that many tokens instead of one long row: on
    CPU/sdpa the masked attention still costs (row length)^2, so one 8-dialog row pays ~8x the attention
    FLOPs of 8 short rows (measured by `make bench`). Shorter rows are filled with a pad segment (its own
    position ids from 0, labels -100), which no dialog attends to.

    supervised_logits=True adds `logits_to_keep` (a [B, T] bool mask of the positions whose next token is an
    assistant token) and the matching flat `shift_labels`: the model projects only those hidden states onto
    the vocabulary. The loss is the same (the other positions have label -100), but the LM head's matmul,
    the [tokens, vocab] logits and their gradient shrink to the supervised share of the tokens: ~40% of the
    built-in dialogs' tokens, and Gemma-3's head (262k x 640) is 60% of the model.
    """
    batch = _collate(features, pad_token_id, packing, pack_length)
    if supervised_logits:
        import torch

        labels = batch["labels"]
        shift = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
        keep = shift != IGNORE_INDEX
        batch["logits_to_keep"], batch["shift_labels"] = keep, shift[keep]
    return batch


def _collate(features: list[dict], pad_token_id: int, packing: bool, pack_length: int | None) -> dict:
    import torch

    if packing:
        lengths = [len(f["input_ids"]) for f in features]
        groups = pack_rows(lengths, pack_length) if pack_length else [list(range(len(features)))]
        width = max(sum(lengths[i] for i in g) for g in groups)
        ids_rows, label_rows, pos_rows = [], [], []
        for g in groups:
            ids = [t for i in g for t in features[i]["input_ids"]]
            labels = [t for i in g for t in features[i]["labels"]]
            pos = [k for i in g for k in range(lengths[i])]
            fill = width - len(ids)
            ids_rows.append(ids + [pad_token_id] * fill)
            label_rows.append(labels + [IGNORE_INDEX] * fill)
            pos_rows.append(pos + list(range(fill)))
        return {
            "input_ids": torch.tensor(ids_rows),
            "labels": torch.tensor(label_rows),
            "position_ids": torch.tensor(pos_rows),
        }
    width = max(len(f["input_ids"]) for f in features)
    input_ids = torch.full((len(features), width), pad_token_id)
    labels = torch.full((len(features), width), IGNORE_INDEX)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        input_ids[i, :n] = torch.tensor(f["input_ids"])
        labels[i, :n] = torch.tensor(f["labels"])
        mask[i, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


def prompt_and_reference(record: dict) -> tuple[list[dict], str]:
    """Split a held-out dialog into the prompt (everything before the last answer) and that answer."""
    messages = record["messages"]
    return messages[:-1], messages[-1]["content"]
