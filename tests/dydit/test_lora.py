"""TD-LoRA (dydit/lora.py): it starts as its base model, trains only adapters, gates and routers, and for
one timestep it is one fixed matrix per layer."""
import copy

import torch

from dydit.lora import TDLoRALinear, add_td_lora, adapted_layers, trainable_parameters
from dydit.models import create_model, randomize_


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
