"""`--dataset` through `datasets.load_dataset`: hub dataset ids (`beans`, `user/name`) and the local builders
(`imagefolder --data_dir DIR`, `json|csv|parquet --data_files ...`), as the transformers examples and TRL
take them. Every app's DataArgs inherits the data flags (dataset_config, data_dir, data_files,
dataset_train_split, dataset_test_split) from `HubDataArgs` and validates the rows with its own record checks.

An unreachable hub fails in seconds with one line (a TCP probe, then huggingface_hub's offline mode), not
after a minute of retries; a dataset already in the local `datasets` cache still loads offline.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DataError, UsageError

logger = logging.getLogger(__name__)

# load_dataset's packaged builders that read local files (datasets.packaged_modules); listed here so that
# telling a builder from a path does not import datasets.
BUILDERS = ("imagefolder", "json", "csv", "parquet", "text", "arrow", "pandas", "webdataset")
# The held-out split, when --dataset_test_split is not given: the first of these the dataset has.
EVAL_SPLITS = ("validation", "val", "valid", "test", "eval")
# A final path component with one of these suffixes is a file the user meant, never a hub id.
_FILE_SUFFIXES = {
    ".json", ".jsonl", ".csv", ".tsv", ".txt", ".parquet", ".arrow", ".yaml", ".yml", ".zip", ".tar",
    ".gz", ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
}  # fmt: skip
# Hub repo ids: `name` or `owner/name`, letters, digits, - _ . (huggingface_hub's validate_repo_id).
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?$")
_BUILDER_FLAGS = ("dataset_config", "data_dir", "data_files")


@dataclass
class HubDataArgs:
    """The load_dataset flags of every app that reads hub datasets: inherit it in the app's DataArgs.

    The app re-declares `dataset` (its default and the forms it reads; declared here only so that it stays
    the first data flag, as dataclasses keep a base field's place) and, where its builders need their own
    words, the help of `data_dir` / `data_files`.
    """

    dataset: str = field(
        default="", metadata={"help": "A hub dataset id (user/name) or a load_dataset builder name."}
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Config (subset) name of a hub --dataset (load_dataset's name)."}
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder of data files for a load_dataset builder --dataset."}
    )
    data_files: list[str] | None = field(
        default=None,
        metadata={"help": "Files of a load_dataset builder --dataset: PATH or SPLIT=PATH, several allowed."},
    )
    dataset_train_split: str = field(
        default="train", metadata={"help": "Training split of a hub / load_dataset --dataset."}
    )
    dataset_test_split: str | None = field(
        default=None,
        metadata={
            "help": "Held-out split of a hub / load_dataset --dataset; default: validation|val|valid|test|eval "
            "if there is one, else --val_fraction."
        },
    )


@dataclass
class Splits:
    """What `load_splits` resolved: the training split, the held-out one (or None) and their names."""

    train: Any  # datasets.Dataset
    eval: Any | None
    train_name: str
    eval_name: str | None
    source: str  # how to name the data in messages, e.g. "beans" or "json (a.jsonl)"

    def where(self, split: str) -> str:
        """`source[split]`, the prefix of every record error (e.g. 'beans[train] row 12')."""
        return f"{self.source}[{split}]"


def _looks_like_path(spec: str) -> bool:
    """True for what can only be a local path: ./x, /x, ~x, x/y/z, a data-file suffix, or an existing top dir."""
    if spec.startswith((".", "/", "~")) or "\\" in spec or spec.count("/") > 1:
        return True
    if Path(spec).suffix.lower() in _FILE_SUFFIXES:
        return True
    return "/" in spec and Path(spec.split("/", 1)[0]).is_dir()


def wants_load_dataset(spec: str | None, args: Any = None) -> bool:
    """True when `--dataset spec` goes through `load_dataset`: a builder name, or a hub id that is no local path.

    Local paths keep winning (a folder named `beans` is read as a folder), except that a builder name with
    --data_dir/--data_files is the builder even if a folder of that name exists.
    """
    if not spec:
        return False
    if (
        spec in BUILDERS
        and args is not None
        and (getattr(args, "data_dir", None) or getattr(args, "data_files", None))
    ):
        return True
    if Path(spec).expanduser().exists():
        return False
    if spec in BUILDERS:
        return True
    return bool(_HUB_ID.match(spec)) and not _looks_like_path(spec)


def check_unused(args: Any) -> None:
    """--dataset_config / --data_dir / --data_files with a --dataset that does not use them is an error,
    not a silently ignored flag."""
    for name in _BUILDER_FLAGS:
        if getattr(args, name, None):
            raise UsageError(
                f"--{name} is only read with a load_dataset --dataset (a hub id or one of {', '.join(BUILDERS)}); "
                f"--dataset {args.dataset} does not use it: drop --{name} or change --dataset"
            )


def parse_data_files(
    items: list[str] | str | None, local: bool = True
) -> dict[str, list[str]] | list[str] | None:
    """--data_files a.csv b.csv -> [a.csv, b.csv]; train=a.csv validation=b.csv -> {split: [paths]}.

    Items may also be comma-separated. With `local` (a builder, not a hub repo's files), a missing file that
    is no glob pattern is a UsageError.
    """
    if not items:
        return None
    parts = [
        p.strip() for item in ([items] if isinstance(items, str) else items) for p in str(item).split(",")
    ]
    plain: list[str] = []
    by_split: dict[str, list[str]] = {}
    for part in filter(None, parts):
        split, sep, path = part.partition("=")
        if not sep:
            split, path = "", part
        elif not re.fullmatch(r"\w+", split.strip()):
            raise UsageError(
                f"--data_files {part!r}: expected PATH or SPLIT=PATH (e.g. train=data/train.csv)"
            )
        path = str(Path(path.strip()).expanduser()) if local else path.strip()
        if local and not any(c in path for c in "*?[") and not Path(path).is_file():
            raise UsageError(f"--data_files {part!r}: file not found: {path}")
        (by_split.setdefault(split.strip(), []) if split else plain).append(path)
    if by_split:
        if plain:  # files without a split name train, as load_dataset does with a plain list
            by_split.setdefault("train", []).extend(plain)
        return by_split
    return plain


def go_offline() -> None:
    """Offline mode for huggingface_hub and for datasets (which copies the flag at import)."""
    from datasets import config as ds_config

    from .models import go_offline as hub_offline

    hub_offline()
    ds_config.HF_HUB_OFFLINE = True


def offline_message(spec: str) -> str:
    """The one line for a hub dataset that cannot be fetched: why, and the ways to bring the data."""
    return (
        f"--dataset {spec}: no local file or folder of that name, and as a hub dataset id it cannot be fetched: "
        "the Hugging Face hub is unreachable (offline or HF_HUB_OFFLINE=1) and it is not in the local datasets "
        "cache; bring the data locally: a file or folder this app reads, "
        "--dataset imagefolder|json|csv with --data_dir/--data_files, or a save_to_disk dir made where the hub "
        f"is reachable (python -c \"import datasets; datasets.load_dataset('{spec}').save_to_disk('DIR')\") "
        "passed as --dataset DIR"
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def load_dataset_dict(args: Any, spec: str | None = None):
    """`datasets.load_dataset` for `spec` (default args.dataset) with args' builder flags -> DatasetDict;
    every failure is one UsageError / DataError line."""
    from .models import hub_reachable

    spec = spec or args.dataset
    data_dir = getattr(args, "data_dir", None)
    builder = spec in BUILDERS
    data_files = parse_data_files(getattr(args, "data_files", None), local=builder)
    config = getattr(args, "dataset_config", None)
    if builder:
        if not data_dir and not data_files:
            raise UsageError(
                f"--dataset {spec} needs --data_dir DIR or --data_files FILE (e.g. --dataset {spec} "
                f"--data_files train=train.{'jsonl' if spec == 'json' else spec} ...)"
                if spec != "imagefolder"
                else "--dataset imagefolder needs --data_dir DIR (DIR/<class>/<image>, or DIR/train/<class>/...)"
            )
        if data_dir and not Path(data_dir).expanduser().is_dir():
            raise UsageError(f"--data_dir {data_dir}: not a directory")
        data_dir = str(Path(data_dir).expanduser()) if data_dir else None
    elif not hub_reachable():
        # Cache only: a cached copy still loads, anything else fails now instead of retrying for a minute.
        go_offline()
    from datasets import DatasetDict, load_dataset
    from datasets.exceptions import DatasetGenerationError, DatasetNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}
    try:
        ds = load_dataset(spec, config, data_dir=data_dir, data_files=data_files)
    except (ConnectionError, DatasetNotFoundError) as e:
        if builder:
            raise UsageError(f"--dataset {spec}: {_first_line(e)}") from None
        if offline or isinstance(e, ConnectionError):
            raise UsageError(offline_message(spec)) from None
        raise UsageError(
            f"--dataset {spec}: no such dataset on the Hugging Face hub (or it is private/gated: log in with "
            f"`hf auth login`); check the id, or pass a local path. Cause: {_first_line(e)}"
        ) from None
    except DatasetGenerationError as e:
        cause = e.__cause__ or e.__context__ or e
        raise DataError(
            f"--dataset {spec}: cannot read {data_files or data_dir or spec}: {_first_line(cause)}; fix the file"
        ) from None
    except ValueError as e:  # an unknown --dataset_config, a bad split name in --data_files, pyarrow errors
        raise UsageError(f"--dataset {spec}: {_first_line(e)}") from None
    except (OSError, ImportError) as e:
        raise UsageError(f"--dataset {spec}: cannot load it ({type(e).__name__}: {_first_line(e)})") from None
    if not isinstance(ds, DatasetDict):  # pragma: no cover - load_dataset without split= returns a dict
        ds = DatasetDict({"train": ds})
    return ds


def load_splits(args: Any, spec: str | None = None) -> Splits:
    """Training and held-out splits of a load_dataset `--dataset` (`spec`, default args.dataset; see
    `wants_load_dataset`).

    The training split is --dataset_train_split (default train); the held-out split is --dataset_test_split,
    else the first of validation/val/valid/test/eval the dataset has, else None (the app splits off
    --val_fraction). A named split that is missing is a UsageError listing the splits there are.
    """
    spec = spec or args.dataset
    ds = load_dataset_dict(args, spec)
    source = spec
    if spec in BUILDERS:
        files = getattr(args, "data_files", None)
        source = f"{spec} ({getattr(args, 'data_dir', None) or ', '.join(map(str, files or []))})"
    train_name = getattr(args, "dataset_train_split", None) or "train"
    if train_name not in ds:
        raise UsageError(
            f"--dataset {spec}: no split {train_name!r} (splits: {', '.join(ds)}); "
            "pick one with --dataset_train_split"
        )
    eval_name = getattr(args, "dataset_test_split", None)
    if eval_name and eval_name not in ds:
        raise UsageError(
            f"--dataset {spec}: no split {eval_name!r} (splits: {', '.join(ds)}); "
            "pick one with --dataset_test_split, or drop it to split off --val_fraction"
        )
    if not eval_name:
        eval_name = next((n for n in EVAL_SPLITS if n in ds and n != train_name), None)
    logger.info(
        "data: %s via load_dataset: train split %r (%d rows), eval split %s",
        source,
        train_name,
        len(ds[train_name]),
        repr(eval_name) if eval_name else "none (split off --val_fraction)",
    )
    return Splits(ds[train_name], ds[eval_name] if eval_name else None, train_name, eval_name, source)


def require_columns(ds: Any, columns: list[str], where: str, flags: str) -> None:
    """Every name in `columns` is a column of `ds`, else a UsageError listing the columns and the flags to set."""
    for col in columns:
        if col not in ds.column_names:
            raise UsageError(
                f"{where}: no column {col!r} (columns: {', '.join(ds.column_names)}); set {flags}"
            )
