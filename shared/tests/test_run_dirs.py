"""Output and export dirs never lose a user's files: `prepare_output_dir`, staged publishing, export checks."""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from lora_shared.cli import find_adapter_dir
from lora_shared.config import LoraArgs, ModelArgs
from lora_shared.errors import UsageError
from lora_shared.peft import apply_lora
from lora_shared.runs import (
    BASE_MODEL_DIR,
    EXPORT_MANIFEST,
    STAGE_DIR,
    check_export_dir,
    export_target,
    export_writer,
    prepare_output_dir,
    run_file,
    save_adapter,
    save_run_config,
    stage_dir,
    write_metrics,
)
from lora_shared.testing import tiny_mlp as MLP


@dataclass
class Args:
    """The TrainingArguments fields prepare_output_dir reads."""

    output_dir: str
    resume: bool = False
    resume_from_checkpoint: str | None = None
    overwrite_output_dir: bool = False


def _files(root: Path) -> dict[str, bytes]:
    """Every published file of a run dir (the hidden stage excluded) with its bytes."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and STAGE_DIR not in p.relative_to(root).parts
    }


def _stage_run(out: Path, tag: str, **flags) -> Args:
    """What an app's train() does up to its save: prepare, stage a base + config, log a line."""
    args = Args(str(out), **flags)
    prepare_output_dir(args)
    base = stage_dir(out) / BASE_MODEL_DIR
    base.mkdir(parents=True, exist_ok=True)
    (base / "model.safetensors").write_text(f"base {tag}")
    model_args = ModelArgs(model_name_or_path=str(base.resolve()), adapter_dir=tag)
    save_run_config([model_args, args], out)
    with open(run_file(out, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"run": tag}) + "\n")
    return args


def _adapter(value: float):
    """An adapter whose LoRA weights all equal `value`, so runs are told apart by their bytes."""
    model = apply_lora(MLP(), LoraArgs(lora_target_modules=["fc1"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.fill_(value)
    return model


def _finish(out: Path, tag: str, seed: int) -> None:
    save_adapter(_adapter(seed), out, {"labels.json": {"run": tag}})
    write_metrics(out, {f"metric_{tag}": 1.0})


def _finished_run(out: Path, tag: str = "old", seed: int = 0) -> dict[str, bytes]:
    _stage_run(out, tag)
    _finish(out, tag, seed)
    return _files(out)


# ---------------------------------------------------------------------------------------------- refusals
def test_output_dir_that_is_a_file_or_cannot_be_created_is_refused(tmp_path):
    thesis = tmp_path / "thesis.txt"
    thesis.write_text("years of work")
    with pytest.raises(UsageError, match=r"--output_dir .*thesis.txt: is a file"):
        prepare_output_dir(Args(str(thesis)))
    with pytest.raises(UsageError, match=r"thesis.txt/run: cannot create it"):
        prepare_output_dir(Args(str(thesis / "run")))
    assert thesis.read_text() == "years of work"


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs a read-only sysfs (Linux)")
def test_output_dir_on_a_read_only_filesystem_is_refused():
    with pytest.raises(UsageError, match=r"--output_dir /sys/kernel/loraworks-run: cannot create it"):
        prepare_output_dir(Args("/sys/kernel/loraworks-run"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0555 dir")
def test_read_only_output_dir_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(UsageError, match=r"ro: not writable"):
            prepare_output_dir(Args(str(ro)))
    finally:
        ro.chmod(0o755)


def test_finished_run_is_refused_without_a_flag_and_left_untouched(tmp_path):
    out = tmp_path / "run"
    before = _finished_run(out)
    with pytest.raises(UsageError, match=r"holds a finished run .*--overwrite_output_dir.*--resume"):
        prepare_output_dir(Args(str(out)))
    assert _files(out) == before and not stage_dir(out).exists()
    (out / "adapter_model.safetensors").unlink()  # metrics.json alone also marks a finished run
    with pytest.raises(UsageError, match=r"finished run \(metrics.json\)"):
        prepare_output_dir(Args(str(out)))


def test_checkpoints_of_an_unfinished_run_are_refused_without_a_flag(tmp_path):
    (tmp_path / "checkpoint-6").mkdir()
    with pytest.raises(UsageError, match=r"checkpoints of an unfinished run \(checkpoint-6\).*--resume"):
        prepare_output_dir(Args(str(tmp_path)))
    prepare_output_dir(Args(str(tmp_path), resume=True))
    assert (tmp_path / "checkpoint-6").is_dir()  # --resume continues from them


def test_a_user_file_in_the_output_dir_is_kept(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    _stage_run(tmp_path, "new")
    _finish(tmp_path, "new", 1)
    assert (tmp_path / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------------------------------------- staging
def test_staged_files_land_only_with_the_adapter(tmp_path):
    out = tmp_path / "run"
    _stage_run(out, "new")
    assert not (out / BASE_MODEL_DIR).exists() and not (out / "resolved_config.yaml").exists()
    config = (stage_dir(out) / "resolved_config.yaml").read_text()
    # While training, the base is read from the stage; the config names where it will be published.
    assert f"model_name_or_path: {(out / BASE_MODEL_DIR).resolve()}\n" in config
    _finish(out, "new", 1)
    assert (out / BASE_MODEL_DIR / "model.safetensors").read_text() == "base new"
    assert (out / "resolved_config.yaml").read_text() == config
    assert (out / "metrics.jsonl").read_text() == '{"run": "new"}\n'  # a fresh run logs in place
    assert not stage_dir(out).exists()


def test_replacing_a_run_keeps_the_old_one_whole_until_the_new_adapter_is_saved(tmp_path):
    out = tmp_path / "run"
    old = _finished_run(out)
    (out / "eval_metrics.json").write_text('{"eval_old": 1}')
    (out / "checkpoint-9").mkdir()
    (out / "checkpoint-9" / "trainer_state.json").write_text("{}")
    old = _files(out)

    _stage_run(out, "new", overwrite_output_dir=True)  # ... and killed here, before its save
    assert _files(out) == {k: v for k, v in old.items() if not k.startswith("checkpoint-9")}
    # The old checkpoints are out of the way of the new run's rotation and of a later --resume.
    assert not (out / "checkpoint-9").exists()
    config = (stage_dir(out) / "resolved_config.yaml").read_text()
    assert "overwrite_output_dir: false" in config  # re-running with this config must not replace runs

    _finish(out, "new", 1)
    new = _files(out)
    assert new[f"{BASE_MODEL_DIR}/model.safetensors"] == b"base new"
    assert new["metrics.jsonl"] == b'{"run": "new"}\n'  # the old run's log lines are not carried on
    assert json.loads(new["metrics.json"]) == {"metric_new": 1.0}  # no keys merged from the old run
    assert "eval_metrics.json" not in new  # it scored the old adapter
    assert new["adapter_model.safetensors"] != old["adapter_model.safetensors"]
    assert not stage_dir(out).exists() and not (out / "checkpoint-9").exists()


def test_resume_keeps_what_the_killed_run_staged(tmp_path):
    out = tmp_path / "run"
    _stage_run(out, "killed", overwrite_output_dir=False)
    (stage_dir(out) / "tokenizer").mkdir()
    prepare_output_dir(Args(str(out), resume=True))
    assert (stage_dir(out) / "tokenizer").is_dir()
    prepare_output_dir(Args(str(out)))  # a fresh run starts from a clean stage
    assert not (stage_dir(out) / "tokenizer").exists()


def test_a_resumed_replacement_keeps_logging_into_its_own_file(tmp_path):
    out = tmp_path / "run"
    _finished_run(out)
    _stage_run(out, "new", overwrite_output_dir=True)  # killed
    _stage_run(out, "new-resumed", resume=True)
    _finish(out, "new", 1)
    assert (out / "metrics.jsonl").read_text() == '{"run": "new"}\n{"run": "new-resumed"}\n'


def test_a_fresh_start_after_a_killed_run_starts_a_fresh_log(tmp_path):
    _stage_run(tmp_path, "killed")  # no checkpoint (save_strategy no): nothing to resume, nothing refused
    _stage_run(tmp_path, "fresh")
    _finish(tmp_path, "fresh", 1)
    assert (tmp_path / "metrics.jsonl").read_text() == '{"run": "fresh"}\n'


def _generation(out: Path) -> str | None:
    """Which run the published adapter, base and config belong to; None when the dir reads as unfinished."""
    if not (out / "adapter_model.safetensors").exists():
        with pytest.raises(UsageError, match="incomplete|no adapter_config"):
            find_adapter_dir(out)  # predict/eval/export refuse it with exit 2
        return None
    labels = json.loads((out / "labels.json").read_text())["run"]
    base = (out / BASE_MODEL_DIR / "model.safetensors").read_text().split()[1]
    config = "adapter_dir: new" if "adapter_dir: new" in (out / "resolved_config.yaml").read_text() else ""
    assert labels == base and (config != "") == (base == "new"), (labels, base, config)
    return base


def test_a_kill_at_any_moment_of_the_save_never_pairs_an_old_adapter_with_a_new_base(tmp_path, monkeypatch):
    """Stop `save_adapter` at each of its renames in turn: the run is the old one, the new one, or unfinished."""
    real_replace, seen = os.replace, []
    for kill_at in range(100):
        out = tmp_path / f"run{kill_at}"
        _finished_run(out)
        old_weights = (out / "adapter_model.safetensors").read_bytes()
        _stage_run(out, "new", overwrite_output_dir=True)
        calls = 0

        def replace(src, dst, *, _kill_at=kill_at):
            nonlocal calls
            calls += 1
            if calls > _kill_at:
                raise KeyboardInterrupt("killed")
            return real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)
        try:
            _finish(out, "new", 1)
            finished = True
        except KeyboardInterrupt:
            finished = False
        monkeypatch.setattr(os, "replace", real_replace)
        generation = _generation(out)
        seen.append(generation)
        if generation == "old":
            assert (out / "adapter_model.safetensors").read_bytes() == old_weights
        if finished:
            assert generation == "new"
            break
    assert {"old", None, "new"} <= set(seen), seen


# ---------------------------------------------------------------------------------------------- export
def test_export_refuses_the_run_dir_its_parents_and_foreign_files(tmp_path):
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    (run / "adapter_model.safetensors").write_text("w")
    with pytest.raises(UsageError, match=r"--export_dir .*/a: is the run directory; .*merged"):
        check_export_dir(run, run)
    with pytest.raises(UsageError, match=r"is a parent of the run directory"):
        check_export_dir(tmp_path / "runs", run)
    with pytest.raises(UsageError, match=r"is a parent of the run directory"):
        check_export_dir(run / "..", run)
    user = tmp_path / "docs"
    user.mkdir()
    (user / "thesis.txt").write_text("mine")
    with pytest.raises(UsageError, match=r"docs: holds files that are not a previous export \(thesis.txt\)"):
        check_export_dir(user, run)
    with pytest.raises(UsageError, match=r"thesis.txt: is a file"):
        check_export_dir(user / "thesis.txt", run)
    # Without the run dir (a library caller), the run dir is still refused: its files are not an export.
    with pytest.raises(UsageError, match=r"adapter_model.safetensors"):
        check_export_dir(run)
    (tmp_path / "empty").mkdir()
    assert check_export_dir(tmp_path / "empty", run) == tmp_path / "empty"
    assert check_export_dir(tmp_path / "new", run) == tmp_path / "new"
    assert export_target(None, str(run)) == run / "merged"
    with pytest.raises(UsageError, match="--adapter_dir"):
        export_target(None, None)


def test_export_replaces_only_a_previous_export_with_nothing_added(tmp_path):
    target = tmp_path / "merged"
    for version in ("v1", "v2"):
        with export_writer(target) as tmp:
            (tmp / "model.safetensors").write_text(version)
            (tmp / "sub").mkdir()
            (tmp / "sub" / "head.safetensors").write_text(version)
    assert (target / "model.safetensors").read_text() == "v2"
    manifest = json.loads((target / EXPORT_MANIFEST).read_text())
    assert manifest["files"] == ["model.safetensors", "sub/head.safetensors"]
    (target / "sub" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match=r"not a previous export \(sub/notes.txt\)"), export_writer(target):
        pass
    assert (target / "sub" / "notes.txt").read_text() == "mine"


def test_a_file_written_into_the_target_during_the_export_stops_it(tmp_path):
    target = tmp_path / "merged"
    target.mkdir()
    with pytest.raises(UsageError, match="late.txt"), export_writer(target) as tmp:
        (tmp / "model.safetensors").write_text("w")
        (target / "late.txt").write_text("written while the merge ran")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no temp dir left
    assert [p.name for p in target.iterdir()] == ["late.txt"]
