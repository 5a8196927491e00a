"""OME-Zarr 0.5 export of a segmentation's labels (issue 15, part 2): read back with zarr, each step its own chunked
array equal to its label file, the phase names and colours as image-label, µm scales; bad inputs one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from core.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    from core.imaging.io import write_volume
    from core.imaging.synthetic import DemoConfig, make_demo
    from core.segmentation.series import segment_series

    d = tmp_path_factory.mktemp("omz")
    demo = make_demo(DemoConfig(steps=3, shape=(12, 64, 72), seed=3))
    (d / "scans").mkdir()
    for k in range(3):
        write_volume(d / "scans" / f"t{k:03d}.tif", demo.scans[k])
    segment_series(ROOT / "models" / "demo-unet", sorted((d / "scans").glob("*.tif")), d / "seg", voxel_size_um=2.75,
                   times_s=[0.0, 60.0, 120.0])
    return d / "seg"


def test_the_export_reads_back_step_by_step_with_names_colours_and_scales(seg, tmp_path, capsys):
    import zarr

    from core.phases import DEFAULT_PHASES

    out = tmp_path / "labels.ome.zarr"
    assert main(["-q", "export-labels", str(seg), "--out", str(out)]) == 0
    assert "OME-Zarr 0.5" in capsys.readouterr().out
    root = zarr.open_group(str(out), mode="r")
    assert root.attrs["ome"]["version"] == "0.5" and root.attrs["ome"]["labels"] == ["t000", "t001", "t002"]
    for k, name in enumerate(root.attrs["ome"]["labels"]):
        arr = root[name]["0"]
        truth = tifffile.imread(seg / f"t{k:03d}.tif")
        assert arr.dtype == np.uint8 and arr.shape == truth.shape
        assert arr.chunks == (12, 64, 72)  # chunked per step (the default 64 x 256 x 256, capped by the step)
        np.testing.assert_array_equal(arr[:], truth)
        np.testing.assert_array_equal(arr[5], truth[5])  # one slice of one step, without reading the others
        ome = root[name].attrs["ome"]
        ms = ome["multiscales"][0]
        assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"] and {a["unit"] for a in ms["axes"]} == {"micrometer"}
        assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [2.75, 2.75, 2.75]
        colours = {c["label-value"]: c["rgba"] for c in ome["image-label"]["colors"]}
        names = {p["label-value"]: p["name"] for p in ome["image-label"]["properties"]}
        for p in DEFAULT_PHASES:
            assert names[p.code] == p.name
            assert colours[p.code][:3] == [int(p.colour[i:i + 2], 16) for i in (1, 3, 5)] and colours[p.code][3] == 255
        assert root[name].attrs["reactomo"]["time_s"] == 60.0 * k
    # the metadata is plain Zarr v3 JSON any OME-NGFF reader parses
    meta = json.loads((out / "t001" / "zarr.json").read_text())
    assert meta["node_type"] == "group" and meta["attributes"]["ome"]["version"] == "0.5"


def test_ome_zarr_the_reference_reader_opens_every_step_as_a_label_image(seg, tmp_path):
    """Read back with ``ome-zarr`` (the OME-NGFF reference reader napari's plugin uses), not only with zarr."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Labels, Multiscales, Reader

    from core.phases import DEFAULT_PHASES

    out = tmp_path / "labels.ome.zarr"
    assert main(["-q", "export-labels", str(seg), "--out", str(out)]) == 0
    loc = parse_url(str(out))
    assert loc is not None and loc.version == "0.5"
    nodes = list(Reader(loc)())
    assert any(n.load(Labels) for n in nodes)
    steps = [n for n in nodes if n.load(Label) and n.load(Multiscales)]
    files = sorted(p for p in seg.glob("*.tif"))
    assert len(steps) == len(files) == 3
    for node, f in zip(steps, files):
        np.testing.assert_array_equal(np.asarray(node.data[0]), tifffile.imread(f))  # dask array, read lazily
        assert node.metadata["name"] == f.stem
        props = node.metadata["properties"]
        assert {c: props[c]["name"] for c in props} == {p.code: p.name for p in DEFAULT_PHASES}
        colours = node.metadata["color"]
        for p in DEFAULT_PHASES:
            rgb = [round(v * 255) for v in colours[p.code][:3]]
            assert rgb == [int(p.colour[i:i + 2], 16) for i in (1, 3, 5)]


def test_the_hdf5_export_reads_back_with_h5py(seg, tmp_path):
    import h5py

    from core.phases import DEFAULT_PHASES

    out = tmp_path / "labels.h5"
    assert main(["-q", "export-labels", str(seg), "--out", str(out)]) == 0
    files = sorted(seg.glob("*.tif"))
    with h5py.File(out, "r") as f:
        assert sorted(f) == [p.stem for p in files]
        for p in files:
            ds = f[p.stem]
            assert ds.chunks is not None and ds.compression == "gzip"
            np.testing.assert_array_equal(ds[:], tifffile.imread(p))
            assert list(ds.attrs["element_size_um"]) == [2.75, 2.75, 2.75] and ds.attrs["label_file"] == p.name
        assert json.loads(f.attrs["label_names"]) == {str(q.code): q.name for q in DEFAULT_PHASES}
    assert main(["-q", "export-labels", str(seg), "--out", str(out)]) == 2  # exists: refused, file unchanged
    assert not list(tmp_path.glob(".*tmp*"))


def test_bad_exports_are_one_sentence_and_leave_nothing(seg, tmp_path, capsys):
    out = tmp_path / "x.ome.zarr"
    out.mkdir()
    for argv, words in ((["-q", "export-labels", str(seg), "--out", str(out)], "already exists"),
                        (["-q", "export-labels", str(tmp_path / "nope"), "--out", str(tmp_path / "y.ome.zarr")],
                         "does not exist"),
                        (["-q", "export-labels", str(seg), "--out", str(tmp_path / "labels.tif")], "should end in .ome.zarr")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "y.ome.zarr").exists() and not list(tmp_path.glob(".*-tmp"))
