"""Labelling the steps together: the most probable allowed history of each voxel, the alignment check, a series."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from core.errors import ReactomoError
from core.imaging.io import read_labels
from core.network.inference import InferenceConfig
from core.phases import DEFAULT_PHASES
from core.segmentation.series import TEMPORAL_DIR, read_series_record, segment_series
from core.segmentation.temporal import allowed_transitions, free_classes, most_probable_histories, step_shifts

MODEL = Path(__file__).resolve().parents[1] / "models" / "demo-unet"
FAST = InferenceConfig(tile=64, overlap=0.25, batch_size=8, device="cpu")
CODES = [1, 2, 3, 4]  # gypsum, bassanite, pore, celestite
ALLOWED = allowed_transitions(CODES, 1, [2, 3])
FREE = free_classes(CODES, 1, [2, 3])


def test_the_reaction_allows_the_reactant_to_become_product_or_pore_and_nothing_to_turn_back():
    a = ALLOWED
    assert a.diagonal().all()
    assert a[0, 1] and a[0, 2]  # gypsum -> bassanite, gypsum -> pore
    assert not a[1, 0] and not a[2, 0] and not a[1, 2] and not a[2, 1]  # nothing turns back
    assert a.sum() == 4 + 2
    # celestite (inert) is free: its constancy stays a check of the segmentation, not a constraint on it
    assert FREE.tolist() == [False, False, False, True]


def test_histories_are_the_best_allowed_ones_found_by_exhaustive_search():
    rng = np.random.default_rng(3)
    t_n, c_n, n = 4, 4, 150
    p = rng.dirichlet(np.full(c_n, 0.7), size=(t_n, n)).transpose(0, 2, 1)  # (T, C, N)
    got = most_probable_histories(p, ALLOWED)
    logp = np.log(np.clip(p, 1e-4, 1.0))
    allowed = [h for h in itertools.product(range(c_n), repeat=t_n) if all(ALLOWED[h[t], h[t + 1]] for t in range(t_n - 1))]
    for v in range(n):
        best = max(allowed, key=lambda h: sum(logp[t, h[t], v] for t in range(t_n)))
        assert tuple(got[:, v]) == best
        assert all(ALLOWED[got[t, v], got[t + 1, v]] for t in range(t_n - 1))


def test_a_flicker_is_removed_and_strong_evidence_is_kept():
    def probs(*rows):  # one voxel, each row the (gypsum, bassanite, pore, celestite) probabilities of a step
        return np.array(rows, dtype=np.float32)[:, :, None]

    # bassanite, then a weak gypsum call, then bassanite again: the voxel was bassanite from step 0 on
    h = most_probable_histories(probs([0.1, 0.8, 0.05, 0.05], [0.5, 0.4, 0.05, 0.05], [0.1, 0.8, 0.05, 0.05]), ALLOWED)
    assert h[:, 0].tolist() == [1, 1, 1]
    # gypsum that turns into bassanite: kept as it was seen
    h = most_probable_histories(probs([0.8, 0.1, 0.05, 0.05], [0.7, 0.2, 0.05, 0.05], [0.2, 0.7, 0.05, 0.05]), ALLOWED)
    assert h[:, 0].tolist() == [0, 0, 1]
    # one step: its own argmax
    one = np.random.default_rng(0).dirichlet(np.ones(4), size=20).T[None]
    assert np.array_equal(most_probable_histories(one, ALLOWED)[0], one[0].argmax(0))


def test_a_free_phase_is_placed_by_each_step_and_is_never_a_bridge():
    def probs(*rows):
        return np.array(rows, dtype=np.float32)[:, :, None]

    # bassanite, celestite (the step's most probable), then gypsum: celestite stays at step 1, and steps 0 and 2
    # still follow an allowed history (bassanite never turns back into gypsum through it)
    p = probs([0.1, 0.6, 0.05, 0.25], [0.2, 0.2, 0.1, 0.5], [0.55, 0.2, 0.05, 0.2])
    h = most_probable_histories(p, ALLOWED, FREE)[:, 0].tolist()
    assert h[1] == 3 and ALLOWED[h[0], h[2]]
    # where no step calls it most probable, a free class never appears
    rng = np.random.default_rng(5)
    q = rng.dirichlet(np.ones(4), size=(5, 400)).transpose(0, 2, 1)
    got = most_probable_histories(q, ALLOWED, FREE)
    assert np.array_equal(got == 3, q.argmax(1) == 3)
    # the other steps follow the best allowed history of the reaction's phases, the free steps giving no evidence
    logp = np.log(np.clip(q, 1e-4, 1.0))
    hist = [h for h in itertools.product(range(3), repeat=5) if all(ALLOWED[h[t], h[t + 1]] for t in range(4))]
    for v in range(60):
        alone = q[:, :, v].argmax(1) == 3
        best = max(hist, key=lambda h: sum(logp[t, h[t], v] for t in range(5) if not alone[t]))
        assert [g for g, a in zip(got[:, v], alone) if not a] == [b for b, a in zip(best, alone) if not a]


def test_where_rounding_ties_two_classes_the_class_the_network_gave_decides():
    # stored as bytes, 0.500 and 0.501 both become 128/255: the network's own class (celestite) is what counts
    p = np.array([[0.0, 128, 0, 128], [0.0, 128, 0, 128]], dtype=np.float32)[:, :, None] / 255.0
    given = np.array([[3], [3]])
    assert most_probable_histories(p, ALLOWED, FREE, given=given)[:, 0].tolist() == [3, 3]
    assert most_probable_histories(p, ALLOWED, FREE)[:, 0].tolist() == [1, 1]  # the rounded argmax alone would not


def test_bad_histories_input_is_refused():
    with pytest.raises(ReactomoError, match="every class may stay"):
        most_probable_histories(np.full((2, 4, 3), 0.25), np.zeros((4, 4), bool))
    with pytest.raises(ReactomoError, match="shape"):
        most_probable_histories(np.zeros(4), ALLOWED)
    with pytest.raises(ReactomoError, match="reactant's code 9"):
        allowed_transitions(CODES, 9, [2])
    with pytest.raises(ReactomoError, match="code 7"):
        allowed_transitions(CODES, 1, [7])


def test_step_shifts_measure_a_moved_scan_and_say_zero_for_an_aligned_one():
    rng = np.random.default_rng(1)
    base = ndi.gaussian_filter(rng.random((16, 64, 64)), 2.0)
    moved = np.roll(base, (0, 2, -1), axis=(0, 1, 2))
    blocks = [base + rng.normal(0, 0.01, base.shape), base + rng.normal(0, 0.01, base.shape), moved]
    shifts = step_shifts(lambda t: blocks[t], 3)
    assert shifts[0] == [0.0, 0.0, 0.0]
    assert np.allclose(shifts[1], 0, atol=0.11)
    assert np.allclose(np.abs(shifts[2]), [0, 2, 1], atol=0.11)


@pytest.fixture(scope="module")
def scans(small_demo_dir):
    return sorted((small_demo_dir / "scans").glob("*.tif"))


def _forbidden(labels: list[np.ndarray]) -> int:
    """Voxels whose labels change between two consecutive steps in a way the reaction does not allow."""
    idx = {c: i for i, c in enumerate(CODES)}
    lut = np.zeros(256, np.intp)
    for c, i in idx.items():
        lut[c] = i
    # transitions to or from celestite (free) are not constrained
    return sum(int(np.count_nonzero(~ALLOWED[lut[a], lut[b]] & (a != 4) & (b != 4))) for a, b in zip(labels, labels[1:]))


def test_a_series_labelled_together_has_only_allowed_histories(scans, tmp_path):
    alone = segment_series(MODEL, scans, tmp_path / "alone", inference=FAST, postprocess=None, partial_volume=[])
    together = segment_series(MODEL, scans, tmp_path / "together", inference=FAST, postprocess=None, partial_volume=[],
                              temporal=True)
    before = [read_labels(o.out_path) for o in alone.steps]
    after = [read_labels(o.out_path) for o in together.steps]
    assert _forbidden(before) > 0  # the network alone flickers on this noisy demo
    assert _forbidden(after) == 0  # every voxel the network labelled now follows an allowed history
    # celestite was not made constant: each step's own evidence still places it
    assert len({int(np.count_nonzero(lab == 4)) for lab in after}) > 1
    rec = read_series_record(tmp_path / "together")
    assert rec["temporal"]["applied"] is True and rec["settings"]["temporal"] is True
    assert rec["temporal"]["shifts_vox"][1] == [0.0, 0.0, 0.0]
    changed = [int(np.count_nonzero(a != b)) for a, b in zip(before, after)]
    assert rec["temporal"]["changed_voxels"] == changed and sum(changed) > 0
    for o, lab in zip(together.steps, after):  # the counts and the phase volumes are those of the files
        assert o.counts == {c: int(np.count_nonzero(lab == c)) for c in CODES}
    rows = (tmp_path / "together" / "phase_volumes.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[[h for h in (tmp_path / "together" / "phase_volumes.csv").read_text().splitlines()[0].split(",")].index("bassanite_voxels")]) for r in rows] == [o.counts[2] for o in together.steps]
    assert not (tmp_path / "together" / TEMPORAL_DIR).exists()  # the probabilities are gone once used
    assert "temporal" not in read_series_record(tmp_path / "alone")


def test_the_edge_redraw_and_the_cleaning_are_kept_where_they_changed_a_voxel(scans, tmp_path):
    together = segment_series(MODEL, scans, tmp_path / "seg", inference=FAST, temporal=True)  # redraw + cleaning on
    assert read_series_record(tmp_path / "seg")["temporal"]["applied"] is True
    plain = segment_series(MODEL, scans, tmp_path / "plain", inference=FAST)  # the same, step by step
    raw = segment_series(MODEL, scans, tmp_path / "raw", inference=FAST, postprocess=None, partial_volume=[])
    moved = 0
    for a, b, c in zip(together.steps, plain.steps, raw.steps):
        la, lb, lc = read_labels(a.out_path), read_labels(b.out_path), read_labels(c.out_path)
        kept = lb != lc  # the redraw or the cleaning changed these voxels
        assert kept.any()
        assert np.array_equal(la[kept], lb[kept])  # ... and they keep that label
        moved += int(np.count_nonzero(la != lb))
    assert moved > 0


def test_moved_scans_are_labelled_one_by_one_and_the_record_says_why(scans, tmp_path):
    moved = tmp_path / "moved"
    moved.mkdir()
    paths = []
    for i, s in enumerate(scans):
        vol = tifffile.imread(s)
        if i == 2:
            vol = np.roll(vol, 3, axis=2)  # the sample slipped by 3 voxels in x
        paths.append(moved / s.name)
        tifffile.imwrite(paths[-1], vol)
    r = segment_series(MODEL, paths, tmp_path / "seg", inference=FAST, postprocess=None, partial_volume=[], temporal=True)
    rec = read_series_record(tmp_path / "seg")
    assert rec["temporal"]["applied"] is False
    assert "step 2 is shifted by" in rec["temporal"]["reason"] and "register the scans" in rec["temporal"]["reason"]
    alone = segment_series(MODEL, paths, tmp_path / "alone", inference=FAST, postprocess=None, partial_volume=[])
    for a, b in zip(r.steps, alone.steps):  # exactly the step-by-step labels
        assert np.array_equal(read_labels(a.out_path), read_labels(b.out_path))
    assert not (tmp_path / "seg" / TEMPORAL_DIR).exists()


def test_a_slow_drift_that_adds_up_is_caught_against_the_first_step(scans, tmp_path):
    moved = tmp_path / "drift"
    moved.mkdir()
    paths = []
    for i, s in enumerate(scans):
        vol = tifffile.imread(s).astype(np.float32)
        vol = ndi.shift(vol, (0, 0, 0.3 * i), order=1, mode="nearest")  # 0.3 voxel per step: 0.9 by the last
        paths.append(moved / s.name)
        tifffile.imwrite(paths[-1], vol.astype(np.uint16))
    segment_series(MODEL, paths, tmp_path / "seg", inference=FAST, postprocess=None, partial_volume=[], temporal=True)
    reason = read_series_record(tmp_path / "seg")["temporal"]["reason"]
    assert "against step 0" in reason and "register the scans" in reason


def test_a_partly_resumed_series_is_not_labelled_together_and_says_so(scans, tmp_path):
    out = tmp_path / "seg"
    segment_series(MODEL, scans, out, inference=FAST, postprocess=None, partial_volume=[], temporal=True, steps=[0, 1])
    assert read_series_record(out)["temporal"]["applied"] is False
    segment_series(MODEL, scans, out, inference=FAST, postprocess=None, partial_volume=[], temporal=True)
    rec = read_series_record(out)
    assert rec["temporal"]["applied"] is False and "resumed" in rec["temporal"]["reason"]
    assert json.dumps(rec)  # a plain JSON record


def test_a_step_segmented_again_alone_after_the_series_was_labelled_together_leaves_a_record_that_says_mixed(scans, tmp_path):
    from core.segmentation.temporal import describe

    out = tmp_path / "seg"
    first = segment_series(MODEL, scans, out, inference=FAST, postprocess=None, partial_volume=[], temporal=True)
    assert first.record["temporal"]["applied"] is True
    together = read_labels(first.steps[0].out_path)
    Path(first.steps[1].out_path).unlink()  # a lost file: step 1 is segmented again, on its own
    segment_series(MODEL, scans, out, inference=FAST, postprocess=None, partial_volume=[], temporal=True)
    rec = read_series_record(out)["temporal"]
    assert rec["applied"] is False and rec["mixed"] is True
    assert rec["together_steps"] == [0, 2, 3] and rec["alone_steps"] == [1]
    assert np.array_equal(read_labels(first.steps[0].out_path), together)  # the kept steps are not touched
    text = describe(rec)
    assert "steps 0, 2, 3 keep the labels of the series labelled together" in text
    assert "step 1 was segmented again on its own" in text and "segment every step again" in text
    # a second loss keeps the first one's history: steps 0 and 3 still hold labels from together, 1 and 2 do not
    Path(first.steps[2].out_path).unlink()
    segment_series(MODEL, scans, out, inference=FAST, postprocess=None, partial_volume=[], temporal=True)
    rec = read_series_record(out)["temporal"]
    assert rec["together_steps"] == [0, 3] and rec["alone_steps"] == [1, 2]
    assert "steps 0, 3 keep" in describe(rec) and "steps 1, 2 were segmented again on their own" in describe(rec)


def test_the_mixed_record_follows_the_scans_when_a_late_scan_renumbers_the_steps(scans, tmp_path):
    from core.segmentation.temporal import describe

    out = tmp_path / "seg"
    first = segment_series(MODEL, scans[1:], out, inference=FAST, postprocess=None, partial_volume=[], temporal=True)
    assert first.record["temporal"]["applied"] is True
    Path(first.steps[2].out_path).unlink()
    segment_series(MODEL, scans[1:], out, inference=FAST, postprocess=None, partial_volume=[], temporal=True)
    rec = read_series_record(out)["temporal"]
    assert rec["together_steps"] == [0, 1] and rec["alone_steps"] == [2]
    # a scan that sorts first arrives: every step number moves by one, the record's too
    segment_series(MODEL, scans, out, inference=FAST, postprocess=None, partial_volume=[], temporal=True)
    rec = read_series_record(out)["temporal"]
    assert rec["together_scans"] == [str(p) for p in scans[1:3]]
    assert rec["together_steps"] == [1, 2] and rec["alone_steps"] == [0, 3] and rec["missing_steps"] == []
    # nothing left to do on a part of the series: the record is carried over in that part's numbers
    segment_series(MODEL, scans[2:], out, inference=FAST, postprocess=None, partial_volume=[], temporal=True)
    rec = read_series_record(out)["temporal"]
    assert rec["together_steps"] == [0] and rec["alone_steps"] == [1]
    assert describe(rec).startswith("Steps labelled partly together: step 0 keeps")


def test_a_stopped_redo_after_labelling_together_says_which_step_is_not_segmented(scans, tmp_path):
    from core.errors import JobCancelled
    from core.segmentation.temporal import describe

    out = tmp_path / "seg"
    first = segment_series(MODEL, scans, out, inference=FAST, postprocess=None, partial_volume=[], temporal=True)
    Path(first.steps[3].out_path).unlink()
    with pytest.raises(JobCancelled):
        segment_series(MODEL, scans, out, inference=FAST, postprocess=None, partial_volume=[], temporal=True,
                       should_stop=lambda: True)
    rec = read_series_record(out)["temporal"]
    assert rec["together_steps"] == [0, 1, 2] and rec["alone_steps"] == [] and rec["missing_steps"] == [3]
    text = describe(rec)
    assert "steps 0, 1, 2 keep the labels" in text and "step 3 is not segmented" in text
    assert "again on its own" not in text  # nothing was segmented alone


def test_a_phase_table_without_a_reactant_leaves_the_steps_one_by_one_and_says_why(scans, tmp_path):
    import dataclasses

    from core.phases import DEFAULT_PHASES, PhaseTable

    no_roles = PhaseTable(tuple(dataclasses.replace(p, role="other") for p in DEFAULT_PHASES.phases))
    r = segment_series(MODEL, scans, tmp_path / "seg", phases=no_roles, inference=FAST, postprocess=None,
                       partial_volume=[], temporal=True)
    rec = r.record["temporal"]
    assert rec["applied"] is False and "no single reactant and its products" in rec["reason"]
    alone = segment_series(MODEL, scans, tmp_path / "alone", inference=FAST, postprocess=None, partial_volume=[])
    for a, b in zip(r.steps, alone.steps):  # the per-step labels, untouched
        assert np.array_equal(read_labels(a.out_path), read_labels(b.out_path))
    assert not (tmp_path / "seg" / TEMPORAL_DIR).exists()


def test_cli_segment_temporal_says_what_it_did(scans, tmp_path, capsys):
    from core.cli import main

    folder = scans[0].parent
    assert main(["segment", "--model", str(MODEL), "--scans", str(folder), "--out", str(tmp_path / "seg"), "--tile", "64",
                 "--temporal"]) == 0
    out = capsys.readouterr().out
    assert "Steps labelled together:" in out and "voxels relabelled along their most probable history" in out
    assert read_series_record(tmp_path / "seg")["settings"]["temporal"] is True
    assert main(["segment", "--model", str(MODEL), "--scans", str(folder), "--out", str(tmp_path / "off"), "--tile", "64",
                 "--no-temporal"]) == 0
    assert read_series_record(tmp_path / "off")["settings"]["temporal"] is False


def test_a_full_disk_during_the_pass_keeps_the_per_step_labels_and_says_so(scans, tmp_path, monkeypatch):
    import errno

    import core.imaging.io as io

    alone = segment_series(MODEL, scans, tmp_path / "alone", inference=FAST, postprocess=None, partial_volume=[])
    real, calls = io.write_labels, []

    def fills_up(path, labels, **kw):
        calls.append(path)
        if len(calls) == 3:  # the third step's new labels do not fit
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, labels, **kw)

    monkeypatch.setattr(io, "write_labels", fills_up)
    with pytest.raises(ReactomoError, match="could not be labelled together .*No space left on device.*per-step labels are kept"):
        segment_series(MODEL, scans, tmp_path / "seg", inference=FAST, postprocess=None, partial_volume=[], temporal=True)
    for a, o in zip(alone.steps, read_series_record(tmp_path / "seg")["steps"]):
        assert np.array_equal(read_labels(a.out_path), read_labels(o["out_path"]))  # nothing half-relabelled
    assert not (tmp_path / "seg" / TEMPORAL_DIR).exists()


@pytest.mark.parametrize("fails_at", [2, 5])  # a step's probabilities (2nd of 4), the pass's staged labels (5th)
def test_a_disk_without_room_for_the_memory_maps_is_an_error_not_a_crash(scans, tmp_path, monkeypatch, fails_at):
    import errno
    import os

    import core.segmentation.series as series

    real, calls = os.posix_fallocate, []

    def full(fd, offset, length):  # the blocks of a memory map cannot be reserved: the disk is full
        calls.append(length)
        if len(calls) == fails_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, offset, length)

    monkeypatch.setattr(series.os, "posix_fallocate", full)
    alone = segment_series(MODEL, scans, tmp_path / "alone", inference=FAST, postprocess=None, partial_volume=[])
    calls.clear()
    if fails_at == 2:  # every step is segmented all the same, the series one by one, and the record says why
        r = segment_series(MODEL, scans, tmp_path / "seg", inference=FAST, postprocess=None, partial_volume=[],
                           temporal=True)
        assert all(o.status == "done" for o in r.steps)
        assert r.record["temporal"]["applied"] is False and "no room for the class probabilities of step 1" in \
            r.record["temporal"]["reason"]
    else:
        with pytest.raises(ReactomoError, match="could not be labelled together .*No space left on device.*kept"):
            segment_series(MODEL, scans, tmp_path / "seg", inference=FAST, postprocess=None, partial_volume=[],
                           temporal=True)
    for a, o in zip(alone.steps, read_series_record(tmp_path / "seg")["steps"]):
        assert np.array_equal(read_labels(a.out_path), read_labels(o["out_path"]))  # the per-step labels
    assert not (tmp_path / "seg" / TEMPORAL_DIR).exists()


def test_memory_maps_have_their_blocks_on_disk(tmp_path):
    import os

    from core.segmentation.series import _disk_backed

    store = _disk_backed(tmp_path / "p.npy", (4, 5, 64, 64))
    st = os.stat(tmp_path / "p.npy")
    assert store.shape == (4, 5, 64, 64) and st.st_blocks * 512 >= st.st_size  # reserved, not a sparse file


def test_steps_are_labelled_together_by_default_in_segment_run_and_a_project():
    import inspect

    from core.cli import _temporal, build_parser
    from core.workflow.run import RunConfig
    from core.workflow.segment import segment_project

    parser = build_parser()
    for cmd in (["segment", "--model", "m", "--scans", "s", "--out", "o"],
                ["run", "--scans", "s", "--scribbles", "x", "--label-step", "0", "--out", "o"]):
        assert _temporal(parser.parse_args(cmd)) is True
        assert _temporal(parser.parse_args([*cmd, "--no-temporal"])) is False
    assert RunConfig(scans="s", scribbles="x", label_step=0, out="o").temporal is True
    assert inspect.signature(segment_project).parameters["temporal"].default is None  # None: the default, on
    # beamtime mode labels each scan as it arrives: the library's own default stays off
    assert inspect.signature(segment_series).parameters["temporal"].default is False


def test_steps_done_with_other_settings_are_never_silently_dropped(scans, tmp_path):
    """A folder segmented with one setting, then asked for only some steps with another: refused in one sentence
    that names the steps left out, before anything is written; all steps again with the new setting is fine."""
    import json

    out = tmp_path / "seg"
    segment_series(MODEL, scans, out, inference=FAST, postprocess=None, partial_volume=[], temporal=False)
    before = (out / "segmentation.json").read_bytes()
    labels = {p.name: p.read_bytes() for p in out.glob("t*.tif")}
    with pytest.raises(ReactomoError, match=r"holds \d step\(s\) segmented with another model or other settings "
                                            r"\(.*\) that this call leaves out; segment every step again"):
        segment_series(MODEL, scans, out, inference=FAST, postprocess=None, partial_volume=[4], temporal=False,
                       steps=[0])
    assert (out / "segmentation.json").read_bytes() == before  # nothing changed
    assert {p.name: p.read_bytes() for p in out.glob("t*.tif")} == labels
    segment_series(MODEL, scans, out, inference=FAST, postprocess=None, partial_volume=[4], temporal=False)
    record = json.loads((out / "segmentation.json").read_text())
    assert record["settings"]["partial_volume"] == [4] and all(s["status"] == "done" for s in record["steps"])
