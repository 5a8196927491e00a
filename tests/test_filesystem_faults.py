"""Every file-system fault is one sentence, exit status 2, and nothing half-written (issue 12).

A full disk is made by making the write itself fail with ENOSPC (``os.replace``, the last act of every atomic
write, or the file write), a read-only disk with EROFS and a vanished folder by deleting it: the same errors the
kernel raises, without needing a small tmpfs (the tests run as root, where permissions do not stop a write).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from core.cli import main
from core.errors import ReactomoError, check_writable, filesystem_sentence

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "demo-unet"


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", str(args[-1]) if args else None)


def _fails(capsys, argv, sentence):
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.startswith("error: ") and sentence in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    return out, err


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith("-tmp")) if folder.exists() else []


# ------------------------------------------------------------------------------------------------- the sentences
@pytest.mark.parametrize("code, words", [
    (errno.ENOSPC, "The disk is full: /x/y could not be written"),
    (errno.EROFS, "/x/y is on a read-only disk"),
    (errno.EACCES, "Permission denied for /x/y"),
    (errno.ENOENT, "/x/y does not exist (was it moved or deleted"),
    (errno.EIO, "The file system refused /x/y"),
])
def test_each_fault_reads_as_one_sentence(code, words):
    text = filesystem_sentence(OSError(code, os.strerror(code), "/x/y"))
    assert text.startswith(words) and text.endswith(".") and "\n" not in text


def test_check_writable_says_read_only_and_full_before_any_work(tmp_path, monkeypatch):
    check_writable(tmp_path / "new", what="the output folder")  # creates it, leaves no probe behind
    assert list((tmp_path / "new").iterdir()) == []
    with pytest.raises(ReactomoError, match=r"needs about 1000000 MB"):
        check_writable(tmp_path / "big", need_bytes=10**12)
    assert not (tmp_path / "big").exists()  # a refused check changes nothing

    def erofs(self, data):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "write_bytes", erofs)
    with pytest.raises(ReactomoError, match=r"^The output folder cannot be written: .* is on a read-only disk"):
        check_writable(tmp_path / "ro", what="the output folder")


# ------------------------------------------------------------------------------------------------- full disk
def test_project_create_on_a_full_disk(workspace, capsys, monkeypatch):
    monkeypatch.setattr(os, "replace", _enospc)
    _fails(capsys, ["project", "create", "exp1"], "The project cannot be created: The disk is full")
    assert not (workspace / "exp1").exists()


def test_demo_project_on_a_full_disk(workspace, capsys, monkeypatch):
    monkeypatch.setattr(os, "replace", _enospc)
    _fails(capsys, ["-q", "demo-project", "--name", "d1", "--steps", "2", "--shape", "8", "24", "24"], "The disk is full")
    assert _leftovers(workspace) == []


def test_analyze_on_a_full_disk(truth_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "replace", _enospc)
    _fails(capsys, ["-q", "analyze", "--segmentations", str(truth_dir), "--out", str(tmp_path / "res"), "--n-boot", "50"],
           "The disk is full")
    assert _leftovers(tmp_path / "res") == []


def test_segment_on_a_full_disk_at_the_record(small_demo_dir, tmp_path, capsys, monkeypatch):
    import core.segmentation.series

    scan = sorted((small_demo_dir / "scans").glob("*.tif"))[0]

    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(core.segmentation.series, "atomic_write_json", full)
    _fails(capsys, ["-q", "segment", "--model", str(MODEL), "--scans", str(scan), "--out", str(tmp_path / "seg")],
           f"The disk is full: {tmp_path / 'seg' / 'segmentation.json'} could not be written")
    assert _leftovers(tmp_path / "seg") == []


def test_rf_on_a_full_disk_leaves_no_ground_truth_behind(small_demo_dir, tmp_path, capsys, monkeypatch):
    """Issue 12: `rf` on a full disk left ground_truth.tif behind; now all three files or none."""
    import json

    import core.labelling.forest

    ds = json.loads((small_demo_dir / "dataset.json").read_text())
    scan = small_demo_dir / "scans" / f"t{ds['label_step']:03d}.tif"

    def full(path, forest):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(core.labelling.forest, "save_forest", full)
    out = tmp_path / "gt"
    _fails(capsys, ["-q", "rf", "--scan", str(scan), "--scribbles", str(small_demo_dir / "scribbles.tif"), "--out", str(out),
                    "--trees", "4"], "The disk is full")
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []


# ------------------------------------------------------------------------------------------ read-only and vanished
def test_train_on_a_read_only_disk_is_refused_before_the_first_epoch(small_demo_dir, tmp_path, capsys, monkeypatch):
    """Issue 12: `train` on a read-only output folder gave a traceback after all its epochs; now at once."""
    real = Path.write_bytes

    def erofs(self, data):
        if self.name.startswith(".reactomo-write-test"):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", erofs)
    scan = sorted((small_demo_dir / "scans").glob("*.tif"))[0]
    out, _ = _fails(capsys, ["train", "--scan", str(scan), "--ground-truth", str(small_demo_dir / "scribbles.tif"),
                             "--out", str(tmp_path / "models" / "m1"), "--epochs", "1"],
                    "The models folder cannot be written:")
    assert "epoch" not in out and not (tmp_path / "models" / "m1").exists()


def test_run_into_a_vanished_folder_is_refused_before_any_work(small_demo_dir, tmp_path, capsys):
    """The output's parent is a file (a folder that vanished and was replaced): one sentence, nothing written."""
    (tmp_path / "gone").write_text("not a folder any more")
    _fails(capsys, ["-q", "run", "--scans", str(small_demo_dir / "scans"), "--scribbles", str(small_demo_dir / "scribbles.tif"),
                    "--label-step", "1", "--out", str(tmp_path / "gone" / "run1")], "cannot be written")


def test_a_folder_deleted_mid_command_is_a_sentence(truth_dir, tmp_path, capsys, monkeypatch):
    """The results folder vanishes between the check and the write (someone deleted it): one sentence, exit 2."""
    import shutil

    import core.atomic

    res = tmp_path / "res"

    def vanish(path, writer):
        shutil.rmtree(res, ignore_errors=True)
        fd_path = Path(path)
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(fd_path.parent))

    monkeypatch.setattr(core.atomic, "atomic_write_with", vanish)
    _fails(capsys, ["-q", "analyze", "--segmentations", str(truth_dir), "--out", str(res), "--n-boot", "50"],
           "does not exist (was it moved or deleted while Reactomo was working?)")
