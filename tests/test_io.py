"""Atomic writes (neurofound.io) and their users: file modes follow the umask like a plain open(),
an existing file keeps its mode, and a failed write leaves the old file and no temporary file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from neurofound import io as nfio
from neurofound.io import atomic_save_file, atomic_write_bytes, atomic_write_text, make_temp_dir
from neurofound.models.hub import atomic_save_state_dict
from neurofound.models.neuroformer import Neuroformer, neuroformer_small
from neurofound.runfolder import AtomicCheckpointIO
from neurofound.tokenizers.spike import SpikeTokenizer

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)

    def set_umask(value: int) -> int:
        os.umask(value)
        return value

    yield set_umask
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def small_model() -> Neuroformer:
    torch.manual_seed(0)
    model = Neuroformer(neuroformer_small(n_neurons=20, block_size=16, block_size_prev=24, frame_shape=None, n_embd=32))
    model.tokenizer = SpikeTokenizer(20, block_size=16, block_size_prev=24)  # saved under tokenizer/
    return model


def tree(root: Path) -> tuple[list[Path], list[Path]]:
    """(folders, files) under `root`, including `root` itself."""
    entries = sorted(root.rglob("*"))
    return [root] + [p for p in entries if p.is_dir()], [p for p in entries if p.is_file()]


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                      (0o002, 0o664, 0o775)])
def test_new_files_and_folders_follow_the_umask(umask, tmp_path, mask, file_mode, dir_mode):
    umask(mask)
    assert mode(atomic_write_text(tmp_path / "new" / "notes.txt", "hi")) == file_mode
    assert mode(tmp_path / "new") == dir_mode
    assert mode(atomic_save_state_dict({"w": torch.ones(2)}, tmp_path / "w.safetensors")) == file_mode
    AtomicCheckpointIO().save_checkpoint({"step": 1}, tmp_path / "checkpoints" / "last.ckpt")
    assert mode(tmp_path / "checkpoints" / "last.ckpt") == file_mode
    staging = make_temp_dir(tmp_path, prefix=".staging-")
    assert mode(staging) == dir_mode and staging.name.startswith(".staging-")
    staging.rmdir()
    # the reference: what a plain open() and mkdir give under this umask
    (tmp_path / "plain.txt").write_text("x")
    (tmp_path / "plain").mkdir()
    assert (mode(tmp_path / "plain.txt"), mode(tmp_path / "plain")) == (file_mode, dir_mode)


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_save_pretrained_folder_follows_the_umask(umask, tmp_path, mask, file_mode, dir_mode):
    model = small_model()
    umask(mask)
    target = tmp_path / "runs" / "model"
    model.save_pretrained(target)
    folders, files = tree(target)
    assert {p.relative_to(target).as_posix() for p in files} >= {
        "config.json", "model.safetensors", "README.md", "tokenizer/tokenizer_config.json"}
    assert {p.relative_to(tmp_path).as_posix(): mode(p) for p in files} == {
        p.relative_to(tmp_path).as_posix(): file_mode for p in files}
    assert {p.relative_to(tmp_path).as_posix(): mode(p) for p in folders + [tmp_path / "runs"]} == {
        p.relative_to(tmp_path).as_posix(): dir_mode for p in folders + [tmp_path / "runs"]}
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["model"]  # no staging folder left
    torch.testing.assert_close(Neuroformer.from_pretrained(target).state_dict(), model.state_dict())


def test_replacing_keeps_the_existing_mode(umask, tmp_path):
    umask(0o022)
    text = atomic_write_text(tmp_path / "notes.txt", "old")
    weights = atomic_save_state_dict({"w": torch.zeros(2)}, tmp_path / "w.safetensors")
    ckpt = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, ckpt)
    for p in (text, weights, ckpt):
        p.chmod(0o640)
    atomic_write_text(text, "new")
    atomic_save_state_dict({"w": torch.ones(2)}, weights)
    AtomicCheckpointIO().save_checkpoint({"step": 2}, ckpt)
    assert [mode(p) for p in (text, weights, ckpt)] == [0o640] * 3
    assert text.read_text() == "new" and torch.load(ckpt)["step"] == 2

    model = small_model()
    model.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "config.json").chmod(0o640)
    (tmp_path / "model" / "tokenizer" / "tokenizer_config.json").chmod(0o600)
    model.save_pretrained(tmp_path / "model")
    assert mode(tmp_path / "model" / "config.json") == 0o640
    assert mode(tmp_path / "model" / "tokenizer" / "tokenizer_config.json") == 0o600
    assert mode(tmp_path / "model" / "model.safetensors") == 0o644


def test_odd_umask_without_owner_write(umask, tmp_path):
    """Under umask 0o277 a new file is 0o400: the writer must still be able to open the temporary file."""
    umask(0o277)
    assert mode(atomic_save_state_dict({"w": torch.ones(2)}, tmp_path / "w.safetensors")) == 0o400
    assert mode(atomic_write_bytes(tmp_path / "b.bin", b"x")) == 0o400


def _only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, error):
    path = atomic_write_text(tmp_path / "config.json", "old")

    def half_write(tmp: Path) -> None:
        tmp.write_text("half a new fi")
        raise error("disk full")

    with pytest.raises(error):
        atomic_save_file(path, half_write)
    assert path.read_text() == "old" and _only(tmp_path) == ["config.json"]


def test_failed_fsync_or_rename_leaves_no_temporary(tmp_path, monkeypatch):
    path = atomic_write_bytes(tmp_path / "model.safetensors", b"old")

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    for name in ("fsync", "replace"):
        with monkeypatch.context() as m:
            m.setattr(nfio.os, name, fail)
            with pytest.raises(OSError, match="No space"):
                atomic_write_bytes(path, b"new")
        assert path.read_bytes() == b"old" and _only(tmp_path) == ["model.safetensors"]


def test_failed_state_dict_save_leaves_the_old_weights(tmp_path):
    path = atomic_save_state_dict({"w": torch.zeros(2)}, tmp_path / "model.safetensors")
    before = path.read_bytes()
    with pytest.raises(Exception):
        atomic_save_state_dict({"w": torch.zeros(2)}, path, metadata={"bad": 1})  # metadata values must be str
    assert path.read_bytes() == before and _only(tmp_path) == ["model.safetensors"]
