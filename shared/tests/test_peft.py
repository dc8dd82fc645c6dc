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


def _stack(n: int = 4):
    """n identical blocks under `model.layers.<i>`, the naming peft reads layer indices from."""
    block = lambda: torch.nn.ModuleDict({"proj": torch.nn.Linear(6, 6)})  # noqa: E731
    layers = torch.nn.ModuleDict({"layers": torch.nn.ModuleList([block() for _ in range(n)])})
    return torch.nn.ModuleDict({"model": layers})


def test_lora_layers_adapts_only_the_listed_layers():
    model = apply_lora(_stack(), LoraArgs(lora_target_modules=["proj"], lora_layers="2-3"))
    adapted = {n.split(".")[4] for n, _ in model.named_parameters() if "lora_A" in n}
    assert adapted == {"2", "3"}
    assert build_lora_config(LoraArgs(lora_layers="0,2, 4-5")).layers_to_transform == [0, 2, 4, 5]
    assert build_lora_config(LoraArgs()).layers_to_transform is None  # empty: every layer


@pytest.mark.parametrize("spec", ["top", "3-1", "1-x", "-2"])
def test_lora_layers_bad_spec_is_a_usage_error(spec):
    with pytest.raises(UsageError, match="lora_layers"):
        build_lora_config(LoraArgs(lora_layers=spec))


def test_lora_layers_needs_named_targets():
    with pytest.raises(UsageError, match="all-linear"):
        build_lora_config(LoraArgs(lora_target_modules=["all-linear"], lora_layers="1"))


def test_model_without_input_embeddings_takes_lora_and_reloads(tmp_path):
    """D-FINE-like: a dict of tied weights and get_input_embeddings raising NotImplementedError, which
    peft calls while injecting (on apply and on load); before the fix both raised."""
    from lora_shared.runs import load_adapter

    class NoEmbeddings(torch.nn.Module):
        _tied_weights_keys = {"head": "body"}

        def __init__(self):
            super().__init__()
            self.body, self.head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)

        def get_input_embeddings(self):
            raise NotImplementedError("no input embeddings")

        def forward(self, x):
            return self.head(self.body(x))

    torch.manual_seed(0)
    model = apply_lora(NoEmbeddings(), LoraArgs(lora_target_modules=["body"], lora_init="gaussian"))
    model.save_pretrained(tmp_path)
    x = torch.randn(3, 4)
    torch.manual_seed(0)  # the same base weights
    reloaded = load_adapter(NoEmbeddings(), tmp_path)
    torch.testing.assert_close(reloaded(x), model.eval()(x))
