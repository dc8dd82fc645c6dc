"""Multi-process training (DDP on CPU, gloo): 2 processes of vision-cls `tiny` give the same losses and the
same adapter as one process with the same global batch, and the run directory gets ONE adapter; 2 "nodes"
(torchrun --nnodes 2, one process each, rendezvous on localhost) do the same for llm-chat `tiny`, and so does
the shipped fsdp.yaml on 2 CPU processes, with its parameters really sharded (accelerate's CPU gate lifted).

Launched through the real engines (torchrun and `accelerate launch`), not a home-made process group.
Slow: each launch imports torch/transformers in 2-3 fresh processes (~1 min on a busy 2-core box).
Fast (not slow): every bundled accelerate config parses the way `accelerate launch --config_file` reads it.
"""

from __future__ import annotations

import json
import os
import re
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


def _assert_chat_run_matches_single(out: Path, single: Path) -> None:
    """An llm-chat `tiny` run of several processes trained like `single` (one process, same global batch):
    the same losses step by step, ONE adapter with the single-process names, shapes and values, which loads.
    1e-4: fp32 losses near 5.5 whose gradients are summed in another order; measured 1e-6 loss, 1e-7 weights."""
    multi, one = _losses(out), _losses(single)
    assert multi.keys() == one.keys() == {1, 2, 3}
    for step in multi:
        assert multi[step] == pytest.approx(one[step], abs=1e-4), f"step {step}: {multi[step]} vs {one[step]}"
    assert sorted(p.name for p in out.rglob("adapter_model.safetensors")) == ["adapter_model.safetensors"]
    a, b = _adapter(out), _adapter(single)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape, k
        assert (a[k] - b[k]).abs().max().item() < 1e-4, k

    from llm_chat.cli import main

    assert main(["predict", "--adapter_dir", str(out), "--max_new_tokens", "2", "hi"]) == 0


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
    _assert_chat_run_matches_single(out, single)


# ------------------------------------------------------------------------------------------------------------
# FSDP2 on 2 CPU processes (gloo) with the shipped fsdp.yaml, llm-chat tiny
# ------------------------------------------------------------------------------------------------------------
# accelerate 1.15 makes a run FSDP only on an accelerator: AcceleratorState.__init__ (accelerate/state.py)
# switches to DistributedType.FSDP only from MULTI_GPU/NPU/XPU/...; on CPU the run stays MULTI_CPU, i.e.
# DDP. torch's FSDP2 itself shards over gloo. The entry lifts that one gate, so that accelerate's FSDP2
# wrapping, the Trainer, `full_state_dict`'s gather and the rank-0 save run as they would on GPUs, and
# prints what each rank holds after training.
FSDP_ENTRY = """\
import os
import sys

import accelerate.state as state
import transformers
from accelerate.utils import DistributedType
from torch.distributed.tensor import DTensor

_init = state.AcceleratorState.__init__


def _init_fsdp_on_cpu(self, mixed_precision=None, cpu=False, dynamo_plugin=None, deepspeed_plugin=None,
                      fsdp_plugin=None, *args, **kwargs):
    _init(self, mixed_precision, cpu, dynamo_plugin, deepspeed_plugin, fsdp_plugin, *args, **kwargs)
    if self.distributed_type == DistributedType.MULTI_CPU and fsdp_plugin is not None:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin
        state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP


state.AcceleratorState.__init__ = _init_fsdp_on_cpu
_train = transformers.Trainer.train


def _train_and_report(self, *args, **kwargs):
    out = _train(self, *args, **kwargs)
    params = [p for _, p in self.model_wrapped.named_parameters()]
    local = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in params)
    print(
        f"SHARDING rank={os.environ['RANK']} type={self.accelerator.distributed_type.value} "
        f"wrapper={type(self.model_wrapped).__name__} "
        f"dtensors={sum(isinstance(p, DTensor) for p in params)}/{len(params)} "
        f"local_numel={local} full_numel={sum(p.numel() for p in params)}",
        flush=True,
    )
    return out


transformers.Trainer.train = _train_and_report

from llm_chat.cli import main

sys.exit(main(sys.argv[1:]))
"""


def _sharding(log: str) -> dict[int, dict[str, str]]:
    """{rank: its SHARDING fields}; a line may follow a progress bar's carriage return."""
    rows = [
        dict(kv.split("=", 1) for kv in m.group(1).split())
        for m in re.finditer(r"SHARDING ((?:\w+=\S+ ?)+)", log)
    ]
    return {int(r.pop("rank")): r for r in rows}


@pytest.mark.slow
def test_fsdp_two_cpu_processes_match_single_process(tmp_path):
    """The shipped fsdp.yaml on 2 CPU processes really shards (every parameter a DTensor, about half of the
    elements per rank), trains like one process with the same global batch, and the adapter rank 0 saves
    from the gathered full state dict has the single-process names, shapes and values, and loads."""
    from lora_shared.accelerate_configs import config_path

    (tmp_path / "entry.py").write_text(FSDP_ENTRY)
    single, out = tmp_path / "single", tmp_path / "run"
    _launch(
        [sys.executable, "-m", "llm_chat", *CHAT_COMMON, "--output_dir", str(single)]
        + ["--per_device_train_batch_size", "16"],
        tmp_path / "single.log",
    )
    # fp32 (`--mixed_precision no` over the file's bf16): the comparison is with a fp32 one-process run, and
    # bf16 matmuls are ~100x slower than fp32 on AVX2-only CPUs.
    accelerate = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file"]
    accelerate += [str(config_path("fsdp")), "--num_processes", "2", "--mixed_precision", "no"]
    accelerate += ["--main_process_port", str(_free_port())]
    script = [str(tmp_path / "entry.py"), *CHAT_COMMON, "--output_dir", str(out)]
    _launch([*accelerate, *script, "--per_device_train_batch_size", "8"], tmp_path / "run.log")
    log = (tmp_path / "run.log").read_text()

    # Sharded, not DDP: each rank's parameters are DTensors holding only its part (31k elements in tiny;
    # FSDP2 splits every tensor along dim 0, so the two halves differ by the odd rows).
    shards = _sharding(log)
    assert shards.keys() == {0, 1}, log[-3000:]
    for rank, s in shards.items():
        assert s["type"] == "FSDP" and s["wrapper"].startswith("FSDP"), (rank, s)
        held, total = s["dtensors"].split("/")
        assert held == total and int(total) > 0, f"rank {rank}: not every parameter sharded: {s}"
        assert int(s["local_numel"]) < 0.6 * int(s["full_numel"]), f"rank {rank} holds the whole model: {s}"
    assert sum(int(s["local_numel"]) for s in shards.values()) == int(shards[0]["full_numel"])

    # Same training as one process with the global batch of 16 (reduce-scatter instead of one batch), and
    # rank 0 saved whole tensors under the single-process names (no FSDP prefixes, no shards).
    assert log.count("== llm-chat train ==") == 1, "the final report/save ran on more than one rank"
    _assert_chat_run_matches_single(out, single)


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
