"""The mini as a measuring instrument: the spread study's rules, the fair control's recipe, the device choice."""
import dataclasses
import json

import pytest
import torch

from bench.measure.base import Context
from bench.mini import build, spread
from bench.mini.config import MiniConfig
from bench.suite import Options


#################################################################################
#                               The spread rules                                #
#################################################################################

def test_cfg_rule_takes_the_lowest_validation_fid_among_the_accurate_scales():
    sweep = [{"cfg_scale": 1.0, "mini_fid": 40.0, "accuracy": 0.80}, {"cfg_scale": 1.5, "mini_fid": 45.0, "accuracy": 0.96},
             {"cfg_scale": 2.0, "mini_fid": 50.0, "accuracy": 0.99}]
    assert spread.choose_cfg(sweep) == 1.5  # 1.0 scores better but misses the accuracy bar
    inaccurate = [dict(p, accuracy=p["accuracy"] - 0.5) for p in sweep]
    assert spread.choose_cfg(inaccurate) == 2.0  # none accurate: the most accurate


def test_sample_size_rule_takes_the_smallest_n_within_the_spread_fraction():
    by_size = {250: [50.0, 60.0, 40.0], 500: [50.0, 52.0, 49.0], 1000: [50.0, 50.5, 49.5]}
    assert spread.choose_num_samples(by_size) == 500  # 250: std 10 > 5 % of 50; 500: std 1.5 <= 2.5
    assert spread.choose_num_samples({250: [1.0, 9.0, 5.0]}) == 250  # none within: the largest measured


def test_tolerance_rule_is_two_sigmas_plus_the_thread_effect_rounded_up():
    values = [10.0, 12.0, 14.0]  # std (ddof 1) 2
    assert spread.tolerance(values, 0.5) == pytest.approx(4.5)
    assert spread.tolerance(values, -0.5) == pytest.approx(4.5)  # the machine effect counts either way
    assert spread.tolerance([0.9, 0.91, 0.95], 0.0) >= 2 * 0.026457  # rounded up, never down
    assert spread.tolerance([1.0, 1.0], 0.0) == 0.0


def test_every_family_the_cli_takes_has_a_sampler_and_a_model():
    from bench.definitions import SPREAD_FAMILIES, SPREAD_FAMILY
    assert set(spread.FAMILY_SAMPLERS) == set(SPREAD_FAMILIES)
    assert set(spread.FAMILY_MODELS) == set(SPREAD_FAMILIES) - {SPREAD_FAMILY}  # the spread family: the recipe's model


TINY = MiniConfig(dit_steps=4, dit_lr_warmup=2, finetune_fraction=0.5, classifier_epochs=1)


def test_the_spread_study_end_to_end_on_a_tiny_recipe(tmp_path):
    kwargs = dict(train_seeds=(0, 1), sampling_seeds=(0, 1), sizes=(10, 20), cfg_scales=(1.0, 2.0), steps=3,
                  val_samples=20, command="test", log=lambda *a: None, progress_file=tmp_path / "progress.json")
    study = spread.run_study(TINY, tmp_path, **kwargs)
    assert set(study["families"]) == {"DiT", "SiT"}
    dit = study["families"]["DiT"]
    assert [p["cfg_scale"] for p in dit["cfg_sweep"]] == [1.0, 2.0] and dit["cfg_scale"] in (1.0, 2.0)
    assert dit["num_samples"] in (10, 20) and len(dit["evaluations"]) == 4
    assert set(dit["tolerances"]) == set(spread.QUALITY_KEYS) - {"readback"}  # the text-to-image mini's only
    assert all(v >= 0 for v in dit["tolerances"].values())
    assert study["provenance"]["command"] == "test" and study["recipe"]["dit_steps"] == 4
    path = spread.write(study, tmp_path / "s.json")
    assert spread.load(path) == json.loads(json.dumps(study))
    # 1 vs 2 threads, both recorded; the 2-thread one is train seed 0, sampling seed 0 (the same evaluation)
    assert set(dit["threads"]) == {"1", "2"}


def test_the_video_familys_cfg_sweep_scores_clips_against_the_validation_clips(tmp_path):
    study = spread.run_study(TINY, tmp_path, families=("Latte",), cfg_scales=(1.0, 2.0), steps=2, val_samples=8,
                             command="test", log=lambda *a: None)
    latte = study["families"]["Latte"]
    assert latte["model"] == "Latte-Mini/2" and latte["cfg_scale"] in (1.0, 2.0) and "tolerances" not in latte
    for point in latte["cfg_sweep"]:  # the frames' quality, and what only clips have
        assert {"mini_fid", "accuracy", "motion", "mini_fvd", "consistency"} <= set(point)
        assert 0.0 <= point["accuracy"] <= 1.0 and 0.0 <= point["motion"] <= 1.0


def test_the_text_to_image_familys_sweep_draws_the_validation_prompts_and_its_spread_the_heldout(tmp_path,
                                                                                                  monkeypatch):
    from bench.mini import evaluate_text2img
    drawn = []
    real = evaluate_text2img.sample_canvases

    def recording(model, spec, prompts, recorder):
        drawn.append((len(prompts), spec.num_samples))
        return real(model, spec, prompts, recorder)
    monkeypatch.setattr(evaluate_text2img, "sample_canvases", recording)
    study = spread.run_study(TINY, tmp_path, families=("FLUX",), train_seeds=(0, 1), sampling_seeds=(0, 1),
                             sizes=(4, 8), cfg_scales=(1.0, 2.0), steps=2, val_samples=8, command="test",
                             log=lambda *a: None)
    flux = study["families"]["FLUX"]
    assert flux["model"] == "FLUX-Mini" and flux["cfg_scale"] in (1.0, 2.0)
    for point in flux["cfg_sweep"]:
        assert {"mini_fid", "accuracy", "readback"} <= set(point) and 0.0 <= point["readback"] <= 1.0
    # the sweep: the validation split's prompts (500); the spread: the held-out split's (1,000), one run of the
    # largest N per sampling seed, then N per training x sampling seed, then 1 thread
    n = flux["num_samples"]
    assert drawn == [(500, 8)] * 2 + [(1000, 8)] * 2 + [(1000, n)] * 5 and n in (4, 8)
    assert [(e["train_seed"], e["sampling_seed"]) for e in flux["evaluations"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert set(flux["tolerances"]) == set(spread.QUALITY_KEYS)  # read-back's too
    assert all(v >= 0 for v in flux["tolerances"].values()) and set(flux["threads"]) == {"1", "2"}


def test_a_family_sweep_is_added_to_the_study_of_the_same_recipe_only(tmp_path):
    from dydit.errors import UserError
    recipe = dataclasses.asdict(TINY)
    dit = {"model": "DiT-Mini/2", "cfg_scale": 1.75, "tolerances": {"mini_fid": 3.5}}
    existing = spread.write({"recipe": recipe, "families": {"DiT": dit}, "provenance": {"command": "dit"}},
                            tmp_path / "s.json")
    sit = {"model": "SiT-Mini/2", "cfg_scale": 1.25, "cfg_sweep": []}
    added = {"recipe": recipe, "families": {"SiT": sit}, "provenance": {"command": "sit"}}
    merged = spread.merge(spread.existing_study(existing, TINY), added)
    assert merged["families"]["DiT"] == dit and merged["provenance"] == {"command": "dit"}  # the spread's own
    assert merged["families"]["SiT"] == {**sit, "provenance": {"command": "sit"}}
    # a new DiT study keeps the families it did not study (FLUX's own spread: hours), each with its own run
    flux = {"model": "FLUX-Mini", "tolerances": {"mini_fid": 9.5}, "provenance": {"command": "flux"}}
    previous = spread.merge(merged, {"recipe": recipe, "families": {"FLUX": flux}, "provenance": {"command": "flux"}})
    new = {"recipe": recipe, "families": {"DiT": dict(dit, cfg_scale=1.5)}, "provenance": {"command": "dit 2"}}
    carried = spread.carry_over(previous, new)
    assert carried["families"]["DiT"]["cfg_scale"] == 1.5 and carried["provenance"] == {"command": "dit 2"}
    assert carried["families"]["FLUX"] == flux and carried["families"]["SiT"]["provenance"] == {"command": "sit"}
    with pytest.raises(UserError, match="another recipe"):  # a study of other static models is not extended
        spread.existing_study(existing, dataclasses.replace(TINY, dit_steps=5))
    with pytest.raises(UserError, match="no readable spread study"):
        spread.existing_study(tmp_path / "missing.json", TINY)


def test_an_interrupted_spread_study_resumes_from_its_finished_evaluations(tmp_path, monkeypatch):
    kwargs = dict(families=("DiT",), train_seeds=(0, 1), sampling_seeds=(0, 1), sizes=(10, 20), cfg_scales=(1.0,),
                  steps=3, val_samples=20, log=lambda *a: None, progress_file=tmp_path / "progress.json")
    real, calls = spread._quality, []

    def interrupted_after_four(*args):
        calls.append(args)
        if len(calls) > 4:
            raise KeyboardInterrupt
        return real(*args)
    monkeypatch.setattr(spread, "_quality", interrupted_after_four)
    with pytest.raises(KeyboardInterrupt):
        spread.run_study(TINY, tmp_path, **kwargs)
    assert len(json.loads((tmp_path / "progress.json").read_text())["done"]) == 4 + 2  # + the 2 prefix runs
    monkeypatch.setattr(spread, "_quality", real)
    resumed = spread.run_study(TINY, tmp_path, **kwargs)
    calls.clear()
    monkeypatch.setattr(spread, "_quality", interrupted_after_four)
    again = spread.run_study(TINY, tmp_path, **kwargs)  # everything recorded: nothing is sampled again
    assert not calls and again["families"] == resumed["families"]
    # a fresh machine with the progress file but no trained models: nothing is trained either
    monkeypatch.setattr(build, "dit", lambda *a, **k: pytest.fail("a recorded evaluation's model was built"))
    elsewhere = tmp_path / "elsewhere"
    assert spread.run_study(TINY, elsewhere, **kwargs)["families"] == resumed["families"]


#################################################################################
#                        The fair control, the device                           #
#################################################################################

def test_the_control_is_labelled_apart_from_the_dit():
    assert build.model_label("DiT-Mini/2", Options()) == "DiT-Mini"
    assert build.model_label("DiT-Mini/2", Options(finetuned=True)) == "DiT-Mini + FT"
    assert build.model_label("SiT-Mini/2", Options(finetuned=True, adapter="td-lora")) == "SiT-Mini + FT · TD-LoRA"
    with pytest.raises(ValueError, match="a static mini row with an adapter is a control"):
        build.build_row_model(MiniConfig(), "/nonexistent", False, "DiT-Mini/2", Options(adapter="lora"))


def test_the_control_is_finetuned_exactly_as_the_dydits_but_without_routers(tmp_path):
    control, info = build.control(TINY, tmp_path)
    dydit, dinfo = build.dydit(TINY, 0.5, tmp_path)
    runs = [json.loads((build.Path(i["folder"]) / "run" / "config.json").read_text()) for i in (info, dinfo)]
    same = ("init_checkpoint", "max_steps", "lr", "lr_warmup", "lr_cosine", "ema_decay", "global_batch_size",
            "stratified_timesteps", "seed", "data", "adapter", "objective")
    assert {k: runs[0][k] for k in same} == {k: runs[1][k] for k in same}
    assert runs[0]["model"] == "DiT-Mini/2" and runs[1]["model"] == "DyDiT-Mini/2"
    assert runs[0]["complete_loss"] is False and runs[0]["max_steps"] == TINY.finetune_steps
    assert not hasattr(control.blocks[0], "token_selection")  # a DiT: no routers, no FLOPs loss
    dit, _ = build.dit(TINY, tmp_path)
    assert any(not torch.equal(a, b) for a, b in zip(control.state_dict().values(), dit.state_dict().values()))


def test_a_finetune_field_keys_the_finetunes_not_the_static_models():
    other = dataclasses.replace(MiniConfig(), router_noise_anneal=0.5, finetune_lr=1e-4)
    assert build.dit_id(other) == build.dit_id(MiniConfig())  # a static model is not retrained for it
    assert build.row_artifact(other, "DyDiT-Mini/2", Options(flops_target=0.5)) != \
        build.row_artifact(MiniConfig(), "DyDiT-Mini/2", Options(flops_target=0.5))
    assert build.dit_id(dataclasses.replace(MiniConfig(), dit_steps=10)) != build.dit_id(MiniConfig())
    assert "router_noise_anneal" not in MiniConfig().baseline_fields() and "dit_steps" in MiniConfig().baseline_fields()
    assert "router_noise_anneal" in MiniConfig().router_recipe()
    assert MiniConfig().router_recipe()["ema_routers"] is False and "ema_routers" in MiniConfig().router_recipe("width")


def test_a_familys_model_and_data_code_key_its_own_models_only(tmp_path, monkeypatch):
    """Editing the text-to-image data (or DyFLUX's code) retrains the FLUX minis and their reader, not the DiT's."""
    from bench.mini import config as mini_config
    flux = build.config_for(MiniConfig(), "FLUX-Mini")
    latte = build.config_for(MiniConfig(), "Latte-Mini/2")
    before = {name: build.dit_id(c) for name, c in (("DiT", MiniConfig()), ("FLUX", flux), ("Latte", latte))}
    reader, frames = MiniConfig().key("reader", data="prompted-digits"), MiniConfig().key("frame-classifier",
                                                                                          data="moving-digits")
    edited = tmp_path / "prompted_digits.py"
    edited.write_text(mini_config.DATA_CODE["prompted-digits"][0].read_text() + "\n# edited\n")
    monkeypatch.setitem(mini_config.DATA_CODE, "prompted-digits", [edited])
    assert build.dit_id(flux) != before["FLUX"] and MiniConfig().key("reader", data="prompted-digits") != reader
    assert build.dit_id(MiniConfig()) == before["DiT"] and build.dit_id(latte) == before["Latte"]
    assert MiniConfig().key("frame-classifier", data="moving-digits") == frames
    monkeypatch.setitem(mini_config.FAMILY_CODE, "Latte", [edited])  # the video mini's model code
    assert build.dit_id(latte) != before["Latte"] and build.dit_id(MiniConfig()) == before["DiT"]


def test_the_mini_runs_where_the_suite_runs_unless_its_recipe_names_a_device():
    assert build.run_config(Context(device="cpu")).device == "cpu"
    assert build.run_config(Context(device="cuda", mini_config=MiniConfig(device="cpu"))).device == "cpu"
    assert build.device_of(MiniConfig(device="cpu")).type == "cpu"
    assert MiniConfig(device="cpu").key("x") == MiniConfig().key("x")  # where it ran does not change the model
    if not torch.cuda.is_available():
        assert build.device_of(MiniConfig()).type == "cpu"
        with pytest.raises(ValueError, match="asks for device 'cuda', but torch sees no CUDA GPU"):
            build.device_of(MiniConfig(device="cuda"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_bench_run_device_cuda_without_a_gpu_is_one_line(tmp_path, capsys):
    from bench.__main__ import main
    assert main(["run", "table1", "--device", "cuda", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --device cuda, but torch sees no CUDA GPU") and "\n" not in err


def test_a_mini_model_interrupted_mid_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """An interruption (dydit.train: a checkpoint after the step) leaves a run folder without done.json; the
    next build resumes it and ends with the weights of a build never interrupted."""
    recipe = dataclasses.replace(TINY, dit_steps=6)
    whole, _ = build.dit(recipe, tmp_path / "whole")
    real = build.train

    def interrupted_at_3(run, dataset, run_dir, resume=False, progress=True):
        real(run, dataset, run_dir, resume=resume, stop_after=3, progress=False)  # its checkpoint at step 3
        raise KeyboardInterrupt
    monkeypatch.setattr(build, "train", interrupted_at_3)
    with pytest.raises(KeyboardInterrupt):
        build.dit(recipe, tmp_path / "cut")
    monkeypatch.setattr(build, "train", real)
    resumed, info = build.dit(recipe, tmp_path / "cut")
    assert info["steps"] == 6
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))


def test_the_mini_section_shows_the_study_and_each_family_s_own_spread(monkeypatch):
    from types import SimpleNamespace

    from bench.sections import mini as section
    fam = lambda model, **more: {"model": model, "cfg_scale": 1.5, "cfg_sweep": [  # noqa: E731
        {"cfg_scale": 1.5, "mini_fid": 30.0, "accuracy": 0.97}], **more}
    study = {"recipe": dataclasses.asdict(TINY), "rules": {"cfg": "lowest"}, "provenance": {"command": "c", "commit": "a" * 40, "date": "d",
                                                                "seconds": 60},
             "families": {"DiT": fam("DiT-Mini/2"), "FLUX": fam("FLUX-Mini", evaluations=[{}] * 9, num_samples=500,
                                                                 tolerances={"mini_fid": 9.5, "readback": 0.03})}}
    monkeypatch.setattr(spread, "load", lambda path=None: study)
    run = SimpleNamespace(config=TINY, provenance={"sampling": {"FLUX-Mini": {"cfg_scale": 1.5, "num_samples": 250}}})
    rows = {r["name"]: r for r in section.spread_rows(run)}
    assert rows["spread study made for this baseline recipe (c at aaaaaaaaaa, d, 1 min)"]["ok"]
    own = [n for n in rows if "own spread" in n]
    assert own == ["FLUX: its own spread, 9 evaluations at N 500 (training x sampling seeds): tolerances mini_fid 9.5, "
                   "readback 0.03"]
    assert rows["FLUX: sampled at the study's CFG scale"]["ok"]
    # its tolerances are the spread at the study's N (500): 250 canvases spread more, so the check fails
    assert not rows["FLUX: sampled as many as the study's N"]["ok"]


def test_the_video_model_starts_from_its_image_dit_whose_key_is_part_of_its_own(tmp_path):
    """Latte-Mini's recipe: the clips' batch, the image DiT's recipe (the run's batch) to start from, keyed by it."""
    latte = build.config_for(MiniConfig(), "DyLatte-Mini/2")
    assert latte.model == "Latte-Mini/2" and latte.batch_size == MiniConfig().video_batch_size
    assert latte.image_recipe == build.config_for(MiniConfig(), "DiT-Mini/2")
    assert latte.image_recipe.batch_size == MiniConfig().batch_size
    other_dit = dataclasses.replace(MiniConfig(), dit_lr=2e-3)  # another image DiT: another Latte
    assert build.dit_id(build.config_for(other_dit, "Latte-Mini/2")) != build.dit_id(latte)
    scratch = build.config_for(dataclasses.replace(MiniConfig(), video_from_image=False), "Latte-Mini/2")
    assert scratch.image_recipe is None and build.dit_id(scratch) != build.dit_id(latte)
    assert "video_from_image" not in MiniConfig().baseline_fields()  # the DiT family's spread study stays valid
    with pytest.raises(ValueError, match="the run's recipe"):
        build.config_for(latte, "DiT-Mini/2")
    tiny = build.config_for(TINY, "Latte-Mini/2")
    model, info = build.dit(tiny, tmp_path)
    assert build.is_built(tmp_path, build.dit_id(tiny.image_recipe))  # the image DiT was trained first
    image, _ = build.dit(tiny.image_recipe, tmp_path)
    assert info["image_model"] == str(build.dit_id(tiny.image_recipe).folder(tmp_path))
    assert type(model).__name__ == "Latte" and model.blocks[0].attn.qkv.weight.shape == \
        image.blocks[0].attn.qkv.weight.shape


def test_the_committed_spread_study_was_made_for_the_default_recipes_static_models():
    """A new MiniConfig field that keys the static models invalidates the committed study (every mini section
    fails): a field only video or fine-tuned models read must not be a baseline field."""
    study = spread.existing_study(spread.SPREAD_FILE, MiniConfig())
    assert study["recipe"]["dit_steps"] == MiniConfig().dit_steps
