"""The CLI: same core functions as the pages, one-sentence errors with exit status 2, nothing changed on error."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from core.cli import main
from core.workflow.data import register_scans
from core.errors import ReactomoError
from core.workflow.project import create_project, data_roots, open_project

from badinputs import BAD_CASES, make_bad_input

ROOT = Path(__file__).resolve().parents[1]


def _run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_demo_command_writes_the_documented_layout(tmp_path, capsys):
    out = tmp_path / "exp"
    rc, stdout, _ = _run(capsys, "-q", "demo", str(out), "--steps", "3", "--shape", "16", "40", "48", "--seed", "5")
    assert rc == 0, stdout
    names = sorted(p.name for p in (out / "scans").iterdir())
    assert names == ["t000.tif", "t001.tif", "t002.tif"]
    assert sorted(p.name for p in (out / "truth").iterdir()) == names
    scan = tifffile.imread(out / "scans" / "t001.tif")
    truth = tifffile.imread(out / "truth" / "t001.tif")
    scribbles = tifffile.imread(out / "scribbles.tif")
    assert scan.shape == truth.shape == scribbles.shape == (16, 40, 48)
    assert scan.dtype == np.uint16 and truth.dtype == np.uint8 and scribbles.dtype == np.uint8
    assert set(np.unique(truth)) <= {1, 2, 3, 4}
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["voxel_size_um"] == 2.75 and len(dataset["steps"]) == 3
    for step in dataset["steps"]:
        t = tifffile.imread(out / step["truth"])
        assert step["counts"]["bassanite"] == int((t == 2).sum())
    assert "label step" in stdout


def test_demo_command_refuses_a_non_empty_folder_and_bad_shapes(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("precious")
    rc, _, err = _run(capsys, "demo", str(tmp_path / "full"), "--steps", "2")
    assert rc == 2 and "not empty" in err and err.count("\n") == 1
    assert (tmp_path / "full" / "keep.txt").read_text() == "precious"
    rc, _, err = _run(capsys, "demo", str(tmp_path / "new"), "--shape", "4", "40", "40")
    assert rc == 2 and err.startswith("error: ") and not (tmp_path / "new").exists()


def test_usage_errors_are_one_sentence_with_status_2(capsys):
    rc, _, err = _run(capsys, "demo")
    assert rc == 2 and err.startswith("error: ") and "Traceback" not in err


def test_project_lifecycle(workspace, capsys):
    assert _run(capsys, "project", "create", "run1")[0] == 0
    rc, out, _ = _run(capsys, "project", "list", "--json")
    assert rc == 0 and [p["name"] for p in json.loads(out)] == ["run1"]
    rc, out, _ = _run(capsys, "project", "show", "run1")
    assert rc == 0 and "[ ] Data" in out
    rc, _, err = _run(capsys, "project", "create", "../escape")
    assert rc == 2 and "not allowed" in err and not (workspace.parent / "escape").exists()
    assert _run(capsys, "project", "delete", "run1")[0] == 0
    rc, _, err = _run(capsys, "project", "show", "run1")
    assert rc == 2 and "run1" in err


def test_data_command_opens_scans_and_sets_settings(workspace, small_demo_dir, capsys):
    create_project("p", workspace=workspace)
    rc, out, err = _run(capsys, "-q", "data", "p", "--scans", str(small_demo_dir / "scans"), "--voxel-size", "1.5",
                        "--roi", "2", "10", "0", "64", "8", "60")
    assert rc == 0, err
    project = open_project("p", workspace=workspace)
    assert [s.name for s in project.scans()] == ["t000", "t001", "t002", "t003"]
    assert project.manifest["voxel_size_um"] == 1.5
    assert project.roi() == {"z": [2, 10], "y": [0, 64], "x": [8, 60]}
    rc, out, _ = _run(capsys, "histograms", "p", "--bins", "32", "--out", str(workspace / "h.csv"))
    assert rc == 0
    lines = (workspace / "h.csv").read_text().splitlines()
    assert lines[0] == "step,name,time_s,bin_low,bin_high,fraction" and len(lines) == 1 + 4 * 32


def test_data_command_is_all_or_nothing(workspace, small_demo_dir, capsys):
    """A bad region after good scans must not leave the scans half-applied."""
    create_project("p", workspace=workspace)
    before = (workspace / "p" / "project.json").read_text()
    rc, _, err = _run(capsys, "-q", "data", "p", "--scans", str(small_demo_dir / "scans"), "--roi", "0", "99", "0", "8", "0", "8")
    assert rc == 2 and "z" in err
    assert (workspace / "p" / "project.json").read_text() == before


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_every_bad_scan_input_gives_the_same_sentence_and_changes_nothing(case, workspace, tmp_path, capsys):
    create_project("p", workspace=workspace)
    manifest = workspace / "p" / "project.json"
    before = manifest.read_text()
    source = make_bad_input(case, tmp_path)
    with pytest.raises(ReactomoError, match=f"(?i){BAD_CASES[case]}") as excinfo:
        register_scans(open_project("p", workspace=workspace), source, allowed_roots=data_roots())
    sentence = str(excinfo.value)
    assert "\n" not in sentence and sentence.endswith(".")
    rc, _, err = _run(capsys, "-q", "data", "p", "--scans", source)
    assert rc == 2
    assert err.strip() == f"error: {sentence}"
    assert manifest.read_text() == before


def test_python_dash_m_core_runs_as_a_program(workspace):
    proc = subprocess.run([sys.executable, "-m", "core", "project", "show", "nope"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "nope" in proc.stderr


def test_labels_and_ground_truth_commands_drive_a_project(demo_project, workspace, tmp_path, capsys):
    rc, out, err = _run(capsys, "-q", "labels", "demo", "--import-demo")
    assert rc == 0, err
    assert "bassanite" in out and " 0 px" not in out.split("bassanite")[1].splitlines()[0]
    step = str(demo_project.demo()["label_step"])
    rc, out, err = _run(capsys, "labels", "demo", "--step", step, "--export", str(tmp_path / "l.tif"))
    assert rc == 0 and tifffile.imread(tmp_path / "l.tif").shape == demo_project.scans()[0].shape
    rc, _, err = _run(capsys, "labels", "demo", "--export", str(tmp_path / "m.tif"))
    assert rc == 2 and "--step" in err and not (tmp_path / "m.tif").exists()

    rc, _, err = _run(capsys, "ground-truth", "demo", "--accept-only")
    assert rc == 2 and "no random-forest result" in err
    rc, out, err = _run(capsys, "-q", "ground-truth", "demo", "--trees", "3", "--accept")
    assert rc == 0, err
    assert "Dice vs the demo truth, random forest" in out and "Accepted" in out
    assert "Dice on the held-out scribbles, random forest" in out  # the forest scored on scribbles it did not see
    assert open_project("demo", workspace=workspace).manifest["ground_truth"]["slices"]
    rc, _, err = _run(capsys, "ground-truth", "demo", "--features", "colour")
    assert rc == 2 and "not known" in err


def test_other_scans_opened_in_the_demo_project_drop_the_demos_truth_and_its_region(demo_project, workspace,
                                                                                     small_demo_dir, capsys):
    """A user's walk: after other scans were opened in the demo project, the Data page still offered the demo's
    truth as an overlay (then failed on its shape), the Label page its scribbles, Home "(demo)", and the old region
    of interest stayed without a word."""
    demo_project.set_roi({"z": [0, 8], "y": [0, 32], "x": [0, 40]})
    other = workspace / "other"
    other.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        tifffile.imwrite(other / f"t{i:03d}.tif", rng.integers(1000, 3000, (10, 48, 40), dtype=np.uint16))
    rc, out, err = _run(capsys, "data", "demo", "--scans", str(other))
    assert rc == 0, err
    assert "the project is no longer the demo experiment" in out
    assert "The region of interest (z 0-8, y 0-32, x 0-40) was set on scans of another shape; it was cleared." in out
    project = open_project("demo", workspace=workspace)
    assert project.demo() is None and project.roi() is None
    from core.workflow.evaluate import references

    assert "demo truth" not in references(project)
    # the demo made again: the demo once more, nothing to say about its own scans
    from core.workflow.data import generate_demo_into
    from core.imaging.synthetic import DemoConfig
    from tests.conftest import SMALL_DEMO

    generate_demo_into(project, DemoConfig(**SMALL_DEMO))
    assert project.demo() is not None
    assert project.set_scans(project.scans()) == []
    # the demo's truth opened as scans (label volumes): opened, and said
    rc, out, err = _run(capsys, "data", "demo", "--scans", str(project.root / "demo" / "truth"))
    assert rc == 0, err
    assert "they look like label volumes, not reconstructed CT scans" in out
    assert re.search(r"The scans hold only [2-5] grey values \([0-4](, [0-4])+\) in their middle slice", out)
    assert "the project is no longer the demo experiment" in out  # its truth is not its scans
    assert open_project("demo", workspace=workspace).demo() is None


@pytest.mark.parametrize("argv, share", [
    ([], 0.5), (["--no-augment"], 0.0), (["--thin-examples", "0.2"], 0.2), (["--thin-examples", "0"], 0.0)])
def test_train_and_run_paint_thin_laths_by_default_and_only_into_augmented_copies(argv, share):
    """The default chosen on the tuning half (core.network.train.THIN_EXAMPLES), as the Train page's."""
    from core.cli import _thin, build_parser
    from core.network.train import THIN_EXAMPLES
    from core.workflow.run import RunConfig

    assert THIN_EXAMPLES == 0.5 and RunConfig(scans="s", scribbles="x", label_step=0, out="o").thin_examples is None
    args = build_parser().parse_args(["train", "--scan", "s.tif", "--ground-truth", "g.tif", "--out", "m", *argv])
    assert _thin(args) == share
    if "--no-augment" not in argv:
        args = build_parser().parse_args(["run", "--scans", "d", "--scribbles", "s.tif", "--label-step", "1",
                                          "--out", "r", *argv])
        assert _thin(args) == share
