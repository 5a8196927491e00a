"""The label store: sparse per-slice files in the project, atomic writes, counts, TIFF import/export."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tifffile

from core.errors import ReactomoError
from core.workflow.labels import (
    LabelStore,
    PhaseCount,
    eraser_colour,
    import_demo_scribbles,
    read_canvas_png,
    stroke_labels,
    suggest_slices,
)
from core.charts import png_data_uri
from core.phases import DEFAULT_PHASES
from core.phases import BASSANITE, CELESTITE, GYPSUM, PORE


@pytest.fixture
def store(demo_project):
    return LabelStore(demo_project)


def _shape(project):
    return project.scans()[0].shape


def _snapshot(project):
    """Everything a bad call must leave alone: the labels section and the label files with their bytes."""
    root = project.root / "labels"
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}
    return project.manifest["labels"], files


def test_empty_store_reads_zeros_and_has_zero_counts(store, demo_project):
    nz, ny, nx = _shape(demo_project)
    assert store.slices() == []
    lab = store.get(1, 5)
    assert lab.shape == (ny, nx) and lab.dtype == np.uint8 and not lab.any()
    assert store.counts() == {c: PhaseCount(0, 0) for c in (GYPSUM, BASSANITE, PORE, CELESTITE)}
    assert store.volume(0).shape == (nz, ny, nx)


def test_set_get_round_trip_is_sparse_and_listed_in_the_manifest(store, demo_project):
    _, ny, nx = _shape(demo_project)
    lab = np.zeros((ny, nx), np.uint8)
    lab[3:6, 4:10] = BASSANITE
    lab[20, 30] = PORE
    store.set(2, 7, lab)
    lab2 = np.zeros((ny, nx), np.int64)  # any integer dtype within 0-255 is accepted
    lab2[0, 0] = GYPSUM
    store.set(2, 11, lab2)
    assert np.array_equal(store.get(2, 7), lab)
    assert store.get(2, 11)[0, 0] == GYPSUM and store.get(2, 11).dtype == np.uint8
    step = demo_project.scans()[2].name
    files = sorted(p.name for p in (demo_project.root / "labels" / step).iterdir())
    assert files == ["z00007.tif", "z00011.tif"]  # only labelled slices have a file, and no temporary is left
    assert demo_project.manifest["labels"] == {step: {"slices": [7, 11]}}
    assert store.slices() == [(2, 7), (2, 11)]
    on_disk = tifffile.imread(demo_project.root / "labels" / step / "z00007.tif")
    assert on_disk.dtype == np.uint8 and np.array_equal(on_disk, lab)
    assert demo_project.status()[1].done  # the home checklist sees the labels


def test_set_does_not_modify_its_input_and_get_returns_a_copy(store, demo_project):
    _, ny, nx = _shape(demo_project)
    lab = np.full((ny, nx), GYPSUM, np.uint8)
    keep = lab.copy()
    store.set(0, 0, lab)
    assert np.array_equal(lab, keep)
    got = store.get(0, 0)
    got[:] = 0
    assert store.get(0, 0).all()


def test_clearing_a_slice_removes_its_file_and_its_entry(store, demo_project):
    _, ny, nx = _shape(demo_project)
    lab = np.zeros((ny, nx), np.uint8)
    lab[1, 1] = CELESTITE
    store.set(1, 3, lab)
    store.set(1, 4, lab)
    store.set(1, 3, np.zeros((ny, nx), np.uint8))  # all zero = cleared
    assert store.slices() == [(1, 4)]
    store.clear(1, 4)
    assert store.slices() == [] and demo_project.manifest["labels"] == {}
    assert not list((demo_project.root / "labels").rglob("*.tif"))
    store.clear(1, 4)  # clearing an empty slice is harmless


def test_counts_cover_every_phase(store, demo_project):
    _, ny, nx = _shape(demo_project)
    a = np.zeros((ny, nx), np.uint8)
    a[:2, :5] = GYPSUM  # 10 px
    a[5, :3] = BASSANITE  # 3 px
    b = np.zeros((ny, nx), np.uint8)
    b[:4, :4] = GYPSUM  # 16 px
    store.set(1, 2, a)
    store.set(3, 9, b)
    counts = store.counts()
    assert list(counts) == [GYPSUM, BASSANITE, PORE, CELESTITE]
    assert counts[GYPSUM] == PhaseCount(26, 2)
    assert counts[BASSANITE] == PhaseCount(3, 1)
    assert counts[PORE] == PhaseCount(0, 0) and counts[CELESTITE] == PhaseCount(0, 0)
    b[0, 0] = PORE  # the memo of per-file counts notices the rewrite
    store.set(3, 9, b)
    assert store.counts()[GYPSUM] == PhaseCount(25, 2) and store.counts()[PORE] == PhaseCount(1, 1)


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda ny, nx: np.full((ny, nx), 7, np.uint8), r"code\(s\) 7\b.*not in the phase table"),
        (lambda ny, nx: np.full((ny, nx), 300, np.int32), r"code\(s\) 300\b"),
        (lambda ny, nx: np.full((ny, nx), -1, np.int16), r"code\(s\) -1\b"),
        (lambda ny, nx: np.zeros((ny, nx + 1), np.uint8), r"shape .*×.* but the slices"),
        (lambda ny, nx: np.zeros((ny, nx), np.float32), r"dtype float32"),
        (lambda ny, nx: np.zeros((ny, nx), bool), r"dtype bool"),
        (lambda ny, nx: [[0, 1]], r"numpy array"),
    ],
)
def test_set_refuses_bad_labels_and_changes_nothing(store, demo_project, bad, match):
    _, ny, nx = _shape(demo_project)
    good = np.zeros((ny, nx), np.uint8)
    good[2, 2] = GYPSUM
    store.set(0, 5, good)
    before = _snapshot(demo_project)
    with pytest.raises(ReactomoError, match=match):
        store.set(0, 5, bad(ny, nx))
    assert _snapshot(demo_project) == before


def test_bad_step_or_slice_is_refused(store, demo_project):
    nz, ny, nx = _shape(demo_project)
    with pytest.raises(ReactomoError, match=r"Time step 9 does not exist; the project has 4 steps"):
        store.get(9, 0)
    with pytest.raises(ReactomoError, match=rf"z = {nz}.*z = 0 to {nz - 1}"):
        store.set(0, nz, np.zeros((ny, nx), np.uint8))
    with pytest.raises(ReactomoError, match=r"z = -1"):
        store.clear(0, -1)


def test_a_failed_write_leaves_the_old_slice(store, demo_project, monkeypatch):
    _, ny, nx = _shape(demo_project)
    old = np.zeros((ny, nx), np.uint8)
    old[4:8, 4:8] = GYPSUM
    store.set(1, 6, old)
    before = _snapshot(demo_project)

    def broken(path, data, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"II*\x00half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", broken)
    new = np.full((ny, nx), PORE, np.uint8)
    with pytest.raises(ReactomoError, match="could not be written.*No space left"):
        store.set(1, 6, new)
    with pytest.raises(ReactomoError, match="could not be written"):
        store.set(1, 7, new)  # a new slice is not listed either
    monkeypatch.undo()
    assert _snapshot(demo_project) == before  # no temporary file left behind, manifest unchanged
    assert np.array_equal(store.get(1, 6), old) and store.slices() == [(1, 6)]


def test_a_full_resolution_slice_saves_well_under_a_second(workspace, tmp_path):
    from core.workflow.data import register_scans
    from core.workflow.project import create_project

    scan = tmp_path / "big" / "t000.tif"
    scan.parent.mkdir()
    tifffile.imwrite(scan, np.random.default_rng(0).integers(0, 255, size=(3, 2016, 2016), dtype=np.uint8), photometric="minisblack")
    project = create_project("big")
    register_scans(project, scan, check_values=False)
    store = LabelStore(project)
    lab = np.zeros((2016, 2016), np.uint8)
    lab[100:900, 200:260] = BASSANITE
    lab[1500:1510, :] = GYPSUM
    times = []
    for i in range(3):
        t0 = time.perf_counter()
        store.set(0, 1, lab)
        assert np.array_equal(store.get(0, 1), lab)
        store.counts()
        times.append(time.perf_counter() - t0)
    assert min(times) < 0.5, times


def test_volume_and_export_import_round_trip(store, demo_project, tmp_path):
    nz, ny, nx = _shape(demo_project)
    a = np.zeros((ny, nx), np.uint8)
    a[10:20, 10:20] = BASSANITE
    store.set(2, 3, a)
    store.set(2, 12, np.where(a > 0, PORE, 0).astype(np.uint8))
    vol = store.volume(2)
    assert vol.shape == (nz, ny, nx) and vol.dtype == np.uint8
    assert np.array_equal(vol[3], a) and vol[12].max() == PORE and not vol[[0, 1, 2, 4, 11, 13]].any()

    out = store.export_tiff(tmp_path / "labels.tif", 2)
    back = tifffile.imread(out)
    assert back.dtype == np.uint8 and np.array_equal(back, vol)

    # Into another step: only the non-empty slices are stored.
    changed = store.import_tiff(out, 0)
    assert changed == [3, 12]
    assert [z for s, z in store.slices() if s == 0] == [3, 12]
    assert np.array_equal(store.volume(0), vol)
    name0 = demo_project.scans()[0].name
    assert sorted(p.name for p in (demo_project.root / "labels" / name0).iterdir()) == ["z00003.tif", "z00012.tif"]


def test_import_replace_and_merge(store, demo_project, tmp_path):
    nz, ny, nx = _shape(demo_project)
    mine = np.zeros((ny, nx), np.uint8)
    mine[0, :4] = GYPSUM
    store.set(1, 5, mine)  # slice only in the store
    store.set(1, 8, mine)  # slice also in the file
    vol = np.zeros((nz, ny, nx), np.uint8)
    vol[8, 1, :2] = CELESTITE
    vol[9, 2, 2] = PORE
    path = tmp_path / "theirs.tif"
    tifffile.imwrite(path, vol)

    assert store.import_tiff(path, 1, replace=False) == [8, 9]
    assert store.step_slices(1) == [5, 8, 9]
    merged = store.get(1, 8)
    assert merged[0, :4].tolist() == [GYPSUM] * 4 and merged[1, :2].tolist() == [CELESTITE] * 2
    assert store.import_tiff(path, 1, replace=False) == []  # nothing new the second time

    assert store.import_tiff(path, 1, replace=True) == [5, 8, 9]
    assert store.step_slices(1) == [8, 9]
    assert np.array_equal(store.volume(1), vol)
    assert not (demo_project.root / "labels" / demo_project.scans()[1].name / "z00005.tif").exists()


def _bad_label_file(case, tmp_path, shape):
    nz, ny, nx = shape
    p = tmp_path / f"{case}.tif"
    if case == "codes":
        vol = np.zeros(shape, np.uint8)
        vol[2, 3, 3] = 9
        vol[4, 0, 0] = GYPSUM
        tifffile.imwrite(p, vol)
    elif case == "shape":
        tifffile.imwrite(p, np.ones((nz, ny, nx - 1), np.uint8))
    elif case == "rgb":
        tifffile.imwrite(p, np.ones((nz, ny, nx, 3), np.uint8), photometric="rgb")
    elif case == "garbage":
        p.write_bytes(b"this is not a TIFF file at all\n" * 4)
    elif case == "uint16":
        tifffile.imwrite(p, np.ones(shape, np.uint16))
    elif case == "two_d":
        tifffile.imwrite(p, np.ones((ny, nx), np.uint8))
    elif case == "empty":
        tifffile.imwrite(p, np.zeros(shape, np.uint8))
    elif case == "missing":
        p = tmp_path / "nowhere.tif"
    return p


@pytest.mark.parametrize(
    "case, match",
    [
        ("codes", r"code\(s\) 9 .*not in the phase table"),
        ("shape", r"has shape .* but the scan has shape"),
        ("rgb", r"colour"),
        ("garbage", r"not a TIFF"),
        ("uint16", r"uint16 data; labels are 8-bit phase codes: save them as 8-bit"),
        ("two_d", r"one 2D image"),
        ("empty", r"holds no labels"),
        ("missing", r"does not exist|not found|no such"),
    ],
)
def test_bad_imports_are_refused_with_nothing_changed(store, demo_project, tmp_path, case, match):
    _, ny, nx = _shape(demo_project)
    lab = np.zeros((ny, nx), np.uint8)
    lab[1, 1] = BASSANITE
    store.set(2, 4, lab)
    before = _snapshot(demo_project)
    path = _bad_label_file(case, tmp_path, _shape(demo_project))
    with pytest.raises(ReactomoError, match=match):
        store.import_tiff(path, 2)
    assert _snapshot(demo_project) == before


def test_import_into_a_step_that_does_not_exist_changes_nothing(store, demo_project, tmp_path):
    path = tmp_path / "ok.tif"
    vol = np.zeros(_shape(demo_project), np.uint8)
    vol[1, 1, 1] = GYPSUM
    tifffile.imwrite(path, vol)
    before = _snapshot(demo_project)
    with pytest.raises(ReactomoError, match="Time step 4 does not exist"):
        store.import_tiff(path, 4)
    assert _snapshot(demo_project) == before


def test_import_demo_scribbles(store, demo_project):
    demo = demo_project.demo()
    step, changed = import_demo_scribbles(demo_project)
    assert step == demo["label_step"] and changed == demo["label_slices"]
    scribbles = tifffile.imread(demo_project.resolve_path(demo["scribbles"]))
    assert np.array_equal(store.volume(step), scribbles)
    counts = store.counts()
    assert all(counts[c].pixels > 0 for c in (GYPSUM, BASSANITE, PORE)), counts
    assert import_demo_scribbles(demo_project) == (step, [])  # already there


def test_import_demo_scribbles_needs_a_demo(workspace):
    from core.workflow.project import create_project

    with pytest.raises(ReactomoError, match="does not hold the demo"):
        import_demo_scribbles(create_project("real"))


@pytest.mark.parametrize(
    "n, depth, expected",
    [(4, 16, [3, 6, 9, 12]), (3, 5, [1, 2, 3]), (1, 9, [4]), (3, 3, [0, 1, 2]), (5, 3, [0, 1, 2]), (2, 1, [0]), (13, 2016, None)],
)
def test_suggest_slices(n, depth, expected):
    got = suggest_slices(n, depth)
    if expected is not None:
        assert got == expected
    assert got == sorted(set(got)) and len(got) == min(n, depth)
    assert all(0 <= z < depth for z in got)
    if n < depth and depth > 2 * n:
        assert got[0] > 0 and got[-1] < depth - 1  # away from the ends
        gaps = np.diff([-1, *got, depth])
        assert gaps.max() - gaps.min() <= 2  # evenly spaced


@pytest.mark.parametrize("n, depth", [(0, 10), (3, 0), (2.5, 10), (True, 10)])
def test_suggest_slices_refuses_bad_input(n, depth):
    with pytest.raises(ReactomoError, match="positive integer"):
        suggest_slices(n, depth)


# ---------------------------------------------------------------------------------------------------- brushing
PALETTE = {p.code: p.colour for p in DEFAULT_PHASES} | {0: eraser_colour([p.colour for p in DEFAULT_PHASES])}


def test_eraser_colour_is_reserved_and_distinct():
    assert eraser_colour([p.colour for p in DEFAULT_PHASES]) == "#ff00ff"
    assert eraser_colour(["#fe01fe", "#00ff00"]) not in ("#ff00ff", "#00ff00")
    with pytest.raises(ReactomoError, match="#rrggbb"):
        eraser_colour(["orange"])


def test_stroke_labels_maps_colours_and_antialiased_edges_back_to_codes():
    zoom = 3
    img = np.zeros((4 * zoom, 5 * zoom, 4), np.uint8)
    img[0:3, 0:3] = (245, 133, 24, 255)  # scan pixel (0, 0): bassanite, opaque
    img[0:3, 3:6] = (245, 133, 24, 100)  # (0, 1): faint antialiased edge, mean alpha < 0.5 -> untouched
    img[3:6, 0:3] = (240, 128, 30, 200)  # (1, 0): antialiased, colour slightly off -> still bassanite
    img[3:6, 3:6] = (255, 0, 255, 255)  # (1, 1): the eraser colour -> 0
    img[6:9, 0:2] = (84, 162, 75, 255)  # (2, 0): 6 of 9 sub-pixels celestite -> mean alpha 0.67 -> celestite
    img[6:9, 3:6] = (100, 110, 160, 255)  # (2, 1): nearest to gypsum blue
    img[9:12, 0:3, :3] = (228, 87, 86)  # (3, 0): red but fully transparent -> untouched
    got = stroke_labels(img, zoom=zoom, palette=PALETTE)
    assert got.dtype == np.int16 and got.shape == (4, 5)
    assert got.tolist() == [
        [BASSANITE, -1, -1, -1, -1],
        [BASSANITE, 0, -1, -1, -1],
        [CELESTITE, GYPSUM, -1, -1, -1],
        [-1, -1, -1, -1, -1],
    ]


def test_stroke_labels_ignores_a_partial_block_and_refuses_bad_input():
    img = np.zeros((5, 5, 4), np.uint8)
    img[4, :] = (245, 133, 24, 255)  # beyond the last whole 2x2 block
    assert (stroke_labels(img, zoom=2, palette=PALETTE) == -1).all()
    with pytest.raises(ReactomoError, match="RGBA uint8"):
        stroke_labels(np.zeros((4, 4, 3), np.uint8), zoom=1, palette=PALETTE)
    with pytest.raises(ReactomoError, match="zoom"):
        stroke_labels(img, zoom=0, palette=PALETTE)


def test_read_canvas_png_round_trip_and_garbage():
    img = np.zeros((6, 7, 4), np.uint8)
    img[1, 2] = (1, 2, 3, 255)
    assert np.array_equal(read_canvas_png(png_data_uri(img)), img)
    for bad in ("", "data:text/plain;base64,aGVsbG8=", "data:image/png;base64,bm90IGEgcG5n", None):
        with pytest.raises(ReactomoError, match="draw the stroke again"):
            read_canvas_png(bad)


def test_paint_erase_undo_and_clear_undo(store, demo_project):
    _, ny, nx = _shape(demo_project)
    strokes = np.full((8, 10), -1, np.int16)
    strokes[2:4, 1:9] = BASSANITE  # 16 px
    e1 = store.paint(1, 5, strokes, origin=(20, 30))
    assert e1.pixels == 16 and e1.added() == {BASSANITE: 16}
    lab = store.get(1, 5)
    assert lab[22:24, 31:39].tolist() == [[BASSANITE] * 8] * 2 and np.count_nonzero(lab) == 16
    assert store.paint(1, 5, strokes, origin=(20, 30)) is None  # the same stroke again changes nothing

    erase = np.full((8, 10), -1, np.int16)
    erase[2, 1:5] = 0
    e2 = store.paint(1, 5, erase, origin=(20, 30))
    assert e2.added() == {0: 4} and store.counts()[BASSANITE].pixels == 12
    store.revert(e2)
    assert store.counts()[BASSANITE].pixels == 16
    store.revert(e1)
    assert store.slices() == []  # undoing the only stroke empties the slice: no file, no entry

    store.paint(1, 5, strokes, origin=(0, 0))
    cleared = store.clear(1, 5)
    assert cleared.pixels == 16 and store.slices() == []
    store.revert(cleared)
    assert store.counts()[BASSANITE] == PhaseCount(16, 1)
    assert store.clear(1, 6) is None


def test_paint_refuses_windows_outside_the_slice_and_unknown_codes(store, demo_project):
    _, ny, nx = _shape(demo_project)
    strokes = np.full((4, 4), -1, np.int16)
    strokes[0, 0] = GYPSUM
    with pytest.raises(ReactomoError, match="does not fit inside"):
        store.paint(0, 0, strokes, origin=(ny - 2, 0))
    strokes[1, 1] = 12
    with pytest.raises(ReactomoError, match=r"code\(s\) 12"):
        store.paint(0, 0, strokes)
    assert store.slices() == []


def test_strokes_from_two_tabs_on_one_slice_are_both_kept(store, demo_project):
    from concurrent.futures import ThreadPoolExecutor

    _, ny, nx = _shape(demo_project)

    def stroke(row):
        s = np.full((ny, nx), -1, np.int16)
        s[row, :] = GYPSUM if row % 2 else PORE
        return LabelStore(demo_project).paint(3, 8, s)

    with ThreadPoolExecutor(4) as pool:
        edits = list(pool.map(stroke, range(12)))
    assert all(e is not None and e.pixels == nx for e in edits)
    lab = store.get(3, 8)
    assert (lab[:12] > 0).all() and not lab[12:].any()


def test_a_damaged_slice_file_is_reported_and_can_still_be_cleared(store, demo_project):
    _, ny, nx = _shape(demo_project)
    store.set(0, 2, np.ones((ny, nx), np.uint8))
    path = store.slice_path(0, 2)
    path.write_bytes(b"garbage")
    with pytest.raises(ReactomoError, match="cannot be read.*clear that slice"):
        store.get(0, 2)
    assert store.clear(0, 2) is None
    assert store.slices() == [] and not path.exists()
