"""The mini's trained artifacts, built once and cached: the digit classifier, the DiT, the DyDiTs.

Each artifact lives in <cache>/<name>-<key>/ where the key hashes its config, the data and the code that
trains it (MiniConfig.key); a finished artifact has `done.json`. A later run with the same key loads it
(seconds); `retrain=True` rebuilds it, and `retrain=<a time>` rebuilds it unless it was built after that time
(one `reproduce-all -- --retrain` rebuilds a model several suites share once). Training goes through dydit.train, the code path of a full-size run.
"""
import dataclasses
import json
import shutil
import time
from pathlib import Path

import torch

from bench import data
from bench.metrics import digits
from bench.mini.config import MiniConfig
from dydit.fileio import write_json_atomic
from dydit.lora import trainable_parameters
from dydit import registry, sampling
from dydit.checkpoints import load_trained
from dydit.registry import create_model
from dydit.train import checkpoints_of, train
from dydit.train_config import TrainConfig

DONE = "done.json"


@dataclasses.dataclass(frozen=True)
class ArtifactId:
    """Where a trained artifact lives in the cache, known before it is built: <cache>/<name>-<key>/."""
    name: str
    key: str

    def folder(self, cache) -> Path:
        return Path(cache) / f"{self.name}-{self.key}"


def _stale(folder: Path, retrain) -> bool:
    """Whether `retrain` asks to rebuild an existing folder (True: always; a time: when nothing in it is newer)."""
    if not retrain or not folder.exists():
        return False
    if isinstance(retrain, bool):
        return True
    # under --retrain since T, a folder this run already made is kept: finished, or interrupted with a checkpoint
    newest = max((p.stat().st_mtime for p in folder.rglob("*") if p.is_file()), default=0.0)
    return newest < float(retrain)


def is_built(cache, artifact: ArtifactId, retrain=False) -> bool:
    """Whether the artifact is finished in the cache and `retrain` keeps it (loading it trains nothing)."""
    folder = artifact.folder(cache)
    return (folder / DONE).is_file() and not _stale(folder, retrain)


def _artifact(cache, name, key, retrain, build):
    """Path of a finished artifact folder, building it (build(folder) -> info dict) when missing."""
    folder = ArtifactId(name, key).folder(cache)
    done = folder / DONE
    if _stale(folder, retrain):
        shutil.rmtree(folder)
    if not done.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        info = build(folder)
        write_json_atomic({**info, "seconds": round(time.perf_counter() - start, 1), "key": key}, folder / DONE)
    return folder, json.loads((folder / DONE).read_text())


def _train(run: TrainConfig, config: MiniConfig, folder):
    """One of the mini's training runs on the training digits, in folder/run; one that an interruption stopped
    (its checkpoint written: dydit.train) resumes where it stopped."""
    resume = bool(checkpoints_of(folder / "run"))
    return train(run, data.load(config.data, "train", config.data_seed), folder / "run", resume=resume, progress=True)


def real_digits(split, config: MiniConfig):
    """(uint8 images (N, 16, 16, 1), labels (N,)) of a split of the digits."""
    x, y = data.digits(split, config.data_seed).tensors
    return sampling.to_uint8(x), y.numpy()


def classifier(config: MiniConfig, cache, retrain=False):
    """(weights path, info): the digit classifier trained on the training split; info has its held-out accuracy."""
    def build(folder):
        images, labels = real_digits("train", config)
        model = digits.train_classifier(images, labels, digits.ClassifierConfig(epochs=config.classifier_epochs,
                                                                                seed=config.classifier_seed))
        torch.save(model.state_dict(), folder / "classifier.pt")
        images, labels = real_digits("heldout", config)
        feats = digits.features(images, digits.extractor(folder / "classifier.pt"))
        return {"heldout_accuracy": digits.accuracy(feats, labels)}
    key = MiniConfig(data_seed=config.data_seed, classifier_epochs=config.classifier_epochs,
                     classifier_seed=config.classifier_seed).key("classifier")  # whatever the models' config
    folder, info = _artifact(cache, "classifier", key, retrain, build)
    return folder / "classifier.pt", info


def reader(config: MiniConfig, cache, retrain=False):
    """(weights path, info) of the text-to-image mini's attribute reader (bench.mini.prompted_digits): its digit
    classifier trained on the training canvases' digit halves, thin and thick; info: the thickness thresholds and
    its read-back score on the held-out canvases (what real images score)."""
    from bench.mini.prompted_digits import AttributeReader, prompted_digits

    def build(folder):
        made = AttributeReader.train(prompted_digits("train", config.data_seed),
                                     digits.ClassifierConfig(epochs=config.classifier_epochs,
                                                             seed=config.classifier_seed))
        torch.save(made.classifier.state_dict(), folder / "reader.pt")
        heldout = prompted_digits("heldout", config.data_seed)
        return {"thresholds": made.thresholds.tolist(), "heldout_readback": made.score(
            heldout.images, heldout.digits, heldout.positions, heldout.thicknesses)}
    key = MiniConfig(data_seed=config.data_seed, classifier_epochs=config.classifier_epochs,
                     classifier_seed=config.classifier_seed).key("reader", data="prompted-digits")
    folder, info = _artifact(cache, "reader", key, retrain, build)
    return folder / "reader.pt", info


def frame_classifier(config: MiniConfig, cache, retrain=False):
    """(weights path, info) of the video mini's frame classifier (bench.mini.evaluate_video): the digit CNN trained
    on every frame of the training clips; info: its frame accuracy on the held-out clips."""
    from bench.mini import evaluate_video
    from bench.mini.moving_digits import moving_digits

    def build(folder):
        classifier_config = digits.ClassifierConfig(epochs=config.classifier_epochs, seed=config.classifier_seed)
        made = evaluate_video.frame_classifier(moving_digits("train", config.data_seed), classifier_config)
        torch.save(made.state_dict(), folder / "frame-classifier.pt")
        heldout = moving_digits("heldout", config.data_seed)
        return {"heldout_accuracy": evaluate_video.frame_accuracy(made, heldout)}
    key = MiniConfig(data_seed=config.data_seed, classifier_epochs=config.classifier_epochs,
                     classifier_seed=config.classifier_seed).key("frame-classifier", data="moving-digits")
    folder, info = _artifact(cache, "frame-classifier", key, retrain, build)
    return folder / "frame-classifier.pt", info


def family_size(model: str) -> str:
    """"DyDiT-Mini-32/2" -> "dit-mini-32", "SiT-Mini/2" -> "sit-mini": an artifact folder's model part (its static
    family and size)."""
    return registry.entry(registry.entry(model).static).label.lower()


def _load(folder, info):
    """The EMA weights of a finished training run (an adapter run's on its base), in eval mode."""
    return load_trained(folder / info["checkpoint"])


def dit_id(config: MiniConfig) -> ArtifactId:
    """The static mini model's artifact (DiT-Mini, SiT-Mini, a narrow DiT, Latte-Mini: config.model); a model that
    starts from an image DiT (config.image_recipe) is keyed by that DiT's key too."""
    start = [dit_id(config.image_recipe).key] if config.image_recipe else []
    return ArtifactId(family_size(config.model), config.key("dit", *start, finetune=False))


def dit(config: MiniConfig, cache, retrain=False):
    """(the static mini model in eval mode with its EMA weights, info): DiT-Mini trained from scratch on the
    training digits; a video model (config.image_recipe) on the clips, starting from that image DiT (built first)."""
    init = {}
    if config.image_recipe:
        _, image_info = dit(config.image_recipe, cache, retrain=False)
        init = {"init_checkpoint": str(Path(image_info["folder"]) / image_info["checkpoint"]), "init_matching": True}

    def build(folder):
        run = TrainConfig(model=config.model, **init, max_steps=config.dit_steps, global_batch_size=config.batch_size,
                          lr=config.dit_lr, lr_warmup=config.dit_lr_warmup, lr_cosine=True, ema_decay=config.dit_ema,
                          stratified_timesteps=config.stratified_timesteps, complete_loss=False, seed=config.seed,
                          **config.objective_recipe(),
                          data=config.data, precision="fp32", log_every=100, ckpt_every=config.dit_steps,
                          device=config.device)
        result = _train(run, config, folder)
        return {"checkpoint": str(result.checkpoint.relative_to(folder)), "steps": result.step,
                "device": str(run.device or config.device), "threads": torch.get_num_threads(),
                **({"image_model": image_info["folder"]} if init else {})}
    artifact = dit_id(config)
    folder, info = _artifact(cache, artifact.name, artifact.key, retrain, build)
    return _load(folder, info), {**info, "folder": str(folder)}


def _finetune_id(config: MiniConfig, name: str, parts) -> ArtifactId:
    """A fine-tune's artifact: its name, keyed by its parts and the static model it starts from."""
    return ArtifactId(name, config.key(*parts, dit_id(config).key))


def _finetune(config: MiniConfig, model: str, cache, name, parts, retrain, adapter="none", **dynamic):
    """(model in eval mode with its EMA weights, info): `model` fine-tuned from the mini's static model with the
    recipe's fine-tuning budget, lr, EMA and data (the dynamic models and their controls alike); `dynamic`:
    the TrainConfig fields only a dynamic model has (lambda, FLOPs schedule, complete-model loss, routers)."""
    _, dit_info = dit(config, cache, retrain=False)
    steps = config.finetune_steps

    def build(folder):
        run = TrainConfig(model=model, init_checkpoint=str(Path(dit_info["folder"]) / dit_info["checkpoint"]),
                          **config.objective_recipe(), adapter=adapter, adapter_experts=config.adapter_experts,
                          adapter_rank=config.adapter_rank * (config.adapter_experts if adapter == "lora" else 1),
                          max_steps=steps, global_batch_size=config.batch_size, ema_decay=config.finetune_ema,
                          lr=config.finetune_lr if adapter == "none" else config.adapter_lr,
                          stratified_timesteps=config.stratified_timesteps, seed=config.seed, data=config.data,
                          precision="fp32", log_every=25, ckpt_every=steps, device=config.device,
                          **{"complete_loss": False, **dynamic})
        start = time.perf_counter()
        result = _train(run, config, folder)
        seconds = time.perf_counter() - start
        return {"checkpoint": str(result.checkpoint.relative_to(folder)), "steps": result.step, "adapter": adapter,
                "finetune_seconds": round(seconds, 1), "device": str(run.device or config.device),
                "threads": torch.get_num_threads(),  # trained ahead beside others (bench.mini.parallel): fewer
                "trainable_parameters": sum(p.numel() for p in trainable_parameters(result.model).values()),
                # what full fine-tuning trains: every parameter but the fixed sin-cos positional embedding
                "parameters": sum(p.numel() for p in create_model(model).parameters() if p.requires_grad)}
    artifact = _finetune_id(config, name, parts)
    assert dit_info["key"] == dit_id(config).key
    folder, info = _artifact(cache, artifact.name, artifact.key, retrain, build)
    return _load(folder, info), {**info, "folder": str(folder)}


def _dydit_name(config: MiniConfig, lam: float, routers: str, adapter: str):
    """(artifact name, key parts) of a DyDiT fine-tune."""
    extra = [x for x in (routers, adapter) if x not in ("all", "none")]
    return "-".join([f"dy{family_size(config.dynamic_model)}-{lam:g}", *extra]), ("dydit", lam, *extra)


def _control_name(config: MiniConfig, adapter: str):
    """(artifact name, key parts) of a fair control."""
    extra = [] if adapter == "none" else [adapter]
    return "-".join([f"control-{family_size(config.model)}", *extra]), ("control", *extra)


def dydit(config: MiniConfig, lam: float, cache, retrain=False, routers="all", adapter="none"):
    """(DyDiT-Mini at lambda in eval mode with its EMA weights, info), fine-tuned from the mini DiT with the
    FLOPs loss; routers="width" / "token": the ablation's TDW only / SDT only (dydit.train_config.TrainConfig.
    routers); adapter="lora" / "td-lora": only adapters and routers train (DyDiT++'s parameter-efficient
    fine-tuning)."""
    steps = config.finetune_steps
    name, parts = _dydit_name(config, lam, routers, adapter)
    model, info = _finetune(config, config.dynamic_model, cache, name, parts, retrain, adapter,
                            flops_ratio=lam, flops_hold=config.flops_hold,
                            flops_warmup=round(steps * config.flops_warmup_fraction), routers=routers,
                            complete_loss=config.complete_model_loss, **config.router_recipe(routers))
    return model, {**info, "lambda": lam, "routers": routers}


def control(config: MiniConfig, cache, retrain=False, adapter="none"):
    """(the static mini model fine-tuned like its dynamic models, info): the fair control ("DiT + FT"): the
    same steps, lr, EMA, data and adapter as the DyDiTs, without routers or the FLOPs loss, so a DyDiT's
    quality is compared with what the extra fine-tuning alone gives."""
    name, parts = _control_name(config, adapter)
    return _finetune(config, config.model, cache, name, parts, retrain, adapter)


#################################################################################
#                            A suite row's model                                #
#################################################################################

# options.routers of a dynamic row: the paper's ablation (TDW only, SDT only, random routers at the same FLOPs);
# options.adapter: DyDiT++'s parameter-efficient fine-tuning (static LoRA, TD-LoRA; "none": full)
ROUTERS = {"all": "", "width": "TDW only", "token": "SDT only", "random": "random routers"}
ADAPTERS = {"none": "", "lora": "LoRA", "td-lora": "TD-LoRA"}


def config_for(config: MiniConfig, model: str) -> MiniConfig:
    """The recipe of a row's model: the run's, with its family's static and dynamic model of that size
    (DiT-Mini-32/2 and DyDiT-Mini-32/2, SiT-Mini/2 and DySiT-Mini/2; DiT-Mini/2 gives the run's config); a size
    narrower than the run's model trains more steps (MiniConfig.steps_for); a video model trains on
    config.video_batch_size clips per step, from its size's image DiT (image_recipe) when config.video_from_image."""
    if config.image_recipe:
        raise ValueError("config_for takes the run's recipe, not a video model's (its batch is the clips')")
    entry = registry.entry(model)
    recipe = dataclasses.replace(config, model=entry.static, dynamic_model=entry.dynamic,
                                 dit_steps=config.steps_for(model))
    if not entry.is_video:
        return recipe
    image = config_for(config, entry.image_model) if config.video_from_image else None
    return dataclasses.replace(recipe, batch_size=config.video_batch_size, image_recipe=image)


def model_label(model: str, options) -> str:
    """The name a row's model is built and measured under: 'DiT-Mini-32', or 'DyDiT-Mini λ=0.5 · TDW only'."""
    entry = registry.entry(model)
    if not entry.is_dynamic:
        return " · ".join(filter(None, [entry.label + (" + FT" if options.finetuned else ""),
                                        ADAPTERS[options.adapter]]))
    trained = "all" if options.routers == "random" else options.routers
    return " · ".join(filter(None, [f"Dy{entry.label} λ={options.flops_target}", ROUTERS[trained],
                                    ADAPTERS[options.adapter]]))


def control_row(model: str, options):
    """(model, options) of a dynamic row's fair control: its static model fine-tuned alike (the same adapter),
    without routers or the FLOPs loss; None for a static row."""
    from bench.suite import Options
    entry = registry.entry(model)
    return (entry.static, Options(finetuned=True, adapter=options.adapter)) if entry.is_dynamic else None


def full_finetune_row(model: str, options):
    """(model, options) of the full fine-tune an adapter row is compared with (same lambda); None otherwise."""
    from bench.suite import Options
    if not registry.entry(model).is_dynamic or options.adapter == "none":
        return None
    return model, Options(flops_target=options.flops_target)


def _row_recipe(config: MiniConfig, model: str, options):
    """(its size's recipe, builder, builder's arguments) of a row's model: the one place a row's name and options
    decide what is built (options.finetuned: its size's fair control; a dynamic model: fine-tuned to its
    options.flops_target; routers "width" / "token": trained with only those routers; "random" is the "all"
    model, whose routing bench.mini.evaluate replaces by random choices of the same sizes)."""
    config = config_for(config, model)
    if not registry.entry(model).is_dynamic:
        if options.finetuned:
            return config, control, {"adapter": options.adapter}
        if options.adapter != "none":
            raise ValueError(f"{model}: a static mini row with an adapter is a control: add options.finetuned")
        return config, dit, {}
    if options.flops_target is None:
        raise ValueError(f"{model}: a dynamic mini row needs options.flops_target (its lambda)")
    trained = "all" if options.routers == "random" else options.routers
    return config, dydit, {"lam": options.flops_target, "routers": trained, "adapter": options.adapter}


def build_row_model(config: MiniConfig, cache, retrain, model: str, options):
    """(model, build info) of a mini row (see _row_recipe)."""
    config, builder, kwargs = _row_recipe(config, model, options)
    return builder(config, cache=cache, retrain=retrain, **kwargs)


def row_artifact(config: MiniConfig, model: str, options) -> ArtifactId:
    """The artifact build_row_model builds or loads for a row, without building it."""
    config, builder, kwargs = _row_recipe(config, model, options)
    if builder is dit:
        return dit_id(config)
    if builder is control:
        return _finetune_id(config, *_control_name(config, kwargs["adapter"]))
    return _finetune_id(config, *_dydit_name(config, **kwargs))


def cache_dir(ctx) -> Path:
    """Where the mini's trained models are kept: <work dir>/mini-models."""
    return ctx.scratch / "mini-models"


def run_config(ctx) -> MiniConfig:
    """The recipe of a suite run: ctx.mini_config (else the default), on the run's device unless it names one."""
    config = ctx.mini_config or MiniConfig()
    return config if config.device else dataclasses.replace(config, device=ctx.device)


def device_of(config: MiniConfig) -> torch.device:
    """Where a recipe's models train and sample: its device, else CUDA when present, else the CPU."""
    if config.device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(config.device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"the mini recipe asks for device {config.device!r}, but torch sees no CUDA GPU here")
    return torch.device(config.device)


def row_model(ctx, model: str, options):
    """(model, build info) of a mini row in a suite run (ctx: its recipe, device, work dir and --retrain)."""
    config = run_config(ctx)
    model, info = build_row_model(config, cache_dir(ctx), ctx.retrain, model, options)
    return model.to(device_of(config)), info
