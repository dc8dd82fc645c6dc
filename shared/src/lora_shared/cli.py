"""One CLI grammar for every app: `<app> train|eval|predict|export --config NAME|PATH [--field value ...]`.

An app declares an `App` (its commands as "module:function" strings, imported only when run, so
`<app> --help` never imports torch; `<app> <command> --help` reads the fields from source, see
lora_shared.helptext) and calls `run_app(APP, argv)` from its `cli.main`.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError, storage_error
from .runs import find_adapter_dir  # noqa: F401  (apps call lora_shared.cli.find_adapter_dir)

logger = logging.getLogger("lora_shared")


@dataclass
class Command:
    """A subcommand: `target` is "module:function", called as function(cfg) or function(cfg, inputs)."""

    name: str
    help: str
    target: str
    inputs: str | None = None  # metavar of positional inputs (predict), None if it takes none
    extra_types: str | None = None  # "module:TUPLE" of extra dataclasses (e.g. predict options)
    uses_adapter: bool = True  # reads <adapter_dir>/resolved_config.yaml as the first YAML layer
    default_config: str | None = None  # bundled config used when no --config is given


@dataclass
class App:
    """What an app contributes to the shared CLI."""

    prog: str
    description: str
    config_package: str
    config_types: str  # "module:CONFIG_TYPES" -> (ModelArgs, DataArgs, LoraArgs, TrainingArguments)
    commands: list[Command]
    default_command: str | None = None  # run when no subcommand is given (llm-chat -> chat)
    epilog: str = ""


@dataclass
class Config:
    """The parsed config groups of one invocation."""

    model: Any
    data: Any
    lora: Any
    train: Any
    extra: tuple = ()
    source: dict = field(default_factory=dict)  # which files were layered, for the log

    def groups(self) -> tuple:
        return (self.model, self.data, self.lora, self.train, *self.extra)

    @property
    def infer(self):
        """The first extra group (predict/eval options), or None."""
        return self.extra[0] if self.extra else None


def _load(ref: str):
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _top_help(app: App) -> str:
    from .config import bundled_configs

    width = max(len(c.name) for c in app.commands)
    lines = [
        f"usage: {app.prog} <command> [--config NAME|PATH] [--field value ...]",
        "",
        app.description,
        "",
        "commands:",
    ]
    lines += [f"  {c.name.ljust(width)}  {c.help}" for c in app.commands]
    lines += [
        "",
        f"bundled configs: {', '.join(bundled_configs(app.config_package)) or 'none'}",
        "",
        f"`{app.prog} <command> --help`: the command's flags and the common training ones "
        "(defaults < --config YAML < flags);",
        f"`{app.prog} <command> --help-all`: every flag, all of TrainingArguments included.",
    ]
    if app.epilog:
        lines += ["", app.epilog]
    return "\n".join(lines)


def _pop_flag(argv: list[str], flag: str) -> tuple[str | None, list[str]]:
    """Remove `--flag VALUE` / `--flag=VALUE` from argv; return (VALUE, rest)."""
    out, value, i = [], None, 0
    while i < len(argv):
        tok = argv[i]
        if tok == flag:
            if i + 1 >= len(argv):
                raise UsageError(f"{flag} needs a value")
            value = argv[i + 1]
            i += 2
            continue
        if tok.startswith(flag + "="):
            value = tok.split("=", 1)[1]
        else:
            out.append(tok)
        i += 1
    return value, out


def _peek_flag(argv: list[str], flag: str) -> str | None:
    value, _ = _pop_flag(list(argv), flag)
    return value


def build_config(app: App, command: Command, argv: list[str]) -> tuple[Config, list[str]]:
    """Resolve defaults < adapter's resolved_config.yaml < --config YAML < CLI flags for one command."""
    from .config import (
        RESOLVED_CONFIG,
        find_config,
        load_yaml,
        parse_config,
        split_positionals,
        validate_args,
    )

    config_types = tuple(_load(app.config_types))
    extra = tuple(_load(command.extra_types)) if command.extra_types else ()
    types = config_types + extra
    config_name, argv = _pop_flag(argv, "--config")
    layers, source = [], {}
    adapter = _peek_flag(argv, "--adapter_dir") if command.uses_adapter else None
    if adapter:
        from .runs import check_adapter_dir

        # A corrupt or hand-broken adapter is named now, before any data is read or base model built.
        check_adapter_dir(find_adapter_dir(adapter))
        resolved = find_adapter_dir(adapter).parent / RESOLVED_CONFIG
        resolved = resolved if resolved.is_file() else find_adapter_dir(adapter) / RESOLVED_CONFIG
        if resolved.is_file():
            layer = load_yaml(resolved, types)
            # Eval/predict outputs go next to the adapter unless --output_dir says otherwise.
            layer["output_dir"] = str(Path(adapter).expanduser())
            layer.pop("resume_from_checkpoint", None)
            layers.append(layer)
            source["adapter_config"] = str(resolved)
    config_name = config_name or (None if adapter else command.default_config)
    if config_name:
        path = find_config(config_name, app.config_package)
        layers.append(load_yaml(path, types))
        source["config"] = str(path)
    if command.inputs:
        flags, inputs = split_positionals(argv, types)
    else:
        flags, inputs = argv, []
    groups = parse_config(types, flags, yaml_layers=layers)
    validate_args(groups, command.name)
    model, data, lora, train = groups[:4]
    return Config(model, data, lora, train, tuple(groups[4:]), source), inputs


def setup_logging() -> None:
    """INFO logs for our code, warnings for libraries; one format everywhere."""
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        level=logging.INFO,
        stream=sys.stderr,
        force=True,
    )
    import warnings

    warnings.filterwarnings(
        "ignore", category=FutureWarning
    )  # library deprecation chatter, not the user's concern
    warnings.filterwarnings("ignore", message=".*pin_memory.*no accelerator.*")
    for noisy in ("httpx", "urllib3", "filelock", "PIL", "matplotlib", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        import transformers

        transformers.utils.logging.set_verbosity_warning()
    except ImportError:  # pragma: no cover
        pass


def cpu_distributed_env() -> None:
    """Under torchrun / `accelerate launch --multi_gpu` on a machine without CUDA, make the Trainer use CPU DDP.

    Without this, accelerate sees LOCAL_RANK but no GPU and silently falls back to one process per rank,
    each training alone on the whole data set. ACCELERATE_USE_CPU makes it pick MULTI_CPU (gloo).
    Must run before TrainingArguments is built; a value already in the environment wins.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch

    if torch.cuda.is_available():
        return
    os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    for engine in ("FSDP", "DEEPSPEED"):
        if os.environ.get(f"ACCELERATE_USE_{engine}", "").lower() in ("1", "true"):
            # accelerate 1.15 engages FSDP/DeepSpeed only on accelerators (accelerate_configs/README.md)
            logger.warning(
                "%s config on a machine without CUDA: accelerate trains it as plain DDP (every process holds "
                "the whole model); FSDP/DeepSpeed need GPUs",
                engine,
            )


def command_groups(app: App, command: Command) -> tuple[list, list]:
    """(config groups, the command's extra groups) as field lists read from source: no torch import."""
    from .helptext import read_groups

    extra = read_groups(command.extra_types) if command.extra_types else []
    return read_groups(app.config_types), extra


def _command_help(app: App, command: Command, show_all: bool = False) -> str:
    from .config import bundled_configs
    from .helptext import render_command_help

    groups, extra = command_groups(app, command)
    return render_command_help(
        app.prog,
        command.name,
        command.help,
        command.inputs,
        groups,
        extra,
        bundled=bundled_configs(app.config_package),
        own_packages={app.config_types.split(".")[0], __name__.split(".")[0]},
        trains=command.name == "train",
        show_all=show_all,
    )


def check_flag_names(app: App, command: Command, argv: list[str]) -> None:
    """A misspelt flag is one line with the closest name, before torch/transformers load (seconds, not a minute)."""
    from .helptext import find_unknown_flags, flag_names, unknown_flag_message

    try:
        groups, extra = command_groups(app, command)
    except Exception:  # a source the help reader trips on: parse_config names unknown flags too, just later
        return
    known = flag_names(groups + extra) | {"config"}
    bad = find_unknown_flags(argv, known)
    if bad:
        raise UsageError(unknown_flag_message(bad, known))


def run_app(app: App, argv: list[str] | None = None) -> int:
    """Parse argv, resolve the config and run the command. Returns the exit code (2 for usage/data errors)."""
    try:
        return _run_app(app, argv)
    except BrokenPipeError:
        # `app predict ... | head`: the reader left; exit quietly like other Unix tools (Python docs recipe).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _run_app(app: App, argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {c.name: c for c in app.commands}
    if not argv or argv[0] in ("-h", "--help", "--help-all"):
        if not argv and app.default_command:
            argv = [app.default_command]
        else:
            print(_top_help(app))
            return 0
    if argv[0] in ("-V", "--version"):
        from importlib.metadata import version

        print(f"{app.prog} {version(app.prog)}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in commands:
        if name.startswith("-") and app.default_command:
            name, rest = app.default_command, argv
        else:
            import difflib

            close = difflib.get_close_matches(name, list(commands), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            print(
                f"{app.prog}: error: unknown command {name!r}; {hint}choose from {', '.join(commands)}",
                file=sys.stderr,
            )
            return 2
    command = commands[name]
    if "-h" in rest or "--help" in rest or "--help-all" in rest:
        print(_command_help(app, command, show_all="--help-all" in rest))
        return 0
    try:
        check_flag_names(app, command, rest)
    except UsageError as e:
        print(f"{app.prog} {name}: error: {e}", file=sys.stderr)
        return e.exit_code
    setup_logging()
    cpu_distributed_env()
    cfg, finished_before = None, {}
    try:
        cfg, inputs = build_config(app, command, rest)
        for k, v in cfg.source.items():
            logger.info("%s: %s", k.replace("_", " "), v)
        finished_before = _finished_markers(cfg) if name == "train" else {}
        fn = _load(command.target)
        result = fn(cfg, inputs) if command.inputs else fn(cfg)
    except UsageError as e:
        print(f"{app.prog} {name}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{app.prog} {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # TrainingInterrupted lives in callbacks (imports transformers): match by name
        if type(e).__name__ == "TrainingInterrupted":
            print(f"{app.prog} {name}: {e}", file=sys.stderr)
            return 130
        storage = storage_error(e)
        if storage is None:
            raise
        if name == "train" and cfg is not None:
            _set_aside_unfinished(cfg, finished_before)
        print(f"{app.prog} {name}: error: {_storage_message(storage, cfg, name)}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


# A run dir holding these looks finished (eval/predict/export accept it, the corpus checks for them).
_FINISHED_MARKERS = ("adapter_model.safetensors", "metrics.json")


def _finished_markers(cfg: Config) -> dict[str, tuple[int, int] | None]:
    """(inode, mtime) of the run dir's "finished" files before the command, to tell which ones it wrote."""
    out = Path(getattr(cfg.train, "output_dir", None) or ".")
    stamps: dict[str, tuple[int, int] | None] = {}
    for marker in _FINISHED_MARKERS:
        try:
            st = (out / marker).stat()
            stamps[marker] = (st.st_ino, st.st_mtime_ns)
        except OSError:
            stamps[marker] = None
    return stamps


def _set_aside_unfinished(cfg: Config, before: dict[str, tuple[int, int] | None]) -> None:
    """After a failed write, rename the "finished" files this run wrote to `<name>.unfinished`.

    The run did not complete (e.g. the disk filled after the adapter landed but before metrics.json), so
    the dir must not pass for a finished run; renaming needs no free space and keeps the weights.
    """
    out = Path(getattr(cfg.train, "output_dir", None) or ".")
    for marker, stamp in _finished_markers(cfg).items():
        if stamp is not None and stamp != before.get(marker):
            target = out / f"{marker}.unfinished"
            try:
                os.replace(out / marker, target)
                logger.warning("the run did not finish: set %s aside as %s", marker, target)
            except OSError:  # pragma: no cover - a read-only dir: nothing we can do there
                pass


def _storage_message(storage: tuple[str, str | None], cfg: Config | None, command: str) -> str:
    """`<path>: <cause>; <fix>` for a failed write: free space, or write to another --output_dir."""
    cause, filename = storage
    flag = "--export_dir" if command == "export" else "--output_dir"
    out = getattr(cfg.train, "output_dir", None) if cfg is not None else None
    if command == "export" and cfg is not None:  # export writes to --export_dir (default: inside the run)
        out = next((g.export_dir for g in cfg.extra if getattr(g, "export_dir", None)), out)
    path = filename or out or "the output directory"
    if cause == "permission denied" and filename and out and not _is_under(filename, out):
        return f"{path}: {cause}; fix its permissions"  # an input or cache file, not our output
    if cause in ("read-only file system", "permission denied"):
        return f"{path}: {cause}; pick another {flag} (or fix its permissions)"
    return f"{path}: {cause}; free space there or pick another {flag}"


def _is_under(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
    except (ValueError, OSError):
        return False
    return True


def dataclass_fields(cls) -> list[str]:
    """Field names of a config dataclass (used by tests and docs)."""
    return [f.name for f in dataclasses.fields(cls)]
