"""Sessions: `nox -l` lists them. GPU-only work is never in the default set."""
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
    """Unit and integration tests (CPU, small configs)."""
    install(session, "[test]")
    session.run("pytest", "-q", *session.posargs)


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


@nox.session(name="reproduce-mini", python=PYTHON)
def reproduce_mini(session):
    """The paper's claims on MNIST digits with models trained here on a CPU (cached; --retrain rebuilds):
    the mini reproduction, then Tables 4 and 18 on its models."""
    install(session, "[mini]")
    for i, suite in enumerate(MINI_SUITES):  # --retrain rebuilds the models once, for the first suite
        args = session.posargs if i == 0 else [a for a in session.posargs if a != "--retrain"]
        session.run("python", "-m", "bench", "run", suite, "--out", "reports", *args)


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
