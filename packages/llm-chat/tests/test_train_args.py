"""Every llm-chat flag acts: each field the app declares is read by its code, TRL's SFTConfig flags that nothing
read are gone from the `train` parser (and exit 2 when passed), and runs trained with them still reload."""

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from llm_chat import config as C
from llm_chat.cli import main
from lora_shared.config import RESOLVED_CONFIG, load_yaml
from lora_shared.errors import UsageError

APP_GROUPS = (
    C.ChatModelArgs,
    C.ChatDataArgs,
    C.ChatLoraArgs,
    C.ChatTrainingArguments,
    C.ChatPredictArgs,
    C.ServeArgs,
)
# What ChatTrainingArguments used to inherit from trl.SFTConfig and never read (a sample; the rest are in
# C.RETIRED_SFT_FIELDS, which the next test checks against the parser too).
DEAD_SFT_FLAGS = ("--assistant_only_loss", "--padding_free", "--packing_strategy", "--dataset_text_field")


def _declared_here(cls) -> list[str]:
    """Fields a llm-chat group adds itself: not re-declared upstream fields (those only change a default)."""
    inherited = {
        f.name for base in cls.__mro__[1:] if dataclasses.is_dataclass(base) for f in dataclasses.fields(base)
    }
    return [f.name for f in dataclasses.fields(cls) if f.init and f.name not in inherited]


def _names_read(*roots: Path) -> set[str]:
    """Attribute names read (`x.name`) and getattr(x, "name") strings anywhere under `roots`."""
    names: set[str] = set()
    for root in roots:
        for path in root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Attribute):
                    names.add(node.attr)
                elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr":
                    if len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                        names.add(str(node.args[1].value))
    return names


def test_every_field_the_app_declares_is_read_by_its_code():
    import lora_shared

    pkg = Path(C.__file__).parent
    read = _names_read(pkg, Path(lora_shared.__file__).parent)
    declared = {f"{cls.__name__}.{name}": name for cls in APP_GROUPS for name in _declared_here(cls)}
    assert "ChatTrainingArguments.max_length" in declared  # the walk sees the SFT fields we kept
    unread = sorted(k for k, name in declared.items() if name not in read)
    assert not unread, f"flags that nothing reads (drop them or wire them): {unread}"


def test_the_sft_fields_kept_are_the_three_the_code_reads():
    # warmup_ratio: transformers 5 has no such field any more; ours sets warmup_steps (next test).
    declared = set(_declared_here(C.ChatTrainingArguments))
    assert declared == {"max_length", "packing", "chat_template_path", "warmup_ratio"}


def test_warmup_ratio_sets_the_warmup_transformers_5_reads(tmp_path):
    def warmup(**kw):
        return C.ChatTrainingArguments(output_dir=str(tmp_path), **kw).get_warmup_steps(200)

    assert warmup() == 10  # the default 0.05 of 200 steps
    assert warmup(warmup_ratio=0.0) == 0
    assert warmup(warmup_ratio=1.0) == 200
    assert warmup(warmup_ratio=0.1, warmup_steps=3) == 3  # an explicit step count wins


def test_train_parser_has_no_dead_sft_flags():
    from transformers import HfArgumentParser

    options = set(HfArgumentParser(C.CONFIG_TYPES)._option_string_actions)
    assert {"--max_length", "--packing", "--chat_template_path", "--learning_rate"} <= options
    retired = {f"--{name}" for name in C.RETIRED_SFT_FIELDS}
    assert set(DEAD_SFT_FLAGS) <= retired
    assert not options & retired, sorted(options & retired)
    assert not set(C.RETIRED_SFT_FIELDS) & {f.name for cls in C.CONFIG_TYPES for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("flag", DEAD_SFT_FLAGS)
def test_a_dead_sft_flag_exits_2_naming_it(flag, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["train", "--config", "tiny", flag, "true", "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err and not out.exists()


def test_config_module_does_not_import_trl():
    code = "import sys, llm_chat.config, llm_chat.train, llm_chat.evaluate; print('trl' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_old_runs_resolved_config_with_sft_keys_still_loads(tmp_path):
    """A run trained while the class was an SFTConfig lists every SFTConfig field in its resolved_config.yaml;
    reloading it (eval, chat, serve) drops them. Hand-written configs with them stay an error."""
    old = "max_length: 768\npacking: true\nassistant_only_loss: false\ndataset_text_field: text\n"
    old += "packing_strategy: bfd\npadding_free: false\npad_to_multiple_of: null\nloss_type: nll\n"
    run = tmp_path / "run"
    run.mkdir()
    (run / RESOLVED_CONFIG).write_text(old)
    assert load_yaml(run / RESOLVED_CONFIG, C.CONFIG_TYPES) == {"max_length": 768, "packing": True}
    (tmp_path / "mine.yaml").write_text(old)
    with pytest.raises(UsageError, match="assistant_only_loss"):
        load_yaml(tmp_path / "mine.yaml", C.CONFIG_TYPES)
