"""Multi-process training (DDP on CPU, gloo): 2 processes of vision-cls `tiny` give the same losses and the
same adapter as one process with the same global batch, and the run directory gets ONE adapter; 2 "nodes"
(torchrun --nnodes 2, one process each, rendezvous on localhost) do the same for llm-chat `tiny`.

Launched through the real engines (torchrun and `accelerate launch`), not a home-made process group.
Slow: each launch imports torch/transformers in 2-3 fresh processes (~1 min on a busy 2-core box).
Fast (not slow): every bundled accelerate config parses the way `accelerate launch --config_file` reads it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# The random train augmentation (crop/flip/jitter) draws from each process's own RNG, and LoRA dropout
# too, so losses can only match bit-for-bit with both off. The entry patches the transform, nothing else.
ENTRY = """\
import sys

import vision_cls.train as train_module

_orig = train_module.build_transforms
train_module.build_transforms = lambda size, mean, std, train: _orig(size, mean, std, False)

from vision_cls.cli import main

sys.exit(main(sys.argv[1:]))
"""

PER_DEVICE = 8
COMMON = ["train", "--config", "tiny", "--lora_dropout", "0", "--max_steps", "4", "--seed", "3"]


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("ACCELERATE_USE_CPU", None)  # the app must set it itself on a CPU-only machine
    return env


def _launch(cmd: list[str], log: Path) -> None:
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=_env(), timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{log.read_text()[-4000:]}"


def _losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    steps = [s for s, _ in losses]
    assert len(steps) == len(set(steps)), f"a step was logged twice (two writers?): {steps}"
    return dict(losses)


def _adapter(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def single_run(tmp_path_factory) -> Path:
    """One process with the global batch of the 2-process runs (2 x PER_DEVICE)."""
    root = tmp_path_factory.mktemp("single")
    (root / "entry.py").write_text(ENTRY)
    out = root / "run"
    cmd = [sys.executable, str(root / "entry.py"), *COMMON, "--output_dir", str(out)]
    _launch([*cmd, "--per_device_train_batch_size", str(2 * PER_DEVICE)], root / "log.txt")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate", "accelerate-ddp-config"])
def test_two_cpu_processes_match_single_process(tmp_path, single_run, launcher):
    (tmp_path / "entry.py").write_text(ENTRY)
    out = tmp_path / "run"
    script = [str(tmp_path / "entry.py"), *COMMON, "--output_dir", str(out)]
    script += ["--per_device_train_batch_size", str(PER_DEVICE)]
    bindir = Path(sys.executable).parent
    if launcher == "torchrun":
        cmd = [str(bindir / "torchrun"), "--nproc_per_node", "2", *script]
    elif launcher == "accelerate":  # --multi_gpu: accelerate's torchrun launcher (gloo on CPU: the app)
        cmd = [str(bindir / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", *script]
    else:  # the shipped ddp.yaml, exactly as its header says to launch it
        from lora_shared.accelerate_configs import config_path

        ddp = str(config_path("ddp"))
        cmd = [str(bindir / "accelerate"), "launch", "--config_file", ddp, "--num_processes", "2", *script]
    _launch(cmd, tmp_path / "log.txt")
    log = (tmp_path / "log.txt").read_text()

    # Two processes really trained together: the step count per epoch halves with the global batch of 16
    # (32 demo images), so step 2 ends epoch 1; two independent single processes would show epoch 0.5.
    assert log.count("trainable params:") == 2, "expected two ranks"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert next(r for r in rows if r.get("step") == 2 and "loss" in r)["epoch"] == pytest.approx(1.0)

    # Same losses as one process with the same global batch.
    ddp, single = _losses(out), _losses(single_run)
    assert ddp.keys() == single.keys() == {1, 2, 3, 4}
    for step in ddp:
        assert ddp[step] == pytest.approx(single[step], abs=1e-4), (
            f"step {step}: {ddp[step]} vs {single[step]}"
        )

    # One adapter, written once by rank 0, with the same tensor names (no DDP `module.` prefix) and values.
    assert sorted(p.name for p in out.rglob("adapter_model.safetensors")) == ["adapter_model.safetensors"]
    assert not list(out.glob(".*.tmp")), "a half-finished save was left behind"
    assert log.count("== vision-cls train ==") == 1, "the final report/save ran on more than one rank"
    a, b = _adapter(out), _adapter(single_run)
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max().item() < 1e-4, k

    # ... and it loads like a single-process adapter through the app's own predict path.
    from vision_cls.cli import main

    img = tmp_path / "img.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(img)
    assert main(["predict", "--adapter_dir", str(out), str(img)]) == 0


# ------------------------------------------------------------------------------------------------------------
# Two "nodes" on localhost: torchrun's static rendezvous (the multi-node path), llm-chat tiny
# ------------------------------------------------------------------------------------------------------------
CHAT_ENTRY = "import sys\n\nfrom llm_chat.cli import main\n\nsys.exit(main(sys.argv[1:]))\n"
# 64 dialogs and 3 steps of global batch 16: both runs read the first 48 of the same seeded shuffle, so
# no epoch boundary (where a short last batch would be split differently) falls inside the run.
# Qwen2 has no dropout and tiny sets lora_dropout 0: nothing draws from a per-process RNG.
CHAT_COMMON = ["train", "--config", "tiny", "--max_train_samples", "64", "--max_steps", "3", "--seed", "3"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_match_single_process(tmp_path):
    """`torchrun --nnodes 2 --node_rank 0|1` with one process per node, as on two hosts sharing a file
    system (the run dir): same losses and adapter as one process with the same global batch, one writer."""
    (tmp_path / "entry.py").write_text(CHAT_ENTRY)
    script = [str(tmp_path / "entry.py"), *CHAT_COMMON]
    single, out = tmp_path / "single", tmp_path / "run"
    _launch(
        [sys.executable, *script, "--output_dir", str(single), "--per_device_train_batch_size", "16"],
        tmp_path / "single.log",
    )

    # Node 0 hosts the rendezvous (--master_addr/--master_port); node 1 connects to it. On real hosts
    # only --node_rank differs between the two commands and master_addr is node 0's reachable address.
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--nnodes", "2", "--nproc_per_node", "1"]
    torchrun += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    node_args = [*script, "--output_dir", str(out), "--per_device_train_batch_size", "8"]
    logs = [tmp_path / f"node{rank}.log" for rank in (0, 1)]
    procs = []
    for rank, log in enumerate(logs):
        with open(log, "w") as f:  # the child keeps its own handle
            cmd = [*torchrun, "--node_rank", str(rank), *node_args]
            procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=_env()))
    try:
        codes = [p.wait(timeout=600) for p in procs]
    finally:
        for p in procs:  # one node failing leaves the other waiting in the rendezvous
            if p.poll() is None:
                p.kill()
                p.wait()
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n\n".join(
        f"node {r} (rc {c}):\n{t[-3000:]}" for r, (c, t) in enumerate(zip(codes, texts))
    )

    # Each node ran one rank of ONE job: one report (node 0, global rank 0), and the epoch counter shows
    # the global batch of 16 (two independent single-node jobs with batch 8 would log half the epoch).
    assert [t.count("trainable params:") for t in texts] == [1, 1]
    assert [t.count("== llm-chat train ==") for t in texts] == [1, 0], "rank 1 wrote the report"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    single_rows = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()]

    def epoch_at_2(rs):
        return next(r for r in rs if r.get("step") == 2 and "loss" in r)["epoch"]

    assert epoch_at_2(rows) == pytest.approx(epoch_at_2(single_rows))

    nodes, one = _losses(out), _losses(single)
    assert nodes.keys() == one.keys() == {1, 2, 3}
    for step in nodes:
        assert nodes[step] == pytest.approx(one[step], abs=1e-4), f"step {step}: {nodes[step]} vs {one[step]}"
    assert sorted(p.name for p in out.rglob("adapter_model.safetensors")) == ["adapter_model.safetensors"]
    a, b = _adapter(out), _adapter(single)
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max().item() < 1e-4, k

    from llm_chat.cli import main

    assert main(["predict", "--adapter_dir", str(out), "--max_new_tokens", "2", "hi"]) == 0


# ------------------------------------------------------------------------------------------------------------
# Every bundled accelerate config is one `accelerate launch --config_file` accepts (fast: no launch)
# ------------------------------------------------------------------------------------------------------------
def _bundled():
    from lora_shared.accelerate_configs import names

    return names()


def test_bundled_configs_are_the_documented_set():
    assert _bundled() == ["ddp", "deepspeed_zero2", "deepspeed_zero3", "fsdp"]


@pytest.mark.parametrize("name", _bundled())
def test_bundled_config_is_valid_for_accelerate_launch(name):
    import yaml
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import launch_command_parser
    from accelerate.utils import DistributedType
    from lora_shared.accelerate_configs import config_path

    path = config_path(name)
    text = path.read_text()
    raw = yaml.safe_load(text)
    # accelerate's own loader: rejects unknown top-level keys, fills defaults, types the enum fields.
    cfg = load_config_from_file(str(path))
    assert isinstance(cfg, ClusterConfig)
    assert cfg.distributed_type in {
        DistributedType.MULTI_GPU,
        DistributedType.FSDP,
        DistributedType.DEEPSPEED,
    }
    assert cfg.mixed_precision in ("no", "fp16", "bf16")
    assert cfg.num_machines == 1 and cfg.machine_rank == 0 and cfg.num_processes >= 2

    # Nested sections become `accelerate launch` flags (fsdp_config.x -> --fsdp_x); launch copies any key
    # onto its args without checking, so a misspelt key would be silently ignored. Check them here.
    dests = {a.dest for a in launch_command_parser()._actions}
    section = {"DEEPSPEED": "deepspeed_config", "FSDP": "fsdp_config"}.get(cfg.distributed_type.value)
    if section:
        nested = raw[section]
        assert nested, f"{name}: empty {section}"
        flags = {k if k.startswith("fsdp") or section != "fsdp_config" else f"fsdp_{k}" for k in nested}
        assert flags <= dests, f"{name}: {section} keys accelerate launch does not know: {flags - dests}"
    if cfg.distributed_type == DistributedType.DEEPSPEED:
        assert raw["deepspeed_config"]["zero_stage"] == int(name[-1])
    if name == "deepspeed_zero3":  # the rank-0 save needs gathered 16-bit weights under ZeRO-3
        assert raw["deepspeed_config"]["zero3_save_16bit_model"] is True
    if name == "fsdp":  # FULL_STATE_DICT: the adapter saved on rank 0 has whole tensors
        assert raw["fsdp_config"]["fsdp_state_dict_type"] == "FULL_STATE_DICT"

    # The header gives the exact command, with this config's name.
    header = "".join(line for line in text.splitlines() if line.startswith("#"))
    assert "accelerate launch --config_file" in header and f"accelerate_configs {name})" in header, header
