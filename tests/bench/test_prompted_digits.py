"""The text-to-image mini's data (bench/mini/prompted_digits.py): digits drawn where and as thick as their prompt
says, a word-level tokenizer that refuses what it cannot encode, and attributes read back from pixels."""
import pytest
import torch

from bench.data import DIGITS_SIZE, DataError, digits
from bench.mini.prompted_digits import (MAX_TOKENS, POSITIONS, THICKNESSES, WORDS, AttributeReader, PromptTokenizer,
                                        digit_halves, prompted_digits)


@pytest.fixture(scope="module")
def val():
    return prompted_digits("val")


def test_each_digit_is_drawn_where_and_as_thick_as_its_prompt_says(val):
    assert val.images.shape == (500, 1, DIGITS_SIZE, 2 * DIGITS_SIZE) and len(val) == 500
    plain = digits("val").tensors
    assert torch.equal(val.digits, plain[1])  # the same digits as the mini's split, in the same order
    thin = val.thicknesses == 0
    assert torch.allclose(digit_halves(val)[thin], plain[0][thin], atol=1e-6)  # a thin digit is the digit as written
    other = torch.where(val.positions[:, None, None, None] == 0, val.images[..., DIGITS_SIZE:], val.images[..., :DIGITS_SIZE])
    assert bool((other == -1).all())  # the other half is blank
    for i in range(20):
        words = val.prompts[i].split()
        assert POSITIONS[val.positions[i]] in words and THICKNESSES[val.thicknesses[i]] in words
        assert WORDS[val.digits[i]] in words or str(int(val.digits[i])) in words
    assert 0.4 < float(val.thicknesses.float().mean()) < 0.6 and 0.4 < float(val.positions.float().mean()) < 0.6
    again = prompted_digits.__wrapped__("val")  # built again, not the cached copy
    assert torch.equal(again.images, val.images) and again.prompts == val.prompts
    with pytest.raises(DataError, match="unknown digits split"):
        prompted_digits("test")


def test_the_tokenizer_pads_and_refuses_unknown_words_and_long_prompts(val):
    tokenizer = PromptTokenizer()
    ids = tokenizer(val.prompts[:8])
    assert ids.shape == (8, MAX_TOKENS) and int(ids.min()) == 0 and int(ids.max()) < len(tokenizer)
    assert (ids[:, 0] != 0).all()  # no prompt is empty
    with pytest.raises(DataError, match="unknown word.*'purple'"):
        tokenizer(["a purple seven on the left"])
    with pytest.raises(DataError, match="at most 10"):
        tokenizer(["a thin seven on the left " * 3])


def test_attributes_read_back_from_real_digits(val):
    """The reader (classifier + ink centroid + per-class ink thresholds) on the digits it was fitted on: every
    position, nearly every digit and thickness (the score's ceiling on real digits: NOTES.md)."""
    from bench.metrics.digits import ClassifierConfig
    reader = AttributeReader.train(val, ClassifierConfig(epochs=40))  # 500 digits: as many steps as 3,500 x 6
    got = reader.read(val.images)
    assert torch.equal(got[1], val.positions)
    assert float((got[0] == val.digits).float().mean()) > 0.9
    assert float((got[2] == val.thicknesses).float().mean()) > 0.85
    assert reader.score(val.images, val.digits, val.positions, val.thicknesses) > 0.8
    flipped = 1 - val.positions
    assert reader.score(val.images, val.digits, flipped, val.thicknesses) == 0.0


def test_flux_mini_trains_and_dyflux_mini_fine_tunes_from_it_through_bench_train(tmp_path, capsys):
    """`bench train --data prompted-digits`: FLUX-Mini from scratch, then DyFLUX-Mini from its checkpoint (routers
    fresh, all on), through dydit.train like a DiT and a DyDiT; what it cannot train is one error line."""
    from tests.bench.runner_helpers import cli
    common = ["--objective", "flow", "--data", "prompted-digits", "--split", "val", "--global-batch-size", "8",
              "--max-steps", "3", "--log-every", "3", "--ckpt-every", "3"]
    assert cli("train", "--model", "FLUX-Mini", *common, "--out", tmp_path / "flux") == 0
    base = tmp_path / "flux" / "checkpoints" / "0000003.pt"
    assert cli("train", "--model", "DyFLUX-Mini", *common, "--lambda", "0.5", "--init-checkpoint", base,
               "--out", tmp_path / "dy") == 0
    import json
    (log,) = [json.loads(line) for line in (tmp_path / "dy" / "log.jsonl").read_text().splitlines()]
    assert 0.9 < log["flops_ratio"] <= 1.0 and log["complete"] > 0  # fresh routers keep everything at first
    # DyDiT++'s parameter-efficient fine-tuning: static LoRA on every block linear, loaded merged for the fast path
    assert cli("train", "--model", "DyFLUX-Mini", *common, "--lambda", "0.5", "--init-checkpoint", base,
               "--adapter", "lora", "--adapter-rank", "2", "--out", tmp_path / "lora") == 0
    from dydit.checkpoints import load_trained
    merged = load_trained(tmp_path / "lora" / "checkpoints" / "0000003.pt")
    assert type(merged.transformer.single_transformer_blocks[0].proj_mlp) is torch.nn.Linear  # merged
    assert cli("train", "--model", "DyFLUX-Mini", *common, "--lambda", "0.5", "--init-checkpoint", base,
               "--adapter", "td-lora", "--adapter-rank", "2", "--out", tmp_path / "td") == 0
    from dydit.lora import TDLoRALinear
    reloaded = load_trained(tmp_path / "td" / "checkpoints" / "0000003.pt")  # adapters on their sha256-checked base
    assert isinstance(reloaded.transformer.transformer_blocks[0].ff.net[2], TDLoRALinear)
    capsys.readouterr()
    for argv, words in ((["--model", "FLUX-Lite", *common], "full-size FLUX needs"),

                        (["--model", "FLUX-Mini", *common[2:], "--objective", "diffusion"], "rectified flow"),
                        (["--model", "FLUX-Mini", "--objective", "flow", "--data", "digits", "--split", "val",
                          "--max-steps", "1"],
                         "is text-to-image")):
        assert cli("train", *argv, "--out", tmp_path / "bad") == 2, argv
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after the data's summary line, where one prints
        assert err.startswith("error: ") and words in err, err
