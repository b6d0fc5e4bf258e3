#!/usr/bin/env python3
"""Runs nox, installing it first (once, into .nox-bootstrap/) when this Python has none.

    python3 tools/run_nox.py -s tests
    python3 tools/run_nox.py -s reproduce-table1

Needs only Python >= 3.11 with its venv module; works beside a system Python that refuses
`pip install` (PEP 668). With nox already installed, `nox -s tests` is the same thing.
"""
import importlib.util
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = ROOT / ".nox-bootstrap"
NOX = "nox>=2024.4"


def nox_python() -> Path:
    """An interpreter that can `-m nox`: this one, or the bootstrap venv (made on first use)."""
    if importlib.util.find_spec("nox") is not None:
        return Path(sys.executable)
    python = BOOTSTRAP / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if python.exists() and subprocess.run([python, "-c", "import nox"], capture_output=True).returncode == 0:
        return python
    print(f"nox is not installed: installing {NOX} into {BOOTSTRAP.name}/ (once)", flush=True)
    try:
        venv.create(BOOTSTRAP, with_pip=True, clear=True)
    except subprocess.CalledProcessError:
        sys.exit("error: this Python cannot create a virtual environment with pip (ensurepip is missing); "
                 "on Debian/Ubuntu: apt install python3-venv, then run this again")
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", NOX], check=True)
    return python


def main():
    if sys.version_info < (3, 11):
        sys.exit(f"error: needs Python >= 3.11 (this is {sys.version.split()[0]}): run it with python3.11 or newer")
    os.chdir(ROOT)
    return subprocess.call([str(nox_python()), "-m", "nox", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
