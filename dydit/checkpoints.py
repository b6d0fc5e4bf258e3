"""Checkpoints: safe reading (.pt/.pth/.safetensors), loading validated before any copy, atomic saving.

Reading never runs pickled code: every file is read by dydit.weights.read (safetensors, or
torch.load(weights_only=True)). A DiT checkpoint loads into DyDiT with fresh
routers (all masks on); a DyDiT one into DiT is refused unless allow_drop_routers; the first-release NUS
router layout, Linear(D, H), is recognised and refused (ours is the official ALI layout, Linear(D, H-1)).
A run of dydit/train.py loads with load_trained: its EMA weights, or its adapters on their base (the
base's sha256 checked).
"""
import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn

from dydit import weights
from dydit.fileio import atomic_write, sha256_file
from dydit.lora import add_static_lora, add_td_lora, merge_static_lora, trainable_parameters
from dydit.models import DyDiT
from dydit.registry import SIZES, create_model
from dydit.train_config import TrainConfig, TrainError
from dydit.weights import CheckpointError  # noqa: F401  (re-exported: dydit.checkpoints.CheckpointError)

log = logging.getLogger(__name__)

# DyDiT's head, MLP-channel and token routers; DyFLUX's token router (dydit.flux: linear_t, norm, router)
ROUTER_PARTS = (".attn_rate.router.", ".mlp_rate.router.", ".token_selection.mlp_head.", ".token_selection.linear_t.",
                ".token_selection.norm.", ".token_selection.router.")
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_MAX_LINES = 12
_SHAPE_DIMS = ("depth", "hidden", "patch", "in_channels", "learn_sigma", "input_size", "num_classes")



@dataclass
class LoadReport:
    """What load_checkpoint did: source entry, notes, and the keys started fresh or dropped."""
    source: str  # "ema", "model" or "raw"
    notes: List[str] = field(default_factory=list)
    fresh_keys: List[str] = field(default_factory=list)
    dropped_keys: List[str] = field(default_factory=list)
    missing_keys: List[str] = field(default_factory=list)  # only with strict=False
    unexpected_keys: List[str] = field(default_factory=list)  # only with strict=False

    def __str__(self):
        return "\n".join([f"loaded from {self.source!r}"] + self.notes)


def is_router_key(key: str) -> bool:
    """True for DyDiT router tensors (head, MLP-channel and token routers)."""
    return any(part in key for part in ROUTER_PARTS)


def unwrap_state_dict(obj, where: str = "state dict") -> Tuple[Dict[str, torch.Tensor], str, List[str]]:
    """(state dict, source "ema"/"model"/"raw", notes) from a raw or {"model","ema",...} checkpoint."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{where} is a {type(obj).__name__}, not a dict of tensors")
    notes = []
    if isinstance(obj.get("ema"), dict):
        source = "ema"
        notes.append(f"training checkpoint ({', '.join(map(str, obj))}): using 'ema' weights")
    elif isinstance(obj.get("model"), dict):
        source = "model"
        notes.append(f"training checkpoint ({', '.join(map(str, obj))}): no 'ema', using 'model' weights")
    else:
        source = "raw"
    state = obj if source == "raw" else obj[source]
    bad = [f"{k!r} ({type(v).__name__})" for k, v in state.items() if not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(f"{where} is not a dict of tensors: {len(bad)} non-tensor entries, e.g. "
                              + ", ".join(bad[:5]))
    prefixed = sum(k.startswith("module.") for k in state)
    if prefixed:
        notes.append(f"stripped the DDP prefix 'module.' from {prefixed} keys")
    out = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if len(out) != len(state):
        raise CheckpointError(f"{where}: some keys appear both with and without the 'module.' prefix")
    return out, source, notes


def load_state_dict(path) -> Dict[str, torch.Tensor]:
    """Reads a checkpoint file into a CPU state dict (ema preferred, prefixes stripped); logs the source."""
    state, source, notes = unwrap_state_dict(weights.read(path), where=f"checkpoint {os.fspath(path)}")
    for note in notes:
        log.info("%s: %s", os.fspath(path), note)
    return state


# ----------------------------------------------------------------------------- recognising checkpoints

def _dims(state) -> Optional[dict]:
    """depth/hidden/patch/in_channels/learn_sigma/input_size/classes/heads/dydit/layout, or None."""
    try:
        proj = state["x_embedder.proj.weight"]
        hidden, in_ch, patch = proj.shape[0], proj.shape[1], proj.shape[-1]
        out_ch = state["final_layer.linear.weight"].shape[0] // (patch * patch)
        tokens = state["pos_embed"].shape[1]
        classes = state["y_embedder.embedding_table.weight"].shape[0] - 1
    except (KeyError, IndexError):
        return None
    blocks = [int(m.group(1)) for m in map(_BLOCK.match, state) if m]
    size = next((s for s, (d, h, _) in SIZES.items() if (d, h) == (max(blocks, default=-1) + 1, hidden)), None)
    router = state.get("blocks.0.attn_rate.router.weight")
    layout = None
    if router is not None and size is not None:
        heads = SIZES[size][2]
        layout = {heads - 1: "ALI", heads: "NUS"}.get(router.shape[0], f"unknown ({router.shape[0]} rows)")
    return dict(depth=max(blocks, default=-1) + 1, hidden=hidden, patch=patch, in_channels=in_ch,
                learn_sigma=out_ch == 2 * in_ch, input_size=math.isqrt(tokens) * patch, num_classes=classes,
                size=size, dydit=any(map(is_router_key, state)), layout=layout)


def _name(d: dict) -> str:
    """A model name for inferred dims, e.g. "DyDiT-XL/2", with the non-default settings after it."""
    family = "DyDiT" if d["dydit"] else ("DiT" if d["learn_sigma"] else "SiT")
    if d["size"] is None:
        return f"custom {family} (depth {d['depth']}, hidden {d['hidden']}, patch {d['patch']})"
    extra = [] if d["learn_sigma"] or family == "SiT" else ["learn_sigma=False"]
    extra += [f"{k}={d[k]}" for k, v in (("input_size", 32), ("in_channels", 4), ("num_classes", 1000))
              if d[k] != v]
    return f"{family}-{d['size']}/{d['patch']}" + (f" ({', '.join(extra)})" if extra else "")


def infer_config(state_dict: Dict[str, torch.Tensor]) -> str:
    """The config a state dict looks like, from its keys and shapes: "DiT-XL/2", "DyDiT-S/8", ..."""
    d = _dims(state_dict)
    return "unknown (not a DiT/DyDiT state dict)" if d is None else _name(d)


# ----------------------------------------------------------------------------- loading

def _ranges(indices: List[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5"."""
    runs = []
    for i in sorted(set(indices)):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def compact_keys(keys, suffix=lambda key: "") -> List[str]:
    """Groups keys by pattern (block index -> {i}) into lines such as "blocks.{i}.x (12 keys, i=0-11)"."""
    groups: Dict[Tuple[str, str], List[Optional[int]]] = {}
    for key in keys:
        m = _BLOCK.match(key)
        pattern = "blocks.{i}." + key[m.end():] if m else key
        groups.setdefault((pattern, suffix(key)), []).append(int(m.group(1)) if m else None)
    lines = [(pattern.replace("{i}", str(idx[0])) if len(idx) == 1 and idx[0] is not None else
              pattern if idx[0] is None else f"{pattern} ({len(idx)} keys, i={_ranges(idx)})") + extra
             for (pattern, extra), idx in groups.items()]
    if len(lines) > _MAX_LINES:
        lines = lines[:_MAX_LINES] + [f"... and {len(lines) - _MAX_LINES} more patterns"]
    return lines


def _reset_routers(model: nn.Module, seed: int):
    """Gives every router DyDiT's init, which keeps all masks on (biases 15 width, 35 tokens); the token routers'
    first layer is drawn from `seed`, never from the caller's RNG (a fine-tune's start is a function of its seed)."""
    generator = torch.Generator().manual_seed(seed)
    for block in model.blocks:
        for router in (block.attn_rate.router, block.mlp_rate.router):
            nn.init.zeros_(router.weight)
            nn.init.constant_(router.bias, 15.0)
        head = block.token_selection.mlp_head
        with torch.no_grad():  # drawn on the CPU, then copied: the same numbers on every device
            head[0].weight.copy_(nn.init.xavier_uniform_(torch.empty(head[0].weight.shape), generator=generator))
        nn.init.zeros_(head[0].bias)
        nn.init.zeros_(head[2].weight)
        nn.init.constant_(head[2].bias, 35.0)


def load_checkpoint(model: nn.Module, path_or_state_dict: Union[str, os.PathLike, dict], strict: bool = True,
                    allow_drop_routers: bool = False, router_seed: int = 0) -> LoadReport:
    """Validates keys and shapes against the model, then loads; raises CheckpointError with the reasons.

    A DiT checkpoint loaded into a DyDiT gives it fresh routers drawn from router_seed (a fine-tune passes its seed).
    """
    is_dict = isinstance(path_or_state_dict, dict)
    where = "the state dict" if is_dict else f"checkpoint {os.fspath(path_or_state_dict)}"
    obj = path_or_state_dict if is_dict else weights.read(path_or_state_dict)
    state, source, notes = unwrap_state_dict(obj, where)
    expected = model.state_dict()
    ckpt, mine = _dims(state), _dims(expected)
    ckpt_name, model_name = infer_config(state), infer_config(expected)
    ckpt_routers = [k for k in state if is_router_key(k)]
    model_routers = [k for k in expected if is_router_key(k)]
    fail = f"cannot load {where} (looks like {ckpt_name}) into {model_name}"

    w, ours = state.get("blocks.0.attn_rate.router.weight"), expected.get("blocks.0.attn_rate.router.weight")
    nus = (ckpt and ckpt["layout"] == "NUS") or (w is not None and ours is not None and len(w) == len(ours) + 1)
    if nus and (model_routers or not allow_drop_routers):
        raise CheckpointError(
            f"{fail}: it has the first-release NUS router layout, router Linear(D, H) with weight "
            f"{tuple(w.shape)}; this code uses the official ALI layout Linear(D, H-1), weight "
            f"({w.shape[0] - 1}, {w.shape[1]}): checkpoints of the NUS layout do not load into it")
    fresh, dropped = [], []
    if model_routers and not ckpt_routers:
        fresh = model_routers
        notes.append(f"DiT checkpoint loaded into DyDiT: routers start fresh ({len(fresh)} tensors, "
                     "init keeps every mask on)")
    if ckpt_routers and not model_routers:
        if not allow_drop_routers:
            raise CheckpointError(
                f"{fail}: it is a DyDiT checkpoint ({len(ckpt_routers)} router tensors) and the model is a "
                f"plain DiT: use {ckpt_name.split(' ')[0]}, or pass allow_drop_routers=True to load the DiT "
                "weights only")
        dropped = ckpt_routers
        notes.append(f"DyDiT checkpoint loaded into DiT: dropped the routers ({len(dropped)} tensors)")

    missing = [k for k in expected if k not in state and k not in fresh]
    unexpected = [k for k in state if k not in expected and k not in dropped]
    mismatched = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if mismatched or (strict and (missing or unexpected)):
        lines = [fail + ":"]
        diff = [f"{k} {ckpt[k]} vs {mine[k]}" for k in _SHAPE_DIMS if ckpt[k] != mine[k]] if ckpt and mine else []
        if diff:
            lines.append(f"  size mismatch: checkpoint looks like {ckpt_name}, model is {model_name} "
                         f"(checkpoint vs model: {', '.join(diff)})")
        for title, keys, suffix in (
                ("missing keys", missing, lambda k: ""),
                ("unexpected keys", unexpected, lambda k: ""),
                ("shape mismatch", mismatched,
                 lambda k: f": expected {tuple(expected[k].shape)}, found {tuple(state[k].shape)}")):
            if keys:
                lines.append(f"  {title} ({len(keys)}):")
                lines += [f"    {line}" for line in compact_keys(keys, suffix)]
        raise CheckpointError("\n".join(lines))
    if missing:
        notes.append(f"missing keys kept from the model ({len(missing)}): " + "; ".join(compact_keys(missing)))
    if unexpected:
        notes.append(f"unexpected keys ignored ({len(unexpected)}): " + "; ".join(compact_keys(unexpected)))

    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    if fresh and isinstance(model, DyDiT):  # a DyFLUX's routers were made fresh with their all-on init (dydit.flux)
        _reset_routers(model, router_seed)
    for note in notes:
        log.info("%s: %s", where, note)
    return LoadReport(source, notes, list(fresh), list(dropped), missing, unexpected)


# fewer of the model's tensors than this from a checkpoint is not a start from it but a wrong file
MIN_MATCHING_FRACTION = 0.5


def load_matching(model: nn.Module, path) -> LoadReport:
    """Loads the checkpoint's tensors whose name and shape match the model's; the others keep their init. Latte's
    train.py `pretrained` starts a Latte from an image DiT by name alone (a class table of another size would fail
    there); the shape check lets it keep its init here. Raises CheckpointError when under MIN_MATCHING_FRACTION of
    the model's tensors match (another model's file)."""
    where = f"checkpoint {os.fspath(path)}"
    state, source, notes = unwrap_state_dict(weights.read(path), where)
    expected = model.state_dict()
    matching = {k: v for k, v in state.items() if k in expected and v.shape == expected[k].shape}
    if len(matching) < MIN_MATCHING_FRACTION * len(expected):
        raise CheckpointError(f"cannot start {type(model).__name__} from {where} (looks like {infer_config(state)}): "
                              f"only {len(matching)} of the model's {len(expected)} tensors match it by name and "
                              "shape; give the image model it is built on")
    fresh = [k for k in expected if k not in matching]
    ignored = [k for k in state if k not in matching]
    if fresh:
        notes.append(f"kept their init ({len(fresh)}): " + "; ".join(compact_keys(fresh)))
    if ignored:
        notes.append(f"not loaded ({len(ignored)}): " + "; ".join(compact_keys(ignored)))
    model.load_state_dict(matching, strict=False)
    for note in notes:
        log.info("%s: %s", where, note)
    return LoadReport(source, notes, fresh_keys=fresh, missing_keys=fresh, unexpected_keys=ignored)


# ----------------------------------------------------------------------------- saving

def save_checkpoint(model_or_state_dict: Union[nn.Module, dict], path) -> None:
    """Saves a raw state dict as .pt/.pth (torch.save) or .safetensors, atomically (dydit.fileio)."""
    path = os.fspath(path)
    state = model_or_state_dict.state_dict() if isinstance(model_or_state_dict, nn.Module) else model_or_state_dict
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if not path.endswith((".pt", ".pth", ".safetensors")):
        raise CheckpointError(f"unknown checkpoint extension for {path}: use .pt, .pth or .safetensors")
    if path.endswith(".safetensors"):
        from safetensors.torch import save
        atomic_write(path, lambda f: f.write(save(state)))
    else:
        atomic_write(path, lambda f: torch.save(state, f))


# ----------------------------------------------------------------------------- trained runs

def add_adapter(model, config: TrainConfig):
    """The run's adapters (static LoRA or TD-LoRA) on the loaded base weights, then the routers ablation."""
    if config.adapter == "td-lora":
        add_td_lora(model, config.adapter_rank, config.adapter_experts)
    elif config.adapter == "lora":
        add_static_lora(model, config.adapter_rank)
    if config.routers != "all":
        if not isinstance(model, DyDiT):
            raise TrainError(f"routers={config.routers!r} is a DyDiT ablation; {config.model} has no routers")
        frozen = ("token_selection",) if config.routers == "width" else ("attn_rate", "mlp_rate")
        for block in model.blocks:
            for name in frozen:
                getattr(block, name).requires_grad_(False)
    return model


def load_trained(path, model_kwargs=None, use_ema=True, merge=True):
    """A model from a training checkpoint of this trainer, with its EMA weights (use_ema=False: the raw ones),
    in eval mode. An adapter run's base is re-read from args.init_checkpoint and its sha256 checked; a static
    LoRA is merged into it, as inference runs it (merge=False keeps the peft layers)."""
    state = weights.read(path)
    config = TrainConfig(**{k: v for k, v in state["args"].items() if k in TrainConfig.__dataclass_fields__})
    model = create_model(config.model, **(model_kwargs or {}))
    if config.adapter == "none":
        load_checkpoint(model, path if use_ema else state["model"])  # the path: its `ema`, with its name in errors
        return model.eval()
    digest = sha256_file(config.init_checkpoint)
    if digest != state.get("base_sha256"):
        raise TrainError(f"{path} was trained on a base with sha256 {state.get('base_sha256')}; "
                         f"{config.init_checkpoint} now has sha256 {digest}")
    load_checkpoint(model, config.init_checkpoint)
    add_adapter(model, config)
    trained = state["ema" if use_ema else "model"]
    missing = set(trainable_parameters(model)) - set(trained)
    if missing:
        raise TrainError(f"{path} lacks trained tensors: {sorted(missing)[:3]}")
    model.load_state_dict(trained, strict=False)
    if config.adapter == "lora" and merge:
        merge_static_lora(model)
    return model.eval()


def adapter_run_model(path) -> Optional[str]:
    """The model name of an adapter run's checkpoint (its trained tensors and its base's sha256); None for
    any other checkpoint."""
    try:  # memory-mapped: a full-size DiT checkpoint is not read to answer
        state = weights.read(path, mmap=True)
    except Exception:  # missing, of torch's legacy format (not mappable; never an adapter run's) or no checkpoint
        return None  # load_checkpoint says which
    if isinstance(state, dict) and "base_sha256" in state:
        return state["args"]["model"]
    return None


def load_model(name: str, path, **model_kwargs) -> nn.Module:
    """The model `name` with the weights of `path`, whatever the file is: an official or converted checkpoint,
    this trainer's checkpoint (its EMA weights), or an adapter run's (the adapters on their sha256-checked
    base, static LoRA merged). model_kwargs go to the constructor (input_size, num_classes, ...)."""
    trained = adapter_run_model(path)
    if trained is not None:
        if trained != name:
            raise ValueError(f"{path} holds adapters of a {trained} run, not of {name}")
        return load_trained(path, model_kwargs)
    model = create_model(name, **model_kwargs)
    load_checkpoint(model, path)
    return model
