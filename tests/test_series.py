"""Segmenting a series: files, phase volumes, record, resume, a failing step, cancel, the Dask path, a project."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.errors import ReactomoError
from core.imaging.io import read_labels
from core.errors import JobCancelled
from core.phases import DEFAULT_PHASES, Phase, PhaseTable
from core.network.inference import InferenceConfig
from core.segmentation.series import read_series_record, segment_series
from core.workflow.segment import segment_project

MODEL = Path(__file__).resolve().parents[1] / "models" / "demo-unet"
FAST = InferenceConfig(tile=64, overlap=0.25, batch_size=8, device="cpu")


@pytest.fixture(scope="module")
def scans(small_demo_dir):
    return sorted((small_demo_dir / "scans").glob("*.tif"))


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_series_writes_labels_volumes_and_record(scans, tmp_path):
    out = tmp_path / "seg"
    seen = []
    r = segment_series(MODEL, scans, out, times_s=[0, 60, 120, 180], voxel_size_um=2.75, inference=FAST, on_step=seen.append)
    assert [o.status for o in r.steps] == ["done"] * 4 and [o.step for o in seen] == [0, 1, 2, 3]
    rows = _csv(out / "phase_volumes.csv")
    assert [int(x["step"]) for x in rows] == [0, 1, 2, 3] and [float(x["time_s"]) for x in rows] == [0, 60, 120, 180]
    for o, row in zip(r.steps, rows):
        labels = read_labels(o.out_path)
        assert labels.shape == (16, 64, 72) and labels.dtype == np.uint8 and set(np.unique(labels)) <= {1, 2, 3, 4}
        for p in DEFAULT_PHASES:
            n = int(np.count_nonzero(labels == p.code))
            assert int(row[f"{p.name}_voxels"]) == n == o.counts[p.code]
            assert float(row[f"{p.name}_volume_mm3"]) == pytest.approx(n * (2.75e-3) ** 3, rel=1e-5)
        assert sum(float(row[f"{p.name}_fraction"]) for p in DEFAULT_PHASES) == pytest.approx(1.0, abs=1e-5)
        assert o.cleaning["changed"] >= 0 and set(o.cleaning["before"]) == {"1", "2", "3", "4"}
    rec = read_series_record(out)
    assert rec["model"]["weights_sha256"] and rec["settings"]["inference"]["tile"] == 64
    assert rec["versions"]["torch"] and [s["status"] for s in rec["steps"]] == ["done"] * 4
    # the reaction shows: bassanite grows from the first to the last step
    assert r.steps[-1].counts[2] > r.steps[0].counts[2]


def test_resume_skips_steps_done_with_the_same_settings(scans, tmp_path):
    out = tmp_path / "seg"
    segment_series(MODEL, scans, out, inference=FAST, steps=[0, 1])
    first = (out / "t000.tif").stat().st_mtime_ns
    r = segment_series(MODEL, scans, out, inference=FAST)
    assert [o.resumed for o in r.steps] == [True, True, False, False]
    assert (out / "t000.tif").stat().st_mtime_ns == first
    assert len(_csv(out / "phase_volumes.csv")) == 4
    # other settings: nothing is reused
    r2 = segment_series(MODEL, scans, out, inference=FAST, postprocess=None)
    assert not any(o.resumed for o in r2.steps)


def test_a_corrupt_step_fails_alone_with_a_sentence(scans, tmp_path):
    src = tmp_path / "scans"
    src.mkdir()
    for p in scans:
        shutil.copy(p, src / p.name)
    bad = src / scans[1].name
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # truncated in the middle of the series
    out = tmp_path / "seg"
    r = segment_series(MODEL, sorted(src.glob("*.tif")), out, inference=FAST)
    assert [o.status for o in r.steps] == ["done", "failed", "done", "done"]
    err = r.steps[1].error
    assert "t001" in err and "Traceback" not in err and err.endswith(".")
    assert not (out / "t001.tif").exists()
    rec = read_series_record(out)
    assert rec["steps"][1]["status"] == "failed" and rec["steps"][1]["error"] == err
    assert [int(x["step"]) for x in _csv(out / "phase_volumes.csv")] == [0, 2, 3]


def test_cancel_keeps_the_steps_done(scans, tmp_path):
    out = tmp_path / "seg"
    done = []
    with pytest.raises(JobCancelled):
        segment_series(MODEL, scans, out, inference=FAST, on_step=done.append, should_stop=lambda: len(done) >= 2)
    assert sorted(p.name for p in out.glob("t*.tif")) == ["t000.tif", "t001.tif"]
    assert [s["status"] for s in read_series_record(out)["steps"]] == ["done", "done", "pending", "pending"]


def test_dask_local_cluster_equals_the_single_process_result(scans, tmp_path):
    a = segment_series(MODEL, scans, tmp_path / "a", inference=FAST)
    b = segment_series(MODEL, scans, tmp_path / "b", inference=FAST, scheduler="local", workers=2)
    assert b.scheduler == "local" and [o.status for o in b.steps] == ["done"] * 4
    for oa, ob in zip(a.steps, b.steps):
        assert np.array_equal(read_labels(oa.out_path), read_labels(ob.out_path))
        assert oa.counts == ob.counts
    assert read_series_record(tmp_path / "b")["scheduler"] == "local"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=[7]), "not in this series"),
        (dict(scheduler="my-cluster"), "scheduler must be"),
        (dict(workers=0), "workers must be"),
        (dict(times_s=[0, 1]), "one time per scan"),
        (dict(phases=PhaseTable((Phase(1, "gypsum"), Phase(2, "anhydrite")))), "trained for phases"),
        (dict(postprocess="strong"), "postprocess must be"),
    ],
)
def test_bad_series_input_is_one_sentence_and_writes_nothing(scans, tmp_path, kwargs, match):
    out = tmp_path / "seg"
    with pytest.raises(ReactomoError, match=match):
        segment_series(MODEL, scans, out, inference=FAST, **kwargs)
    assert not out.exists()


def test_two_scans_with_one_name_are_refused(scans, tmp_path):
    (tmp_path / "x").mkdir()
    shutil.copy(scans[0], tmp_path / "x" / scans[0].name)
    with pytest.raises(ReactomoError, match="both called 't000'"):
        segment_series(MODEL, [scans[0], tmp_path / "x" / scans[0].name], tmp_path / "seg", inference=FAST)


def test_segment_project_records_the_segmentation(demo_project):
    r = segment_project(demo_project, MODEL, name="first try", inference=FAST, steps=[0, 3])
    rec = demo_project.manifest["segmentations"]["first_try"]
    assert rec["status"] == "done" and rec["steps_done"] == [0, 3] and rec["model_name"] == "demo-unet"
    assert Path(rec["path"]).is_dir() and (Path(rec["path"]) / "t000.tif").is_file()
    assert [o.time_s for o in r.steps] == [demo_project.times_s()[0], demo_project.times_s()[3]]
    assert any(s.key == "segmentation" and s.done for s in demo_project.status())
    saved = json.loads((Path(rec["path"]) / "segmentation.json").read_text())
    assert saved["extra"]["project"] == demo_project.name


def test_an_existing_dask_scheduler_by_address(scans, tmp_path):
    from distributed import LocalCluster

    # a cluster started elsewhere (here: in this process, over TCP), reached only through its address
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://")
        r = segment_series(MODEL, scans[:2], tmp_path / "seg", inference=FAST, scheduler=cluster.scheduler_address)
    assert [o.status for o in r.steps] == ["done", "done"] and r.scheduler == cluster.scheduler_address
    local = segment_series(MODEL, scans[:2], tmp_path / "one", inference=FAST)
    for a, b in zip(r.steps, local.steps):
        assert np.array_equal(read_labels(a.out_path), read_labels(b.out_path))


def test_an_unreachable_scheduler_is_one_sentence(scans, tmp_path):
    with pytest.raises(ReactomoError, match="No Dask scheduler answers at tcp://127.0.0.1:9"):
        segment_series(MODEL, scans[:1], tmp_path / "seg", inference=FAST, scheduler="tcp://127.0.0.1:9")
    assert not (tmp_path / "seg").exists()
