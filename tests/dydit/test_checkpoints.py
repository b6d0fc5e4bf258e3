"""Checkpoint reading, validation messages and saving (dydit/checkpoints.py), on small CPU models."""
import pytest
import torch

from dydit import create_model
from dydit.checkpoints import (CheckpointError, LoadReport, infer_config, load_checkpoint, load_state_dict,
                               save_checkpoint)


class NotATensor:
    """A custom class: a pickle holding it must be refused by the weights-only reader."""

    def __init__(self):
        self.payload = "would run code on load"


def randomized(name, seed=0):
    """A model whose every parameter is random (DiT's init zeroes adaLN and the final layer)."""
    torch.manual_seed(seed)
    model = create_model(name).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    return model


def run(model, seed=1):
    """One eval forward on a fixed small batch."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 32, 32, generator=g)
    t = torch.tensor([10.0, 500.0])
    y = torch.tensor([3, 7])
    with torch.no_grad():
        return model(x, t, y)


@pytest.fixture(scope="module")
def dit():
    return randomized("DiT-S/8")


@pytest.fixture(scope="module")
def dit_out(dit):
    return run(dit)


@pytest.fixture(scope="module")
def dit_state(dit):
    return {k: v.clone() for k, v in dit.state_dict().items()}


@pytest.mark.parametrize("ext", [".pt", ".safetensors"])
def test_round_trip_gives_equal_outputs(dit, dit_out, tmp_path, ext):
    path = tmp_path / f"model{ext}"
    save_checkpoint(dit, path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind
    fresh = create_model("DiT-S/8").eval()
    assert not torch.equal(fresh.blocks[0].attn.qkv.weight, dit.blocks[0].attn.qkv.weight)
    report = load_checkpoint(fresh, path)
    assert report.source == "raw" and report.fresh_keys == []
    assert torch.equal(run(fresh), dit_out)
    assert load_state_dict(path).keys() == dit.state_dict().keys()


def test_training_checkpoint_prefers_ema(dit_state, tmp_path):
    path = tmp_path / "train.pt"
    torch.save({"model": {"w": torch.zeros(3)}, "ema": {"w": torch.ones(3)}, "opt": {"state": {}}, "args": {}}, path)
    assert torch.equal(load_state_dict(path)["w"], torch.ones(3))
    torch.save({"model": {"w": torch.zeros(3)}, "opt": {"state": {}}}, path)
    assert torch.equal(load_state_dict(path)["w"], torch.zeros(3))
    # load_checkpoint says which entry it used, and loads that one
    ema = {k: v + 0.01 for k, v in dit_state.items()}
    model = create_model("DiT-S/8")
    report = load_checkpoint(model, {"model": dit_state, "ema": ema, "opt": {}})
    assert report.source == "ema" and any("using 'ema'" in n for n in report.notes)
    assert torch.equal(model.blocks[0].attn.qkv.weight, ema["blocks.0.attn.qkv.weight"])
    report = load_checkpoint(model, {"model": dit_state, "opt": {}})
    assert report.source == "model" and any("no 'ema'" in n for n in report.notes)
    assert torch.equal(model.blocks[0].attn.qkv.weight, dit_state["blocks.0.attn.qkv.weight"])


def test_training_checkpoint_with_argparse_args_is_read(dit_state, tmp_path):
    import argparse
    path = tmp_path / "train.pt"
    torch.save({"model": dit_state, "args": argparse.Namespace(lr=1e-4)}, path)
    assert torch.equal(load_state_dict(path)["pos_embed"], dit_state["pos_embed"])


def test_ddp_module_prefix_is_stripped(dit_state, tmp_path):
    path = tmp_path / "ddp.pt"
    torch.save({f"module.{k}": v for k, v in dit_state.items()}, path)
    assert set(load_state_dict(path)) == set(dit_state)
    model = create_model("DiT-S/8").eval()
    report = load_checkpoint(model, path)
    assert any("module." in n for n in report.notes)
    assert all(torch.equal(v, dit_state[k]) for k, v in model.state_dict().items())


def test_missing_keys_are_listed_compactly(dit_state):
    state = {k: v for k, v in dit_state.items() if not k.endswith("attn.qkv.weight") and k != "pos_embed"}
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(create_model("DiT-S/8"), state)
    msg = str(err.value)
    assert "missing keys (13)" in msg
    assert "blocks.{i}.attn.qkv.weight (12 keys, i=0-11)" in msg and "pos_embed" in msg
    assert "unexpected" not in msg and "size mismatch" not in msg
    # strict=False loads the rest and reports the missing keys
    report = load_checkpoint(create_model("DiT-S/8"), state, strict=False)
    assert len(report.missing_keys) == 13 and any("missing keys kept" in n for n in report.notes)


def test_unexpected_keys_are_listed_compactly(dit_state):
    state = dict(dit_state, **{f"blocks.{i}.extra.scale": torch.ones(3) for i in (0, 1, 2, 5)})
    state["head.weight"] = torch.zeros(2)
    model = create_model("DiT-S/8")
    before = model.state_dict()["blocks.0.attn.qkv.weight"].clone()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(model, state)
    msg = str(err.value)
    assert "unexpected keys (5)" in msg
    assert "blocks.{i}.extra.scale (4 keys, i=0-2,5)" in msg and "head.weight" in msg
    assert "missing" not in msg
    assert torch.equal(model.state_dict()["blocks.0.attn.qkv.weight"], before)  # refused before loading
    report = load_checkpoint(model, state, strict=False)
    assert sorted(report.unexpected_keys)[-1] == "head.weight"


def test_shape_mismatch_names_key_and_both_shapes(dit_state):
    state = dict(dit_state)
    state["blocks.3.attn.proj.weight"] = torch.zeros(384, 383)
    model = create_model("DiT-S/8")
    before = model.state_dict()["blocks.0.attn.qkv.weight"].clone()
    for strict in (True, False):
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(model, state, strict=strict)
        assert "blocks.3.attn.proj.weight: expected (384, 384), found (384, 383)" in str(err.value)
    # validation happens before loading: nothing was copied
    assert torch.equal(model.state_dict()["blocks.0.attn.qkv.weight"], before)


@pytest.mark.parametrize("ext, reason", [(".pt", "zip archive has no end record, the file looks truncated"),
                                         (".safetensors", "SafetensorError: Error while deserializing header")])
def test_truncated_file_names_the_path_and_reason(dit_state, tmp_path, ext, reason):
    path = tmp_path / f"full{ext}"
    save_checkpoint({k: dit_state[k] for k in list(dit_state)[:20]}, path)
    data = path.read_bytes()
    cut = tmp_path / f"half{ext}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        load_state_dict(cut)
    msg = str(err.value)
    assert f"truncated or corrupt checkpoint {cut} ({len(data) // 2} bytes)" in msg and reason in msg


def test_empty_and_garbage_files(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt .*the file is empty"):
        load_state_dict(tmp_path / "empty.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="truncated or corrupt checkpoint .*junk.pt") as err:
        load_state_dict(tmp_path / "junk.pt")
    assert "refused for safety" not in str(err.value)


def test_missing_file_and_non_tensor_state_dict(tmp_path):
    with pytest.raises(CheckpointError, match="not found: .*nope.pt"):
        load_state_dict(tmp_path / "nope.pt")
    path = tmp_path / "list.pt"
    torch.save({"w": torch.zeros(2), "step": 7}, path)
    with pytest.raises(CheckpointError, match=r"not a dict of tensors.*'step' \(int\)"):
        load_state_dict(path)


def test_pickle_with_custom_object_is_refused_for_safety(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "obj": NotATensor()}, path)
    with pytest.raises(CheckpointError) as err:
        load_state_dict(path)
    msg = str(err.value)
    assert "non-tensor objects" in msg and "refused for safety" in msg
    assert "NotATensor" in msg and str(path) in msg


def test_dit_checkpoint_into_dydit_routers_start_fresh_and_outputs_match(dit, dit_out, tmp_path):
    path = tmp_path / "dit.pt"
    save_checkpoint(dit, path)
    dydit = create_model("DyDiT-S/8").eval()
    with torch.no_grad():  # routers that would switch everything off must be reset by the load
        for block in dydit.blocks:
            block.attn_rate.router.bias.fill_(-15.0)
            block.token_selection.mlp_head[2].bias.fill_(-35.0)
    report = load_checkpoint(dydit, path)
    assert isinstance(report, LoadReport)
    assert "DiT checkpoint loaded into DyDiT: routers start fresh (96 tensors" in " ".join(report.notes)
    assert len(report.fresh_keys) == 96 and all("router" in k or "token_selection" in k for k in report.fresh_keys)
    record = []
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        out = dydit(torch.randn(2, 4, 32, 32, generator=g), torch.tensor([10.0, 500.0]), torch.tensor([3, 7]),
                    record=record)
    assert len(record) == 12
    assert all(bool((m.heads == 1).all() and (m.channels == 1).all() and (m.tokens == 1).all()) for m in record)
    torch.testing.assert_close(out, dit_out, rtol=0, atol=1e-6)


def test_dydit_checkpoint_into_dit_is_refused_unless_routers_dropped(dit_state, dit_out, tmp_path):
    routers = {k: v for k, v in create_model("DyDiT-S/8").state_dict().items() if "_rate." in k or "token_sel" in k}
    path = tmp_path / "dydit.safetensors"
    save_checkpoint({**dit_state, **routers}, path)
    dit = create_model("DiT-S/8").eval()
    for strict in (True, False):
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(dit, path, strict=strict)
        msg = str(err.value)
        assert "DyDiT checkpoint (96 router tensors)" in msg and "use DyDiT-S/8" in msg
        assert "allow_drop_routers=True" in msg
    report = load_checkpoint(dit, path, allow_drop_routers=True)
    assert sorted(report.dropped_keys) == sorted(routers) and "dropped the routers (96" in " ".join(report.notes)
    assert torch.equal(run(dit), dit_out)


def test_nus_router_layout_is_detected():
    state = create_model("DyDiT-S/8").state_dict()
    for i in range(12):
        for name in ("attn_rate", "mlp_rate"):
            state[f"blocks.{i}.{name}.router.weight"] = torch.zeros(6, 384)  # Linear(D, H): H=6 rows
            state[f"blocks.{i}.{name}.router.bias"] = torch.zeros(6)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(create_model("DyDiT-S/8"), state)
    msg = str(err.value)
    assert "NUS" in msg and "ALI" in msg and "(6, 384)" in msg and "(5, 384)" in msg and "do not load" in msg


def test_size_mismatch_names_the_inferred_config():
    with torch.device("meta"):
        xl = create_model("DiT-XL/2").state_dict()
    model = create_model("DiT-S/8")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(model, xl)
    msg = str(err.value)
    assert "checkpoint looks like DiT-XL/2, model is DiT-S/8" in msg
    assert "depth 28 vs 12" in msg and "hidden 1152 vs 384" in msg and "patch 2 vs 8" in msg
    assert "pos_embed: expected (1, 16, 384), found (1, 256, 1152)" in msg


@pytest.mark.parametrize("name", ["DiT-S/8", "DyDiT-S/4", "SiT-S/8", "DiT-XL/2", "DyDiT-XL/2", "DyDiT-L/4"])
def test_infer_config(name):
    with torch.device("meta"):
        state = create_model(name).state_dict()
    assert infer_config(state) == name
    assert infer_config({"foo": torch.zeros(1)}).startswith("unknown")


def test_save_rejects_unknown_extension_and_leaves_no_temp(dit, tmp_path):
    with pytest.raises(CheckpointError, match="extension"):
        save_checkpoint(dit, tmp_path / "model.ckpt")
    assert list(tmp_path.iterdir()) == []
