"""core.workflow.paths: the one place that knows where a project's steps keep their files and reads their results."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ReactomoError
from core.workflow.paths import (
    ANALYSIS_FILES,
    analysis_folder,
    analysis_table,
    phase_volume_rows,
    phase_volumes_csv,
    saved_analysis,
    segmentation_folder,
    segmentation_label_files,
    segmentation_record,
    training_checkpoints,
    upload_folder,
)

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "pages").glob("*.py"))


def test_folders_follow_the_manifest_and_refuse_names_that_escape(demo_project):
    assert segmentation_folder(demo_project, "s1") == demo_project.root / "segmentations" / "s1"
    elsewhere = demo_project.root / "moved" / "s2"
    demo_project.update(lambda m: m.setdefault("segmentations", {}).__setitem__("s2", {"name": "s2", "path": str(elsewhere)}))
    assert segmentation_folder(demo_project, "s2") == elsewhere  # the record's folder wins
    assert analysis_folder(demo_project, "s1") == demo_project.root / "analysis" / "s1"
    assert upload_folder(demo_project) == demo_project.root / "scans"
    assert training_checkpoints(demo_project, "20261205T000000Z-abc") == demo_project.root / "jobs" / "20261205T000000Z-abc" / "checkpoints"
    for bad in ("../x", "a/b", ".hidden"):
        with pytest.raises(ReactomoError, match=r"^Segmentation name .* is not allowed"):
            segmentation_folder(demo_project, bad)
        with pytest.raises(ReactomoError, match=r"is not allowed"):
            analysis_folder(demo_project, bad)


def test_results_read_back_as_numbers_or_nothing(demo_project):
    assert segmentation_record(demo_project, "none") is None and phase_volume_rows(demo_project, "none") == []
    assert phase_volumes_csv(demo_project, "none") is None and segmentation_label_files(demo_project, "none") == []
    folder = segmentation_folder(demo_project, "s1")
    folder.mkdir(parents=True)
    (folder / "phase_volumes.csv").write_text("step,time_s,scan,gypsum_voxels,gypsum_fraction\n0,,t000.tif,120,0.25\n"
                                              "1,300.0,t001.tif,100,0.2\n")
    (folder / "t001.tif").write_bytes(b"")
    (folder / "t000.tif").write_bytes(b"")
    (folder / ".t002.tif.x.tmp.tif").write_bytes(b"")
    rows = phase_volume_rows(demo_project, "s1")
    assert rows == [{"step": 0, "time_s": None, "scan": "t000.tif", "gypsum_voxels": 120, "gypsum_fraction": 0.25},
                    {"step": 1, "time_s": 300.0, "scan": "t001.tif", "gypsum_voxels": 100, "gypsum_fraction": 0.2}]
    assert phase_volume_rows(folder=folder) == rows
    assert phase_volumes_csv(demo_project, "s1").startswith(b"step,time_s")
    assert [p.name for p in segmentation_label_files(demo_project, "s1")] == ["t000.tif", "t001.tif"]  # no temporaries
    with pytest.raises(ReactomoError, match="Give a project and a segmentation name, or the segmentation's folder"):
        phase_volumes_csv()


def test_the_stamp_moves_when_the_record_or_the_manifest_changes(demo_project):
    import os

    from core.workflow.paths import segmentation_stamp

    rec_t, man_t = segmentation_stamp(demo_project, "s1")
    assert rec_t == 0 and man_t > 0  # no record yet
    folder = segmentation_folder(demo_project, "s1")
    folder.mkdir(parents=True)
    (folder / "segmentation.json").write_text("{}")
    os.utime(folder / "segmentation.json", ns=(10**18, 10**18))
    assert segmentation_stamp(demo_project, "s1") == (10**18, man_t)
    demo_project.set_voxel_size(1.5)
    assert segmentation_stamp(demo_project, "s1")[1] != man_t


def test_a_saved_analysis_and_its_tables(demo_project):
    assert saved_analysis(demo_project, "s1") is None and analysis_table(demo_project, "s1", "growth.csv") is None
    with pytest.raises(ReactomoError, match=r"'summary\.json' is not a table of an analysis; use one of molar_evolution\.csv"):
        analysis_table(demo_project, "s1", "summary.json")
    with pytest.raises(ReactomoError):
        analysis_table(demo_project, "s1", "../../project.json")
    out = analysis_folder(demo_project, "s1")
    out.mkdir(parents=True)
    (out / "growth.csv").write_text("step,time_s\n0,0\n")
    assert analysis_table(demo_project, "s1", "growth.csv") == b"step,time_s\n0,0\n"
    assert set(ANALYSIS_FILES) >= {"molar_evolution.csv", "growth.csv"}
    (out / "summary.json").write_text("{not json")
    assert saved_analysis(demo_project, "s1") is None  # an unreadable summary is no analysis, not a crash


def test_pages_never_build_a_step_folder_or_read_a_result_file():
    """Issue 12: pages built `project.root / "segmentations" / name` and read phase_volumes.csv themselves."""
    for page in PAGES:
        text = page.read_text()
        for pattern in ('/ "segmentations"', '/ "analysis"', '/ "jobs"', "phase_volumes.csv\").read", "pd.read_csv(p)",
                        '"segmentation.json"', 'read_series_record(s["path"]'):
            assert pattern not in text, f"{page.name} builds or reads {pattern!r}"


def test_the_cli_analyses_a_projects_segmentation_and_records_it_like_the_page(demo_project, capsys):
    """Issue 12: the analysis was recorded in the manifest only by the Analysis page; the CLI could not record one."""
    from core.cli import main
    from core.workflow.segment import segment_project

    segment_project(demo_project, ROOT / "models" / "demo-unet", name="s1", steps=[0, 1, 2, 3])
    code = main(["-q", "analyze", "--project", "demo", "--name", "s1", "--n-boot", "50"])
    out, err = capsys.readouterr()
    assert code == 0, err
    rec = demo_project.manifest["analysis"]["s1"]
    assert rec["path"] == str(analysis_folder(demo_project, "s1")) and rec["verdict_passed"] in (True, False)
    assert saved_analysis(demo_project, "s1")["summary"]["verdict"]["sentence"] in out
    assert analysis_table(demo_project, "s1", "molar_evolution.csv").startswith(b"step,")

    for argv, words in (
        (["--project", "demo"], "Give both --project and --name"),
        (["--project", "demo", "--name", "s1", "--segmentations", str(demo_project.root / "x"), "--out", "y"],
         "Give either --project and --name, or"),
        ([], "Give --segmentations and --out, or --project and --name."),
        (["--project", "demo", "--name", "nope"], "Project 'demo' has no segmentation called 'nope' (it has: s1)"),
    ):
        code = main(["-q", "analyze", *argv])
        _, err = capsys.readouterr()
        assert code == 2 and words in err and "Traceback" not in err
    assert list(demo_project.manifest["analysis"]) == ["s1"]


def test_the_report_says_what_it_is_and_shows_no_server_path(demo_project, capsys):
    """Issue 15 (4): the project, the sample and the conditions from the Data page (or `data --condition`), the date
    and every check's verdict; a collaborator's copy shows no server path."""
    from core.cli import main
    from core.workflow.segment import segment_project

    assert main(["-q", "data", "demo", "--condition", "sample=VG-3 gypsum", "--condition", "temperature=120 °C",
                 "--condition", "beamline=ESRF ID19"]) == 0
    assert "Conditions: sample VG-3 gypsum; temperature 120 °C; beamline ESRF ID19." in capsys.readouterr().out
    assert demo_project.conditions() == {"sample": "VG-3 gypsum", "temperature": "120 °C", "beamline": "ESRF ID19"}
    for bad, words in ((["--condition", "colour=red"], "'colour' is not an experiment condition"),
                       (["--condition", "sample"], "--condition takes KEY=TEXT"),
                       (["--condition", "notes=" + "x" * 301], "at most 300 characters")):
        assert main(["-q", "data", "demo", *bad]) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err
    assert demo_project.conditions()["sample"] == "VG-3 gypsum"  # bad input changed nothing
    segment_project(demo_project, ROOT / "models" / "demo-unet", name="s1", steps=[0, 1, 2, 3])
    assert main(["-q", "analyze", "--project", "demo", "--name", "s1", "--n-boot", "50"]) == 0
    capsys.readouterr()
    html = (analysis_folder(demo_project, "s1") / "report.html").read_text()
    head = html[html.index("<body>"):html.index("<h2>")]
    assert "<h1>demo: analysis report</h1>" in head and "sample VG-3 gypsum" in head and "segmentation s1" in head
    assert "120 °C" in head and "ESRF ID19" in head and " UTC" in head
    summary = saved_analysis(demo_project, "s1")["summary"]
    for check in summary["verdict"]["checks"]:
        assert check["sentence"] in html or check.get("label", check["name"]) in html
    root = str(demo_project.root)
    assert root not in html and str(ROOT) not in html  # neither the project's nor the models' folder
    assert main(["-q", "data", "demo", "--condition", "temperature="]) == 0  # empty text clears one
    assert "temperature" not in demo_project.conditions()
