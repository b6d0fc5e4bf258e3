"""noxfile.py's suite sessions, with a stand-in for nox (tests run inside a nox session, without nox itself):
which `bench run` commands each session issues."""
import importlib.util
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class FakeSession:
    def __init__(self, posargs=()):
        self.posargs = list(posargs)
        self.commands = []

    def install(self, *args):
        pass

    def run(self, *args, env=None):
        self.commands.append(list(args))
        if env is not None:
            self.env = env


def load_noxfile(monkeypatch):
    fake = types.ModuleType("nox")
    fake.options = types.SimpleNamespace()
    fake.session = lambda *a, **k: (a[0] if a and callable(a[0]) else (lambda f: f))
    monkeypatch.setitem(sys.modules, "nox", fake)
    spec = importlib.util.spec_from_file_location("noxfile_under_test", ROOT / "noxfile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def suites_run(session):
    return [c[4] for c in session.commands if c[:4] == ["python", "-m", "bench", "run"]]


def test_reproduce_all_runs_every_suite_once_and_retrains_each_trained_model_once(monkeypatch):
    monkeypatch.chdir(ROOT)
    noxfile = load_noxfile(monkeypatch)
    session = FakeSession(["--profile", "full", "--retrain"])
    noxfile.reproduce_all(session)
    every = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "suites").glob("*.toml") if p.name != "assets.toml")
    assert sorted(suites_run(session)) == every and suites_run(session)[0] == "suites/table1.toml"
    retrained = [c[4] for c in session.commands if "--retrain" in c]
    assert retrained == list(noxfile.TRAINING_SUITES)  # one DYDIT_RETRAIN_SINCE: a shared model is rebuilt once
    assert float(session.env["DYDIT_RETRAIN_SINCE"]) > 0
    assert all("--profile" in c for c in session.commands if c[:4] == ["python", "-m", "bench", "run"])
    assert session.commands[-1][:4] == ["python", "-m", "bench", "report"]


def test_reproduce_mini_runs_the_mini_and_its_tables(monkeypatch):
    monkeypatch.chdir(ROOT)
    noxfile = load_noxfile(monkeypatch)
    session = FakeSession(["--retrain"])
    noxfile.reproduce_mini(session)
    assert suites_run(session) == list(noxfile.MINI_SUITES)
    assert [c[4] for c in session.commands if "--retrain" in c] == list(noxfile.MINI_SUITES)


def test_reproduce_scaling_runs_both_scaling_suites_and_retrains_once(monkeypatch):
    monkeypatch.chdir(ROOT)
    noxfile = load_noxfile(monkeypatch)
    session = FakeSession(["--retrain"])
    noxfile.reproduce_scaling(session)
    assert suites_run(session) == ["suites/scaling.toml", "suites/scaling-mini.toml"]
    assert [c[4] for c in session.commands if "--retrain" in c] == ["suites/scaling-mini.toml"]
    assert "DYDIT_RETRAIN_SINCE" in session.env
