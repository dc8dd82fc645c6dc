import pytest
import torch
from lora_shared.config import LoraArgs
from lora_shared.errors import UsageError
from lora_shared.peft import apply_lora, build_lora_config, trainable_report
from lora_shared.testing import assert_only_lora_changed, snapshot_params


def lora(**kw):
    base = {"lora_target_modules": ["fc1", "fc2"], "lora_modules_to_save": ["head"], "lora_dropout": 0.0}
    return LoraArgs(**{**base, **kw})


def test_config_fields_map_to_peft():
    cfg = build_lora_config(
        LoraArgs(
            lora_r=4,
            lora_alpha=8,
            use_rslora=True,
            use_dora=True,
            lora_target_modules=["all-linear"],
            lora_init="gaussian",
        )
    )
    assert cfg.r == 4 and cfg.lora_alpha == 8 and cfg.use_rslora and cfg.use_dora
    assert cfg.target_modules == "all-linear"
    assert cfg.init_lora_weights == "gaussian"


def test_only_adapters_and_saved_modules_train(mlp):
    model = apply_lora(mlp, lora())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "modules_to_save" in n for n in trainable)
    assert any("head" in n for n in trainable)
    rep = trainable_report(model)
    assert rep.trainable_params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < rep.trainable_pct < 100


def test_lora_invariant_after_training(mlp):
    model = apply_lora(mlp, lora())
    before = snapshot_params(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    counts = assert_only_lora_changed(before, model)
    assert counts["adapter_changed"] > 0 and counts["base"] > 0


def test_invariant_helper_catches_a_changed_base(mlp):
    model = apply_lora(mlp, lora())
    before = snapshot_params(model)
    with torch.no_grad():
        model.base_model.model.fc1.base_layer.weight.add_(1.0)
    with pytest.raises(AssertionError, match="base param"):
        assert_only_lora_changed(before, model)


def test_wrong_target_lists_module_names(mlp):
    with pytest.raises(UsageError, match="fc1"):
        apply_lora(mlp, LoraArgs(lora_target_modules=["query"]))


def test_adapter_size_vs_base(mlp, tmp_path):
    from lora_shared.runs import save_adapter

    model = apply_lora(mlp, lora(lora_modules_to_save=[]))
    save_adapter(model, tmp_path)
    rep = trainable_report(model, tmp_path)
    assert rep.adapter_mb is not None and rep.adapter_mb > 0
    assert "smaller" in str(rep)
    assert rep.as_dict()["adapter_smaller_pct"] < 100
