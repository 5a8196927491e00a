"""`python -m core segment / evaluate / run`, the internal standard and the project evaluation."""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path

import numpy as np
import pytest

from core.cli import main
from core.errors import ReactomoError
from core.workflow.evaluate import comparison_rows, evaluate_files, evaluate_segmentation, references, report_csv
from core.imaging.io import read_labels, write_labels
from core.segmentation.metrics import phase_metrics
from core.phases import DEFAULT_PHASES
from core.network.inference import InferenceConfig
from core.workflow.segment import segment_project
from core.analysis.stoichiometry import molar_evolution

MODEL = Path(__file__).resolve().parents[1] / "models" / "demo-unet"


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_segment_command_writes_labels_and_volumes(small_demo_dir, tmp_path, capsys):
    out = tmp_path / "seg"
    code, text, err = _run(capsys, "-q", "segment", "--model", str(MODEL), "--scans", str(small_demo_dir / "scans"),
                           "--out", str(out), "--tile", "64", "--voxel-size", "2.75", "--interval", "60")
    assert code == 0, err
    assert "4 of 4 steps segmented" in text and text.count(" done in ") == 4
    rows = list(csv.DictReader(open(out / "phase_volumes.csv")))
    assert [float(r["time_s"]) for r in rows] == [0, 60, 120, 180]
    lab = read_labels(out / "t002.tif")
    assert lab.shape == (16, 64, 72) and int(rows[2]["bassanite_voxels"]) == int((lab == 2).sum())
    # its analysis report carries the model card (training, validation Dice) and the segmentation's settings
    from core.analysis.results import AnalysisConfig, analyze

    analyze(out, tmp_path / "an", config=AnalysisConfig(n_boot=50))
    report = (tmp_path / "an" / "report.html").read_text(encoding="utf-8")
    card = json.loads((MODEL / "card.json").read_text())
    assert "<h3>Model card</h3>" in report and f"{card['metrics']['epochs']} (best {card['metrics']['best_epoch']})" in report
    assert all(f"{name} {v:.3f}" in report for name, v in card["metrics"]["val_dice"].items())
    assert "tile 64, overlap 0.25" in report
    assert f"depth {card['unet']['depth']}, batch norm, {card['unet']['in_channels']} neighbouring slices in (2.5D)" in report
    # the cleaning the model's card chose from its ground truth (--min-size auto), described in words
    stored = card["cleaning"]["config"]
    if stored["min_sizes"]:
        assert "islands removed" in report
    else:
        assert "no island removal" in report
    assert ("no rim relabelling" in report) == (not stored["rim_px"])
    # and where that cleaning came from, as `segment` printed it
    why = next(line for line in text.splitlines() if line.startswith("Cleaning stored with the model"))
    assert f"cleaning chosen by</th><td style='text-align:left'>{html.escape(why)}" in report
    # how the steps were labelled (together by default), and the averaging over slices, as the record has them
    rec = json.loads((out / "segmentation.json").read_text())
    assert rec["temporal"]["applied"] is True
    assert f"Steps labelled together: {sum(rec['temporal']['changed_voxels']):,} voxels relabelled" in report
    assert "averaged over slices with σ 0.7" in report
    # the edges redrawn from the scan, by default the pores' and then celestite's
    assert rec["settings"]["partial_volume"] == [3, 4]
    assert ("edges redrawn from the scan</th><td style='text-align:left'>pore, celestite (linear unmixing, in this "
            "order, before the cleaning)") in report


def test_segment_without_interval_takes_the_times_from_dataset_json(small_demo_dir, tmp_path, capsys):
    interval = json.loads((small_demo_dir / "dataset.json").read_text())["interval_s"]
    out = tmp_path / "seg"
    code, text, err = _run(capsys, "-q", "segment", "--model", str(MODEL), "--scans", str(small_demo_dir / "scans" / "t00[01].tif"),
                           "--out", str(out), "--tile", "64")
    assert code == 0, err
    assert f"step times: every {interval:g} s (from {small_demo_dir / 'dataset.json'})" in text
    assert [float(r["time_s"]) for r in csv.DictReader(open(out / "phase_volumes.csv"))] == [0, interval]


def test_dataset_interval_finds_the_file_beside_the_scans_and_ignores_bad_ones(small_demo_dir, tmp_path):
    from core.workflow.data import dataset_interval

    interval = json.loads((small_demo_dir / "dataset.json").read_text())["interval_s"]
    for src in (small_demo_dir / "scans", small_demo_dir / "scans" / "*.tif", small_demo_dir):
        assert dataset_interval(src) == (interval, str(small_demo_dir / "dataset.json")), src
    plain = tmp_path / "plain" / "scans"
    plain.mkdir(parents=True)
    assert dataset_interval(plain) is None
    for bad in ("{not json", '{"interval_s": -5}', '{"interval_s": "300"}', '[1, 2]', '{"interval_s": true}'):
        (plain.parent / "dataset.json").write_text(bad)
        assert dataset_interval(plain) is None, bad


def test_evaluate_command_table_and_json_match_core(small_demo_dir, tmp_path, capsys):
    truth = small_demo_dir / "truth" / "t002.tif"
    t = read_labels(truth)
    pred = t.copy()
    pred[:, :10] = 3  # damage a band
    write_labels(tmp_path / "p.tif", pred)
    code, text, err = _run(capsys, "evaluate", "--pred", str(tmp_path / "p.tif"), "--truth", str(truth), "--json")
    assert code == 0, err
    got = json.loads(text)
    ref = phase_metrics(pred, t, codes=[1, 2, 3, 4], names=list(DEFAULT_PHASES.names))
    assert got["average"]["dice"] == pytest.approx(ref.average["dice"]) and got["average"]["dice"] < 1
    code, text, _ = _run(capsys, "evaluate", "--pred", str(tmp_path / "p.tif"), "--truth", str(truth))
    assert code == 0 and text.splitlines()[0].split()[:3] == ["phase", "accuracy", "recall"] and "average" in text
    # slab-by-slab evaluation equals the whole-array metrics; a slice subset equals the subset's metrics
    whole = evaluate_files(tmp_path / "p.tif", truth, codes=[1, 2, 3, 4])
    assert np.array_equal(whole.confusion, ref.confusion)
    sub = evaluate_files(tmp_path / "p.tif", truth, codes=[1, 2, 3, 4], slices=[1, 5])
    assert np.array_equal(sub.confusion, phase_metrics(pred[[1, 5]], t[[1, 5]], codes=[1, 2, 3, 4]).confusion)


def test_evaluate_folders_scores_every_step_and_pools_them(small_demo_dir, tmp_path, capsys):
    from core.segmentation.metrics import pool_reports

    pred = tmp_path / "pred"
    pred.mkdir()
    for name in ("t001.tif", "t002.tif", "t003.tif"):  # t000 only in the truth: left out
        lab = read_labels(small_demo_dir / "truth" / name)
        lab[:, :8] = 3
        write_labels(pred / name, lab)
    code, text, err = _run(capsys, "evaluate", "--pred", str(pred), "--truth", str(small_demo_dir / "truth"), "--json")
    assert code == 0, err
    got = json.loads(text)
    assert list(got["steps"]) == ["t001.tif", "t002.tif", "t003.tif"]
    reps = [evaluate_files(pred / n, small_demo_dir / "truth" / n, codes=[1, 2, 3, 4]) for n in got["steps"]]
    assert got["pooled"]["confusion"] == pool_reports(reps).confusion.tolist()
    assert got["pooled"]["average"]["dice"] == pytest.approx(pool_reports(reps).average["dice"])
    code, text, _ = _run(capsys, "evaluate", "--pred", str(pred), "--truth", str(small_demo_dir / "truth"))
    assert code == 0 and "3 files in both folders; 1 in one only, left out" in text and "All 3 steps pooled" in text
    assert sum(line.startswith("t00") for line in text.splitlines()) == 3


@pytest.mark.parametrize(
    "argv, sentence",
    [
        (["evaluate", "--pred", "{truth}", "--truth", "{scan}"], "not uint8 label codes"),
        (["evaluate", "--pred", "{truth}", "--truth", "{other}"], "has shape"),
        (["evaluate", "--pred", "{truthdir}", "--truth", "{truth}"], "both as label files or both as folders"),
        (["evaluate", "--pred", "{truthdir}", "--truth", "{tmp}"], "No label file name is in both"),
        (["segment", "--model", "{tmp}/nomodel", "--scans", "{scans}", "--out", "{tmp}/o"], "nomodel"),
        (["segment", "--model", str(MODEL), "--scans", "{scans}", "--out", "{tmp}/o", "--tile", "3"], "tile"),
        (["segment", "--model", str(MODEL), "--scans", "{scans}", "--out", "{tmp}/o", "--scheduler", "nowhere"], "scheduler"),
        (["run", "--scans", "{scans}", "--scribbles", "{scribbles}", "--label-step", "9", "--out", "{tmp}/o"], "--label-step 9"),
        (["run", "--scans", "{scans}", "--scribbles", "{truth}", "--label-step", "1", "--out", "{tmp}/o", "--epochs", "0"], "epochs"),
    ],
)
def test_bad_input_exits_2_with_one_sentence_and_writes_nothing(small_demo_dir, tmp_path, capsys, argv, sentence):
    other = tmp_path / "other.tif"
    write_labels(other, np.ones((2, 8, 8), np.uint8))
    subs = {"{truthdir}": str(small_demo_dir / "truth"), "{truth}": str(small_demo_dir / "truth" / "t001.tif"), "{scan}": str(small_demo_dir / "scans" / "t001.tif"),
            "{other}": str(other), "{tmp}": str(tmp_path), "{scans}": str(small_demo_dir / "scans"),
            "{scribbles}": str(small_demo_dir / "scribbles.tif")}
    args = []
    for a in argv:
        for k, v in subs.items():
            a = a.replace(k, v)
        args.append(a)
    code, out, err = _run(capsys, *args)
    assert code == 2 and err.startswith("error: ") and sentence in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_run_command_end_to_end_on_a_small_demo(small_demo_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, text, err = _run(capsys, "-q", "run", "--scans", str(small_demo_dir / "scans"), "--scribbles",
                           str(small_demo_dir / "scribbles.tif"), "--label-step", "1", "--out", str(out),
                           "--epochs", "2", "--tile", "64", "--interval", "60", "--device", "cpu")
    assert code == 0, err
    assert "Run written to" in text
    for name in ("ground_truth.tif", "phase_volumes.csv", "run.json", "model/card.json", "segmentations/t003.tif"):
        assert (out / name).is_file(), name
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["epochs"] == 2 and run["unet"]["epochs"] == 2 and run["versions"]["torch"]
    assert run["versions"]["cpu"] and run["versions"]["cpu_capability"]  # which processor computed it
    # two epochs make a poor model: the run says so and keeps the sentence, it does not call it a success
    assert run["unet"]["quality_warning"] and f"warning: {run['unet']['quality_warning']}" in text
    assert set(run["timings_s"]) >= {"random_forest_s", "train_s", "segment_s", "total_s"}
    assert len(run["inputs"]["scans"]) == 4 and len(run["inputs"]["scans"][0]["sha256_first_mib"]) == 64
    assert run["segmentation"]["settings"]["inference"]["tile"] == 64
    # the verdict over every check, in run.json's summary and printed
    summary, verdict = run["summary"], run["verdict"]
    if summary["internal_standard_error"]:  # 2 epochs may find no reactant: no verdict, and the run says why
        assert verdict == {} and summary["verdict_passed"] is None and summary["failed_checks"] == []
        assert "internal standard not computed" in text
        assert f"Verdict: NOT JUDGED. The analysis was not possible: {summary['internal_standard_error']}" in text
    else:
        assert len(verdict["checks"]) == 5 and summary["verdict_passed"] is verdict["passed"]
        assert summary["failed_checks"] == verdict["failed"] == [c["name"] for c in verdict["checks"] if c["passed"] is False]
        assert f"Verdict: {'PASSED' if verdict['passed'] else 'FAILED'}. {verdict['sentence']}" in text
        marks = {True: "pass", False: "FAIL", None: "not evaluated"}
        assert all(f"  {marks[c['passed']]:<4}  {c['sentence']}" in text for c in verdict["checks"])  # every check, one line
    gt = read_labels(out / "ground_truth.tif")
    step = run["random_forest"]["steps"][0]  # the scribbled slices, and the others the forest labelled for the U-Net
    assert step["extra_slices"] and not set(step["extra_slices"]) & set(run["random_forest"]["slices"])
    assert sorted(np.flatnonzero(gt.reshape(16, -1).any(1)).tolist()) == sorted(run["random_forest"]["slices"]
                                                                                 + step["extra_slices"])
    # the cleaning: chosen from the ground truth of the labelled slices, stored with the model, recorded with how
    cl = run["cleaning"]
    assert cl["mode"] == "auto" and "never by the internal standard" in cl["sentence"]
    assert "not looked at" in cl["chosen_from_ground_truth"]["method"] and len(cl["chosen_from_ground_truth"]["candidates"]) > 20
    assert run["segmentation"]["settings"]["postprocess"] == cl["used"]
    assert run["segmentation"]["cleaning_source"] == cl["sentence"]
    card = json.loads((out / "model" / "card.json").read_text())
    assert card["cleaning"]["config"] == cl["used"]
    assert "cleaning:" in text


def test_the_runs_cleaning_does_not_depend_on_the_steps_that_the_internal_standard_judges(small_demo_dir, tmp_path, capsys):
    """Two runs with the same label step and scribbles but different other steps: their internal standards differ,
    the cleaning they choose does not (it sees only the labelled slices)."""
    import shutil

    runs = []
    for k, swap in enumerate((False, True)):
        scans = tmp_path / f"scans{k}"
        shutil.copytree(small_demo_dir / "scans", scans)
        if swap:  # the last step replaced by the first: no reaction at the end, so a very different internal standard
            shutil.copyfile(small_demo_dir / "scans" / "t000.tif", scans / "t003.tif")
        out = tmp_path / f"run{k}"
        code, _, err = _run(capsys, "-q", "run", "--scans", str(scans), "--scribbles", str(small_demo_dir / "scribbles.tif"),
                            "--label-step", "1", "--out", str(out), "--epochs", "2", "--interval", "60", "--device", "cpu")
        assert code == 0, err
        runs.append(json.loads((out / "run.json").read_text()))
    a, b = runs
    assert a["cleaning"]["used"] == b["cleaning"]["used"]
    assert a["cleaning"]["chosen_from_ground_truth"]["candidates"] == b["cleaning"]["chosen_from_ground_truth"]["candidates"]
    # ... although the step the internal standard judges last is another scan
    assert a["inputs"]["scans"][3]["sha256_first_mib"] != b["inputs"]["scans"][3]["sha256_first_mib"]
    assert a["inputs"]["scans"][1]["sha256_first_mib"] == b["inputs"]["scans"][1]["sha256_first_mib"]


def test_internal_standard_holds_on_the_demo_truth_and_flags_a_biased_segmentation(small_demo_dir):
    ds = json.loads((small_demo_dir / "dataset.json").read_text())
    name_to_code = {p.name: p.code for p in DEFAULT_PHASES}
    counts = [{name_to_code[k]: v for k, v in s["counts"].items()} for s in ds["steps"]]
    rows = molar_evolution(counts, phases=DEFAULT_PHASES, voxel_size_um=2.75)
    assert all(abs(r["deviation_pct"]) < 0.5 and r["inside_band"] for r in rows)
    assert rows[0]["x"] == 0 and rows[0]["y"] == 1 and rows[-1]["x"] > 0.3
    assert all(r["x"] + r["y"] == pytest.approx(1, abs=0.005) for r in rows)
    # 10 % of the bassanite read as gypsum: outside the band from the step where it matters
    biased = [{**c, 1: c[1] + c[2] // 10, 2: c[2] - c[2] // 10} for c in counts]
    rows_b = molar_evolution(biased, phases=DEFAULT_PHASES, voxel_size_um=2.75)
    assert not rows_b[-1]["inside_band"] and rows_b[-1]["deviation_pct"] > 2  # a cm³ of gypsum holds fewer moles than one of bassanite
    with pytest.raises(ReactomoError, match="no gypsum"):
        molar_evolution([{2: 5}], phases=DEFAULT_PHASES, voxel_size_um=2.75)


def test_project_evaluation_against_the_demo_truth_and_the_comparison_table(demo_project):
    assert "demo truth" in references(demo_project)
    segment_project(demo_project, MODEL, name="m1", inference=InferenceConfig(tile=64), steps=[1, 2])
    reports = evaluate_segmentation(demo_project, "m1", reference="demo truth")
    assert sorted(reports) == [1, 2]
    for step, rep in reports.items():
        truth = read_labels(demo_project.resolve_path(demo_project.demo()["truth"][step]))
        pred = read_labels(demo_project.root / "segmentations" / "m1" / f"t00{step}.tif")
        assert rep.per_phase[2]["dice"] == pytest.approx(phase_metrics(pred, truth, codes=[1, 2, 3, 4]).per_phase[2]["dice"])
        assert 0.3 < rep.average["dice"] <= 1
    rows = comparison_rows({"m1 step 1": reports[1], "m1 step 2": reports[2]})
    assert [r["model"] for r in rows] == ["m1 step 1", "m1 step 2"] and set(rows[0]) >= {"gypsum", "celestite", "average"}
    text = report_csv(rows)
    assert text.splitlines()[0].startswith("model,gypsum") and len(text.splitlines()) == 3
    with pytest.raises(ReactomoError, match="no segmentation called"):
        evaluate_segmentation(demo_project, "nope")
    with pytest.raises(ReactomoError, match="no accepted ground truth"):
        evaluate_segmentation(demo_project, "m1", reference="ground truth")


def test_a_segmentation_of_a_z_range_and_a_region_is_scored_where_it_was_made(demo_project):
    """A user's walk: a segmentation of a z range was refused by Evaluate ("covers a region of interest only", though
    it had none); the demo truth and the ground truth cover every voxel it covers."""
    from core.workflow.ground_truth import accept_candidate, train_candidate
    from core.workflow.labels import import_demo_scribbles

    demo = demo_project.demo()
    nz, ny, nx = demo_project.scans()[0].shape
    box = (2, 12, 5, 50, 8, 60)  # z0, z1, y0, y1, x0, x1
    segment_project(demo_project, MODEL, name="part", inference=InferenceConfig(tile=64), steps=[demo["label_step"]],
                    use_roi=False, z_range=box[:2])
    demo_project.set_roi({"z": list(box[:2]), "y": list(box[2:4]), "x": list(box[4:])})
    segment_project(demo_project, MODEL, name="roi", inference=InferenceConfig(tile=64), steps=[demo["label_step"]])
    step = demo["label_step"]
    truth = read_labels(demo_project.resolve_path(demo["truth"][step]))
    for name, crop in (("part", (slice(2, 12), slice(None), slice(None))), ("roi", (slice(2, 12), slice(5, 50), slice(8, 60)))):
        pred = read_labels(demo_project.root / "segmentations" / name / f"t00{step}.tif")
        assert pred.shape == truth[crop].shape
        rep = evaluate_segmentation(demo_project, name, reference="demo truth")[step]
        expect = phase_metrics(pred, truth[crop], codes=[1, 2, 3, 4])
        for c in (1, 2, 3, 4):
            assert rep.per_phase[c]["dice"] == pytest.approx(expect.per_phase[c]["dice"])
    # against the accepted ground truth: its slices inside the z range, cropped to the region
    import_demo_scribbles(demo_project)
    train_candidate(demo_project)
    gt = accept_candidate(demo_project)
    inside = [(z, lab) for z, lab in zip(gt.slices, gt.labels) if 2 <= z < 12]
    assert inside, "the demo's ground-truth slices should reach into z 2-12"
    pred = read_labels(demo_project.root / "segmentations" / "roi" / f"t00{step}.tif")
    rep = evaluate_segmentation(demo_project, "roi", reference="ground truth")[gt.step]
    expect = phase_metrics(np.stack([pred[z - 2] for z, _ in inside]), np.stack([lab[5:50, 8:60] for _, lab in inside]),
                           codes=[1, 2, 3, 4])
    assert rep.average["dice"] == pytest.approx(expect.average["dice"])
    from core.workflow.evaluate import coverage_note

    assert coverage_note(demo_project, "part") == (f"'part' covers z 2-12 of the {nz}×{ny}×{nx} scan only, and is scored "
                                                   "there: compare it with segmentations of the same part.")
    assert "z 2-12, y 5-50, x 8-60 of the" in coverage_note(demo_project, "roi")
    # a block the reference does not hold is one sentence
    with pytest.raises(ReactomoError, match="is not the block z 0-4"):
        evaluate_files(demo_project.root / "segmentations" / "roi" / f"t00{step}.tif", demo_project.resolve_path(demo["truth"][step]),
                       codes=[1, 2, 3, 4], box=(0, 4, 0, ny, 0, nx))
