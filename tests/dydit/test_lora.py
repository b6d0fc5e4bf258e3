"""TD-LoRA (dydit/lora.py): it starts as its base model, trains only adapters, gates and routers, and for
one timestep it is one fixed matrix per layer."""
import copy

import pytest
import torch

from dydit.lora import TDLoRALinear, add_td_lora, adapted_layers, trainable_parameters
from dydit.models import randomize_
from dydit.registry import create_model


def inputs(n=2):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(n, 1, 16, 16, generator=g), torch.tensor([100, 900])[:n], torch.tensor([1, 10])[:n])


def test_td_lora_at_zero_init_equals_the_base_model():
    base = randomize_(create_model("DyDiT-Mini/2"), seed=0).eval()
    lora = add_td_lora(copy.deepcopy(base), rank=2, experts=3)
    x, t, y = inputs()
    with torch.no_grad():
        assert torch.equal(lora(x, t, y), base(x, t, y))


def test_only_adapters_gates_and_routers_train():
    model = add_td_lora(create_model("DyDiT-Mini/2"), rank=2, experts=3)
    names = set(trainable_parameters(model))
    assert names and all(("lora_" in n) or ("td_lora_gates" in n) or any(r in n for r in
                         ("attn_rate", "mlp_rate", "token_selection")) for n in names)
    assert not any(".base." in n for n in names)
    full = sum(p.numel() for p in create_model("DyDiT-Mini/2").parameters())
    assert sum(p.numel() for p in trainable_parameters(model).values()) < 0.15 * full


def test_for_one_timestep_the_adapter_is_one_matrix():
    torch.manual_seed(0)
    layer = TDLoRALinear(torch.nn.Linear(8, 6), rank=2, experts=3, alpha=4.0)
    torch.nn.init.normal_(layer.lora_b)
    gates = torch.tensor([[0.2, 0.5, 0.3]])
    layer.gates = gates
    x = torch.randn(1, 5, 8)
    merged = torch.nn.functional.linear(x, layer.merged_weight(gates[0]), layer.base.bias)
    assert torch.allclose(layer(x), merged, atol=1e-5)


def test_gates_follow_the_timestep_of_each_sample():
    model = add_td_lora(randomize_(create_model("DyDiT-Mini/2"), seed=0), rank=2, experts=3).eval()
    for gate in model.td_lora_gates:
        torch.nn.init.normal_(gate.router.weight, std=1.0)
    x, t, y = inputs()
    with torch.no_grad():
        model(x, t, y)
    g = adapted_layers(model.blocks[0])[0].gates
    assert g.shape == (2, 3) and torch.allclose(g.sum(1), torch.ones(2)) and not torch.allclose(g[0], g[1])


def test_an_adapter_checkpoint_holds_only_trainable_tensors_and_refuses_another_base(tmp_path):
    import pytest
    from dydit.lora import AdapterError, load_adapter, save_adapter
    base = randomize_(create_model("DyDiT-Mini/2"), seed=0)
    torch.save(base.state_dict(), tmp_path / "base.pt")
    model = add_td_lora(copy.deepcopy(base), rank=2, experts=3)
    for p in trainable_parameters(model).values():
        torch.nn.init.normal_(p)
    save_adapter(model, tmp_path / "adapter.pt", tmp_path / "base.pt")
    saved = torch.load(tmp_path / "adapter.pt", weights_only=True)
    assert set(saved["adapter"]) == set(trainable_parameters(model)) and not any(".base." in k for k in saved["adapter"])
    fresh = load_adapter(add_td_lora(copy.deepcopy(base), rank=2, experts=3), tmp_path / "adapter.pt",
                         tmp_path / "base.pt")
    x, t, y = inputs()
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x, t, y), model.eval()(x, t, y))
    torch.save(randomize_(create_model("DyDiT-Mini/2"), seed=1).state_dict(), tmp_path / "other.pt")
    with pytest.raises(AdapterError, match="trained on a base with sha256"):
        load_adapter(add_td_lora(copy.deepcopy(base), rank=2, experts=3), tmp_path / "adapter.pt",
                     tmp_path / "other.pt")
    with pytest.raises(AdapterError, match="holds TD-LoRA"):
        load_adapter(add_td_lora(copy.deepcopy(base), rank=4, experts=3), tmp_path / "adapter.pt",
                     tmp_path / "base.pt")


def test_a_deep_copy_sets_its_own_gates():
    """The EMA is a deepcopy: its forward must gate its own layers, not the original's."""
    model = add_td_lora(randomize_(create_model("DyDiT-Mini/2"), seed=0), rank=2, experts=3).eval()
    twin = copy.deepcopy(model)
    x, t, y = inputs()
    with torch.no_grad():
        twin(x, t, y)
    assert adapted_layers(twin.blocks[0])[0].gates is not None
    assert adapted_layers(model.blocks[0])[0].gates is None


def test_static_lora_trains_its_adapters_and_merges_into_the_base():
    from dydit.lora import add_static_lora, merge_static_lora
    model = add_static_lora(randomize_(create_model("DyDiT-Mini/2"), seed=0), rank=2).eval()
    names = set(trainable_parameters(model))
    assert any("lora_A" in n for n in names) and not any("base_layer" in n for n in names)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    x, t, y = inputs()
    t = torch.full_like(t, t[0])  # the fast path runs one timestep per batch
    from dydit.fast import FastDyDiT
    with pytest.raises(ValueError, match="merge_static_lora"):  # it would slice the base and drop the update
        FastDyDiT(model)
    with torch.no_grad():
        before = model(x, t, y)
        merge_static_lora(model)
        after = model(x, t, y)
        fast = FastDyDiT(model)(x, t, y)
    assert type(model.blocks[0].attn.qkv) is torch.nn.Linear
    assert torch.allclose(before, after, atol=1e-5) and torch.allclose(fast, after, atol=1e-5)
