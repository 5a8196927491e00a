"""Tests of core.workflow.project: the project folder, its manifest and its guarantees (atomic, locked, validated)."""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

import core.workflow.project as project_module
from core.errors import ReactomoError
from core.phases import DEFAULT_PHASES, DEFAULT_REACTION, Phase, PhaseTable, Reaction
from core.workflow.project import (
    BACKUP,
    MANIFEST,
    Project,
    create_project,
    data_roots,
    delete_project,
    list_projects,
    open_project,
    project_exists,
    sanitize_name,
    workspace_dir,
)

SHAPE = (4, 8, 8)


def scan(path: str | Path, *, name: str = "t000", shape=SHAPE, dtype: str = "uint16", kind: str = "stack"):
    from core.imaging.io import ScanInfo

    return ScanInfo(path=str(path), kind=kind, name=name, shape=tuple(shape), dtype=dtype)


def series(project: Project, n: int = 3, **kw):
    return [scan(project.root / "scans" / f"t{i:03d}.tif", name=f"t{i:03d}", **kw) for i in range(n)]


def snapshot(project: Project) -> tuple[bytes, list[str]]:
    """The manifest's bytes and the folder's listing (relative paths), to prove that nothing changed."""
    files = sorted(str(p.relative_to(project.root)) for p in project.root.rglob("*"))
    return (project.root / MANIFEST).read_bytes(), files


def tiff_bytes(tmp_path: Path, shape=SHAPE, dtype=np.uint16) -> bytes:
    arr = (np.arange(np.prod(shape)) % 200).astype(dtype).reshape(shape)
    path = tmp_path / "upload-src.tif"
    tifffile.imwrite(path, arr, photometric="minisblack")
    return path.read_bytes()


@pytest.fixture
def proj(tmp_path: Path) -> Project:
    return create_project("demo run", workspace=tmp_path / "ws")


# -- workspace, roots, names ------------------------------------------------------------------------------------
def test_workspace_from_argument_env_and_default(tmp_path, monkeypatch):
    explicit = workspace_dir(tmp_path / "a" / "b")
    assert explicit == (tmp_path / "a" / "b").resolve() and explicit.is_dir()
    monkeypatch.setenv("REACTOMO_WORKSPACE", str(tmp_path / "env-ws"))
    assert workspace_dir() == (tmp_path / "env-ws").resolve()
    p = create_project("x")
    assert p.root.parent == (tmp_path / "env-ws").resolve()
    monkeypatch.delenv("REACTOMO_WORKSPACE")
    assert project_module._REPO_ROOT == Path(__file__).resolve().parent.parent
    monkeypatch.setattr(project_module, "_REPO_ROOT", tmp_path / "repo")
    assert workspace_dir() == (tmp_path / "repo" / "workspace").resolve()


def test_workspace_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ReactomoError, match="is a file, not a folder"):
        workspace_dir(tmp_path / "f")


def test_data_roots_default_and_env(tmp_path, monkeypatch):
    monkeypatch.delenv("REACTOMO_DATA_ROOT", raising=False)
    assert data_roots(workspace=tmp_path) == [tmp_path.resolve(), Path.home().resolve()]
    monkeypatch.setenv("REACTOMO_DATA_ROOT", os.pathsep.join([str(tmp_path / "d1"), "", str(tmp_path / "d2")]))
    assert data_roots() == [(tmp_path / "d1").resolve(), (tmp_path / "d2").resolve()]


@pytest.mark.parametrize(
    "name, expected",
    [("gypsum run 3", "gypsum_run_3"), ("  R1.v2-final_x ", "R1.v2-final_x"), ("a" * 64, "a" * 64), ("a..b", "a..b")],
)
def test_sanitize_name_accepts(name, expected):
    assert sanitize_name(name) == expected


@pytest.mark.parametrize(
    "name",
    ["../evil", "a/b", "..", ".", ".hidden", "", "   ", "a" * 65, "C:\\x", "a\\b", "a\x00b", "/abs", "~", "naïve", "a:b", None],
)
def test_bad_names_are_refused_everywhere(tmp_path, name):
    ws = tmp_path / "ws"
    for call in (create_project, open_project, delete_project, project_exists):
        with pytest.raises(ReactomoError, match=r"^(Project name .* (is not allowed|is not text)|The name is empty); use letters, digits"):
            call(name, workspace=ws)
    assert list(tmp_path.rglob("*")) == []  # nothing created, inside the workspace or outside it


def test_name_error_is_one_sentence():
    with pytest.raises(ReactomoError) as err:
        sanitize_name("../x")
    msg = str(err.value)
    assert msg.startswith("Project name '../x' is not allowed; use letters, digits, '-', '_' and '.'")
    assert msg.endswith(".") and msg.count(". ") == 0


# -- create / open / list / delete ------------------------------------------------------------------------------
def test_round_trip_create_open_list_delete(tmp_path):
    ws = tmp_path / "ws"
    p = create_project("first one", workspace=ws, voxel_size_um=1.5, interval_s=30)
    assert p.name == "first_one" and p.root == ws.resolve() / "first_one"
    m = json.loads((p.root / MANIFEST).read_text())
    assert m["schema"] == 1 and m["name"] == "first_one" and m["reactomo_version"] == "0.1.0"
    assert m["voxel_size_um"] == 1.5 and m["interval_s"] == 30.0 and m["scans"] == [] and m["roi"] is None
    assert m["phases"] == DEFAULT_PHASES.to_dict() and m["reaction"] == DEFAULT_REACTION.to_dict()
    assert m["labels"] == {} and m["models"] == [] and m["demo"] is None
    assert m["created"].endswith("+00:00") and m["created"] == m["updated"]
    assert project_exists("first one", workspace=ws)

    create_project("second", workspace=ws).set_voxel_size(2.0)  # most recently updated
    (ws / "not-a-project").mkdir()
    assert [s.name for s in list_projects(workspace=ws)] == ["second", "first_one"]
    assert list_projects(workspace=ws)[1].n_steps == 0

    again = open_project("first_one", workspace=ws)
    assert again == p and again.voxel_size_um() == 1.5 and again.interval_s() == 30.0

    trashed = delete_project("first_one", workspace=ws)
    assert trashed.parent == ws.resolve() / ".trash" and trashed.name.startswith("first_one-")
    assert (trashed / MANIFEST).is_file() and not p.root.exists()
    assert not project_exists("first_one", workspace=ws)
    assert [s.name for s in list_projects(workspace=ws)] == ["second"]  # the trash is not listed

    create_project("first_one", workspace=ws)  # the name is free again; a second delete does not collide
    assert delete_project("first_one", workspace=ws) != trashed
    with pytest.raises(ReactomoError, match="no longer exists"):
        p.set_voxel_size(3.0)


def test_create_existing_and_open_missing_are_refused(tmp_path):
    ws = tmp_path / "ws"
    create_project("p", workspace=ws)
    with pytest.raises(ReactomoError, match="already exists"):
        create_project("p", workspace=ws)
    with pytest.raises(ReactomoError, match=r"no project called 'q'.*open one of \['p'\]"):
        open_project("q", workspace=ws)
    with pytest.raises(ReactomoError, match="no project called 'q'"):
        delete_project("q", workspace=ws)


@pytest.mark.parametrize("kw", [{"voxel_size_um": 0}, {"interval_s": -1}, {"interval_s": math.nan}])
def test_create_with_bad_settings_creates_nothing(tmp_path, kw):
    with pytest.raises(ReactomoError):
        create_project("p", workspace=tmp_path, **kw)
    assert not (tmp_path / "p").exists()


# -- manifest: atomic, locked, validated -------------------------------------------------------------------------
def test_updates_are_atomic_and_leave_no_temp_files(proj):
    for v in (1.0, 2.0, 3.0):
        proj.set_voxel_size(v)
    assert sorted(p.name for p in proj.root.iterdir()) == sorted([MANIFEST, BACKUP, "project.lock"])
    assert json.loads((proj.root / BACKUP).read_text()) == proj.manifest


def test_crash_inside_update_changes_nothing(proj):
    before = snapshot(proj)

    def crash(m):
        m["voxel_size_um"] = 99.0
        m["labels"]["x"] = 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        proj.update(crash)
    assert snapshot(proj) == before
    for bad in ({"voxel_size_um": math.nan}, {"scans": "nope"}, {"analysis": {"f": object()}}, {"roi": {"z": [0, 1]}}):
        with pytest.raises(ReactomoError, match="nothing was saved"):
            proj.update(lambda m, bad=bad: m.update(bad))
        assert snapshot(proj) == before


def test_update_returns_the_written_manifest_and_refuses_nesting(proj):
    before = proj.manifest["updated"]
    out = proj.update(lambda m: m["analysis"].__setitem__("k", [1, 2]))
    assert out == proj.manifest and out["analysis"] == {"k": [1, 2]} and out["updated"] >= before
    with pytest.raises(RuntimeError, match="inside update"):
        proj.update(lambda m: proj.set_voxel_size(1.0))
    proj.set_voxel_size(1.0)  # the lock was released


def test_corrupt_manifest_recovers_from_backup(proj, caplog):
    proj.set_voxel_size(3.5)  # the backup holds this last good state
    (proj.root / MANIFEST).write_text('{"schema": 1, "name": ')
    with caplog.at_level(logging.WARNING, logger="core.workflow.project"):
        assert proj.manifest["voxel_size_um"] == 3.5
        again = open_project(proj.name, workspace=proj.root.parent)
    assert "not valid JSON" in caplog.text and BACKUP in caplog.text
    assert again.voxel_size_um() == 3.5
    assert json.loads((proj.root / MANIFEST).read_text())["voxel_size_um"] == 3.5  # restored
    kept = list(proj.root.glob(f"{MANIFEST}.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_text() == '{"schema": 1, "name": '


def test_update_on_corrupt_manifest_repairs_it(proj):
    (proj.root / MANIFEST).write_text("[]")
    proj.set_voxel_size(4.0)
    assert json.loads((proj.root / MANIFEST).read_text())["voxel_size_um"] == 4.0
    assert len(list(proj.root.glob(f"{MANIFEST}.corrupt-*"))) == 1


def test_both_manifests_bad_is_a_clear_error(proj):
    (proj.root / MANIFEST).write_text("garbage")
    (proj.root / BACKUP).unlink()
    with pytest.raises(ReactomoError, match=r"cannot be opened because project\.json is not valid JSON .* and project\.json\.bak is missing"):
        open_project(proj.name, workspace=proj.root.parent)
    (proj.root / BACKUP).write_text(json.dumps({"schema": 1, "name": "x"}))
    with pytest.raises(ReactomoError, match=r"project\.json\.bak is not a Reactomo manifest"):
        open_project(proj.name, workspace=proj.root.parent)
    assert list_projects(workspace=proj.root.parent) == []  # skipped, not fatal


def test_newer_schema_is_refused(proj):
    m = proj.manifest
    m["schema"] = 2
    (proj.root / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ReactomoError, match="upgrade Reactomo"):
        open_project(proj.name, workspace=proj.root.parent)


def test_older_manifest_without_later_sections_is_filled_in(proj):
    m = proj.manifest
    for key in ("labels", "ground_truth", "models", "segmentations", "analysis", "demo", "times_mode"):
        del m[key]
    (proj.root / MANIFEST).write_text(json.dumps(m))
    assert proj.manifest["models"] == [] and proj.manifest["times_mode"] == "interval"


def _append_many(root: str, name: str, tag: str, n: int) -> None:
    project = Project(Path(root), name)
    for i in range(n):
        project.update(lambda m: m["analysis"].setdefault("log", []).append(f"{tag}{i}"))


def test_concurrent_updates_from_two_processes_lose_nothing(proj):
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs the fork start method")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(proj.root), proj.name, tag, 20)) for tag in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    entries = proj.manifest["analysis"]["log"]
    assert sorted(entries) == sorted(f"{t}{i}" for t in "ab" for i in range(20))
    assert [e for e in entries if e[0] == "a"] == [f"a{i}" for i in range(20)]  # each writer's order kept


def test_lock_held_elsewhere_times_out_with_a_sentence(proj, monkeypatch):
    fcntl = pytest.importorskip("fcntl")
    fd = os.open(proj.root / "project.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a second open file description blocks like another process
        monkeypatch.setattr(project_module, "_LOCK_TIMEOUT_S", 0.05)
        before = snapshot(proj)
        with pytest.raises(ReactomoError, match="stayed locked by another process"):
            proj.set_voxel_size(1.0)
        assert snapshot(proj) == before
    finally:
        os.close(fd)
    proj.set_voxel_size(1.0)


def test_transaction_is_all_or_nothing(proj):
    before = snapshot(proj)
    with pytest.raises(ReactomoError, match="Scan interval"):
        with proj.transaction():
            proj.set_voxel_size(1.5)
            assert proj.voxel_size_um() == 1.5  # visible inside
            assert (proj.root / MANIFEST).read_bytes() == before[0]  # not yet written
            proj.set_interval(0)
    assert snapshot(proj) == before
    with proj.transaction():
        proj.set_scans(series(proj, 2))
        with proj.transaction():  # nested: joins the outer one
            proj.set_roi({"z": [0, 2], "y": [0, 8], "x": [0, 8]})
        assert (proj.root / MANIFEST).read_bytes() == before[0]
    assert proj.roi() == {"z": [0, 2], "y": [0, 8], "x": [0, 8]} and len(proj.scans()) == 2


def test_transaction_keeps_concurrent_edits_by_others(proj):
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs the fork start method")
    with proj.transaction():
        proj.set_voxel_size(1.5)
        other = multiprocessing.get_context("fork").Process(target=_append_many, args=(str(proj.root), proj.name, "o", 2))
        other.start()
        other.join(30)
        assert other.exitcode == 0
    m = proj.manifest
    assert m["voxel_size_um"] == 1.5 and m["analysis"]["log"] == ["o0", "o1"]


# -- scans and times ---------------------------------------------------------------------------------------------
def test_set_scans_with_default_and_explicit_times(proj):
    proj.set_scans(series(proj, 3))
    assert proj.times_s() == [0.0, 60.0, 120.0] and proj.manifest["times_mode"] == "interval"
    assert [s.name for s in proj.scans()] == ["t000", "t001", "t002"] and proj.scans()[0].shape == SHAPE
    proj.set_interval(30)
    assert proj.times_s() == [0.0, 30.0, 60.0]

    proj.set_scans(series(proj, 3), times_s=[0, 45, 200.5])
    assert proj.times_s() == [0.0, 45.0, 200.5] and proj.manifest["times_mode"] == "explicit"
    proj.set_interval(10)
    assert proj.times_s() == [0.0, 45.0, 200.5] and proj.interval_s() == 10.0
    proj.set_times(np.array([1.0, 2.0, 3.0]))
    assert proj.times_s() == [1.0, 2.0, 3.0]
    proj.set_times(None)
    assert proj.times_s() == [0.0, 10.0, 20.0]
    proj.set_scans([])
    assert proj.scans() == [] and proj.times_s() == []


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: (series(p, 2) + [scan("/x/t2.tif", name="t2", shape=(4, 8, 9))], None), "same shape and dtype"),
        (lambda p: (series(p, 2) + [scan("/x/t2.tif", name="t2", dtype="uint8")], None), "same shape and dtype"),
        (lambda p: (series(p, 3), [0, 60, 60]), "strictly increase"),
        (lambda p: (series(p, 3), [0, 60, 30]), "strictly increase"),
        (lambda p: (series(p, 3), [0, math.nan, 120]), "finite time"),
        (lambda p: (series(p, 3), [0, 60, math.inf]), "finite time"),
        (lambda p: (series(p, 3), [0, 60]), "2 times for 3 scans"),
        (lambda p: (series(p, 3), "0,1,2"), "list of 3 numbers"),
        # ScanInfo refuses these itself; set_scans also takes plain records and checks them the same way
        (lambda p: ([{"path": "/x/a.tif", "kind": "stack", "name": "a", "shape": [4, 8], "dtype": "uint8"}], None), "three positive sizes"),
        (lambda p: ([{"path": "/x/a.tif", "kind": "zip", "name": "a", "shape": [4, 8, 8], "dtype": "uint8"}], None), "kind 'zip'"),
        (lambda p: ([scan("", name="t")], None), "has path ''"),
    ],
)
def test_set_scans_validation_changes_nothing(proj, make, match):
    proj.set_scans(series(proj, 3))
    before = snapshot(proj)
    scans, times = make(proj)
    with pytest.raises(ReactomoError, match=match):
        proj.set_scans(scans, times_s=times)
    assert snapshot(proj) == before


def test_paths_inside_are_relative_and_outside_absolute(proj, tmp_path):
    outside = tmp_path / "data" / "t001.tif"
    proj.set_scans([scan(proj.root / "scans" / "t000.tif"), scan(outside, name="t001")])
    stored = [s["path"] for s in proj.manifest["scans"]]
    assert stored == ["scans/t000.tif", str(outside.resolve())]
    assert proj.scan_path(0) == proj.root / "scans" / "t000.tif" and proj.scan_path(1) == outside.resolve()
    assert proj.scans()[0].path == str(proj.root / "scans" / "t000.tif")
    proj.set_scans([scan("scans/rel.tif")])  # a relative path means relative to the project
    assert proj.manifest["scans"][0]["path"] == "scans/rel.tif"

    moved = shutil.copytree(proj.root, tmp_path / "elsewhere" / proj.name)  # a moved project still finds its data
    assert Project(Path(moved), proj.name).scan_path(0) == Path(moved) / "scans" / "rel.tif"
    with pytest.raises(ReactomoError, match=r"Time step 1 does not exist; the project has 1 steps \(0 to 0\)"):
        proj.scan_path(1)


def test_open_step_reads_the_scan_and_checks_the_index(proj, tmp_path):
    arr = np.arange(np.prod(SHAPE), dtype=np.uint16).reshape(SHAPE)
    tifffile.imwrite(tmp_path / "t0.tif", arr, photometric="minisblack")
    proj.set_scans([scan(tmp_path / "t0.tif")])
    with proj.open_step(0) as vol:
        assert tuple(vol.shape) == SHAPE
        np.testing.assert_array_equal(np.asarray(vol.read()), arr)
    for bad in (1, -1, "0", 0.0, True):
        with pytest.raises(ReactomoError, match="does not exist"):
            proj.open_step(bad)


@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf, -math.inf, 1e5, 0.001, True, "2.75", None])
def test_set_voxel_size_validation(proj, value):
    before = snapshot(proj)
    with pytest.raises(ReactomoError, match=r"Voxel size .* is not allowed; give a number from 0.01 to 1000 µm"):
        proj.set_voxel_size(value)
    assert snapshot(proj) == before


def test_set_voxel_size_and_interval_accept_sane_values(proj):
    proj.set_voxel_size(np.float32(0.65))
    assert proj.voxel_size_um() == pytest.approx(0.65)
    with pytest.raises(ReactomoError, match="Scan interval 0 is not allowed"):
        proj.set_interval(0)


# -- region of interest ------------------------------------------------------------------------------------------
def test_set_roi_validation_and_clearing(proj):
    with pytest.raises(ReactomoError, match="no scans yet"):
        proj.set_roi({"z": [0, 1], "y": [0, 1], "x": [0, 1]})
    proj.set_scans(series(proj, 2))
    proj.set_roi({"z": (1, 3), "y": [np.int64(0), 8], "x": [2, 6]})
    assert proj.roi() == {"z": [1, 3], "y": [0, 8], "x": [2, 6]}
    before = snapshot(proj)
    bad = [
        ({"z": [0, 5], "y": [0, 8], "x": [0, 8]}, r"axis z is \[0, 5\) but the scans are 4×8×8"),
        ({"z": [2, 2], "y": [0, 8], "x": [0, 8]}, "0 <= start < end <= 4 on z"),
        ({"z": [0, 4], "y": [-1, 8], "x": [0, 8]}, "on axis y"),
        ({"z": [0, 4], "y": [0, 8], "x": [0.0, 8]}, "axis x is .* two integers"),
        ({"z": [0, 4], "y": [0, 8]}, "exactly the axes"),
        ({"z": [0, 4], "y": [0, 8], "x": [0, 8], "t": [0, 1]}, "exactly the axes"),
        ([0, 4, 0, 8, 0, 8], "or None"),
    ]
    for roi, match in bad:
        with pytest.raises(ReactomoError, match=match):
            proj.set_roi(roi)
        assert snapshot(proj) == before
    assert proj.set_scans(series(proj, 3)) == []  # scans of the same shape: kept, nothing said
    assert proj.roi() == {"z": [1, 3], "y": [0, 8], "x": [2, 6]}
    # scans of another shape (a user's walk: other scans opened, the old region kept without a word): cleared, said
    notes = proj.set_scans(series(proj, 2, shape=(8, 16, 16)))
    assert notes == ["The region of interest (z 1-3, y 0-8, x 2-6) was set on scans of another shape; it was cleared."]
    assert proj.roi() is None
    proj.set_roi({"z": [1, 3], "y": [0, 8], "x": [2, 6]})
    assert proj.set_scans(series(proj, 2, shape=(2, 16, 16)))  # no longer fits: cleared
    assert proj.roi() is None
    proj.set_roi({"z": [0, 2], "y": [0, 16], "x": [0, 16]})
    proj.set_roi(None)
    assert proj.roi() is None


# -- phases, reaction, demo ---------------------------------------------------------------------------------------
def test_phases_and_reaction(proj):
    assert proj.phases() == DEFAULT_PHASES and proj.reaction() == DEFAULT_REACTION
    kbr = PhaseTable(
        (
            Phase(1, "KBr", "KBr", 2750.0, 119.0, 43.3, "#4c78a8", "reactant"),
            Phase(2, "KCl", "KCl", 1980.0, 74.55, 37.5, "#f58518", "product"),
            Phase(3, "pore", colour="#e45756", role="pore"),
        )
    )
    before = snapshot(proj)
    with pytest.raises(ReactomoError, match="does not fit the new phases"):
        proj.set_phases(kbr)  # the default reaction names celestite (code 4)
    with pytest.raises(ReactomoError, match="must be a PhaseTable"):
        proj.set_phases(kbr.to_dict())
    with pytest.raises(ReactomoError, match="code 9 is not in the phase table"):
        proj.set_reaction(Reaction(reactant=9))
    assert snapshot(proj) == before
    r = Reaction(name="KBr → KCl", reactant=1, product=2, pore=3, inert=())
    proj.set_phases(kbr, reaction=r)
    assert proj.phases() == kbr and proj.reaction() == r
    proj.set_reaction(Reaction(name="KBr → KCl", reactant=1, product=2, pore=3, inert=(), product_per_reactant=2.0))
    assert proj.reaction().product_per_reactant == 2.0


def test_demo_info(proj):
    assert proj.demo() is None
    proj.set_demo({"seed": 0, "n_steps": 5})
    assert proj.demo() == {"seed": 0, "n_steps": 5}
    with pytest.raises(ReactomoError, match="nothing was saved"):
        proj.set_demo({"bad": math.nan})
    proj.set_demo(None)
    assert proj.demo() is None


# -- uploads -----------------------------------------------------------------------------------------------------
def test_import_upload_of_a_good_tiff(proj, tmp_path):
    data = tiff_bytes(tmp_path)
    before = proj.manifest
    saved = proj.import_upload("C:\\Users\\me\\my scan 1.TIF", data)
    assert saved == proj.root / "scans" / "my_scan_1.tif" and saved.read_bytes() == data
    assert proj.manifest == before  # the manifest is only changed by set_scans
    assert not list(proj.root.glob(".upload-*"))
    assert proj.import_upload("my scan 1.TIF", data) == saved  # same bytes again: same file
    other = proj.import_upload("my scan 1.tif", tiff_bytes(tmp_path, dtype=np.uint8))
    assert other.name == "my_scan_1-1.tif"
    proj.set_scans([scan(saved, shape=SHAPE)])
    assert proj.manifest["scans"][0]["path"] == "scans/my_scan_1.tif"


def test_an_upload_is_streamed_to_disk_not_read_whole_into_memory(proj, tmp_path):
    """A 64 MB upload given as a file object is copied in chunks: Python's peak allocation stays near one chunk."""
    import tracemalloc

    big = tmp_path / "big.tif"
    tifffile.imwrite(big, np.arange(16 * 1024 * 2048, dtype=np.uint16).reshape(16, 1024, 2048))
    size = big.stat().st_size
    assert size > 8 * project_module.UPLOAD_CHUNK
    tracemalloc.start()
    try:
        with big.open("rb") as fh:
            saved = proj.import_upload("big.tif", fh)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * project_module.UPLOAD_CHUNK, f"peak {peak / 2**20:.0f} MB for a {size / 2**20:.0f} MB upload"
    assert saved.stat().st_size == size and saved.read_bytes() == big.read_bytes()
    with big.open("rb") as fh:  # the same bytes again, streamed: the existing file, compared on disk
        assert proj.import_upload("big.tif", fh) == saved
    assert not list(proj.root.glob(".upload-*"))


def test_an_empty_or_text_stream_is_refused_and_leaves_nothing(proj):
    import io

    before = snapshot(proj)
    with pytest.raises(ReactomoError, match="is empty"):
        proj.import_upload("scan.tif", io.BytesIO(b""))
    with pytest.raises(ReactomoError, match="not binary data"):
        proj.import_upload("scan.tif", io.StringIO("II*"))
    with pytest.raises(ReactomoError, match="must be bytes or a binary file"):
        proj.import_upload("scan.tif", 42)
    assert snapshot(proj) == before and not list(proj.root.glob(".upload-*"))


@pytest.mark.parametrize(
    "filename, data, match",
    [
        ("scan.tif", b"this is not a tiff at all", None),
        ("scan.tif", b"II*\x00" + b"\x00" * 12, None),
        ("scan.tif", b"", "is empty"),
        ("scan.png", b"\x89PNG", "not a TIFF file name"),
        ("../../evil.tif", b"garbage", None),
        ("...tif", b"garbage", "not a TIFF file name"),
    ],
)
def test_import_upload_of_garbage_changes_nothing(proj, filename, data, match):
    before = snapshot(proj)
    with pytest.raises(ReactomoError, match=match) as excinfo:
        proj.import_upload(filename, data)
    assert snapshot(proj) == before
    assert ".upload-" not in str(excinfo.value)  # the user's file is named, not our temporary copy


# -- status -------------------------------------------------------------------------------------------------------
def test_status_reflects_progress(proj):
    steps = proj.status()
    assert [s.key for s in steps] == ["data", "labels", "ground_truth", "model", "segmentation", "evaluation", "analysis"]
    assert [s.title for s in steps] == ["Data", "Labels", "Ground truth", "Model", "Segmentation", "Evaluation", "Analysis"]
    assert not any(s.done for s in steps) and all(s.detail for s in steps)
    assert [s.optional for s in steps] == [False] * 5 + [True, False]  # evaluating is optional

    proj.set_scans(series(proj, 10, shape=(40, 256, 256)))
    # segmented with a model of the registry, none trained here: the model step is not left undone (a user's walk:
    # "Model: No model yet" beside a ticked segmentation)
    proj.update(lambda m: m["segmentations"].__setitem__("s", {"name": "s", "model_name": "demo-unet"}))
    assert proj.status()[3].done and proj.status()[3].detail == ("None trained in this project; segmented with the "
                                                                 "registry's demo-unet.")
    proj.update(lambda m: m["segmentations"].pop("s"))
    data = proj.status()[0]
    assert data.done and data.detail == "10 steps of 40×256×256 uint16, 2.75 µm"
    proj.update(lambda m: m["labels"].__setitem__("0", {"slices": [20]}))
    proj.update(lambda m: m["models"].append({"name": "unet-1"}))
    assert [s.done for s in proj.status()] == [True, True, False, True, False, False, False]
    assert proj.status()[3].detail == "1 model trained in this project"
    proj.set_roi({"z": [0, 20], "y": [0, 128], "x": [0, 128]})
    assert proj.status()[0].detail.endswith("region of interest 20×128×128")
    s = list_projects(workspace=proj.root.parent)[0]
    assert (s.name, s.n_steps) == (proj.name, 10)


def test_atomic_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    from core.atomic import atomic_write_text

    p = atomic_write_text(tmp_path / "x.txt", "hello")
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600: collaborators can read results


@pytest.mark.parametrize("name", ["", "   "])
def test_a_blank_name_is_said_to_be_empty(name):
    """A user's walk: three spaces were echoed as ' ' (Markdown collapses the spaces of the name's repr)."""
    with pytest.raises(ReactomoError, match=r"^The name is empty; use letters"):
        sanitize_name(name)
