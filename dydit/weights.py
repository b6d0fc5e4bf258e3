"""The one way the project reads a weights file: checkpoints, resume states, adapters, VAEs, classifiers and
the Inception of the metrics all come through `read`.

A .safetensors file is read by safetensors; anything else by torch.load(weights_only=True), which never runs
pickled code (argparse.Namespace, the `args` of DiT/DyDiT training checkpoints, is the one class allowed). A
file that needs full unpickling is refused with one line saying why and how to re-save it.

    from dydit import weights
    state = weights.read("runs/dit/checkpoints/0006000.pt")
"""
import argparse
import contextlib
import os
import re
import zipfile

import torch

from dydit.errors import UserError


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says exactly why."""


def _corrupt(path, size, err) -> CheckpointError:
    """The error for a truncated or corrupt file, with the most telling reason we can find."""
    text = str(err)
    found = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:Check the documentation|$)", text, re.S)
    reason = f"{type(err).__name__}: {(found.group(1) if found else text).strip() or 'no details'}"
    with open(path, "rb") as f:
        head = f.read(4)
    if size == 0:
        reason = "the file is empty"
    elif head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        reason = f"zip archive has no end record, the file looks truncated ({reason})"
    return CheckpointError(f"truncated or corrupt checkpoint {path} ({size} bytes): {reason}")


def _torch_load(path, mmap=False):
    """torch.load on the CPU with weights_only=True; maps every failure to a CheckpointError."""
    allow = getattr(torch.serialization, "safe_globals", None)
    context = allow([argparse.Namespace]) if allow else contextlib.nullcontext()
    try:
        with context:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises OSError, EOFError, RuntimeError, UnpicklingError...
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if refused:
            raise CheckpointError(
                f"checkpoint {path} contains non-tensor objects ({refused.group(1)}) and was refused for "
                "safety: it is read with torch.load(weights_only=True), which never runs pickled code; "
                "re-save it as a plain state dict or .safetensors from a trusted environment") from err
        raise _corrupt(path, os.path.getsize(path), err) from err


def read(path, mmap=False) -> object:
    """The object stored in a .pt/.pth (torch, weights_only) or .safetensors file, read without running any
    pickled code; CheckpointError (one line: what and why) if the file is missing, corrupt or holds code.
    mmap: memory-map a torch file (to look at a large checkpoint's keys without reading it)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint file not found: {path}")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint path is not a file: {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        try:
            return load_file(path, device="cpu")
        except Exception as err:  # SafetensorError: bad header, incomplete file...
            raise _corrupt(path, os.path.getsize(path), err) from err
    return _torch_load(path, mmap)
