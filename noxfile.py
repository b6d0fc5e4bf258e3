"""Sessions: `nox -l` lists them. GPU-only work is never in the default set."""
import time
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

# the interpreter nox runs under (any Python >= 3.11; the pins of constraints.txt are tested on 3.11)
PYTHON = None


def install(session, extras=""):
    """Installs the project with the tested pins of constraints.txt."""
    session.install("-c", "constraints.txt", "-e", f".{extras}")


@nox.session(python=PYTHON)
def tests(session):
    """Unit and integration tests (CPU, small configs), one worker per core (tests/conftest.py: each one thread)."""
    install(session, "[test]")
    session.run("pytest", "-q", "-n", "auto", *session.posargs)


@nox.session(name="reproduce-table1", python=PYTHON)
def reproduce_table1(session):
    """Runs the Table 1 suite (each cell where this machine can run it) and renders reports/."""
    install(session)
    session.run("python", "-m", "bench", "run", "suites/table1.toml", "--out", "reports", *session.posargs)


@nox.session(name="reproduce-table4", python=PYTHON)
def reproduce_table4(session):
    """Table 4 (efficient samplers): whole-loop s/image ratios here, FID cells where the assets and a GPU are."""
    install(session)
    session.run("python", "-m", "bench", "run", "suites/table4.toml", "--out", "reports", *session.posargs)


@nox.session(name="reproduce-table18", python=PYTHON)
def reproduce_table18(session):
    """Table 18 (DeepCache): whole-loop s/image ratios here, FID cells where the assets and a GPU are."""
    install(session)
    session.run("python", "-m", "bench", "run", "suites/table18.toml", "--out", "reports", *session.posargs)


MINI_SUITES = ("suites/mini.toml", "suites/table4-mini.toml", "suites/table18-mini.toml")
# DyDiT++'s claims on the mini: SiT, LoRA, TD-LoRA; FLUX (text-to-image)
DYDITPP_MINI_SUITES = ("suites/dyditpp-mini.toml", "suites/dyflux-mini.toml")
# DyDiT++ for video on the mini: Latte on moving digits
VIDEO_MINI_SUITES = ("suites/latte-mini.toml",)
SCALING_SUITES = ("suites/scaling.toml", "suites/scaling-mini.toml")
# the suites with cells in the ci profile (a GPU runner's gate on a push; `python -m bench estimate` sizes it)
CI_SUITES = ("suites/table1.toml", "suites/table4.toml", "suites/table18.toml")
# suites that train models here (--retrain)
TRAINING_SUITES = (*MINI_SUITES, *DYDITPP_MINI_SUITES, *VIDEO_MINI_SUITES, "suites/scaling-mini.toml")


def run_suites(session, suites):
    """`bench run` of each suite with the session's posargs; --retrain goes to the suites that train models,
    with one DYDIT_RETRAIN_SINCE for the session, so a model several of them share is rebuilt once."""
    env = {"DYDIT_RETRAIN_SINCE": str(time.time())}
    for suite in suites:
        args = list(session.posargs)
        if "--retrain" in args and suite not in TRAINING_SUITES:
            args.remove("--retrain")
        session.run("python", "-m", "bench", "run", suite, "--out", "reports", *args, env=env)


@nox.session(name="reproduce-mini", python=PYTHON)
def reproduce_mini(session):
    """The paper's claims on MNIST digits with models trained here on a CPU (cached; --retrain rebuilds):
    the mini reproduction, then Tables 4 and 18 on its models."""
    install(session, "[mini]")
    run_suites(session, MINI_SUITES)


@nox.session(name="reproduce-dyditpp-mini", python=PYTHON)
def reproduce_dyditpp_mini(session):
    """DyDiT++'s claims on the mini's digits: DySiT (flow matching) and DyDiT with LoRA / TD-LoRA, each against
    its fair control (the DiT-Mini and DyDiT-Mini λ=0.5 of reproduce-mini reused), then DyFLUX-Mini on prompted
    digits against FLUX-Mini + FT (models trained here, cached; --retrain rebuilds)."""
    install(session, "[mini]")
    run_suites(session, DYDITPP_MINI_SUITES)


@nox.session(name="reproduce-video-mini", python=PYTHON)
def reproduce_video_mini(session):
    """DyDiT++'s video claims on moving digits: Latte-Mini, DyLatte-Mini at λ 0.7 / 0.5 and their fair control
    Latte-Mini + FT (models trained here, cached; --retrain rebuilds)."""
    install(session, "[mini]")
    run_suites(session, VIDEO_MINI_SUITES)


@nox.session(name="mini-spread", python=PYTHON)
def mini_spread(session):
    """The mini's spread study (run when its recipe changes): the CFG scale per family on validation digits,
    the seed and thread spread, the quality tolerances; writes suites/data/mini-spread.json (commit it)."""
    install(session, "[mini]")
    session.run("python", "-m", "bench", "mini-spread", *session.posargs)


@nox.session(name="reproduce-scaling", python=PYTHON)
def reproduce_scaling(session):
    """The scaling figure: DiT-S/B/XL and DyDiT per λ (speed here; FID with checkpoints), then its mini
    counterpart (three widths × λ, and the ablation; models trained here, cached; --retrain rebuilds)."""
    install(session, "[mini]")
    run_suites(session, SCALING_SUITES)


@nox.session(name="reproduce-all", python=PYTHON)
def reproduce_all(session):
    """Every suite of suites/ (paper tables, then the mini ones), one reports/index.html; posargs go to each
    run (e.g. `-- --profile full` on a GPU runner with DYDIT_ASSETS set)."""
    install(session, "[mini]")
    first = ["suites/table1.toml", "suites/table4.toml", "suites/table18.toml", "suites/scaling.toml", *MINI_SUITES,
             *DYDITPP_MINI_SUITES]
    others = sorted(str(p) for p in Path("suites").glob("*.toml") if str(p) not in first and p.name != "assets.toml")
    run_suites(session, first + others)
    session.run("python", "-m", "bench", "report", "--out", "reports")


@nox.session(name="reproduce-ci", python=PYTHON)
def reproduce_ci(session):
    """The ci profile on a GPU runner (a push's gate: params, FLOPs, DDIM-50 s/image ratios, FID-5K; about 20 min
    on one H100 as estimated from FLOPs: `python -m bench estimate`), then `nox -s gate` compares it."""
    install(session)
    for suite in CI_SUITES:
        session.run("python", "-m", "bench", "run", suite, "--profile", "ci", "--out", "reports", *session.posargs)


@nox.session(python=PYTHON)
def gate(session):
    """The GPU runner's regression gate: reports/ against baselines/<this hardware's fingerprint>/ (exit 1 on a
    regression). `-- accept` stores reports/ as the new baseline instead; `-- calibrate` then measures the spread
    of its FID-5K cells (two more seeds) and stores it beside the baseline."""
    install(session)
    action, *options = session.posargs or ["check"]
    session.run("python", "-m", "bench", "baseline", action, "--reports", "reports", "--baselines", "baselines",
                *options)


@nox.session(python=PYTHON)
def assets(session):
    """Which assets of suites/assets.toml are present under $DYDIT_ASSETS (and where to get the others)."""
    install(session)
    session.run("python", "-m", "bench", "assets")


@nox.session(python=PYTHON)
def report(session):
    """Re-renders reports/*.html and reports/index.html from the existing result JSON."""
    install(session)
    session.run("python", "-m", "bench", "report", "--out", "reports", *session.posargs)


@nox.session(name="bench-speed", python=PYTHON)
def bench_speed(session):
    """Times DiT vs DyDiT (fast and masked paths) and prints the realized speedup/FLOPs ratio."""
    install(session)
    args = session.posargs or ["--model", "DyDiT-XL/2", "--flops-fraction", "0.5"]
    session.run("python", "-m", "bench", "speed", *args)


@nox.session(name="device-check", python=PYTHON)
def device_check(session):
    """On one CUDA GPU, in minutes: DiT vs DyDiT (fast, masked) calls per λ, batch and precision, the whole DDIM-50
    loop, every sampler and a short mini training; writes reports/device.{json,html}. `-- --device cpu --quick`
    runs the same code at tiny size."""
    install(session, "[mini]")
    session.run("python", "-m", "bench", "device-check", *session.posargs)
