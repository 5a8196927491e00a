"""Export and import of a whole project as one .reactomo.zip (issue 15, part 1): the round trip on a fresh workspace
gives the same results, byte for byte where they are deterministic; hostile and tampered archives are refused with one
sentence and create nothing."""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from core.cli import main
from core.errors import ReactomoError

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("molar_evolution.csv", "pore_check.csv", "inert.csv", "pore_sizes.csv", "pore_size_distribution.csv",
          "growth.csv")


@pytest.fixture(scope="module")
def worked(tmp_path_factory):
    """A small demo project taken through every step: labels, forest (accepted), a U-Net, a segmentation, an
    analysis; and its archive. Built once for the module in its own workspace."""
    from core.analysis.results import AnalysisConfig
    from core.imaging.synthetic import DemoConfig
    from core.network.train import TrainConfig
    from core.network.unet import UNetConfig
    from core.workflow.analysis import analyse_segmentation
    from core.workflow.data import create_demo_project
    from core.workflow.ground_truth import accept_candidate, train_candidate
    from core.workflow.labels import import_demo_scribbles
    from core.workflow.segment import segment_project
    from core.workflow.share import export_project
    from core.workflow.train import train_project_model

    base = tmp_path_factory.mktemp("share")
    ws = base / "ws"
    ws.mkdir()
    p = create_demo_project("demo", workspace=ws, config=DemoConfig(steps=4, shape=(16, 64, 72), seed=3))
    p.set_conditions({"sample": "VG-3 gypsum", "temperature": "120 °C"})
    import_demo_scribbles(p)
    train_candidate(p)
    accept_candidate(p)
    train_project_model(p, name="tiny", unet_config=UNetConfig(n_classes=4, width=4, depth=2),
                        train_config=TrainConfig(patch_size=16, batch_size=8, max_epochs=1, augment=False, patience=0),
                        device="cpu", models_root=base / "models")
    segment_project(p, ROOT / "models" / "demo-unet", name="s1", steps=[0, 1, 2, 3])
    analyse_segmentation(p, "s1", config=AnalysisConfig(n_boot=50))
    archive = export_project(p, base / "demo.reactomo.zip").path
    return p, archive, base


def _rewrite(src: Path, dst: Path, *, drop=(), add=(), change=None, index_update=True) -> Path:
    """A copy of archive ``src`` with entries dropped, added ((name, bytes)) or changed (name -> bytes); the index is
    updated to match (as a careful attacker would) unless ``index_update`` is False."""
    with zipfile.ZipFile(src) as zin:
        entries = {i.filename: zin.read(i) for i in zin.infolist()}
    index = json.loads(entries["reactomo-archive.json"])
    for name in drop:
        entries.pop(name)
    for name, data in list(add) + list((change or {}).items()):
        entries[name] = data
        if index_update:
            index["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    entries["reactomo-archive.json"] = json.dumps(index).encode()
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for name, data in entries.items():
            zout.writestr(name, data)
    return dst


def _workspace_listing(ws: Path) -> list[str]:
    return sorted(str(p.relative_to(ws)) for p in ws.rglob("*"))


def test_export_then_import_on_a_fresh_workspace_gives_the_same_results(worked, tmp_path, monkeypatch, capsys):
    from core.workflow.analysis import analyse_segmentation
    from core.analysis.results import AnalysisConfig
    from core.network.bundle import load_bundle
    from core.labelling.forest import load_forest
    from core.workflow.ground_truth import load_accepted
    from core.workflow.paths import analysis_folder, segmentation_folder, segmentation_label_files

    p, archive, base = worked
    ws = tmp_path / "fresh"
    ws.mkdir()
    monkeypatch.setenv("REACTOMO_DATA_ROOT", str(base))
    monkeypatch.setenv("REACTOMO_WORKSPACE", str(ws))  # main() sets it from --workspace; restored after the test
    assert main(["-q", "--workspace", str(ws), "import", str(archive), "--name", "copy"]) == 0
    assert "Imported project 'copy'" in capsys.readouterr().out
    from core.workflow.project import open_project

    q = open_project("copy", workspace=ws)
    # the tables, the report and the record: the same bytes
    for t in TABLES:
        assert (analysis_folder(q, "s1") / t).read_bytes() == (analysis_folder(p, "s1") / t).read_bytes()
    assert (analysis_folder(q, "s1") / "report.html").read_bytes() == (analysis_folder(p, "s1") / "report.html").read_bytes()
    # the label volumes came back from the OME-Zarr voxel for voxel, so a new analysis gives the same tables
    for a, b in zip(segmentation_label_files(p, "s1"), segmentation_label_files(q, "s1"), strict=True):
        assert a.name == b.name
        np.testing.assert_array_equal(tifffile.imread(a), tifffile.imread(b))
    assert segmentation_folder(q, "s1") == ws / "copy" / "segmentations" / "s1"
    again = tmp_path / "again"
    analyse_segmentation(q, "s1", config=AnalysisConfig(n_boot=50))
    for t in TABLES:
        assert (analysis_folder(q, "s1") / t).read_bytes() == (analysis_folder(p, "s1") / t).read_bytes(), t
    assert not again.exists()
    # labels, the accepted ground truth with its classifier (skops, trusted types), the model (safetensors)
    assert q.manifest["labels"] == p.manifest["labels"]
    gt = load_accepted(q)
    np.testing.assert_array_equal(gt.labels, load_accepted(p).labels)
    load_forest(next((ws / "copy" / "ground_truth").rglob("*.skops")), phases=q.phases())
    rec = q.manifest["models"][0]
    assert rec["name"] == "tiny" and Path(rec["path"]) == ws / "copy" / "models" / "tiny"
    load_bundle(rec["path"], phases=q.phases())
    assert q.conditions() == p.conditions() and q.phases().to_dict() == p.phases().to_dict()
    # the scans were referenced and are readable here, so the project opens its steps as before
    np.testing.assert_array_equal(q.open_step(1).block(0, 2, 0, 8, 0, 8), p.open_step(1).block(0, 2, 0, 8, 0, 8))
    # no server path of the exporting machine in the records a collaborator reads
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        for n in names:
            if n.endswith((".json", ".html")) and n != "reactomo-archive.json" and n != "project.json":
                assert str(p.root) not in zf.read(n).decode("utf-8", "replace"), n
        crate = json.loads(zf.read("ro-crate-metadata.json"))
        assert crate["@context"] == "https://w3id.org/ro/crate/1.1/context"
        files = {e["@id"]: e for e in crate["@graph"] if e.get("@type") == "File" and not e["@id"].startswith("#")}
        assert "analysis/s1/report.html" in files and files["analysis/s1/report.html"]["sha256"]
        assert any(n.startswith("segmentations/s1/labels.ome.zarr/") for n in names)
        assert not any(n.endswith(".tif") and n.startswith("segmentations/") for n in names)  # labels as OME-Zarr
        assert not any(n.startswith("demo/scans/") for n in names)  # scans by reference
        assert "index.html" in names and "analysis/s1/report.html" in zf.read("index.html").decode()


def test_scans_included_on_request_and_missing_references_are_said(worked, tmp_path, monkeypatch, capsys):
    from core.workflow.project import open_project
    from core.workflow.share import export_project, import_project

    p, archive, base = worked
    ws = tmp_path / "other"
    ws.mkdir()
    monkeypatch.setenv("REACTOMO_DATA_ROOT", str(ws))  # the exporter's scan folder is not readable here
    r = import_project(archive, "ref", workspace=ws)
    assert sorted(r.scans_missing) == [s.name for s in p.scans()] and "copy them to the project's scans/" in r.sentence
    assert open_project("ref", workspace=ws).manifest["scans"][0]["path"] == "scans/t000.tif"
    full = export_project(p, tmp_path / "full.reactomo.zip", with_scans=True)
    assert full.scans_included and full.bytes_out > archive.stat().st_size
    r2 = import_project(full.path, "full", workspace=ws)
    assert r2.scans_missing == []
    q = open_project("full", workspace=ws)
    np.testing.assert_array_equal(q.open_step(2).block(0, 16, 0, 64, 0, 72), p.open_step(2).block(0, 16, 0, 64, 0, 72))
    monkeypatch.setenv("REACTOMO_WORKSPACE", str(ws))
    monkeypatch.setenv("REACTOMO_DATA_ROOT", str(tmp_path))
    assert main(["-q", "--workspace", str(ws), "import", str(full.path), "--name", "full"]) == 2
    assert "already exists" in capsys.readouterr().err


def _weights_entry(archive: Path) -> str:
    with zipfile.ZipFile(archive) as zf:
        return next(n for n in zf.namelist() if n.endswith("weights.safetensors"))


def _hostile(case: str, archive: Path, tmp: Path) -> tuple[Path, str]:
    """Build one hostile archive from the good one: (path, words its refusal must contain)."""
    out = tmp / f"{case}.reactomo.zip"
    if case == "zip-slip":
        return _rewrite(archive, out, add=[("../../evil.txt", b"owned")]), "outside the archive"
    if case == "absolute":
        return _rewrite(archive, out, add=[("/tmp/evil.txt", b"owned")]), "absolute"
    if case == "symlink":
        _rewrite(archive, out)
        with zipfile.ZipFile(out, "a") as zf:
            info = zipfile.ZipInfo("labels/link")
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
        return out, "link"
    if case == "bomb":
        zeros = b"\0" * (64 * 1024**2)
        return _rewrite(archive, out, add=[("analysis/s1/huge.csv", zeros)]), "zip bomb"
    if case == "flipped-weights":
        name = _weights_entry(archive)
        with zipfile.ZipFile(archive) as zf:
            data = bytearray(zf.read(name))
        data[len(data) // 2] ^= 0x01
        return _rewrite(archive, out, change={name: bytes(data)}, index_update=False), "checksum"
    if case == "pickle-file":
        return _rewrite(archive, out, add=[("models/demo-unet/extra.pkl", pickle.dumps({"a": 1}))]), "pickle"
    if case == "pickle-as-weights":
        name = _weights_entry(archive)
        return _rewrite(archive, out, change={name: pickle.dumps(np.zeros(3), protocol=4)}), "pickle"
    if case == "pickle-as-json":
        return _rewrite(archive, out, change={"analysis/s1/summary.json": pickle.dumps([1, 2])}), "pickle"
    if case == "unlisted":
        _rewrite(archive, out)
        with zipfile.ZipFile(out, "a") as zf:
            zf.writestr("analysis/s1/extra.csv", "a,b\n")
        return out, "does not list"
    if case == "phases":
        with zipfile.ZipFile(archive) as zf:
            m = json.loads(zf.read("project.json"))
        m["phases"][1]["name"] = "anhydrite"
        return _rewrite(archive, out, change={"project.json": json.dumps(m).encode()}), "phase table"
    if case == "manifest-escape":
        with zipfile.ZipFile(archive) as zf:
            m = json.loads(zf.read("project.json"))
        m["segmentations"]["s1"]["path"] = "../../elsewhere"
        return _rewrite(archive, out, change={"project.json": json.dumps(m).encode()}), "outside the project"
    if case == "not-zip":
        out.write_bytes(b"PK but not really a zip" * 10)
        return out, "not a zip"
    raise AssertionError(case)


HOSTILE = ["zip-slip", "absolute", "symlink", "bomb", "flipped-weights", "pickle-file", "pickle-as-weights",
           "pickle-as-json", "unlisted", "phases", "manifest-escape", "not-zip"]


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_or_tampered_archive_is_refused_in_one_sentence_and_creates_nothing(worked, case, tmp_path, capsys,
                                                                                     monkeypatch):
    _, archive, _ = worked
    bad, words = _hostile(case, archive, tmp_path)
    ws = tmp_path / "ws"
    ws.mkdir()
    before = _workspace_listing(ws)
    monkeypatch.setenv("REACTOMO_WORKSPACE", str(ws))
    monkeypatch.setenv("REACTOMO_DATA_ROOT", str(tmp_path))
    code = main(["-q", "--workspace", str(ws), "import", str(bad), "--name", "x"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert words in err and "Nothing was imported" in err and "Traceback" not in err
    assert err.strip().count("\n") == 0  # one sentence on one line
    assert _workspace_listing(ws) == before  # no project, no half-unpacked folder
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


def test_export_refuses_bad_outputs_and_leaves_nothing(worked, tmp_path, capsys):
    from core.workflow.share import export_project

    p, archive, _ = worked
    with pytest.raises(ReactomoError, match="should end in .reactomo.zip"):
        export_project(p, tmp_path / "x.zip")
    with pytest.raises(ReactomoError, match="already exists"):
        export_project(p, archive)
    with pytest.raises(ReactomoError, match="does not exist"):
        export_project(p, tmp_path / "no" / "x.reactomo.zip")
    assert sorted(tmp_path.iterdir()) == []


def test_export_import_and_share_bad_inputs_are_one_sentence_in_the_cli(worked, tmp_path, monkeypatch, capsys):
    p, archive, base = worked
    monkeypatch.setenv("REACTOMO_WORKSPACE", str(p.root.parent))
    monkeypatch.setenv("REACTOMO_DATA_ROOT", str(tmp_path))
    for argv, words in (
        (["export", "nope", "--out", str(tmp_path / "x.reactomo.zip")], "nope"),
        (["export", "demo", "--out", str(tmp_path / "x.zip")], "should end in .reactomo.zip"),
        (["import", str(tmp_path / "missing.reactomo.zip"), "--name", "y"], "There is no archive"),
        (["import", str(tmp_path / "missing.reactomo.zip"), "--name", "../y"], "not allowed"),
        (["share", "nope"], "nope"),
    ):
        code = main(["-q", *argv])
        err = capsys.readouterr().err
        assert code == 2 and words in err and "Traceback" not in err, (argv, err)
    assert sorted(q.name for q in tmp_path.iterdir()) == []
    assert sorted(q.name for q in p.root.parent.iterdir() if not q.name.startswith(".")) == ["demo"]


def test_share_links_are_made_listed_and_revoked(worked, monkeypatch, capsys):
    from core.workflow.access import edit_key, share_links, valid_edit_key, valid_share

    p, _, _ = worked
    monkeypatch.setenv("REACTOMO_WORKSPACE", str(p.root.parent))
    assert main(["-q", "share", "demo", "--base-url", "http://lab:8501"]) == 0
    out = capsys.readouterr().out
    token = out.strip().split("share=")[1]
    assert out.startswith("Read-only link to 'demo': http://lab:8501/?project=demo&share=") and valid_share(p, token)
    assert not valid_share(p, token[:-1] + ("A" if token[-1] != "A" else "B")) and not valid_share(p, "")
    assert oct((p.root / "access.json").stat().st_mode & 0o777) == "0o600"
    assert main(["-q", "share", "demo", "--list"]) == 0 and token in capsys.readouterr().out
    assert main(["-q", "share", "demo", "--revoke"]) == 0
    assert "Revoked 1 share link of 'demo'" in capsys.readouterr().out
    assert share_links(p) == [] and not valid_share(p, token)
    assert main(["-q", "share", "demo", "--edit-link"]) == 0
    key = capsys.readouterr().out.strip().split("key=")[1]
    assert key == edit_key(p) and valid_edit_key(p, key) and not valid_edit_key(p, None)
    # never exported: a collaborator's archive carries no token or key
    from core.workflow.share import export_project

    with zipfile.ZipFile(export_project(p, p.root.parent.parent / "k.reactomo.zip").path) as zf:
        assert "access.json" not in zf.namelist()
        assert all(key.encode() not in zf.read(n) for n in zf.namelist())
