"""`<app> <command> --help`: own flags first, short, every flag behind --help-all, fast (no torch); typo hints."""

import subprocess
import sys
import textwrap

import pytest
from lora_shared import helptext
from lora_shared.cli import App, Command, run_app
from lora_shared.config import load_yaml, parse_config
from lora_shared.errors import UsageError

# A fake app whose config module is a real file, as an installed app's is, so the source reading is used.
CONFIG_SRC = textwrap.dedent(
    '''
    """Fake app config."""
    from dataclasses import dataclass, field

    from lora_shared.config import LoraArgs, ModelArgs, TrainExtras
    from transformers import TrainingArguments

    SIZES = [8, 16]


    @dataclass
    class FakeModelArgs(ModelArgs):
        """Base model of the fake app."""

        image_size: int = field(default=32, metadata={"help": "Input side, px."})


    @dataclass
    class FakeDataArgs:
        """Where fake data comes from."""

        dataset: str = field(default="demo", metadata={"help": "demo | a folder."})
        sizes: list[int] = field(default_factory=lambda: list(SIZES), metadata={"help": "Sizes."})
        shuffle: bool = field(default=True, metadata={"help": "Shuffle the data."})


    @dataclass
    class FakeTrainingArguments(TrainExtras, TrainingArguments):
        """TrainingArguments with learning_rate=5e-4."""

        learning_rate: float = field(default=5e-4, metadata={"help": "Peak learning rate."})
        fake_knob: int = field(default=3, metadata={"help": "A training field the app adds."})


    @dataclass
    class FakePredictArgs:
        """Options of predict."""

        top_k: int = field(default=3, metadata={"help": "Labels per input."})


    CONFIG_TYPES = (FakeModelArgs, FakeDataArgs, LoraArgs, FakeTrainingArguments)
    PREDICT_TYPES = (FakePredictArgs,)
    '''
)
CLI_SRC = textwrap.dedent(
    """
    from lora_shared.cli import App, Command

    APP = App(
        "fakeapp",
        "a fake app",
        config_package="fakeapp_pkg",
        config_types="fakeapp_pkg.config:CONFIG_TYPES",
        commands=[
            Command("train", "train it", "fakeapp_pkg.cmds:train", uses_adapter=False),
            Command("predict", "predict", "fakeapp_pkg.cmds:predict", inputs="X",
                    extra_types="fakeapp_pkg.config:PREDICT_TYPES"),
        ],
    )
    """
)
CMDS_SRC = "def train(cfg):\n    print('trained', cfg.train.fake_knob)\n    return 0\n"


@pytest.fixture(scope="module")
def fake_app(tmp_path_factory):
    root = tmp_path_factory.mktemp("fakeapp")
    pkg = root / "fakeapp_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "config.py").write_text(CONFIG_SRC)
    (pkg / "cli.py").write_text(CLI_SRC)
    (pkg / "cmds.py").write_text(CMDS_SRC)
    (pkg / "tiny.yaml").write_text("max_steps: 1\n")
    sys.path.insert(0, str(root))
    from fakeapp_pkg.cli import APP

    yield root, APP
    sys.path.remove(str(root))


def _run(root, code: str) -> subprocess.CompletedProcess:
    env_code = f"import sys; sys.path.insert(0, {str(root)!r}); " + code
    return subprocess.run([sys.executable, "-c", env_code], capture_output=True, text=True, timeout=600)


def _flag_line(lines: list[str], flag: str) -> int:
    return next(i for i, ln in enumerate(lines) if ln.lstrip().startswith(flag + " "))


# ------------------------------------------------------------------------------------------ the page
def test_help_lists_own_flags_first_then_common_training_flags(fake_app, capsys):
    _, app = fake_app
    assert run_app(app, ["train", "--help"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) < 200, len(lines)
    own = [_flag_line(lines, f) for f in ("--model_name_or_path", "--image_size", "--dataset", "--lora_r")]
    common = [_flag_line(lines, f) for f in ("--output_dir", "--learning_rate", "--max_steps", "--seed")]
    assert max(own) < min(common)
    # The app's own training field and lora_shared's TrainExtras are shown with the common ones.
    assert "--fake_knob" in out and "--resume" in out and "--overwrite_output_dir" in out
    # App defaults (not transformers'), and the YAML of the app is named.
    assert "Peak learning rate. (default: 0.0005)" in out and "bundled configs: tiny" in out
    # A deep TrainingArguments field is only behind --help-all, which the page points to.
    assert "--ddp_timeout" not in out
    assert "`fakeapp train --help-all` lists all" in lines[-1]


def test_help_all_lists_every_field(fake_app, capsys):
    _, app = fake_app
    assert run_app(app, ["train", "--help-all"]) == 0
    out = capsys.readouterr().out
    from fakeapp_pkg.config import CONFIG_TYPES
    from lora_shared.cli import dataclass_fields

    for cls in CONFIG_TYPES:
        for name in dataclass_fields(cls):
            assert f"--{name} " in out, name
    assert "--ddp_timeout INT" in out and "--help-all` lists" not in out


def test_command_options_come_first_and_defaults_read(fake_app, capsys):
    _, app = fake_app
    assert run_app(app, ["predict", "--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "usage: fakeapp predict [--config NAME|PATH] X... [--field value ...]"
    assert _flag_line(lines, "--top_k") < _flag_line(lines, "--model_name_or_path")
    text = " ".join(" ".join(lines).split())  # wrapping depends on the terminal width (none under xdist)
    # A default_factory through a module constant, and how to turn a default-True boolean off.
    assert "(default: 8 16)" in text and "(default: True; --no_shuffle turns it off)" in text
    # predict does not train: its LoRA and training flags are named in one paragraph, not explained.
    assert "LoRA and training flags (a run's resolved config sets them): --lora_r," in text
    assert "--fake_knob" in text and "--learning_rate FLOAT" not in text


def test_help_imports_no_torch(fake_app):
    """`--help` reads the fields from source: neither torch nor transformers (nor peft) is imported."""
    root, _ = fake_app
    code = (
        "from fakeapp_pkg.cli import APP; from lora_shared.cli import run_app;"
        "assert run_app(APP, ['train', '--help']) == 0;"
        "heavy = {'torch', 'transformers', 'peft'} & set(sys.modules); assert not heavy, heavy"
    )
    out = _run(root, code)
    assert out.returncode == 0, out.stderr
    assert "--learning_rate" in out.stdout


def test_source_reading_matches_the_imported_classes(fake_app):
    """The fast reading gives the fields, defaults and help that the real dataclasses have."""
    from fakeapp_pkg.config import CONFIG_TYPES, PREDICT_TYPES

    for ref, types in (
        ("fakeapp_pkg.config:CONFIG_TYPES", CONFIG_TYPES),
        ("fakeapp_pkg.config:PREDICT_TYPES", PREDICT_TYPES),
    ):
        mod, _, name = ref.partition(":")
        fast = [helptext._group_from_source(m, n) for m, n in helptext._tuple_classes(mod, name)]
        assert_same_groups(fast, helptext.groups_from_classes(types))


def assert_same_groups(fast, slow):
    """Same groups, field names in the same order, help, default and owner (transformers computes `optim`'s
    default from the torch version: the source cannot know it)."""
    assert [g.name for g in fast] == [g.name for g in slow]
    for a, b in zip(fast, slow, strict=True):
        assert a.doc == b.doc
        assert [f.name for f in a.fields] == [f.name for f in b.fields], a.name
        for fa, fb in zip(a.fields, b.fields, strict=True):
            assert (fa.help, fa.owner_module) == (fb.help, fb.owner_module), fa.name
            computed = fa.name == "optim" and fa.default == helptext.COMPUTED
            assert fa.default == fb.default or computed, (fa.name, fa.default, fb.default)


def test_a_class_the_source_reading_cannot_read_falls_back_to_importing_it(tmp_path, monkeypatch):
    (tmp_path / "computed_cfg.py").write_text(
        "from dataclasses import dataclass, field\n\n\n@dataclass\nclass A:\n"
        '    x: int = field(default=1, metadata={"help": "x" + "y"})\n\n\nTYPES = (A,)\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(helptext._Unreadable):
        helptext._group_from_source(*helptext._tuple_classes("computed_cfg", "TYPES")[0])
    (group,) = helptext.read_groups("computed_cfg:TYPES")
    assert group.fields[0].help == "xy"


# ------------------------------------------------------------------------------------------ typos
def test_a_misspelt_flag_names_the_closest_one(fake_app, capsys):
    _, app = fake_app
    assert run_app(app, ["train", "--learnig_rate", "1e-4"]) == 2
    captured = capsys.readouterr()
    errors = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert errors == [
        "fakeapp train: error: unknown flag --learnig_rate; did you mean --learning_rate? (`--help` lists the flags)"
    ]
    assert "trained" not in captured.out


def test_a_misspelt_flag_fails_before_torch_loads(fake_app):
    root, _ = fake_app
    code = (
        "from fakeapp_pkg.cli import APP; from lora_shared.cli import run_app;"
        "rc = run_app(APP, ['train', '--fake_knb', '2', '--output_dir', '/nonexistent']);"
        "heavy = {'torch', 'transformers'} & set(sys.modules); assert not heavy, heavy; sys.exit(rc)"
    )
    out = _run(root, code)
    assert out.returncode == 2, out.stderr
    assert "unknown flag --fake_knb; did you mean --fake_knob?" in out.stderr


def test_flags_argparse_accepts_are_not_called_unknown(fake_app, tmp_path, capsys):
    _, app = fake_app
    argv = ["train", "--fake-knob=5", "--no_shuffle", "--max_step", "1", "--output_dir", str(tmp_path)]
    assert run_app(app, argv) == 0
    assert "trained 5" in capsys.readouterr().out


def test_find_unknown_flags_and_message():
    known = {"learning_rate", "lora_r", "seed"}
    argv = ["--learning-rate", "1", "--lora", "2", "--no_seed", "--sed=3", "img.png", "--zzz"]
    bad = helptext.find_unknown_flags(argv, known)
    assert bad == ["--sed=3", "--zzz"]
    assert helptext.unknown_flag_message(bad, known) == (
        "unknown flags --sed; did you mean --seed?, --zzz (`--help` lists the flags)"
    )


def test_parse_config_suggests_too(fake_app):
    """The parser's own check (reached when the fast check is skipped, e.g. by tests) gives the same hint."""
    from fakeapp_pkg.config import CONFIG_TYPES

    with pytest.raises(UsageError, match=r"unknown flag --lora_rr; did you mean --lora_r\?"):
        parse_config(CONFIG_TYPES, ["--lora_rr", "4"])


def test_a_misspelt_yaml_key_names_the_closest_one(fake_app, tmp_path):
    from fakeapp_pkg.config import CONFIG_TYPES

    path = tmp_path / "c.yaml"
    path.write_text("learnig_rate: 0.1\n")
    with pytest.raises(UsageError, match=r"'learnig_rate' \(did you mean 'learning_rate'\?\)"):
        load_yaml(path, CONFIG_TYPES)


def test_a_misspelt_command_names_the_closest_one(fake_app, capsys):
    _, app = fake_app
    assert run_app(app, ["trian"]) == 2
    assert (
        "unknown command 'trian'; did you mean train? choose from train, predict" in capsys.readouterr().err
    )


def test_top_help_points_to_help_all(fake_app, capsys):
    _, app = fake_app
    assert run_app(app, ["--help"]) == 0
    assert "`fakeapp <command> --help-all`" in capsys.readouterr().out


def test_in_memory_app_still_gets_help(capsys):
    """Config types with no source file (made at runtime) are read from the classes instead."""
    import types
    from dataclasses import dataclass, field

    mod = types.ModuleType("help_mem_cfg")

    @dataclass
    class Opts:
        knob: int = field(default=2, metadata={"help": "A knob."})

    mod.TYPES = (Opts,)
    sys.modules["help_mem_cfg"] = mod
    app = App(
        "mem", "in memory", None, "help_mem_cfg:TYPES", [Command("go", "go", "x:y", uses_adapter=False)]
    )
    try:
        assert run_app(app, ["go", "--help"]) == 0
    finally:
        del sys.modules["help_mem_cfg"]
    assert "--knob INT" in capsys.readouterr().out
