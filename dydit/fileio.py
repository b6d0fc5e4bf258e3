"""Atomic file writes and streamed sha256: the one implementation every writer and hasher uses."""
import hashlib
import json
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write, text=False) -> Path:
    """Calls write(f) on a temporary file beside `path`, fsyncs, then renames it into place.

    Readers never see half a file, and a crash leaves the previous version. `write` gets a binary file
    (or a UTF-8 text file with text=True); the result has the usual umask permissions, not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w" if text else "wb", **({"encoding": "utf-8"} if text else {})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(obj, path) -> Path:
    """JSON (indented, UTF-8) written atomically."""
    def write(f):
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")
    return atomic_write(path, write, text=True)


def sha256_file(path, chunk=1 << 22) -> str:
    """sha256 hex digest of a file, streamed (multi-GB sample batches and checkpoints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
