"""`core run` with a second labelled step (issue 11: a second labelling at the other end of the reaction): each
labelled step gets its own forest ground truth, and the U-Net learns from the slices of both."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.cli import main
from core.imaging.io import read_labels, write_labels


def _second_scribbles(demo, tmp_path, step: int, *, codes=None):
    """Scribbles on ``step`` of the small demo, brushed like the demo's own (the simulated user's brush)."""
    from core.imaging.synthetic import _scribble_slice

    meta = json.loads((demo / "dataset.json").read_text())
    truth = read_labels(demo / meta["steps"][step]["truth"])
    out = np.zeros(truth.shape, np.uint8)
    for z in (3, 11):
        out[z] = _scribble_slice(truth[z], fraction=0.05, rng=np.random.default_rng(z))
    if codes is not None:
        out[~np.isin(out, codes)] = 0
    path = tmp_path / f"second_step{step}.tif"
    write_labels(path, out)
    return path, sorted(int(z) for z in np.flatnonzero(out.reshape(out.shape[0], -1).any(axis=1)))


def _run(demo, out, *more):
    return ["-q", "run", "--scans", str(demo / "scans"), "--scribbles", str(demo / "scribbles.tif"),
            "--label-step", str(json.loads((demo / "dataset.json").read_text())["label_step"]), "--out", str(out),
            "--epochs", "2", "--device", "cpu", *more]


def test_a_second_labelled_step_gets_its_own_forest_and_trains_the_network(small_demo_dir, tmp_path, capsys):
    meta = json.loads((small_demo_dir / "dataset.json").read_text())
    first = meta["label_step"]
    second = 3 if first != 3 else 1
    path, zs2 = _second_scribbles(small_demo_dir, tmp_path, second)
    out = tmp_path / "run"
    assert main(_run(small_demo_dir, out, "--scribbles", str(path), "--label-step", str(second))) == 0
    said = capsys.readouterr().out
    assert f"of step {first} ..." in said and f"of step {second} ..." in said  # a forest per labelled step
    run = json.loads((out / "run.json").read_text())
    steps = run["random_forest"]["steps"]
    assert [s["step"] for s in steps] == [first, second] and steps[1]["slices"] == zs2
    assert run["config"]["more_labels"] == [[str(path), second]]
    assert len(run["inputs"]["more_scribbles"]) == 1
    gt2 = read_labels(out / f"ground_truth_step{second}.tif")  # the second forest's labelling, of the second scan
    truth2 = read_labels(small_demo_dir / meta["steps"][second]["truth"])
    assert gt2.shape == truth2.shape and float((gt2[zs2] == truth2[zs2]).mean()) > 0.8  # its labelled slices
    card = json.loads((out / "model" / "card.json").read_text())
    assert [s["step"] for s in card["provenance"]["labelled_steps"]] == [first, second]
    # every step segmented by the network trained on both
    assert len(list((out / "segmentations").glob("t*.tif"))) == len(meta["steps"])


@pytest.mark.parametrize("more, words", [
    (["--scribbles", "{second}"], "Give one --label-step for each --scribbles; got 2 scribbles files and 1 steps."),
    (["--scribbles", "{second}", "--label-step", "{first}"], "is labelled twice; give each labelled step one scribbles file"),
    (["--scribbles", "{second}", "--label-step", "9"], "--label-step 9 is not a step of these 4 scans; give 0 to 3."),
    (["--scribbles", "{one_phase}", "--label-step", "{other}"], "hold one phase only; a forest needs two or more."),
])
def test_bad_second_labels_are_refused_before_anything_is_written(more, words, small_demo_dir, tmp_path, capsys):
    meta = json.loads((small_demo_dir / "dataset.json").read_text())
    first = meta["label_step"]
    other = 3 if first != 3 else 1
    second, _ = _second_scribbles(small_demo_dir, tmp_path, other)
    one_phase, _ = _second_scribbles(small_demo_dir, tmp_path / "..", other, codes=[1])
    fill = {"second": str(second), "first": str(first), "other": str(other), "one_phase": str(one_phase)}
    out = tmp_path / "run"
    code = main(_run(small_demo_dir, out, *[m.format(**fill) for m in more]))
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: ") and words in err and "Traceback" not in err
    assert not out.exists()


def test_by_default_pores_and_celestite_are_redrawn_in_the_ground_truth_the_network_learns(small_demo_dir, tmp_path, capsys):
    meta = json.loads((small_demo_dir / "dataset.json").read_text())
    k, zs = meta["label_step"], meta["label_slices"]
    truth = read_labels(small_demo_dir / meta["steps"][k]["truth"])[zs]
    plain, redrawn = tmp_path / "plain", tmp_path / "pv"
    assert main(_run(small_demo_dir, plain, "--epochs", "1", "--partial-volume", "none")) == 0
    assert main(_run(small_demo_dir, redrawn, "--epochs", "1")) == 0  # the default: the pores, then the inert phases
    said = capsys.readouterr().out
    assert "pore's edge redrawn from the scan" in said and "celestite's edge redrawn from the scan" in said
    infos = json.loads((redrawn / "run.json").read_text())["random_forest"]["steps"][0]["partial_volume"]
    assert [i["code"] for i in infos] == [3, 4] and all(i["applied"] for i in infos)
    for code in (3, 4):  # nearer the truth's area on the slices the network learns from
        err = {name: abs(int((read_labels(folder / "ground_truth.tif")[zs] == code).sum()) - int((truth == code).sum()))
               for name, folder in (("plain", plain), ("pv", redrawn))}
        assert err["pv"] < err["plain"], (code, err)
    record = json.loads((redrawn / "run.json").read_text())
    assert record["config"]["partial_volume"] is None  # = the default, resolved and recorded beside it
    from core.labelling.partial_volume import EDGE_BACKGROUND, matrix_codes
    from core.phases import DEFAULT_PHASES

    assert record["partial_volume"] == {"codes": [3, 4], "phases": ["pore", "celestite"],
                                        "edge_background": EDGE_BACKGROUND, "matrix": matrix_codes(DEFAULT_PHASES)}
    plain_run = json.loads((plain / "run.json").read_text())
    assert plain_run["config"]["partial_volume"] == [] and plain_run["random_forest"]["steps"][0]["partial_volume"] == []
    assert plain_run["partial_volume"] == {"codes": [], "phases": [], "edge_background": None, "matrix": []}


def test_an_unknown_phase_for_partial_volume_is_refused_before_writing(small_demo_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_run(small_demo_dir, out, "--partial-volume", "celestine")) == 2
    err = capsys.readouterr().err
    assert "No phase is called 'celestine'" in err.strip().splitlines()[-1] and not out.exists()


def test_segment_redraws_pores_and_the_inert_phase_by_default_and_not_with_none(small_demo_dir, tmp_path, capsys):
    """`segment` redraws the pores' and then celestite's edges in the network's output by default (recorded in the
    segmentation's settings, in that order), the role word inert alone, and leaves the network's labels as they are
    with --partial-volume none."""
    from pathlib import Path

    model = Path(__file__).resolve().parents[1] / "models" / "demo-unet"
    labels = {}
    for how, codes in (("auto", [3, 4]), ("inert", [4]), ("none", [])):
        out = tmp_path / how
        assert main(["-q", "segment", "--model", str(model), "--scans", str(small_demo_dir / "scans"), "--out", str(out),
                     "--steps", "0", "--partial-volume", how]) == 0
        record = json.loads((out / "segmentation.json").read_text())
        assert record["settings"]["partial_volume"] == codes
        labels[how] = read_labels(sorted(out.glob("t*.tif"))[0])
    capsys.readouterr()
    assert (labels["inert"] == 4).sum() != (labels["none"] == 4).sum()  # celestite's edge moved
    changed = (labels["inert"] == 3) != (labels["none"] == 3)  # "inert" moves pores only where celestite's edge was
    assert np.all((labels["none"][changed] == 4) | (labels["inert"][changed] == 4))
    assert (labels["auto"] == 3).sum() != (labels["none"] == 3).sum()  # and moved by the default
    assert main(["-q", "segment", "--model", str(model), "--scans", str(small_demo_dir / "scans"), "--out",
                 str(tmp_path / "bad"), "--partial-volume", "celestine"]) == 2
    assert "No phase is called 'celestine'" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_segment_reads_the_phase_around_a_redrawn_edge_from_beyond_its_band_when_asked(small_demo_dir, tmp_path, capsys):
    """`segment --edge-background beyond` re-reads gypsum and bassanite within the band of every redrawn edge from
    beyond it, and records the matrix in the series' settings (so such a series never mixes with a plain one);
    `nearest` keeps the network's labels there and records nothing new (older series keep matching their record)."""
    from pathlib import Path

    from core.cli import _edge_background_default

    model = Path(__file__).resolve().parents[1] / "models" / "demo-unet"
    labels, records = {}, {}
    for how in ("beyond", "nearest"):
        out = tmp_path / how
        assert main(["-q", "segment", "--model", str(model), "--scans", str(small_demo_dir / "scans"), "--out", str(out),
                     "--steps", "2", "--edge-background", how, "--no-temporal"]) == 0
        records[how] = json.loads((out / "segmentation.json").read_text())
        labels[how] = read_labels(out / "t002.tif")
    capsys.readouterr()
    assert records["beyond"]["settings"]["partial_volume_matrix"] == [1, 2]
    assert "partial_volume_matrix" not in records["nearest"]["settings"]
    changed = labels["beyond"] != labels["nearest"]
    assert changed.any() and np.all(np.isin(labels["beyond"][changed], (1, 2)))  # only gypsum and bassanite move
    assert np.all(np.isin(labels["nearest"][changed], (1, 2)))
    # the same folder with the other choice is another segmentation: refused, never mixed
    other = "nearest" if _edge_background_default() == "beyond" else "beyond"
    assert main(["-q", "segment", "--model", str(model), "--scans", str(small_demo_dir / "scans"), "--out",
                 str(tmp_path / other), "--steps", "3", "--no-temporal"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_a_bad_edge_background_is_refused_before_writing(small_demo_dir, tmp_path):
    from core.errors import ReactomoError
    from core.workflow.run import RunConfig, run_workflow

    meta = json.loads((small_demo_dir / "dataset.json").read_text())
    out = tmp_path / "run"
    with pytest.raises(ReactomoError, match=r"^The edge background must be one of beyond, nearest; got 'sideways'\.$"):
        run_workflow(RunConfig(scans=str(small_demo_dir / "scans"), scribbles=str(small_demo_dir / "scribbles.tif"),
                               label_step=meta["label_step"], out=str(out), epochs=1, edge_background="sideways"))
    assert not out.exists()


def test_the_forest_reads_the_steps_around_the_labelled_one_and_the_run_records_it(small_demo_dir, tmp_path, capsys):
    meta = json.loads((small_demo_dir / "dataset.json").read_text())
    k, n = meta["label_step"], len(meta["steps"])
    out = tmp_path / "run"
    assert main(_run(small_demo_dir, out, "--epochs", "1", "--forest-time-context", "1")) == 0
    want = [t for t in (k - 1, k + 1) if 0 <= t < n]
    said = capsys.readouterr().out
    assert f"the forest also reads steps {', '.join(map(str, want))} (the same slices, aligned)" in said
    run = json.loads((out / "run.json").read_text())
    tc = run["random_forest"]["steps"][0]["time_context"]
    assert tc["applied"] and tc["steps"] == want and tc["reach"] == 1 and run["config"]["forest_time_context"] == 1
    alone = tmp_path / "alone"
    assert main(_run(small_demo_dir, alone, "--epochs", "1", "--forest-time-context", "0")) == 0
    assert "the forest also reads" not in capsys.readouterr().out
    tc0 = json.loads((alone / "run.json").read_text())["random_forest"]["steps"][0]["time_context"]
    assert tc0["applied"] is False and tc0["steps"] == []
    # the forests learned from different features, so their ground truths differ
    assert (read_labels(out / "ground_truth.tif") != read_labels(alone / "ground_truth.tif")).any()
    bad = tmp_path / "bad"
    assert main(_run(small_demo_dir, bad, "--forest-time-context", "4")) == 2
    err = capsys.readouterr().err
    assert "The forest's time context must be 0 to 3 steps on each side; got 4." in err and not bad.exists()
