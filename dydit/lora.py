"""TD-LoRA: timestep-dynamic LoRA, for fine-tuning a DyDiT parameter-efficiently (DyDiT++).

OUR DESIGN, after the paper's one-line description ("timestep-based dynamic LoRA"): the DyDiT++
definition and code are not public. What we took from the nearest published designs we read:
- TimeStep Master (Zhuang et al., 2025): several LoRA experts, mixed by a router that sees the timestep;
- T-LoRA (Soboleva et al., 2025): the adapter's effective capacity depends on the timestep.
Here every adapted linear layer W (qkv, proj, fc1, fc2 of each block) gets K LoRA experts of rank r:
    y = W x + b + (alpha / r) * sum_k g_k(t) * B_k A_k x,   g(t) = softmax(R t_emb)  (per block, K gates)
The gates come from the timestep embedding alone, like DyDiT's width routers, so for a given t the
adapter is a fixed matrix: it merges into W per timestep, and the compute-skipping path slices A (input
side) and B (output side) with the same heads / channel groups as W. B starts at zero: at init a
TD-LoRA model computes exactly its base model. Trainable: the experts, their gates and DyDiT's routers;
everything else is frozen.

Modules are wrapped in place (`add_td_lora`), so the masked DyDiT runs them unchanged; the gates of a
forward are set by the model's timestep embedder, wrapped to do so (GatedTimestepEmbedder).
On FLUX (dydit.flux, DyDiT++'s text-to-image backbone) every linear layer of its double- and single-stream
blocks is adapted (FLUX_ADAPTED), gated per block from FLUX's timestep embedding alone; its fast path slices the
experts with the base weights and gives each gathered token its own sample's gates.
"""
import math
from pathlib import Path

import torch
from torch import nn

from dydit import weights
from dydit.errors import UserError
from dydit.fileio import atomic_write, sha256_file

ADAPTED = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")  # per block: where DyDiT skips compute
# FLUX (dydit.flux): the linear layers its fast path slices, in both block types (the model's last proj_out is not
# a block's); a regex for peft, matched against the full module name
FLUX_ADAPTED = (r".*transformer_blocks\.\d+\.(attn\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|"
                r"to_add_out)|ff\.net\.(0\.proj|2)|ff_context\.net\.(0\.proj|2)|proj_mlp|proj_out)")
ROUTER_PARTS = ("attn_rate", "mlp_rate", "token_selection")  # DyDiT's routers: trained with the adapters


class TDLoRALinear(nn.Module):
    """A frozen nn.Linear plus K gated LoRA experts of rank r; `gates` (N, K) is set before each forward.
    It has no `weight`: code that would read the base weight alone (and drop the adapter) fails loudly."""

    def __init__(self, base: nn.Linear, rank: int, experts: int, alpha: float):
        super().__init__()
        self.base = base
        self.rank, self.experts, self.scale = rank, experts, alpha / rank
        self.lora_a = nn.Parameter(torch.empty(experts * rank, base.in_features))  # experts stacked by rows
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, experts * rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as peft's LoRA A; B = 0: starts as the base
        self.gates = None  # (N, K), from the block's gate router

    @property
    def in_features(self):
        return self.base.in_features

    @property
    def out_features(self):
        return self.base.out_features

    def adapter(self, x, a=None, b=None, gates=None):
        """(alpha / r) * sum_k g_k B_k A_k x for x (N, ..., in); a / b: sliced A columns / B rows, gates: one
        row per x row (the fast path's gathered tokens), else the layer's (N, K)."""
        a = self.lora_a if a is None else a
        b = self.lora_b if b is None else b
        if x.numel() == 0:  # no row kept (the fast path's gathered tokens): nothing to add
            return x.new_zeros(*x.shape[:-1], b.shape[0])
        gates = self.gates if gates is None else gates
        z = nn.functional.linear(x, a)  # (N, ..., K r)
        shape = z.shape
        z = z.reshape(shape[0], -1, self.experts, self.rank) * gates[:, None, :, None]
        return nn.functional.linear(z.reshape(shape), b) * self.scale

    def forward(self, x):
        return self.base(x) + self.adapter(x)

    def merged_weight(self, gates):
        """W + (alpha / r) B diag(g) A for one sample's gates (K,): the fixed matrix of one timestep."""
        g = gates.repeat_interleave(self.rank)
        return self.base.weight + self.scale * (self.lora_b * g) @ self.lora_a


class GateRouter(nn.Module):
    """K expert gates of one block from the timestep embedding: softmax(R t_emb); R = 0 at init (even mix)."""

    def __init__(self, hidden_size, experts):
        super().__init__()
        self.router = nn.Linear(hidden_size, experts)
        nn.init.zeros_(self.router.weight)
        nn.init.zeros_(self.router.bias)

    def forward(self, t_emb):
        return self.router(t_emb).softmax(-1)


class GatedTimestepEmbedder(nn.Module):
    """The model's timestep embedder, which also sets every adapted layer's gates from the embedding it makes.
    Blocks and gate routers are held by reference (the model owns them): a deepcopy of the model (the EMA)
    maps them to its own copies, where a forward hook's closure would still point at the original."""

    def __init__(self, embedder, blocks, routers):
        super().__init__()
        self.embedder = embedder
        self._targets = [(adapted_layers(block), router) for block, router in zip(blocks, routers)]

    def forward(self, t):
        t_emb = self.embedder(t)
        for layers, router in self._targets:
            gates = router(t_emb)
            for layer in layers:
                layer.gates = gates
        return t_emb


def add_td_lora(model, rank=4, experts=4, alpha=None):
    """Wraps qkv / proj / fc1 / fc2 of every block of a DiT or DyDiT in TDLoRALinear (in place), adds a gate
    router per block, freezes the base and returns the model. alpha defaults to the rank (scale 1)."""
    alpha = float(rank if alpha is None else alpha)
    if _is_flux(model):
        return _add_td_lora_flux(model, rank, experts, alpha)
    model.requires_grad_(False)
    model.td_lora_gates = nn.ModuleList(GateRouter(model.t_embedder.mlp[-1].out_features, experts)
                                        for _ in model.blocks)
    for block in model.blocks:
        for path in ADAPTED:
            parent_name, name = path.split(".")
            parent = getattr(block, parent_name)
            setattr(parent, name, TDLoRALinear(getattr(parent, name), rank, experts, alpha))
    train_routers(model)
    model.t_embedder = GatedTimestepEmbedder(model.t_embedder, model.blocks, model.td_lora_gates)
    model.td_lora_config = {"rank": rank, "experts": experts, "alpha": alpha}
    return model


def _add_td_lora_flux(model, rank, experts, alpha):
    """TD-LoRA on FLUX (dydit.flux): every linear layer of its blocks (FLUX_ADAPTED) wrapped, a gate router per
    block on FLUX's timestep embedding alone (not the guidance or the pooled text: "timestep-based", as the width
    routers), set by the wrapped timestep embedder. model: a FluxTransformer2DModel or a model holding one."""
    import re
    flux = next(m for m in model.modules() if hasattr(m, "single_transformer_blocks"))
    model.requires_grad_(False)
    blocks = [*flux.transformer_blocks, *flux.single_transformer_blocks]
    pattern = re.compile(FLUX_ADAPTED)
    prefix = {id(b): f"transformer_blocks.{i}." for i, b in enumerate(flux.transformer_blocks)}
    prefix.update({id(b): f"single_transformer_blocks.{i}." for i, b in enumerate(flux.single_transformer_blocks)})
    for block in blocks:
        for name, layer in list(block.named_modules()):
            if isinstance(layer, nn.Linear) and pattern.fullmatch(prefix[id(block)] + name):
                parent_name, _, child = name.rpartition(".")
                parent = block.get_submodule(parent_name) if parent_name else block
                setattr(parent, child, TDLoRALinear(layer, rank, experts, alpha))
    embed = flux.time_text_embed
    flux.td_lora_gates = nn.ModuleList(GateRouter(embed.timestep_embedder.linear_2.out_features, experts)
                                       for _ in blocks)
    train_routers(model)
    embed.timestep_embedder = GatedTimestepEmbedder(embed.timestep_embedder, blocks, flux.td_lora_gates)
    model.td_lora_config = {"rank": rank, "experts": experts, "alpha": alpha}
    return model


def train_routers(model):
    """DyDiT's routers (DyFLUX's too) learn with the adapters (a static model has none)."""
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in ROUTER_PARTS:
            module.requires_grad_(True)


def _is_flux(model) -> bool:
    """A FLUX transformer, or a model holding one (dydit.text2img.TextToImageFlux)."""
    return any(hasattr(m, "single_transformer_blocks") for m in model.modules())


def adapted_layers(block):
    """The TDLoRALinear layers of one block, in registration order (a DiT block's: ADAPTED order)."""
    return [m for m in block.modules() if isinstance(m, TDLoRALinear)]


def trainable_parameters(model):
    """{name: parameter} of what fine-tuning trains (requires_grad)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


#################################################################################
#                        Adapter checkpoints                                    #
#################################################################################

class AdapterError(UserError, ValueError):
    """An adapter checkpoint that does not belong to this base or model; the message says why."""


def save_adapter(model, path, base_checkpoint):
    """Writes only the trainable tensors (adapters, gates, routers), the TD-LoRA config and the sha256 of the
    base checkpoint they were trained on: {"adapter", "td_lora", "base_sha256", "base_name"}."""
    state = {"adapter": {n: p.detach().cpu() for n, p in trainable_parameters(model).items()},
             "td_lora": dict(model.td_lora_config), "base_sha256": sha256_file(base_checkpoint),
             "base_name": Path(base_checkpoint).name}
    atomic_write(path, lambda f: torch.save(state, f))


def load_adapter(model, path, base_checkpoint):
    """Loads an adapter checkpoint into a TD-LoRA model built on `base_checkpoint`'s weights; refuses a base
    whose sha256 differs from the one the adapters were trained on, and a config or key set that differs."""
    state = weights.read(path)
    digest = sha256_file(base_checkpoint)
    if digest != state["base_sha256"]:
        raise AdapterError(f"{path} was trained on a base with sha256 {state['base_sha256']} "
                           f"({state['base_name']}); {base_checkpoint} has sha256 {digest}")
    if state["td_lora"] != model.td_lora_config:
        raise AdapterError(f"{path} holds TD-LoRA {state['td_lora']}; the model has {model.td_lora_config}")
    expected = set(trainable_parameters(model))
    if set(state["adapter"]) != expected:
        missing, extra = sorted(expected - set(state["adapter"])), sorted(set(state["adapter"]) - expected)
        raise AdapterError(f"{path}: keys differ from the model's trainable ones (missing {missing[:3]}, "
                           f"unexpected {extra[:3]})")
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, value in state["adapter"].items():
            params[name].copy_(value)
    return model


#################################################################################
#                     Static LoRA (peft): the baseline                          #
#################################################################################

def add_static_lora(model, rank=4, alpha=None):
    """Plain LoRA of rank r through peft (the baseline beside TD-LoRA) on the layers DyDiT skips (a DiT's
    ADAPTED; FLUX's FLUX_ADAPTED: every linear layer of its blocks), the routers trainable too, the rest (a
    text encoder too) frozen. Returns the model."""
    import peft  # heavy (transformers): only where the baseline is used
    model.requires_grad_(False)
    targets = FLUX_ADAPTED if _is_flux(model) else [p.split(".")[1] for p in ADAPTED]
    config = peft.LoraConfig(r=rank, lora_alpha=float(rank if alpha is None else alpha), lora_dropout=0.0,
                             target_modules=targets)
    peft.inject_adapter_in_model(config, model)
    train_routers(model)
    return model


def unmerged_static_lora(model) -> list:
    """Names of the layers that are still peft LoRA wrappers (not merged into their nn.Linear); imports no peft."""
    return [name for name, module in model.named_modules()
            if type(module).__module__.startswith("peft.") and hasattr(module, "get_base_layer")]


@torch.no_grad()
def merge_static_lora(model):
    """Merges every peft LoRA layer into its base nn.Linear and puts that Linear back (in place): a static
    adapter costs nothing at inference, and the compute-skipping path slices the merged weights."""
    from peft.tuners.lora import LoraLayer
    for name in unmerged_static_lora(model):
        layer = model.get_submodule(name)
        if isinstance(layer, LoraLayer):
            layer.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, layer.get_base_layer())
    return model
