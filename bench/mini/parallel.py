"""The mini's models trained ahead of their measurement, several at a time: on a CPU, N independent small
trainings at 1 thread each finish sooner than one after the other at N threads (2 cores here: two 1-thread
DiT-Mini trainings run 3.92 step/s together against 3.0 for one at 2 threads; tools/train_throughput.py).

    python -m bench run suites/mini.toml                  # jobs: one per CPU core on a CPU, 1 on CUDA
    python -m bench run suites/mini.toml --train-jobs 1   # one at a time, each row's model when it is measured

The image DiTs a video model starts from go first, then the static models (every fine-tune starts from one; a lone
missing one trains in the calling process),
then every fine-tune whose static model is built. A worker trains with
bench.mini.build exactly as the measuring process would, so the cache is the same whichever builds it; only the
thread count differs, which changes float rounding, not the recipe (the spread study's 1 vs 2 threads bounds
what that moves). Each worker's training log goes to <cache>/logs/<artifact>.log.
"""
import contextlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Iterable, List, Tuple

from tqdm.auto import tqdm

from bench.mini import build
from bench.mini.config import MiniConfig


def default_jobs(device) -> int:
    """One job per CPU core on a CPU; one on CUDA (the models share the GPU)."""
    if getattr(device, "type", str(device)) == "cuda":
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def waves(config: MiniConfig, rows: Iterable[Tuple[str, object]]) -> List[list]:
    """[[(model, options) of the static models], [(model, options) of the rest]]: the second wave starts from the
    first's models. Each row brings what it is compared with (its control, an adapter's full fine-tune); rows
    building the same artifact appear once; a row that names no buildable model is left out (its own
    measurement says why)."""
    from bench.suite import Options
    static, rest, seen = [], [], set()
    def buildable(row):
        try:
            build.row_artifact(config, *row)
            return True
        except ValueError:
            return False

    needed = list(filter(buildable, rows))
    for row in needed:  # grows: what each row is compared with (bench.mini.run), and what that one is
        needed += [n for n in (build.control_row(*row), build.full_finetune_row(*row)) if n and n not in needed]
    for model, options in dict.fromkeys(needed):
        base = (build.config_for(config, model).model, Options())
        ids = [build.row_artifact(config, *base), build.row_artifact(config, model, options)]
        for wave, row, artifact in ((static, base, ids[0]), (rest, (model, options), ids[1])):
            if artifact not in seen:
                seen.add(artifact)
                wave.append(row)
    return [static, rest]


def _start_worker(threads: int):
    import torch
    torch.set_num_threads(threads)


def _build_one(config: MiniConfig, cache, retrain, model, options, log_path):
    """Worker: build (train) one row's model into the cache; its output to log_path."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        build.build_row_model(config, cache, retrain, model, options)


def _train_wave(config, cache, retrain, todo, jobs, log) -> int:
    """Trains `todo` (independent rows) `jobs` at a time in spawned workers -> how many finished. Ctrl-C: the
    workers checkpoint their step (dydit.train) and the queued trainings are cancelled."""
    cores = default_jobs("cpu")
    workers = min(jobs, len(todo))
    logs = Path(cache) / "logs"
    log(f"mini: training {len(todo)} model(s), {workers} at a time ({max(1, cores // workers)} thread(s) each; "
        f"logs in {logs})")
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch's thread pools
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                               initargs=(max(1, cores // workers),))
    trained = 0
    try:
        futures = {}
        for model, options in todo:
            artifact = build.row_artifact(config, model, options)
            futures[pool.submit(_build_one, config, cache, retrain, model, options,
                                logs / f"{artifact.name}-{artifact.key}.log")] = build.model_label(model, options)
        for future in tqdm(as_completed(futures), total=len(futures), desc="mini: training", unit="model"):
            try:
                future.result()
                trained += 1
            except Exception as e:  # noqa: BLE001 -- the row's own measurement reports it
                log(f"mini: training {futures[future]} failed ({type(e).__name__}: {e}); its cells will say why")
    except BaseException:  # Ctrl-C: nothing new starts; the running trainings checkpoint and stop
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return trained


def build_ahead(config: MiniConfig, cache, retrain, rows, jobs: int = 0, log=print) -> int:
    """Trains the rows' models that are not in the cache yet, `jobs` at a time (0: default_jobs), each worker
    with cores // jobs threads -> how many were trained here. The static models first (a lone one in this
    process, so that no two fine-tunes train it at once), then the fine-tunes whose static model is built. With
    1 job, or a lone fine-tune, each row's model is built when it is measured. A failed training is left to
    that row's measurement (it fails there with its own error)."""
    from bench.suite import Options
    device = build.device_of(config)
    jobs = jobs or default_jobs(device)
    if jobs < 2 or retrain is True:  # plain True would rebuild again in the measuring process: no time to compare
        return 0
    missing = lambda wave: [row for row in wave if not build.is_built(cache, build.row_artifact(config, *row),
                                                                      retrain)]  # noqa: E731
    static, rest = waves(config, rows)
    trained = 0
    # the image DiTs a video model starts from (bench.mini.build.config_for) first: none trains beside its video model
    recipes = [build.config_for(config, model).image_recipe for model, _ in static]
    todo_images = missing(dict.fromkeys((recipe.model, Options()) for recipe in recipes if recipe))
    if len(todo_images) == 1:
        build.build_row_model(config, cache, retrain, *todo_images[0])
        trained += 1
    elif len(todo_images) >= 2:
        trained += _train_wave(config, cache, retrain, todo_images, jobs, log)
    todo_static, todo_rest = missing(static), missing(rest)
    if len(todo_static) == 1 and todo_rest:
        build.build_row_model(config, cache, retrain, *todo_static[0])
        trained += 1
    elif len(todo_static) >= 2:
        trained += _train_wave(config, cache, retrain, todo_static, jobs, log)
    based = [row for row in todo_rest
             if build.is_built(cache, build.row_artifact(config, build.config_for(config, row[0]).model, Options()),
                               retrain)]
    if len(based) >= 2:
        trained += _train_wave(config, cache, retrain, based, jobs, log)
    return trained
