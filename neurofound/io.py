"""Atomic file writes and JSON-safe values, shared by every layer (no torch, Lightning or Hydra imports).

A reader sees either the old file or the whole new one: data goes to a temporary file in the same
folder, is fsynced, then moved in with `os.replace`. A crash or a full disk mid-write never leaves a
truncated checkpoint, config or report behind.

Files and folders get the permissions a plain `open(path, "w")` / `mkdir` would give them, so a
model folder shared on a cluster stays readable by colleagues:

* a new file gets `0o666 & ~umask` and a new folder `0o777 & ~umask` (or what a default ACL of the
  parent prescribes). The temporary file is created with `os.open(..., 0o666)` and the kernel
  applies the umask, as for `open()`; `tempfile.mkstemp` / `mkdtemp` would give 0o600 / 0o700,
  and `os.replace` keeps that. Nothing reads or sets the process-wide umask, so there is no race
  with other threads creating files.
* replacing an existing file keeps that file's mode, as `open(path, "w")` truncating it would.
"""

from __future__ import annotations

import math
import os
import secrets
import stat
from pathlib import Path
from typing import Any, Callable

_TRIES = 100  # random names to try before giving up (a clash is a 1 in 2**48 event)


def atomic_save_file(path: str | os.PathLike, writer: Callable[[Path], object]) -> Path:
    """Let `writer(tmp)` write a temporary file next to `path`, then move it onto `path` atomically.

    For libraries that write to a path themselves (`safetensors.torch.save_file`, `torch.save`).
    The temporary file already exists (empty) when `writer` is called; `writer` opens it for
    writing by name. The parent folder is created if missing.

    Args:
        path: the destination file.
        writer: called with the temporary file's path; its return value is ignored.

    Returns:
        `path` as a `Path`.

    Raises:
        Whatever `writer`, the fsync or the rename raises; the temporary file is removed first
        and an existing file at `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)  # replacing: keep the file's mode, as open() does
    except FileNotFoundError:
        mode = None
    fd, tmp = _create_file_beside(path)
    try:
        created = stat.S_IMODE(os.fstat(fd).st_mode)  # 0o666 & ~umask, or the folder's default ACL
        if mode is None:
            mode = created
        if created & 0o600 != 0o600:  # an odd umask such as 0o277: the writer must still open the file
            os.chmod(tmp, created | 0o600)
        writer(tmp)
        os.fsync(fd)  # flushes the file, whichever descriptor the writer wrote through
        os.close(fd)
        fd = -1
        if stat.S_IMODE(os.stat(tmp).st_mode) != mode:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (creating the parent folder); see the module docstring."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_save_file(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """Create a new, uniquely named folder `parent/<prefix><random>` with default permissions.

    Unlike `tempfile.mkdtemp` (always 0o700), the folder gets what a plain `mkdir` gives
    (`0o777 & ~umask`), so files and folders staged in it and moved out keep readable modes.
    The caller removes it.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for _ in range(_TRIES):
        candidate = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            candidate.mkdir(0o777)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"could not create a unique folder {parent / prefix}* after {_TRIES} tries")


def replace_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """`os.replace(src, dst)`, except that an existing `dst` keeps its mode (as with `open(dst, "w")`)."""
    try:
        mode = stat.S_IMODE(os.stat(dst).st_mode)
    except FileNotFoundError:
        mode = None
    if mode is not None and stat.S_IMODE(os.stat(src).st_mode) != mode:
        os.chmod(src, mode)
    os.replace(src, dst)


def atomic_install_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Move every file of the staged folder `src` into `dst` with `replace_file`, file by file.

    Each file is replaced atomically (not the folder as a whole). Folders missing in `dst` are
    created with default permissions; files already in `dst` that `src` does not hold (e.g. a run
    folder's extras) are kept, and files that it replaces keep their mode.
    """
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for root, _dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            replace_file(Path(root) / name, dst / rel / name)


def _create_file_beside(path: Path) -> tuple[int, Path]:
    """Create an empty, uniquely named `.<name>.<random>.tmp` next to `path`; returns (fd, path)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_TRIES):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a unique temporary file next to {path} after {_TRIES} tries")


__all__ = ["atomic_save_file", "atomic_write_bytes", "atomic_write_text", "make_temp_dir", "replace_file",
           "atomic_install_dir"]


def json_safe(value: Any) -> Any:
    """Plain JSON data: dicts (str keys), lists, numbers, strings; NaN/Inf become None.

    Arrays and tensors (anything with `tolist`, so no torch import here) become lists, and a
    one-element one becomes its number: a missing figure is null, never a fake number.
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist"):
        size = value.numel() if hasattr(value, "numel") else getattr(value, "size", 0)
        return json_safe(value.item() if size == 1 else value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

