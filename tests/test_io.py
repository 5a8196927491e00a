"""Tests for core.imaging.io: lazy TIFF volumes, discovery of time steps, labels files, and every bad input's message."""

from __future__ import annotations

import os
import socket
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile

from core.imaging import io
from core.errors import ReactomoError
from core.imaging.io import (
    ScanInfo,
    check_inside_roots,
    check_volume_values,
    discover_scans,
    grey_histograms,
    natural_key,
    open_volume,
    read_labels,
    read_tiff_volume,
    write_labels,
    write_volume,
)

DTYPES = ("uint8", "uint16", "float32")


def make_volume(dtype: str, shape=(6, 10, 12), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "float32":
        return rng.normal(0.5, 0.2, size=shape).astype(np.float32)
    hi = 250 if dtype == "uint8" else 60000
    return rng.integers(0, hi, size=shape).astype(dtype)


def write_slices(folder: Path, vol: np.ndarray, *, compression: str | None = None, prefix: str = "s") -> Path:
    """A folder of 2D TIFF slices, named so that only natural sort gives the right order (s2 before s10)."""
    folder.mkdir(parents=True, exist_ok=True)
    for z, img in enumerate(vol):
        tifffile.imwrite(folder / f"{prefix}{z}.tif", img, compression=compression)
    return folder


def open_layout(tmp_path: Path, vol: np.ndarray, layout: str) -> io.Volume:
    if layout == "memmap":
        return open_volume(write_volume(tmp_path / "v.tif", vol))
    if layout == "zlib":
        return open_volume(write_volume(tmp_path / "v.tif", vol, compression="zlib"))
    if layout == "slices":
        return open_volume(write_slices(tmp_path / "sl", vol))
    if layout == "slices_zlib":
        return open_volume(write_slices(tmp_path / "sl", vol, compression="zlib"))
    raise KeyError(layout)


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".tmp" in p.name]


# ---------------------------------------------------------------------------------------------------------------
# Round trips and reading
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("compression", [None, "zlib"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_write_volume_round_trip(tmp_path, dtype, compression):
    vol = make_volume(dtype)
    original = vol.copy()
    path = write_volume(tmp_path / "scan.tif", vol, voxel_size_um=2.75, compression=compression)
    np.testing.assert_array_equal(vol, original)  # input untouched
    assert leftovers(tmp_path) == []
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == vol.shape[0]  # one page per z slice
    with open_volume(path) as v:
        assert v.kind == "stack" and v.name == "scan"
        assert v.shape == vol.shape and v.dtype == np.dtype(dtype)
        assert v.nbytes == vol.nbytes
        assert v.voxel_size_um == pytest.approx(2.75)
        assert v.is_memmapped == (compression is None)
        out = v.read()
        assert out.dtype == np.dtype(dtype) and out.flags.writeable
        np.testing.assert_array_equal(out, vol)
    np.testing.assert_array_equal(read_tiff_volume(path), vol)


@pytest.mark.parametrize("layout", ["memmap", "zlib", "slices", "slices_zlib"])
def test_slices_in_every_orientation_match_numpy(tmp_path, layout):
    vol = make_volume("uint16", shape=(12, 9, 11), seed=1)
    with open_layout(tmp_path, vol, layout) as v:
        assert v.shape == vol.shape
        for z in (0, 5, 11):
            np.testing.assert_array_equal(v.slice(0, z), vol[z])
        for y in (0, 4, 8):
            out = v.slice(1, y)
            assert out.shape == (12, 11)
            np.testing.assert_array_equal(out, vol[:, y, :])
        for x in (0, 6, 10):
            out = v.slice(2, x)
            assert out.shape == (12, 9)
            np.testing.assert_array_equal(out, vol[:, :, x])
        np.testing.assert_array_equal(v.slab(3, 7), vol[3:7])
        np.testing.assert_array_equal(v.slab(0, 12), vol)
        np.testing.assert_array_equal(v.read(), vol)


def test_slice_folder_is_in_natural_order(tmp_path):
    vol = make_volume("uint8", shape=(12, 4, 5), seed=2)
    folder = write_slices(tmp_path / "scan", vol)  # s0 ... s11: s10 sorts before s2 as plain text
    with open_volume(folder) as v:
        assert v.kind == "slices" and v.name == "scan"
        np.testing.assert_array_equal(v.read(), vol)


def test_big_endian_memmap_reads_native_values(tmp_path):
    vol = make_volume("uint16", shape=(4, 6, 7), seed=3)
    tifffile.imwrite(tmp_path / "be.tif", vol, byteorder=">", photometric="minisblack")
    with open_volume(tmp_path / "be.tif") as v:
        assert v.is_memmapped
        out = v.slice(2, 3)
        assert out.dtype == np.dtype("uint16") and out.dtype.isnative
        np.testing.assert_array_equal(out, vol[:, :, 3])


@pytest.mark.parametrize("layout", ["memmap", "zlib"])
def test_one_slice_reads_far_less_than_the_volume(tmp_path, layout):
    vol = np.random.default_rng(4).integers(0, 60000, size=(64, 256, 256), dtype=np.uint16)  # 8 MiB
    with open_layout(tmp_path, vol, layout) as v:
        assert v.is_memmapped == (layout == "memmap")
        if layout == "memmap":
            assert isinstance(v._mm, np.memmap)
        tracemalloc.start()
        try:
            out = v.slice(0, 40)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        np.testing.assert_array_equal(out, vol[40])
        assert peak < v.nbytes / 16, f"reading one XY slice allocated {peak} bytes of {v.nbytes}"


def test_xz_slice_of_a_compressed_stack_decodes_one_strip_per_page(tmp_path):
    vol = np.random.default_rng(7).integers(0, 60000, size=(64, 256, 256), dtype=np.uint16)
    p = tmp_path / "c.tif"
    tifffile.imwrite(p, vol, compression="zlib", rowsperstrip=16, photometric="minisblack")
    with open_volume(p) as v:
        assert not v.is_memmapped
        for y in (0, 15, 16, 100, 255):
            np.testing.assert_array_equal(v.slice(1, y), vol[:, y, :])
        tracemalloc.start()
        try:
            v.slice(1, 77)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        page_bytes = 256 * 256 * 2
        assert peak < page_bytes, f"an XZ slice allocated {peak} bytes; decoding a whole page needs {page_bytes}"


def test_slice_and_slab_arguments_are_checked(tmp_path):
    with open_volume(write_volume(tmp_path / "v.tif", make_volume("uint8"))) as v:
        with pytest.raises(ReactomoError, match=r"Axis 3 does not exist; use 0 .* 1 .* 2"):
            v.slice(3, 0)
        with pytest.raises(ReactomoError, match=r"index 6 is outside v along axis 0 \(z\), which has 6 slices; give an index from 0 to 5"):
            v.slice(0, 6)
        with pytest.raises(ReactomoError, match=r"index -1 is outside"):
            v.slice(1, -1)
        with pytest.raises(ReactomoError, match=r"index 2.5 is outside"):
            v.slice(2, 2.5)
        with pytest.raises(ReactomoError, match=r"slab z0=4, z1=2 is not inside v, which has 6 slices; give integers with 0 <= z0 < z1 <= 6"):
            v.slab(4, 2)
        with pytest.raises(ReactomoError, match=r"slab"):
            v.slab(0, 7)
        with pytest.raises(ReactomoError, match=r"max_voxels is 0; give a positive integer"):
            v.sample(max_voxels=0)
    with pytest.raises(ReactomoError, match=r"has been closed; open it again"):
        v.slice(0, 0)
    v.close()  # idempotent


def test_open_volume_kind_is_checked(tmp_path):
    p = write_volume(tmp_path / "v.tif", make_volume("uint8"))
    with pytest.raises(ReactomoError, match=r"kind 'stak' is not known \(did you mean 'stack'\?\)"):
        open_volume(p, kind="stak")
    with pytest.raises(ReactomoError, match=r"is a file, not a folder of 2D TIFF slices"):
        open_volume(p, kind="slices")
    with pytest.raises(ReactomoError, match=r"is a folder, not a TIFF file"):
        open_volume(tmp_path, kind="stack")


def test_sample_respects_limits_and_seed(tmp_path):
    vol = np.arange(40 * 10 * 10, dtype=np.float32).reshape(40, 10, 10)
    with open_volume(write_volume(tmp_path / "v.tif", vol)) as v:
        s = v.sample(max_voxels=150, max_slices=4, seed=1)
        assert s.shape == (150,) and s.dtype == np.float32
        assert len(np.unique(s)) == 150  # no voxel drawn twice
        slices_used = np.unique(s // 100).astype(int)
        assert set(slices_used) <= {0, 13, 26, 39} and len(slices_used) == 4  # evenly spaced, both ends
        np.testing.assert_array_equal(s, v.sample(max_voxels=150, max_slices=4, seed=1))
        assert not np.array_equal(s, v.sample(max_voxels=150, max_slices=4, seed=2))
        everything = v.sample(max_voxels=10**9, max_slices=100)
        np.testing.assert_array_equal(np.sort(everything), vol.ravel())
        assert v.sample(max_voxels=3, max_slices=32).size == 3


# ---------------------------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------------------------
def test_natural_key():
    assert sorted(["t10", "t2", "T1", "t2b"], key=natural_key) == ["T1", "t2", "t2b", "t10"]
    assert natural_key("t2") < natural_key("t10")


def test_discover_single_stack(tmp_path):
    vol = make_volume("uint16")
    p = write_volume(tmp_path / "t000.tif", vol)
    (s,) = discover_scans(p)
    assert s == ScanInfo(path=str(p.resolve()), kind="stack", name="t000", shape=vol.shape, dtype="uint16")
    assert ScanInfo.from_dict(s.to_dict()) == s
    assert s.to_dict()["shape"] == list(vol.shape)


def test_discover_folder_of_stacks_in_natural_order(tmp_path):
    for t in (10, 2, 1):
        write_volume(tmp_path / "exp" / f"t{t}.tif", make_volume("uint8", seed=t))
    (tmp_path / "exp" / "notes.txt").write_text("ignored")
    (tmp_path / "exp" / ".t5.tif.tmp.tif").write_bytes(b"half a temp file")  # hidden: ignored
    steps = discover_scans(tmp_path / "exp")
    assert [s.name for s in steps] == ["t1", "t2", "t10"]
    assert {s.kind for s in steps} == {"stack"}


def test_discover_glob(tmp_path):
    for t in (10, 2):
        write_volume(tmp_path / f"t{t}.tif", make_volume("uint8", seed=t))
    write_volume(tmp_path / "other.tif", make_volume("uint8"))
    steps = discover_scans(str(tmp_path / "t*.tif"))
    assert [s.name for s in steps] == ["t2", "t10"]
    with pytest.raises(ReactomoError, match=r"The pattern .*x\*\.tif matches no files or folders"):
        discover_scans(str(tmp_path / "x*.tif"))


def test_discover_glob_of_slice_folders(tmp_path):
    vol = make_volume("uint16", shape=(3, 5, 6))
    for t in (10, 2):
        write_slices(tmp_path / f"step{t}", vol)
    steps = discover_scans(str(tmp_path / "step*"))
    assert [(s.name, s.kind, s.shape) for s in steps] == [("step2", "slices", (3, 5, 6)), ("step10", "slices", (3, 5, 6))]


def test_discover_folder_of_slices_is_one_step(tmp_path):
    vol = make_volume("float32", shape=(11, 5, 6))
    folder = write_slices(tmp_path / "scan", vol)
    (s,) = discover_scans(folder)
    assert (s.kind, s.name, s.shape, s.dtype) == ("slices", "scan", (11, 5, 6), "float32")
    with open_volume(s.path, kind=s.kind) as v:
        np.testing.assert_array_equal(v.read(), vol)


def test_discover_folder_of_slice_folders(tmp_path):
    vol = make_volume("uint8", shape=(4, 5, 6))
    for t in (10, 2, 1):
        write_slices(tmp_path / "exp" / f"t{t}", vol)
    (tmp_path / "exp" / "empty").mkdir()
    steps = discover_scans(tmp_path / "exp")
    assert [s.name for s in steps] == ["t1", "t2", "t10"]
    assert all(s.kind == "slices" and s.shape == (4, 5, 6) for s in steps)


def test_discover_names_stay_unique_across_folders(tmp_path):
    for folder in ("a", "b"):
        write_volume(tmp_path / folder / "t0.tif", make_volume("uint8"))
    steps = discover_scans(str(tmp_path / "*" / "t0.tif"))
    assert [s.name for s in steps] == ["a/t0", "b/t0"]


def test_discover_refuses_a_mix_of_2d_and_3d(tmp_path):
    write_volume(tmp_path / "a.tif", make_volume("uint8"))
    tifffile.imwrite(tmp_path / "b.tif", make_volume("uint8")[0])
    with pytest.raises(ReactomoError, match=r"mixes 3D volumes \(e.g. a.tif\) with 2D slices \(e.g. b.tif\)"):
        discover_scans(tmp_path)


@pytest.mark.parametrize("change", ["shape", "dtype"])
def test_discover_refuses_steps_that_differ(tmp_path, change):
    write_volume(tmp_path / "t0.tif", make_volume("uint16", shape=(6, 10, 12)))
    other = make_volume("uint16", shape=(6, 9, 12)) if change == "shape" else make_volume("uint8", shape=(6, 10, 12))
    write_volume(tmp_path / "t1.tif", other)
    with pytest.raises(ReactomoError, match=r"Step 't1' is \(6, (9|10), 12\) uint(8|16) but step 't0' is \(6, 10, 12\) uint16; all time steps must have the same shape"):
        discover_scans(tmp_path)


def test_slice_of_another_size_is_named_when_read(tmp_path):
    vol = make_volume("uint8", shape=(40, 5, 6))
    folder = write_slices(tmp_path / "scan", vol)
    tifffile.imwrite(folder / "s7.tif", vol[7, :4])  # not among the headers sampled at discovery
    (s,) = discover_scans(folder)
    with open_volume(s.path) as v:
        v.slice(0, 6)
        with pytest.raises(ReactomoError, match=r"The slice .*s7.tif has shape \(4, 6\) but the first slice s0.tif has shape \(5, 6\)"):
            v.slice(0, 7)
        with pytest.raises(ReactomoError, match=r"s7.tif"):
            v.slice(1, 0)


# ---------------------------------------------------------------------------------------------------------------
# Allowed roots
# ---------------------------------------------------------------------------------------------------------------
def test_check_inside_roots(tmp_path):
    root = tmp_path / "data"
    (root / "exp").mkdir(parents=True)
    assert check_inside_roots(root / "exp", [root]) == (root / "exp").resolve()
    assert check_inside_roots(root, [str(root)]) == root.resolve()
    assert check_inside_roots("/etc", None) == Path("/etc").resolve()
    with pytest.raises(ReactomoError, match=r"The path /etc is outside the allowed data root\(s\) .*data; ask the administrator to add it to REACTOMO_DATA_ROOT"):
        check_inside_roots("/etc", [root])
    with pytest.raises(ReactomoError, match=r"which resolves to .*outside"):
        check_inside_roots(root / ".." / "elsewhere", [root])
    with pytest.raises(ReactomoError, match=r"No data root is configured"):
        check_inside_roots(root, [])


def test_discover_refuses_paths_outside_the_roots(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    outside = tmp_path / "private"
    write_volume(outside / "t0.tif", make_volume("uint8"))
    write_volume(root / "t0.tif", make_volume("uint8"))
    assert len(discover_scans(root, allowed_roots=[root])) == 1
    match = r"outside the allowed data root\(s\)"
    with pytest.raises(ReactomoError, match=match):
        discover_scans("/etc", allowed_roots=[root])
    with pytest.raises(ReactomoError, match=match):  # via ..
        discover_scans(f"{root}/../private/t0.tif", allowed_roots=[root])
    with pytest.raises(ReactomoError, match=match):  # via a glob
        discover_scans(f"{root}/../private/*.tif", allowed_roots=[root])
    (root / "link").symlink_to(outside)  # via a symbolic link to a folder
    with pytest.raises(ReactomoError, match=match):
        discover_scans(root / "link", allowed_roots=[root])
    (root / "t1.tif").symlink_to(outside / "t0.tif")  # via a symbolic link to a file inside a scanned folder
    with pytest.raises(ReactomoError, match=match):
        discover_scans(root, allowed_roots=[root])
    with pytest.raises(ReactomoError, match=match):  # a glob whose matches leave the root
        discover_scans(str(root / "*"), allowed_roots=[root])


# ---------------------------------------------------------------------------------------------------------------
# Bad inputs: one clear sentence each
# ---------------------------------------------------------------------------------------------------------------
def test_text_file_is_not_a_tiff(tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("these are not scans\n")
    with pytest.raises(ReactomoError, match=r"notes.txt is not a TIFF file \(.tif/.tiff\); give a multi-page TIFF"):
        discover_scans(txt)
    named = tmp_path / "notes.tif"
    named.write_text("these are not scans\n")
    with pytest.raises(ReactomoError, match=r"notes.tif is not a TIFF file \(it looks like a text file\); save the scan as a TIFF"):
        discover_scans(named)
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(ReactomoError, match=r"empty.tif is not a TIFF file \(it looks like an empty file\)"):
        open_volume(empty)


def test_png_named_tif_is_not_a_tiff(tmp_path):
    from PIL import Image

    p = tmp_path / "scan.tif"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(p, format="PNG")
    with pytest.raises(ReactomoError, match=r"scan.tif is not a TIFF file \(it looks like a PNG image\)"):
        open_volume(p)


@pytest.mark.parametrize("compression", [None, "zlib"])
@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_tiff(tmp_path, compression, keep):
    p = write_volume(tmp_path / "scan.tif", make_volume("uint16", shape=(6, 20, 24)), compression=compression)
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ReactomoError, match=r"scan.tif is truncated( or corrupt)?\b.*; copy or export it again"):
        discover_scans(p)


def test_corrupt_compressed_data_fails_when_read(tmp_path):
    p = write_volume(tmp_path / "scan.tif", make_volume("uint16", shape=(6, 20, 24)), compression="zlib")
    with tifffile.TiffFile(p) as tif:
        offset = tif.series[0][2].dataoffsets[0]
    raw = bytearray(p.read_bytes())
    raw[offset + 10 : offset + 200] = bytes(190)
    p.write_bytes(bytes(raw))
    with open_volume(p) as v:  # the header is fine
        v.slice(0, 1)
        with pytest.raises(ReactomoError, match=r"scan.tif is truncated or corrupt and could not be decoded \(.*\); copy or export it again"):
            v.slice(0, 2)
        with pytest.raises(ReactomoError, match=r"truncated or corrupt"):
            v.read()


@pytest.mark.parametrize("pages", [1, 6])
def test_rgb_tiff_asks_for_greyscale(tmp_path, pages):
    rgb = np.random.default_rng(0).integers(0, 255, size=(pages, 20, 24, 3), dtype=np.uint8)
    p = tmp_path / "colour.tif"
    tifffile.imwrite(p, rgb[0] if pages == 1 else rgb, photometric="rgb")
    with pytest.raises(ReactomoError, match=r"colour.tif is a colour image with 3 channels per pixel .*; convert it to greyscale"):
        discover_scans(p)


def test_2d_tiff_where_a_volume_is_expected(tmp_path):
    p = tmp_path / "slice.tif"
    tifffile.imwrite(p, make_volume("uint16")[0])
    msg = r"slice.tif holds one 2D image of shape \(10, 12\), not a 3D volume; put the 2D slices of each time step in one folder"
    with pytest.raises(ReactomoError, match=msg):
        discover_scans(p)
    with pytest.raises(ReactomoError, match=msg):
        open_volume(p)
    with pytest.raises(ReactomoError, match=r"matches .*slice.tif, which holds one 2D image .*give the folder itself"):
        discover_scans(str(tmp_path / "*.tif"))


@pytest.mark.parametrize("dtype", ["int32", "float64", "int16"])
def test_unsupported_dtype_names_the_supported_ones(tmp_path, dtype):
    p = tmp_path / "scan.tif"
    tifffile.imwrite(p, make_volume("uint8").astype(dtype))
    with pytest.raises(ReactomoError, match=rf"scan.tif holds {dtype} data; Reactomo reads uint8, uint16 or float32 scans"):
        discover_scans(p)
    with pytest.raises(ReactomoError, match=rf"dtype {dtype}; give uint8, uint16 or float32"):
        write_volume(tmp_path / "out.tif", make_volume("uint8").astype(dtype))


def test_4d_tiff_is_refused(tmp_path):
    p = tmp_path / "hyper.tif"
    tifffile.imwrite(p, np.zeros((2, 3, 8, 9), np.uint16), metadata={"axes": "TZYX"}, photometric="minisblack")
    with pytest.raises(ReactomoError, match=r"hyper.tif holds a 4D image with axes TZYX .*save each time step"):
        open_volume(p)


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_non_finite_values(tmp_path, bad):
    vol = make_volume("float32", shape=(8, 10, 12))
    vol[7, 2, 3] = float(bad)
    vol[7, 4, 4] = float(bad)
    with open_volume(write_volume(tmp_path / "scan.tif", vol)) as v:
        word = "NaN" if bad == "nan" else "infinite"
        with pytest.raises(ReactomoError, match=rf"The scan 'scan' holds {word} values \(2 in slice z=7\)"):
            check_volume_values(v)


def test_non_finite_found_at_the_last_slice_with_few_slices_inspected(tmp_path):
    vol = make_volume("float32", shape=(20, 4, 5))
    vol[19, 0, 0] = np.nan
    with open_volume(write_volume(tmp_path / "scan.tif", vol)) as v:
        with pytest.raises(ReactomoError, match=r"NaN values \(1 in slice z=19\)"):
            check_volume_values(v, max_slices=2)


def test_constant_image(tmp_path):
    p = write_volume(tmp_path / "scan.tif", np.full((6, 10, 12), 1234, np.uint16))
    with open_volume(p) as v, pytest.raises(ReactomoError, match=r"every voxel is 1234; this is not a scan"):
        check_volume_values(v)
    with open_volume(write_volume(tmp_path / "ok.tif", make_volume("uint16"))) as v:
        check_volume_values(v)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReactomoError, match=r"The folder .*empty holds no TIFF files \(.tif/.tiff\) and no sub-folders of TIFF slices"):
        discover_scans(tmp_path / "empty")
    with pytest.raises(ReactomoError, match=r"empty holds no TIFF files"):
        open_volume(tmp_path / "empty")
    with pytest.raises(ReactomoError, match=r"No scan path was given"):
        discover_scans("  ")


def test_missing_path(tmp_path):
    with pytest.raises(ReactomoError, match=r"The path .*nothing.tif does not exist; check the spelling"):
        discover_scans(tmp_path / "nothing.tif")
    with pytest.raises(ReactomoError, match=r"does not exist"):
        open_volume(tmp_path / "nothing.tif")


def test_broken_symlink(tmp_path):
    (tmp_path / "scan.tif").symlink_to(tmp_path / "gone.tif")
    with pytest.raises(ReactomoError, match=r"scan.tif is a symbolic link to .*gone.tif, which does not exist"):
        open_volume(tmp_path / "scan.tif")


def test_fifo_and_socket_are_not_files(tmp_path):
    fifo = tmp_path / "pipe.tif"
    os.mkfifo(fifo)  # opening it for reading would block forever
    with pytest.raises(ReactomoError, match=r"pipe.tif is not a regular file or folder"):
        discover_scans(fifo)
    with pytest.raises(ReactomoError, match=r"not a regular file or folder"):
        open_volume(fifo)
    sock_path = tmp_path / "s.tif"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        with pytest.raises(ReactomoError, match=r"s.tif is not a regular file or folder"):
            open_volume(sock_path)


def test_unreadable_file(tmp_path, monkeypatch):
    """What chmod 000 gives a non-root user at open time, simulated since tests (and CI) run as root."""
    import tifffile

    p = write_volume(tmp_path / "scan.tif", make_volume("uint8"))

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(p))

    monkeypatch.setattr(tifffile.TiffFile, "__init__", denied)
    with pytest.raises(ReactomoError, match=r"scan.tif cannot be read \(permission denied\)"):
        open_volume(p)


def test_unlistable_folder(tmp_path, monkeypatch):
    """What a folder without read permission gives a non-root user, simulated since tests may run as root."""
    (tmp_path / "exp").mkdir()

    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "scandir", denied)
    with pytest.raises(ReactomoError, match=r"The folder .*exp cannot be listed \(permission denied\); ask its owner"):
        discover_scans(tmp_path / "exp")


def test_read_errors_are_translated(tmp_path, monkeypatch):
    """A permission error while decoding (what chmod gives a non-root user) becomes one sentence, not a traceback."""
    with open_volume(write_volume(tmp_path / "scan.tif", make_volume("uint8"), compression="zlib")) as v:

        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(v._tiff.series[0].__class__, "asarray", denied)
        with pytest.raises(ReactomoError, match=r"scan.tif cannot be read \(permission denied\); ask its owner"):
            v.slice(0, 0)


# ---------------------------------------------------------------------------------------------------------------
# Histograms
# ---------------------------------------------------------------------------------------------------------------
def test_grey_histograms_share_one_axis_and_follow_a_shift(tmp_path):
    rng = np.random.default_rng(5)
    base = rng.normal(1000, 50, size=(8, 32, 32))
    vols = [
        open_volume(write_volume(tmp_path / "t0.tif", base.astype(np.uint16))),
        open_volume(write_volume(tmp_path / "t1.tif", (base + 400).astype(np.uint16))),
    ]
    try:
        edges, counts = grey_histograms(vols, bins=64, max_voxels_per_step=5000)
        assert edges.shape == (65,) and counts.shape == (2, 64)
        np.testing.assert_allclose(counts.sum(axis=1), 1.0)
        assert edges[0] < 1000 and edges[-1] > 1400  # pooled percentiles cover both steps
        centres = (edges[:-1] + edges[1:]) / 2
        peaks = centres[counts.argmax(axis=1)]
        assert peaks[1] - peaks[0] == pytest.approx(400, abs=3 * (edges[1] - edges[0]))
        edges2, counts2 = grey_histograms(vols, bins=10, value_range=(0, 5000))
        np.testing.assert_allclose(edges2, np.linspace(0, 5000, 11))
        np.testing.assert_allclose(counts2.sum(axis=1), 1.0)
        with pytest.raises(ReactomoError, match=r"value_range is \(5, 1\); give two finite numbers"):
            grey_histograms(vols, value_range=(5, 1))
        with pytest.raises(ReactomoError, match=r"No volumes were given"):
            grey_histograms([])
    finally:
        for v in vols:
            v.close()


def test_grey_histograms_ignore_non_finite_and_constant_range(tmp_path):
    vol = np.full((4, 5, 6), 7.0, np.float32)
    vol[0, 0, 0] = np.nan
    with open_volume(write_volume(tmp_path / "c.tif", vol)) as v:
        edges, counts = grey_histograms([v], bins=4)
        assert edges[0] < 7 < edges[-1]
        np.testing.assert_allclose(counts.sum(), 1.0)


# ---------------------------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------------------------
def test_labels_round_trip(tmp_path):
    labels = np.random.default_rng(6).integers(0, 5, size=(5, 8, 9)).astype(np.uint8)
    p = write_labels(tmp_path / "labels" / "t0.tif", labels, voxel_size_um=2.75)
    assert leftovers(p.parent) == []
    with tifffile.TiffFile(p) as tif:
        assert tif.pages.first.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
    out = read_labels(p, shape=(5, 8, 9), codes=[1, 2, 3, 4])
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, labels)


def test_failed_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    p = tmp_path / "labels.tif"
    old = np.ones((2, 3, 4), np.uint8)
    write_labels(p, old)
    before = p.read_bytes()

    def broken_imwrite(path, *args, **kwargs):
        Path(path).write_bytes(b"II*\x00half-written")
        raise RuntimeError("disk full")

    monkeypatch.setattr(io.tifffile, "imwrite", broken_imwrite)
    with pytest.raises(RuntimeError, match="disk full"):
        write_labels(p, np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(RuntimeError, match="disk full"):
        write_volume(tmp_path / "new.tif", make_volume("uint8"))
    assert p.read_bytes() == before
    assert not (tmp_path / "new.tif").exists()
    assert leftovers(tmp_path) == []
    monkeypatch.undo()
    np.testing.assert_array_equal(read_labels(p), old)


def test_write_labels_refuses_other_arrays(tmp_path):
    with pytest.raises(ReactomoError, match=r"Labels must be uint8 phase codes; got int64"):
        write_labels(tmp_path / "l.tif", np.zeros((2, 3, 4), np.int64))
    with pytest.raises(ReactomoError, match=r"Labels must be a non-empty 3D array \(z, y, x\); got shape \(3, 4\)"):
        write_labels(tmp_path / "l.tif", np.zeros((3, 4), np.uint8))
    with pytest.raises(ReactomoError, match=r"does not end in .tif or .tiff"):
        write_labels(tmp_path / "l.png", np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(ReactomoError, match=r"voxel size is -1; give a positive number"):
        write_labels(tmp_path / "l.tif", np.zeros((2, 3, 4), np.uint8), voxel_size_um=-1)
    assert list(tmp_path.iterdir()) == []


def test_write_volume_refuses_bad_arguments(tmp_path):
    with pytest.raises(ReactomoError, match=r"shape \(3, 4\); give a non-empty 3D array"):
        write_volume(tmp_path / "v.tif", np.zeros((3, 4), np.uint8))
    with pytest.raises(ReactomoError, match=r"Compression 'zlip' is not supported \(did you mean 'zlib'\?\)"):
        write_volume(tmp_path / "v.tif", np.zeros((2, 3, 4), np.uint8), compression="zlip")
    with pytest.raises(ReactomoError, match=r"must be a numpy array"):
        write_volume(tmp_path / "v.tif", [[[1]]])


def test_read_labels_with_codes_outside_the_phase_table(tmp_path):
    labels = np.zeros((2, 3, 4), np.uint8)
    labels[0, 0, 0], labels[1, 2, 3], labels[1, 1, 1] = 2, 7, 9
    p = write_labels(tmp_path / "l.tif", labels)
    with pytest.raises(ReactomoError, match=r"holds code\(s\) 7, 9 that are not in the phase table \(0 = unlabelled, then 1, 2, 3, 4\)"):
        read_labels(p, codes=[1, 2, 3, 4])
    np.testing.assert_array_equal(read_labels(p, codes=[2, 7, 9]), labels)


def test_read_labels_of_the_wrong_shape_or_kind(tmp_path):
    p = write_labels(tmp_path / "l.tif", np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(ReactomoError, match=r"has shape \(2, 3, 4\) but the scan has shape \(2, 3, 5\); use labels made for this scan"):
        read_labels(p, shape=(2, 3, 5))
    tifffile.imwrite(tmp_path / "u16.tif", np.zeros((2, 3, 4), np.uint16), photometric="minisblack")
    with pytest.raises(ReactomoError, match=r"holds uint16 data; labels are 8-bit phase codes: save them as 8-bit \(in Fiji"):
        read_labels(tmp_path / "u16.tif")
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((3, 4), np.uint8))
    with pytest.raises(ReactomoError, match=r"holds one 2D image of shape \(3, 4\); labels are a 3D volume"):
        read_labels(tmp_path / "flat.tif")


# ---------------------------------------------------------------------------------------------------------------
# ScanInfo and the shared bad-input cases
# ---------------------------------------------------------------------------------------------------------------
def test_scaninfo_validation():
    with pytest.raises(ReactomoError, match=r"lacks dtype"):
        ScanInfo.from_dict({"path": "/a", "kind": "stack", "name": "a", "shape": [1, 2, 3]})
    with pytest.raises(ReactomoError, match=r"kind 'pile' is not known"):
        ScanInfo("/a", "pile", "a", (1, 2, 3), "uint8")  # type: ignore[arg-type]
    with pytest.raises(ReactomoError, match=r"not a \(z, y, x\) triple"):
        ScanInfo("/a", "stack", "a", (1, 2), "uint8")  # type: ignore[arg-type]
    assert ScanInfo("/a", "stack", "a", [1, 2, 3], "uint8").shape == (1, 2, 3)  # type: ignore[arg-type]


def test_shared_bad_cases_give_their_sentences(tmp_path):
    """The cases the CLI and page tests also use (tests/badinputs.py), opened the way the Data step opens scans."""
    from badinputs import BAD_CASES, make_bad_input

    for case, pattern in BAD_CASES.items():
        src = make_bad_input(case, tmp_path)
        roots = [tmp_path]
        with pytest.raises(ReactomoError, match=f"(?i){pattern}") as err:
            for info in discover_scans(src, allowed_roots=roots):
                with open_volume(info.path, kind=info.kind) as v:
                    check_volume_values(v)
        message = str(err.value)
        assert message.count("; ") >= 1 and "\n" not in message, (case, message)
