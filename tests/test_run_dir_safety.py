"""A finished run survives re-runs and exports next to it: vision-cls tiny through the real CLI, in-process.

train into it again -> exit 2, nothing touched; `--overwrite_output_dir` crashed mid-run -> the old run is
byte-identical and predicts as before; `--overwrite_output_dir` to the end -> a fresh run (new base, config
and log), nothing of the old one appended. Every app's exit-2 refusals are corpus cases (`run-dir-*`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("vision_cls")
from lora_shared.runs import STAGE_DIR  # noqa: E402
from vision_cls.cli import main  # noqa: E402

TINY = ["--config", "tiny", "--max_steps", "2", "--demo_images_per_class", "5", "--save_strategy", "no"]


def _published(run: Path) -> dict[str, bytes]:
    return {
        p.relative_to(run).as_posix(): p.read_bytes()
        for p in sorted(run.rglob("*"))
        if p.is_file() and STAGE_DIR not in p.relative_to(run).parts
    }


def _predict(run: Path, image: Path, capsys) -> str:
    capsys.readouterr()
    assert main(["predict", "--adapter_dir", str(run), "--json", str(image)]) == 0
    return capsys.readouterr().out


def test_a_finished_run_survives_a_rerun_a_crashed_overwrite_and_is_replaced_only_at_the_end(
    tmp_path, capsys, monkeypatch
):
    from PIL import Image
    from transformers import Trainer

    run, image = tmp_path / "run", tmp_path / "cat.png"
    Image.new("RGB", (32, 32), (200, 40, 40)).save(image)
    assert main(["train", *TINY, "--output_dir", str(run)]) == 0
    old, old_answer = _published(run), _predict(run, image, capsys)

    # 1. The same command again: refused before any work, one line naming the dir and both flags.
    capsys.readouterr()
    assert main(["train", *TINY, "--output_dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "vision-cls train: error: --output_dir" in err and "--overwrite_output_dir" in err, err
    assert _published(run) == old and not (run / STAGE_DIR).exists()

    # 2. --overwrite_output_dir on another seed, dying in its second step (its base and config are built).
    real_step = Trainer.training_step

    def dying_step(self, *a, **k):
        if self.state.global_step == 1:
            raise RuntimeError("killed")
        return real_step(self, *a, **k)

    monkeypatch.setattr(Trainer, "training_step", dying_step)
    with pytest.raises(RuntimeError, match="killed"):
        main(["train", *TINY, "--seed", "5", "--output_dir", str(run), "--overwrite_output_dir"])
    monkeypatch.undo()
    assert (run / STAGE_DIR / "base_model").is_dir()  # the new base was staged ...
    assert _published(run) == old  # ... and the old run, base and log included, is untouched
    assert _predict(run, image, capsys) == old_answer

    # 3. The same, to the end: the new run replaces the old one as a whole.
    assert main(["train", *TINY, "--seed", "5", "--output_dir", str(run), "--overwrite_output_dir"]) == 0
    new = _published(run)
    assert not (run / STAGE_DIR).exists()
    assert new["base_model/model.safetensors"] != old["base_model/model.safetensors"]
    config = (run / "resolved_config.yaml").read_text()
    assert "seed: 5" in config and f"model_name_or_path: {(run / 'base_model').resolve()}\n" in config
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]  # the old run's lines were not appended to
    assert _predict(run, image, capsys)  # the published run loads and predicts
