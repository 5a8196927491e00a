"""Bad scan inputs, made as real files, shared by the core, CLI and page tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

#: case -> a fragment of the one-sentence error it must produce (case-insensitive regex).
BAD_CASES = {
    "not_tiff": r"not a TIFF|TIFF",
    "png_named_tif": r"not a (valid )?TIFF|corrupt|cannot be read|TIFF",
    "truncated": r"truncated|corrupt|cannot be read|incomplete",
    "rgb": r"RGB|colour|greyscale|grayscale",
    "two_d": r"2D",
    "shapes_differ": r"shape",
    "nan": r"NaN",
    "inf": r"inf",
    "constant": r"constant|every voxel",
    "empty_folder": r"no TIFF",
    "missing": r"does not exist|not found|no such",
    "outside_root": r"outside the allowed data root",
    "int32": r"uint8, uint16 or float32|unsupported|supported",
}


def make_bad_input(case: str, base: Path) -> str:
    """Create the bad input ``case`` inside ``base`` and return the path (or path text) to open."""
    base = Path(base) / f"bad_{case}"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    good = rng.integers(100, 4000, size=(6, 20, 24), dtype=np.uint16)
    if case == "not_tiff":
        p = base / "notes.txt"
        p.write_text("these are not scans\n")
        return str(p)
    if case == "png_named_tif":
        from PIL import Image

        p = base / "scan.tif"
        Image.fromarray(good[0].astype(np.uint8)).save(p, format="PNG")
        return str(p)
    if case == "truncated":
        p = base / "scan.tif"
        tifffile.imwrite(p, good)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
        return str(p)
    if case == "rgb":
        p = base / "scan.tif"
        tifffile.imwrite(p, rng.integers(0, 255, size=(6, 20, 24, 3), dtype=np.uint8), photometric="rgb")
        return str(p)
    if case == "two_d":
        p = base / "slice.tif"
        tifffile.imwrite(p, good[0])
        return str(p)
    if case == "shapes_differ":
        tifffile.imwrite(base / "t000.tif", good)
        tifffile.imwrite(base / "t001.tif", good[:, :18])
        return str(base)
    if case in ("nan", "inf"):
        p = base / "scan.tif"
        vol = good.astype(np.float32)
        vol[3, 5, 5] = np.nan if case == "nan" else np.inf
        tifffile.imwrite(p, vol)
        return str(p)
    if case == "constant":
        p = base / "scan.tif"
        tifffile.imwrite(p, np.full((6, 20, 24), 1234, dtype=np.uint16))
        return str(p)
    if case == "empty_folder":
        return str(base)
    if case == "missing":
        return str(base / "no_such_scan.tif")
    if case == "outside_root":
        return "/etc"
    if case == "int32":
        p = base / "scan.tif"
        tifffile.imwrite(p, good.astype(np.int32))
        return str(p)
    raise KeyError(case)
