"""Every page through streamlit's AppTest: no exception, key widgets present, errors as one sentence."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from badinputs import BAD_CASES, make_bad_input

ROOT = Path(__file__).resolve().parents[1]


def _app(page: str, project: str | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / page), default_timeout=120)
    if project:
        at.session_state["project_name"] = project
    return at


def _texts(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [e.value for e in at.error]
    parts += [i.value for i in at.info] + [s.value for s in at.success]
    return "\n".join(str(p) for p in parts)


def _button(at, label):
    return next(b for b in at.button if b.label == label)


def test_home_on_an_empty_workspace_offers_the_demo(workspace):
    at = _app("app.py").run()
    assert not at.exception
    assert _button(at, "Load demo experiment")
    assert "No projects yet" in _texts(at)


def test_home_load_demo_creates_and_opens_it(workspace, monkeypatch):
    """The demo is made by a job (the worker in production), so closing the tab half-way loses nothing."""
    import time as _time

    from core.workflow.jobs import list_jobs

    at = _app("app.py").run()
    _button(at, "Load demo experiment").click().run()
    assert not at.exception, at.exception
    assert (workspace / "demo" / "project.json").exists()  # at once: the project is there while the demo is made
    deadline = _time.monotonic() + 240
    while list_jobs(workspace / "demo", kind="demo")[0].is_active and _time.monotonic() < deadline:
        _time.sleep(0.5)
    assert list_jobs(workspace / "demo", kind="demo")[0].status == "done"
    at.run()
    text = _texts(at)
    assert ":green[:material/check_circle:] **Data**" in text and "steps of" in text
    assert "**Evaluation** — Optional: score a segmentation" in text


def test_home_checklist_and_create_project_validation(workspace, demo_project):
    at = _app("app.py", project="demo").run()
    assert not at.exception
    text = _texts(at)
    assert ":green[:material/check_circle:] **Data**" in text and ":gray[:material/radio_button_unchecked:] **Labels**" in text
    at.text_input[0].input("../evil")
    _button(at, "Create project").click().run()
    assert any("not allowed" in e.value for e in at.error)
    assert not (workspace.parent / "evil").exists() and not (workspace / "evil").exists()
    at.text_input[0].input("run_2")
    _button(at, "Create project").click().run()
    assert not at.exception and (workspace / "run_2" / "project.json").exists()
    # created from another open project, it is the one opened (a user's walk: the page stayed on demo)
    assert at.session_state["project_name"] == "run_2"
    assert at.selectbox(key="home_open_project").value == "run_2"
    assert any("Project 'run_2' created and opened" in s.value for s in at.success)
    at.run()
    assert at.session_state["project_name"] == "run_2" and at.selectbox(key="home_open_project").value == "run_2"


def test_home_delete_needs_confirmation_and_goes_to_trash(workspace, demo_project):
    at = _app("app.py", project="demo").run()
    assert _button(at, "Delete project").disabled
    at.checkbox(key="confirm_delete").check().run()
    _button(at, "Delete project").click().run()
    assert not at.exception
    assert not (workspace / "demo").exists()
    assert any(p.name.startswith("demo-") for p in (workspace / ".trash").iterdir())


def test_data_page_without_a_project_explains_what_to_do(workspace):
    at = _app("pages/1_Data.py").run()
    assert not at.exception
    assert "No project is open" in _texts(at)


def test_data_page_viewer_and_histograms(workspace, demo_project):
    at = _app("pages/1_Data.py", project="demo").run()
    assert not at.exception, at.exception
    charts = at.get("plotly_chart")
    assert len(charts) == 3  # slice, histogram heat map, histogram lines
    assert at.radio(key="view_axis").value == 0
    at.radio(key="view_axis").set_value(2).run()
    assert not at.exception
    assert at.slider(key="view_index_2").max == demo_project.scans()[0].shape[2] - 1
    at.select_slider(key="view_step").set_value(3).run()
    assert not at.exception
    at.toggle(key="view_auto").set_value(False).run()
    assert not at.exception and at.slider(key="view_window")
    at.toggle(key="view_truth").set_value(True).run()
    assert not at.exception
    legend = [t["name"] for t in __import__("json").loads(at.get("plotly_chart")[0].proto.spec)["data"][1:]]
    assert set(legend) <= {"gypsum", "bassanite", "pore", "celestite"} and "gypsum" in legend
    # the phase table writes "–" where a phase needs no number (the pore space), never "None" (a user walk saw it)
    phases = next(d.value for d in at.dataframe if "molar mass (g/mol)" in d.value.columns)
    pore = phases[phases["phase"] == "pore"].iloc[0]
    assert [pore["density (kg/m³)"], pore["molar mass (g/mol)"], pore["molar volume (cm³/mol)"]] == ["–"] * 3
    assert phases[phases["phase"] == "gypsum"].iloc[0]["molar mass (g/mol)"] == "172.17"


def test_data_page_saves_settings(workspace, demo_project):
    at = _app("pages/1_Data.py", project="demo").run()
    at.number_input(key="acq_voxel").set_value(1.25)
    _button(at, "Save acquisition settings").click().run()
    assert not at.exception
    from core.workflow.project import open_project

    assert open_project("demo", workspace=workspace).manifest["voxel_size_um"] == 1.25
    # ring artefacts: a new project removes them; the page keeps them when asked, and the project reads so from now on
    assert open_project("demo", workspace=workspace).rings() == "remove"
    assert at.radio(key="acq_rings").value == "remove"
    at.radio(key="acq_rings").set_value("keep")
    _button(at, "Save acquisition settings").click().run()
    assert not at.exception and open_project("demo", workspace=workspace).rings() == "keep"
    assert at.radio(key="acq_rings").value == "keep"
    # the viewer shows a slice as reconstructed or as the forest reads it with the rings removed, and says which
    title = lambda: __import__("json").loads(at.get("plotly_chart")[0].proto.spec)["layout"]["title"]["text"].replace(  # noqa: E731
        "<br>", " ")  # a long title is broken into lines (core.charts.wrap_title)
    assert "ring artefacts removed" not in title()
    at.toggle(key="view_rings").set_value(True).run()
    assert not at.exception and "ring artefacts removed" in title()


def test_data_page_saves_the_experiment_conditions_and_refuses_bad_text(workspace, demo_project):
    at = _app("pages/1_Data.py", project="demo").run()
    at.text_input(key="cond_sample_demo").set_value("VG-3 gypsum")
    at.text_input(key="cond_stress_demo").set_value("20 MPa differential")
    _button(at, "Save conditions").click().run()
    assert not at.exception and not at.error
    from core.workflow.project import open_project

    assert open_project("demo", workspace=workspace).conditions() == {"sample": "VG-3 gypsum",
                                                                        "stress": "20 MPa differential"}
    before = (workspace / "demo" / "project.json").read_text()
    at.text_input(key="cond_notes_demo").set_value("x" * 400)
    _button(at, "Save conditions").click().run()
    assert len(at.error) == 1 and "at most 300 characters" in at.error[0].value
    assert (workspace / "demo" / "project.json").read_text() == before


@pytest.mark.parametrize("key, value, sentence", [
    ("acq_voxel", 0.0, "Voxel size 0.0 is not allowed; give a number from 0.01 to 1000 µm"),
    # a user's walk: -2 was held back by the widget's own minimum with a red box and no word
    ("acq_voxel", -2.0, "Voxel size -2.0 is not allowed; give a number from 0.01 to 1000 µm"),
    # and the interval's limit read "1e+07 s"
    ("acq_interval", 2e7, "give a number from 0.001 to 10,000,000 s"),
])
def test_data_page_bad_acquisition_setting_is_refused(workspace, demo_project, key, value, sentence):
    at = _app("pages/1_Data.py", project="demo").run()
    before = (workspace / "demo" / "project.json").read_text()
    at.number_input(key=key).set_value(value)
    _button(at, "Save acquisition settings").click().run()
    assert not at.exception
    assert len(at.error) == 1 and sentence in at.error[0].value.replace("\\", ""), at.error[0].value
    assert (workspace / "demo" / "project.json").read_text() == before


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_data_page_bad_scan_path_shows_one_sentence_and_changes_nothing(case, workspace, demo_project, tmp_path):
    manifest = workspace / "demo" / "project.json"
    before = manifest.read_text()
    source = make_bad_input(case, tmp_path)
    at = _app("pages/1_Data.py", project="demo").run()
    at.text_input[0].input(source)
    _button(at, "Open scans").click().run()
    assert not at.exception
    assert len(at.error) == 1
    import re

    message = at.error[0].value
    assert re.search(f"(?i){BAD_CASES[case]}", message), message
    assert "\n" not in message and "Traceback" not in message
    assert manifest.read_text() == before


def test_home_exports_the_project_as_a_job_and_offers_the_archive(workspace, demo_project):
    """Issue 15: the home page's export runs as a job and then offers the newest archive for download."""
    import time as _time
    import zipfile

    from core.workflow.jobs import list_jobs
    from core.workflow.share import latest_export

    at = _app("app.py", project="demo").run()
    assert not at.exception
    assert not at.get("download_button")  # nothing exported yet
    _button(at, "Export project").click().run()
    assert not at.exception, at.exception
    deadline = _time.monotonic() + 60
    while list_jobs(demo_project.root, kind="export")[0].is_active and _time.monotonic() < deadline:
        _time.sleep(0.2)
    job = list_jobs(demo_project.root, kind="export")[0]
    assert job.status == "done", job.error
    at.run()
    name, path, size = latest_export(demo_project)
    buttons = at.get("download_button")
    assert len(buttons) == 1 and name in buttons[0].proto.label and "kB" in buttons[0].proto.label
    with zipfile.ZipFile(path) as zf:
        assert "reactomo-archive.json" in zf.namelist() and "project.json" in zf.namelist()
        assert not any(n.startswith("demo/scans/") for n in zf.namelist())  # "Include the scans" was off


def test_an_error_sentence_shows_a_path_as_written(workspace, demo_project, tmp_path):
    """A user's walk: the pattern run1/*.png came back as 'run1/.png' (the asterisks read as Markdown emphasis), and
    an underscore in a path starts italics. The sentence is the CLI's, each special character escaped once."""
    import ui

    pattern = str(tmp_path / "my_run" / "*.png")
    at = _app("pages/1_Data.py", project="demo").run()
    at.text_input[0].input(pattern)
    _button(at, "Open scans").click().run()
    assert not at.exception and len(at.error) == 1
    shown = at.error[0].value
    assert ui.plain(pattern) in shown and "my\\_run" in shown and "\\*.png" in shown
    assert ui.plain("a *b* c_d `x_y` $1 [l](u) \\") == "a \\*b\\* c\\_d `x_y` \\$1 \\[l\\](u) \\\\"
    assert ui.plain("an odd ` one_more") == "an odd \\` one\\_more"
