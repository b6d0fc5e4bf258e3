"""The mini's models trained ahead, several at a time (bench.mini.parallel): the same artifacts as one by one."""
import torch

from bench.mini import build, parallel
from bench.mini.config import MiniConfig
from bench.suite import Options

TINY = MiniConfig(dit_steps=4, dit_lr_warmup=2, finetune_fraction=0.5, classifier_epochs=1)
ROWS = [("DyDiT-Mini/2", Options(flops_target=0.5)), ("DiT-Mini/2", Options()), ("SiT-Mini/2", Options()),
        ("DiT-Mini/2", Options(finetuned=True)), ("DyDiT-Mini/2", Options(flops_target=0.5, routers="random"))]


def test_static_models_come_first_and_each_artifact_once():
    static, rest = parallel.waves(TINY, ROWS)
    assert static == [("DiT-Mini/2", Options()), ("SiT-Mini/2", Options())]
    # the random-routing row measures the "all" model: one artifact, one training
    assert rest == [("DyDiT-Mini/2", Options(flops_target=0.5)), ("DiT-Mini/2", Options(finetuned=True))]


def test_the_artifact_of_a_row_is_the_folder_its_build_makes(tmp_path):
    for model, options in [("DiT-Mini/2", Options()), ("DiT-Mini/2", Options(finetuned=True))]:
        artifact = build.row_artifact(TINY, model, options)
        assert not build.is_built(tmp_path, artifact)
        _, info = build.build_row_model(TINY, tmp_path, False, model, options)
        assert build.is_built(tmp_path, artifact) and build.Path(info["folder"]) == artifact.folder(tmp_path)
        assert not build.is_built(tmp_path, artifact, retrain=True)


def test_models_trained_ahead_in_workers_are_what_the_measurement_loads(tmp_path, monkeypatch):
    rows = ROWS[:4]
    assert parallel.build_ahead(TINY, tmp_path, False, rows, jobs=2, log=lambda *a: None) == 4
    assert all(build.is_built(tmp_path, build.row_artifact(TINY, *row)) for row in rows)
    assert list((tmp_path / "logs").glob("*.log"))  # each worker's training output, off the terminal
    assert parallel.build_ahead(TINY, tmp_path, False, rows, jobs=2) == 0  # all cached: nothing to do
    ahead, _ = build.build_row_model(TINY, tmp_path, False, "DiT-Mini/2", Options())
    serial, _ = build.build_row_model(TINY, tmp_path / "serial", False, "DiT-Mini/2", Options())
    for a, b in zip(ahead.state_dict().values(), serial.state_dict().values()):  # worker threads may differ
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_one_job_leaves_each_model_to_its_measurement(tmp_path):
    assert parallel.build_ahead(TINY, tmp_path, False, ROWS, jobs=1) == 0
    assert not any(build.is_built(tmp_path, build.row_artifact(TINY, *row)) for row in ROWS)
    assert parallel.default_jobs("cuda") == 1 and parallel.default_jobs("cpu") >= 1


def test_a_lone_missing_static_model_trains_first_in_this_process(tmp_path, monkeypatch):
    """Two fine-tunes of one missing DiT: the DiT is built once, here, before the workers start from it."""
    import bench.mini.parallel as par
    waves_trained = []
    monkeypatch.setattr(par, "_train_wave", lambda config, cache, retrain, todo, jobs, log: waves_trained.append(
        list(todo)) or 0)
    rows = [("DyDiT-Mini/2", Options(flops_target=0.5)), ("DiT-Mini/2", Options(finetuned=True))]
    assert parallel.build_ahead(TINY, tmp_path, False, rows, jobs=2, log=lambda *a: None) == 1
    assert build.is_built(tmp_path, build.dit_id(TINY))  # the DiT, in this process
    assert waves_trained == [rows]  # then both fine-tunes, in one wave of workers


def test_rows_that_name_no_buildable_model_are_left_to_their_measurement():
    bad = ("DyDiT-Mini/2", Options())  # a dynamic row without its lambda
    assert parallel.waves(TINY, [bad, *ROWS[:2]]) == parallel.waves(TINY, ROWS[:2])


def test_each_row_brings_what_it_is_compared_with():
    """An adapter row alone: its control (the same adapter, no routers) and the full fine-tune are trained too."""
    static, rest = parallel.waves(TINY, [("DyDiT-Mini/2", Options(flops_target=0.5, adapter="lora"))])
    assert static == [("DiT-Mini/2", Options())]
    assert rest == [("DyDiT-Mini/2", Options(flops_target=0.5, adapter="lora")),
                    ("DiT-Mini/2", Options(finetuned=True, adapter="lora")),
                    ("DyDiT-Mini/2", Options(flops_target=0.5)), ("DiT-Mini/2", Options(finetuned=True))]


def test_the_image_dit_a_video_model_starts_from_trains_before_it(tmp_path, monkeypatch):
    """A suite with a DiT-Mini and a Latte-Mini row: the DiT first (the Latte starts from it), never beside it."""
    import bench.mini.parallel as par
    built = []
    monkeypatch.setattr(par.build, "build_row_model", lambda config, cache, retrain, model, options: built.append(
        model))
    monkeypatch.setattr(par, "_train_wave", lambda config, cache, retrain, todo, jobs, log: built.append(
        [row[0] for row in todo]) or 0)
    rows = [("Latte-Mini/2", Options()), ("DiT-Mini/2", Options())]
    parallel.build_ahead(TINY, tmp_path, False, rows, jobs=2, log=lambda *a: None)
    assert built[0] == "DiT-Mini/2"  # alone, in this process, before any wave
