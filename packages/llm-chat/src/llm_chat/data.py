"""Data for llm-chat: dialog files (OpenAI messages, ShareGPT, Alpaca) and built-in sets -> validated
messages -> token ids with an assistant-only loss mask -> padded or padding-free (packed) batches.

A normalised record is {"messages": [{"role", "content"}, ...], **metadata}: an optional system message
first, then user/assistant turns alternating, ending with the assistant.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from lora_shared import hubdata
from lora_shared.errors import DataError, UsageError
from lora_shared.jsonfile import JSONError, loads, read_text

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
# Characters of message text per dialog. Preparation is linear, but a record this big is a pasting accident or
# a whole chat log in one record: ~250k+ tokens, past any context llm-chat trains (max_length cuts it anyway).
MAX_DIALOG_CHARS = 1_000_000


def iter_json_records(path: Path):
    """(line number, parsed object or a JSONError) for JSONL, or for a JSON array file (number = index+1)."""
    text = read_text(path)  # DataError naming file:line for a non-UTF-8 byte
    if path.suffix == ".json" or text.lstrip().startswith("["):
        try:
            data = loads(text)
        except JSONError as e:  # bad syntax, or '[' x 100000 (a RecursionError inside json)
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
    # split("\n"), not splitlines(): U+2028 and friends are legal inside JSON strings, not line breaks.
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            yield n, loads(line)
        except JSONError as e:
            yield n, e


def read_dialogs(
    path: str | Path, fmt: str = "auto", skip_bad: bool = False, max_chars: int | None = MAX_DIALOG_CHARS
) -> tuple[list[dict], LoadReport]:
    """Read and validate a JSONL/JSON file of dialogs. A bad record (or one over `max_chars` characters of
    message text) is a DataError naming file:line, or is skipped and counted when `skip_bad`."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"dataset file not found: {path}")
    if fmt not in ("auto", *FORMATS):
        raise UsageError(f"data_format: {fmt!r} is not one of auto, {', '.join(FORMATS)}")
    report = LoadReport(str(path))
    return _normalise(
        ((f"{path}:{line}", rec) for line, rec in iter_json_records(path)), report, fmt, skip_bad, max_chars
    )


def _normalise(
    rows, report: LoadReport, fmt: str, skip_bad: bool, max_chars: int | None
) -> tuple[list[dict], LoadReport]:
    """Validate (where, record) pairs into normalised dialogs; a bad one is a DataError naming `where`, or is
    skipped and counted when `skip_bad`. Shared by files and `datasets` splits, so both give the same lines."""
    out = []
    for where, rec in rows:
        problem = None
        try:
            if isinstance(rec, JSONError):
                raise ValueError(f"not valid JSON ({rec})")
            if isinstance(rec, Exception):
                raise rec
            messages, found = to_messages(rec, fmt, report)
        except (ValueError, TypeError) as e:
            problem, fix = str(e), "fix the record or pass --skip_bad_records"
        else:
            size = sum(len(m["content"]) for m in messages)
            if max_chars and size > max_chars:
                problem = (
                    f"dialog of {size:,} characters ({len(messages)} turns) is over --max_dialog_chars "
                    f"{max_chars}"
                )
                fix = "split it into shorter dialogs, raise --max_dialog_chars, or pass --skip_bad_records"
        if problem:
            if not skip_bad:
                raise DataError(f"{where}: {problem}; {fix}")
            report.skipped += 1
            if len(report.skipped_examples) < 3:
                report.skipped_examples.append(f"{where}: {problem}")
            continue
        meta = {k: v for k, v in rec.items() if k not in (*_MESSAGES_KEYS, "system", "history")}
        if found == "alpaca":
            meta = {k: v for k, v in meta.items() if not any(k in ks for ks in _ALPACA_KEYS.values())}
        out.append({**meta, "messages": messages})
        report.formats[found] += 1
    report.records = len(out)
    if not out:
        raise DataError(
            f"{report.source}: no valid dialogs" + (f" ({report.skipped} skipped)" if report.skipped else "")
        )
    return out, report


def _drop_nones(value):
    """Arrow gives every struct all the keys seen in the column (None where a record lacked one); drop
    them so a ShareGPT turn {from, value, role: None} reads as the record it was."""
    if isinstance(value, dict):
        return {k: _drop_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nones(v) for v in value]
    return value


def _hub_rows(ds, where: str, messages_column: str | None):
    """(where row i, record) of a `datasets` split; --messages_column's turns become the record's messages."""
    for i, row in enumerate(ds):
        rec = _drop_nones(row)
        if messages_column and messages_column != "messages":
            turns = rec.pop(messages_column, None)
            rec = {k: v for k, v in rec.items() if k not in _MESSAGES_KEYS}
            if turns is not None:  # else the record has no turns: to_messages names the keys it has
                rec["messages"] = turns
        yield f"{where} row {i}", rec


def load_hub(spec: str, data_args, max_chars: int | None):
    """(train dialogs, held-out dialogs or None, reports) of a hub id / load_dataset builder in --dataset."""
    if data_args.data_format not in ("auto", *FORMATS):
        raise UsageError(f"data_format: {data_args.data_format!r} is not one of auto, {', '.join(FORMATS)}")
    splits = hubdata.load_splits(data_args, spec)
    out, reports = [], []
    for ds, name in ((splits.train, splits.train_name), (splits.eval, splits.eval_name)):
        if ds is None:
            out.append(None)
            continue
        where = splits.where(name)
        if data_args.messages_column:
            hubdata.require_columns(ds, [data_args.messages_column], where, "--messages_column")
        records, report = _normalise(
            _hub_rows(ds, where, data_args.messages_column),
            LoadReport(where),
            data_args.data_format,
            data_args.skip_bad_records,
            max_chars,
        )
        for r in records:
            r.setdefault("source", spec)
        out.append(records)
        reports.append(report)
    return out[0], out[1], reports


def builtin_path(name: str, split: str) -> Path:
    """The committed JSONL of a built-in set: builtin_data/<name>_<train|test>.jsonl."""
    return Path(str(resources.files("llm_chat.builtin_data") / f"{name}_{split}.jsonl"))


def load_source(
    spec: str, split: str, fmt: str = "auto", skip_bad: bool = False, max_chars: int | None = MAX_DIALOG_CHARS
) -> tuple[list[dict], LoadReport]:
    """One item of --dataset: a built-in name (its `split`) or a file (whole file)."""
    if spec in BUILTIN:
        records, report = read_dialogs(builtin_path(spec, split), "openai", False)
        report.source = f"{spec} ({split})"
        for r in records:
            r.setdefault("source", spec)
        return records, report
    if not Path(spec).expanduser().exists():
        raise UsageError(
            f"dataset {spec!r}: not a file nor a built-in set ({', '.join(BUILTIN)}) nor a hub dataset id"
        )
    records, report = read_dialogs(Path(spec).expanduser(), fmt, skip_bad, max_chars)
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
    max_chars = data_args.max_dialog_chars
    if max_chars < 0:
        raise UsageError(
            f"max_dialog_chars: {max_chars} is negative; pass a character count, or 0 for no cap"
        )
    hub_specs = [s for s in specs if s not in BUILTIN and hubdata.wants_load_dataset(s, data_args)]
    if not hub_specs:
        hubdata.check_unused(data_args)
    for spec in specs:
        if spec in hub_specs:
            recs, test, reps = load_hub(spec, data_args, max_chars)
            reports += reps
            if test is not None:  # the dataset's own held-out split, as a built-in set's test split
                train += recs
                held += [] if data_args.eval_dataset else test
                continue
        else:
            recs, rep = load_source(
                spec, "train", data_args.data_format, data_args.skip_bad_records, max_chars
            )
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
        recs, rep = load_source(spec, "test", data_args.data_format, data_args.skip_bad_records, max_chars)
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


# Stand-in contents (private-use code points, which no template emits) that show where each message lands.
_SENTINEL = "\ue000{}\ue001"
_SENTINEL_RE = re.compile("\ue000(\\d+)\ue001")


@dataclass(frozen=True)
class TemplateShape:
    """What a chat template puts around an assistant answer, learned from one tiny probe render."""

    header: str  # the generation prompt that opens an assistant turn ("<|im_start|>assistant\n")
    end: str  # what closes it, trailing whitespace dropped ("<|im_end|>"); "" if nothing does
    # `end` is one added token: tokenizers split text at added tokens first, so a prefix ending there
    # tokenises exactly like the same stretch of the whole text.
    end_is_token: bool


_SHAPES: dict[tuple, TemplateShape] = {}


def template_shape(tokenizer) -> TemplateShape:
    """The assistant header and end-of-turn text of `tokenizer`'s template (cached per template)."""
    key = (tokenizer.chat_template, repr(sorted(tokenizer.special_tokens_map.items())))
    if key not in _SHAPES:
        user = [{"role": "user", "content": _SENTINEL.format(0)}]
        plain, prompt = render(tokenizer, user), render(tokenizer, user, add_generation_prompt=True)
        one = render(tokenizer, [*user, {"role": "assistant", "content": _SENTINEL.format(1)}])
        end = one.partition(_SENTINEL.format(1))[2].rstrip()
        _SHAPES[key] = TemplateShape(
            header=prompt[len(plain) :] if prompt.startswith(plain) else "",
            end=end,
            end_is_token=end in tokenizer.get_added_vocab(),
        )
    return _SHAPES[key]


def _unlocatable(i: int, messages: list[dict]) -> UsageError:
    return UsageError(
        f"the chat template does not render message {i} ({messages[i]['role']}) where the dialog puts it (it "
        "drops, repeats or reorders turns, or rewrites more than <think> blocks), so assistant tokens cannot "
        "be located; supply a template that renders every turn with --chat_template_path chatml (or a Jinja file)"
    )


def assistant_char_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """(full text, [(start, end)] character spans of each assistant answer, end-of-turn text included).

    Linear in the dialog and independent of prefix stability (Qwen3 drops old <think> blocks and adds an
    empty one to the last turn): the dialog is rendered once as is and once with every content replaced by
    a numbered sentinel. The sentinel render gives the template's scaffolding between contents; walking
    the real text scaffold by scaffold finds each content. A span is the content as rendered plus the
    end-of-turn text (<|im_end|>), which is exactly what the older prefix-diff method labelled on
    prefix-stable templates (ChatML, Qwen2.5, SmolLM2). Template scaffolding is not labelled (Qwen3's
    empty <think> block); a <think> block the assistant's content carries is.
    """
    full = render(tokenizer, messages)
    marked = render(tokenizer, [{**m, "content": _SENTINEL.format(i)} for i, m in enumerate(messages)])
    parts = _SENTINEL_RE.split(marked)  # [scaffold, index, scaffold, index, ..., tail]
    scaffolds, order = parts[0::2], [int(i) for i in parts[1::2]]
    assistants = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if sorted(i for i in order if messages[i]["role"] == "assistant") != assistants:
        missing = next(i for i in assistants if order.count(i) != 1)
        raise _unlocatable(missing, messages)
    shape = template_shape(tokenizer)

    def anchor(k: int) -> str:
        """Scaffold k, cut after the assistant header when it opens an assistant turn: the part of it
        that does not depend on content (Qwen3 fills its <think> block from the content)."""
        s = scaffolds[k]
        opens_assistant = k < len(order) and messages[order[k]]["role"] == "assistant"
        h = s.rfind(shape.header) if shape.header and opens_assistant else -1
        return s[: h + len(shape.header)] if h >= 0 else s

    spans, pos = [], 0
    for k, i in enumerate(order):
        if full.startswith(scaffolds[k], pos):
            start = pos + len(scaffolds[k])
        elif full.startswith(anchor(k), pos) and anchor(k) != scaffolds[k]:
            start = pos + len(anchor(k))
        else:
            raise _unlocatable(i, messages)
        content = messages[i]["content"]
        if full.startswith(content, start):
            stop = start + len(content)
        elif k + 1 == len(order):  # rewritten (trimmed, <think> dropped): it runs up to the tail
            stop = len(full) - len(scaffolds[-1]) if full.endswith(scaffolds[-1]) else -1
        else:  # ... or up to where the next scaffold starts
            stop = full.find(anchor(k + 1), start)
        if stop < start:
            raise _unlocatable(i, messages)
        pos = stop
        if messages[i]["role"] != "assistant":
            continue
        end = stop
        if shape.end and full.startswith(shape.end, stop):
            end += len(shape.end)
        elif not shape.end:  # no end-of-turn text: like rstrip(), trailing whitespace is not an answer
            while end > start and full[end - 1].isspace():
                end -= 1
        spans.append((start, end))
    return full, spans


def _encode(tokenizer, text: str, cuts: list[int], max_length: int | None) -> tuple[list[int], list]:
    """ids and offsets of `text`, only as far as `max_length` tokens need: tokens past it can never be
    trained on. `cuts` are positions right after an added token (see TemplateShape.end_is_token), tried
    at doubling lengths, so the work stays proportional to what is kept."""
    # In characters; tokenizers average well under 4 characters per token, and a short guess only costs a retry.
    budget = 4 * max_length if max_length else None
    while budget is not None:
        k = bisect.bisect_left(cuts, budget)
        if k == len(cuts):
            break
        enc = tokenizer(text[: cuts[k]], add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        if len(enc["input_ids"]) >= max_length:
            return enc["input_ids"][:max_length], enc["offset_mapping"][:max_length]
        budget = 2 * cuts[k]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    return (ids[:max_length], offsets[:max_length]) if max_length else (ids, offsets)


def tokenize_dialog(tokenizer, messages: list[dict], max_length: int | None = None) -> dict | None:
    """input_ids + labels (-100 outside assistant answers) for one dialog; None if nothing trainable fits.

    Linear in the dialog: one render pair, tokens only up to max_length, one pass over tokens and spans.
    """
    full, spans = assistant_char_spans(tokenizer, messages)
    shape = template_shape(tokenizer)
    cuts = [e for _, e in spans if shape.end_is_token and full.endswith(shape.end, 0, e)]
    ids, offsets = _encode(tokenizer, full, cuts, max_length)
    labels = [IGNORE_INDEX] * len(ids)
    j = 0
    for t, (start, end) in enumerate(offsets):  # token starts never decrease, spans are sorted
        while j < len(spans) and spans[j][1] <= start:
            j += 1
        if j == len(spans):
            break
        if end > start and spans[j][0] <= start:
            labels[t] = ids[t]
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


def pack_rows_min_fill(lengths: list[int], capacity: int, tries: int = 32) -> list[list[int]]:
    """pack_rows at the row capacity (between the longest sample and `capacity`) that computes the fewest
    positions: rows x the widest row, as every row is filled up to the widest. Ties go to the narrower rows
    (less attention: sdpa on CPU computes a packed row's whole block-diagonal mask).

    At the full capacity, first-fit-decreasing leaves rows uneven: measured on the built-in chat data
    (batch 8, rows of <= 768 byte-level tokens) the packed rows were 77% real tokens; the best of these
    capacities gives 88%, with less attention work than padding.
    """
    low = max(lengths)
    if low >= capacity:
        return pack_rows(lengths, capacity)
    step = max(1, -(-(capacity - low) // tries))
    best = None
    for cap in sorted({*range(low, capacity, step), capacity}):
        rows = pack_rows(lengths, cap)
        width = max(sum(lengths[i] for i in r) for r in rows)
        key = (len(rows) * width, width)
        if best is None or key < best[0]:
            best = (key, rows)
    return best[1]


def collate_fn(
    features: list[dict],
    pad_token_id: int,
    packing: bool = False,
    pack_length: int | None = None,
    supervised_logits: bool = False,
    varlen: bool = False,
) -> dict:
    """Batch tokenised dialogs.

    packing=False: right-padded [B, T] with an attention mask. packing=True (padding-free): dialogs
    concatenated with position_ids restarting at 0 for each one and no attention mask, from which
    transformers builds a block-diagonal causal mask, so no dialog sees another. A dialog's first token is a
    prompt token (label -100), so the shifted loss never predicts across a boundary. With `pack_length`
    the dialogs are bin-packed into several rows of at most that many tokens instead of one long row: on
    CPU/sdpa the masked attention still costs (row length)^2, so one 8-dialog row pays ~8x the attention
    FLOPs of 8 short rows (measured by `make bench`). The row capacity is chosen per batch to leave the
    least filler (pack_rows_min_fill). Shorter rows are filled with a pad segment (its own position ids
    from 0, labels -100), which no dialog attends to.

    varlen=True (packing, for attention that reads dialog boundaries: llm_chat.varlen's sdpa, flash kernels):
    the whole batch is one row with no filler, plus the boundaries as transformers' flash-attention kwargs
    (`cu_seq_lens_q/k`, `max_length_q/k`, as DataCollatorWithFlattening writes them) and an all-ones
    attention mask, so transformers builds no block-diagonal mask that the kernel would ignore.

    supervised_logits=True adds `logits_to_keep` (a [B, T] bool mask of the positions whose next token is an
    assistant token) and the matching flat `shift_labels`: the model projects only those hidden states onto
    the vocabulary. The loss is the same (the other positions have label -100), but the LM head's matmul,
    the [tokens, vocab] logits and their gradient shrink to the supervised share of the tokens: ~40% of the
    built-in dialogs' tokens, and Gemma-3's head (262k x 640) is 60% of the model.
    """
    batch = (
        _collate_varlen(features)
        if packing and varlen
        else _collate(features, pad_token_id, packing, pack_length)
    )
    if supervised_logits:
        import torch

        labels = batch["labels"]
        shift = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
        keep = shift != IGNORE_INDEX
        batch["logits_to_keep"], batch["shift_labels"] = keep, shift[keep]
    return batch


def _collate_varlen(features: list[dict]) -> dict:
    import torch

    lengths = [len(f["input_ids"]) for f in features]
    cu = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32)
    return {
        "input_ids": torch.tensor([[t for f in features for t in f["input_ids"]]]),
        "labels": torch.tensor([[t for f in features for t in f["labels"]]]),
        "position_ids": torch.tensor([[k for n in lengths for k in range(n)]]),
        "attention_mask": torch.ones((1, int(cu[-1])), dtype=torch.long),
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": max(lengths),
        "max_length_k": max(lengths),
    }


def _collate(features: list[dict], pad_token_id: int, packing: bool, pack_length: int | None) -> dict:
    import torch

    if packing:
        lengths = [len(f["input_ids"]) for f in features]
        groups = pack_rows_min_fill(lengths, pack_length) if pack_length else [list(range(len(features)))]
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
