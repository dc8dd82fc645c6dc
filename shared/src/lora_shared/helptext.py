"""`<app> <command> --help` in a second, without importing torch: the flags read from the config classes' source.

The real parser needs the config classes, and an app's TrainingArguments subclass imports
transformers.training_args, which imports torch and peft (20-100 s on a loaded 2-core box). A help page only
needs each field's name, type, default and help string, and those are literals in the dataclass source. So we
read them with `ast` from the files (found with importlib.util.find_spec, which runs no package code), and
import the classes only when a source has a shape we do not read (a class made at runtime, a computed help).
`shared/tests/test_help.py` checks that both readings give the same fields for every app.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import enum
import functools
import importlib
import importlib.util
import shutil
import sys
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What `--help` shows of the ~130 TrainingArguments fields (each only if the app's class has it); the fields
# an app or lora_shared adds or re-defaults come after them, and `--help-all` lists the rest.
COMMON_TRAINING = (
    "output_dir",
    "overwrite_output_dir",
    "resume",
    "resume_from_checkpoint",
    "num_train_epochs",
    "max_steps",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "warmup_ratio",
    "weight_decay",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
    "eval_strategy",
    "eval_steps",
    "save_strategy",
    "save_steps",
    "save_total_limit",
    "logging_steps",
    "seed",
    "bf16",
    "fp16",
    "use_cpu",
    "report_to",
)
# One line in place of transformers' paragraph where that is long (`--help-all` shows transformers' own text).
SHORT_HELP = {
    "resume_from_checkpoint": "A checkpoint dir to continue from, or `auto` for the newest complete one.",
    "max_steps": "Optimizer steps to train; > 0 overrides --num_train_epochs, -1 trains for the epochs.",
    "lr_scheduler_type": "Learning-rate schedule: linear | cosine | constant | constant_with_warmup | ...",
    "warmup_steps": "Linear warm-up steps; a value in [0, 1) is a fraction of the total steps.",
    "weight_decay": "AdamW weight decay (biases and LayerNorm excluded).",
    "gradient_accumulation_steps": "Batches per optimizer step (effective batch = batch size x this x devices).",
    "eval_steps": "With --eval_strategy steps: evaluate every N steps (default: --logging_steps).",
    "save_steps": "With --save_strategy steps: checkpoint every N steps.",
    "seed": "Random seed (data order, initialisation, dropout).",
    "bf16": "bfloat16 mixed precision (CPU: only with AVX512-BF16/AMX, else fp32 is used).",
    "fp16": "float16 mixed precision (GPU).",
    "use_cpu": "Run on the CPU even when an accelerator is present.",
    "report_to": "Trackers to log to: none | tensorboard | wandb | mlflow | ... | all.",
}
ROLES = ("model", "data", "LoRA", "training")  # the four config groups, in CONFIG_TYPES order


@dataclass(frozen=True)
class FieldDoc:
    """One flag: `--name`, its type and default as text, its help line, and the class that last defines it."""

    name: str
    type: str
    default: str | None  # as typed on the command line; None: nothing to show; REQUIRED / COMPUTED
    help: str
    owner_module: str


@dataclass(frozen=True)
class GroupDoc:
    """One config dataclass: its name, the first paragraph of its docstring, its init fields in order."""

    name: str
    doc: str
    fields: tuple[FieldDoc, ...]


REQUIRED = "<required>"
COMPUTED = "<computed>"  # a default the source computes (not shown; the source reading cannot know it)


class _Unreadable(Exception):
    """A source shape the ast reader does not handle: import the classes instead."""


# ----------------------------------------------------------------------------- reading fields from source
def read_groups(ref: str) -> list[GroupDoc]:
    """The config groups of "module:TUPLE" (e.g. "vision_cls.config:CONFIG_TYPES"), read without importing them."""
    module, _, name = ref.partition(":")
    try:
        return [_group_from_source(mod, node) for mod, node in _tuple_classes(module, name)]
    except (_Unreadable, OSError, SyntaxError, ValueError, ImportError):
        return groups_from_classes(getattr(importlib.import_module(module), name))


def _module_file(module: str) -> Path:
    """The .py file of `module`, found without running any package code (find_spec of the top package only)."""
    loaded = sys.modules.get(module)
    if loaded is not None:
        file = getattr(loaded, "__file__", None)
        if not file or not file.endswith(".py"):
            raise _Unreadable(module)
        return Path(file)
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None or spec.origin is None:
        raise _Unreadable(module)
    path = Path(spec.origin)
    if not rest:
        return path
    base = Path(*([path.parent, *rest]))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    raise _Unreadable(module)


@functools.cache
def _parse(module: str) -> ast.Module:
    path = _module_file(module)
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The module an `from X import ...` in `module` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module.split(".")
    is_package = _module_file(module).name == "__init__.py"
    keep = len(package) - node.level + (1 if is_package else 0)
    if keep <= 0:
        raise _Unreadable(module)
    return ".".join(package[:keep] + ([node.module] if node.module else []))


def _resolve(module: str, name: str, depth: int = 0) -> tuple[str, ast.ClassDef]:
    """The class `name` as seen in `module`: defined there, or followed through its `from ... import`s."""
    if depth > 8:
        raise _Unreadable(f"{module}.{name}")
    tree = _parse(module)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return module, node
    # Lazy packages (transformers, trl) import their names under `if TYPE_CHECKING:`; walk every level.
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return _resolve(_absolute(module, node), alias.name, depth + 1)
    raise _Unreadable(f"{module}.{name}")


def _tuple_classes(module: str, name: str) -> list[tuple[str, ast.ClassDef]]:
    """The classes of a module-level `NAME = (A, B, ...)`."""
    for node in _parse(module).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            if not isinstance(node.value, (ast.Tuple, ast.List)):
                raise _Unreadable(f"{module}.{name}")
            out = []
            for elt in node.value.elts:
                if not isinstance(elt, ast.Name):
                    raise _Unreadable(f"{module}.{name}")
                out.append(_resolve(module, elt.id))
            return out
    raise _Unreadable(f"{module}.{name}")


def _group_from_source(module: str, node: ast.ClassDef) -> GroupDoc:
    fields = _class_fields(module, node)
    return GroupDoc(node.name, _first_line(ast.get_docstring(node)), tuple(f for f in fields.values() if f))


_REMOVED = None  # a field re-declared with init=False: not a flag


def _class_fields(module: str, node: ast.ClassDef) -> dict[str, FieldDoc | None]:
    """Init fields of a dataclass in dataclasses' order: bases first (last base first, as the MRO goes)."""
    fields: dict[str, FieldDoc | None] = {}
    for base in reversed(node.bases):
        if isinstance(base, ast.Name):
            try:
                base_module, base_node = _resolve(module, base.id)
            except _Unreadable:
                if base.id in ("object", "Generic"):
                    continue
                raise
            fields.update(_class_fields(base_module, base_node))
        else:
            raise _Unreadable(f"{module}.{node.name}: base {ast.unparse(base)}")
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            ann = ast.unparse(stmt.annotation)
            if "ClassVar" in ann or "InitVar" in ann:
                continue
            fields[stmt.target.id] = _field_from_source(stmt, ann, module)
    return fields


def _field_from_source(stmt: ast.AnnAssign, ann: str, module: str) -> FieldDoc | None:
    name = stmt.target.id  # type: ignore[union-attr]
    value, default, help_ = stmt.value, REQUIRED, ""
    if isinstance(value, ast.Call) and ast.unparse(value.func) in ("field", "dataclasses.field"):
        kw = {k.arg: k.value for k in value.keywords}
        if "init" in kw and not _literal(kw["init"]):
            return _REMOVED
        if "default" in kw:
            default = _default_text(kw["default"], module)
        elif "default_factory" in kw:
            default = _factory_text(kw["default_factory"], module)
        meta = kw.get("metadata")
        if meta is not None:
            if not isinstance(meta, ast.Dict):
                raise _Unreadable(f"{module}: {name} metadata")
            for k, v in zip(meta.keys, meta.values, strict=True):
                if isinstance(k, ast.Constant) and k.value == "help":
                    help_ = _literal(v)
    elif value is not None:
        default = _default_text(value, module)
    return FieldDoc(name, ann, default, _one_line(help_), module)


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError):
        raise _Unreadable(ast.unparse(node)) from None


def _default_text(node: ast.AST, module: str) -> str | None:
    try:
        return shown_default(_value(node, module))
    except (ValueError, TypeError, SyntaxError):
        return COMPUTED  # made when the class is (transformers' `optim`): only importing it tells


def _factory_text(node: ast.AST, module: str) -> str | None:
    if isinstance(node, ast.Name) and node.id in ("list", "dict", "set", "tuple"):
        return shown_default({"list": [], "dict": {}, "set": set(), "tuple": ()}[node.id])
    if isinstance(node, ast.Lambda):
        return _default_text(node.body, module)
    return COMPUTED


def _value(node: ast.AST, module: str) -> Any:
    """A literal, also through a module-level constant (`ALL = [...]`) and list()/tuple() of one."""
    if isinstance(node, ast.Name) and node.id in _constants(module):
        return _constants(module)[node.id]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("list", "tuple")
        and len(node.args) == 1
        and not node.keywords
    ):
        return list(_value(node.args[0], module))
    return ast.literal_eval(node)


@functools.cache
def _constants(module: str) -> dict[str, Any]:
    out = {}
    for node in _parse(module).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError):
                continue
    return out


# ------------------------------------------------------------------------ the same, from imported classes
def groups_from_classes(config_types: Iterable[type]) -> list[GroupDoc]:
    """The config groups of imported dataclasses (the slow, always-right reading)."""
    groups = []
    for cls in config_types:
        fields = []
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            if f.default is not dataclasses.MISSING:
                default = shown_default(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                default = shown_default(f.default_factory())
            else:
                default = REQUIRED
            owner = next((k for k in cls.__mro__ if f.name in k.__dict__.get("__annotations__", {})), cls)
            type_text = f.type if isinstance(f.type, str) else _type_text(f.type)
            help_ = _one_line(str(f.metadata.get("help", "")))
            fields.append(FieldDoc(f.name, type_text, default, help_, owner.__module__))
        groups.append(GroupDoc(cls.__name__, _first_line(cls.__doc__), tuple(fields)))
    return groups


def _type_text(tp: Any) -> str:
    return getattr(tp, "__name__", None) if isinstance(tp, type) else str(tp).replace("typing.", "")


def shown_default(value: Any) -> str | None:
    """A default as a user would type it on the command line; None for no default worth showing."""
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, set)):
        return " ".join(map(str, value)) if value else "[]"
    if isinstance(value, dict):
        return str(value) if value else "{}"
    return str(value)


def _first_line(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ----------------------------------------------------------------------------------------------- render
def _metavar(field: FieldDoc) -> str:
    """INT / FLOAT / STR / STR [STR ...] from the annotation text; booleans take an optional true/false."""
    parts = [p.strip() for p in field.type.replace("Optional[", "").rstrip("]").split("|")]
    parts = [p for p in parts if p not in ("None", "NoneType")] or ["str"]
    first = parts[0]
    if first == "bool":
        return "[true|false]"
    if first.startswith(("list", "List", "tuple")):
        return "X [X ...]"
    return {"int": "INT", "float": "FLOAT"}.get(first, "STR")


def _flag_lines(field: FieldDoc, width: int, short: bool = False) -> list[str]:
    head = f"  --{field.name} {_metavar(field)}"
    library = field.owner_module.split(".")[0] in ("transformers", "trl")
    text = SHORT_HELP.get(field.name, field.help) if short and library else field.help
    if field.default == REQUIRED:
        text += " (required)"
    elif field.default not in (None, COMPUTED):
        off = f"; --no_{field.name} turns it off" if field.default == "True" and "bool" in field.type else ""
        text += f" (default: {field.default}{off})"
    col = 32
    body = _wrap(text, max(width - col, 30))
    if len(head) < col - 1:
        first, rest = [head.ljust(col) + body[0]], body[1:]
    else:
        first, rest = [head], body
    return first + [" " * col + line for line in rest]


def _wrap(text: str, width: int) -> list[str]:
    # Paths and flag names stay whole (outputs/vision-cls, --per_device_train_batch_size).
    return textwrap.wrap(text.strip(), width, break_on_hyphens=False, break_long_words=False) or [""]


def _width() -> int:
    return max(min(shutil.get_terminal_size((100, 24)).columns, 120), 80)


def render_command_help(
    prog: str,
    command: str,
    summary: str,
    inputs: str | None,
    config_groups: list[GroupDoc],
    extra_groups: list[GroupDoc],
    *,
    bundled: list[str],
    own_packages: Iterable[str],
    trains: bool = True,
    show_all: bool = False,
) -> str:
    """The help page: the command's own options, model, data, LoRA, then the common training flags.

    `own_packages` are the top-level packages whose training fields count as the app's (added or re-defaulted
    by it or by lora_shared): they are listed with the common ones. A command that does not train
    (`trains=False`: eval, predict, serve, ...) names its LoRA and training flags in a short list, as a run's
    resolved config sets them. `show_all` lists every field in full.
    """
    width = _width()
    own = set(own_packages)
    usage_inputs = f" {inputs}..." if inputs else ""
    lines = [
        f"usage: {prog} {command} [--config NAME|PATH]{usage_inputs} [--field value ...]",
        "",
        summary,
        "",
    ]
    lines += _wrap(
        "Every field below is a flag and a --config YAML key (defaults < --config YAML < flags); "
        "a boolean flag alone means true.",
        width,
    )
    named = [("options", g) for g in extra_groups]
    named += [(ROLES[i] if i < len(ROLES) else "options", g) for i, g in enumerate(config_groups)]
    total = sum(len(g.fields) for _, g in named) + 1  # + --config
    condensed: list[FieldDoc] = []
    hidden = 0
    for role, group in named:
        fields = list(group.fields)
        rest: list[FieldDoc] = []
        if role == "training":
            by_name = {f.name: f for f in fields}
            shown = [by_name[n] for n in COMMON_TRAINING if n in by_name]
            shown += [f for f in fields if f not in shown and f.owner_module.split(".")[0] in own]
            rest = [f for f in fields if f not in shown]
            fields = shown
        if not show_all and not trains and role in ("LoRA", "training"):
            condensed += fields
            hidden += len(rest)
            continue
        if rest and not show_all:  # its docstring lists the changed defaults, which the flags show
            title, doc = f"{role} ({group.name}): the common flags, with this app's defaults", ""
        else:
            title, doc = f"{role} ({group.name})", group.doc
        lines += ["", *_wrap(f"{title}: {doc}" if doc else f"{title}:", width)]
        for f in fields:
            lines += _flag_lines(f, width, short=not show_all)
        if rest and show_all:
            lines += ["", f"more training flags ({group.name}, as transformers defines them):"]
            for f in rest:
                lines += _flag_lines(f, width)
        hidden += 0 if show_all else len(rest)
    if condensed:
        names = ", ".join(f"--{f.name}" for f in condensed)
        lines += ["", *_wrap(f"LoRA and training flags (a run's resolved config sets them): {names}.", width)]
    lines += ["", f"bundled configs: {', '.join(bundled) or 'none'}"]
    if hidden or condensed:
        lines.append(f"`{prog} {command} --help-all` lists all {total} flags with their help.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- unknown flags
def flag_names(groups: Iterable[GroupDoc]) -> set[str]:
    """Every field name of these groups (the flags are `--<name>`)."""
    return {f.name for g in groups for f in g.fields}


def unknown_flag_message(bad: list[str], known: Iterable[str]) -> str:
    """`unknown flag --learnig_rate; did you mean --learning_rate?` for each flag not in `known` (bare names)."""
    names = sorted(set(known))
    parts = []
    for flag in bad:
        name = flag.split("=", 1)[0].lstrip("-").replace("-", "_")
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        parts.append(
            f"{flag.split('=', 1)[0]}; did you mean --{close[0]}?" if close else flag.split("=", 1)[0]
        )
    label = "unknown flag" if len(bad) == 1 else "unknown flags"
    return f"{label} {', '.join(parts)} (`--help` lists the flags)"


def find_unknown_flags(argv: list[str], known: Iterable[str]) -> list[str]:
    """The `--flag` tokens of argv that name no field, as argparse would see them.

    argparse accepts `--no_<bool>`, dashes for underscores and any unambiguous prefix; those pass here, so only
    what the parser would refuse is reported (before any model library is imported).
    """
    names = set(known)
    options = names | {f"no_{n}" for n in names}
    bad = []
    for tok in argv:
        if tok == "--":  # argparse reads everything after it as positional inputs
            break
        if not tok.startswith("--"):
            continue
        name = tok[2:].split("=", 1)[0].replace("-", "_")
        if name in options or any(o.startswith(name) for o in options):
            continue
        bad.append(tok)
    return bad
