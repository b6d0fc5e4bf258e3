"""Checks made before any work starts, so that a job is refused in its first second, not after an hour of
measuring: every folder it will write is a folder (created if missing) and writable, every file name it will
write fits the filesystem, and there is room for what it will write.

    folder = preflight.writable_folder(args.out, "--out", names=[f"{suite.name}.json"])
    preflight.free_space(folder, 2e9, "--out", "the sample shards")
"""
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

from dydit.errors import UserError

DEFAULT_NAME_MAX = 255  # where the filesystem does not say (most do: ext4, xfs, apfs, ntfs)


class PreflightError(UserError):
    """A folder or file a job will write cannot be written: the message names the option and the fix."""


def writable_folder(path, option: str, names: Iterable[str] = (), create=True) -> Path:
    """`path` as a folder this process can write (created with its parents if missing; create=False: only checked
    that it could be, nothing is made), and every one of `names` short enough to be a file name in it;
    PreflightError naming `option` if not."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise PreflightError(f"{option} {folder} is a file, not a folder: name a folder (it is created if missing)")
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        existing = folder if folder.exists() else next(p for p in folder.parents if p.exists())
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file")
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".preflight-"):
            pass
    except OSError as e:
        raise PreflightError(f"{option} {folder} cannot be written ({e.strerror or e}): name a folder you can "
                             f"write") from None
    limit = name_max(existing)
    for name in names:
        if len(os.fsencode(name)) > limit:
            raise PreflightError(f"{option}: the file name {name[:40]}... ({len(os.fsencode(name))} bytes) is longer "
                                 f"than this filesystem allows ({limit}): shorten the name it comes from")
    return folder


def name_max(folder) -> int:
    """The longest file name (bytes) the filesystem of `folder` takes."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # not POSIX, or the filesystem does not say
        return DEFAULT_NAME_MAX


def free_space(folder, needed_bytes: float, option: str, what: str):
    """PreflightError when the filesystem of `folder` has less than `needed_bytes` free (a rough estimate of
    `what` the job writes there)."""
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise PreflightError(f"{option} {folder}: {free / 1e9:.1f} GB free, {what} need about "
                             f"{needed_bytes / 1e9:.1f} GB: free space or name another folder")
