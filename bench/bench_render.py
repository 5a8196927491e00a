"""3D views: Reactomo's render against the obvious peer (scikit-image marching cubes + plotly), in one run.

Run: .venv/bin/python bench/bench_render.py [--edge 256] [--repeats 2]

Data: the label volume of the demo generator's last step (``DemoConfig(steps=2, shape=(E, E, E), imaging="fast")``),
one E³ block, bassanite and pores.

- Reactomo: :func:`core.workflow.render.render_labels` (surface nets, windowed-sinc smoothing, fast-simplification
  to the 300 k triangle budget, PNG, self-contained vtk.js HTML); its own timings per part.
- Peer: ``skimage.measure.marching_cubes`` on each phase's mask (level 0.5, µm spacing), then a plotly figure with
  one ``Mesh3d`` per phase written as a self-contained HTML file (``include_plotlyjs=True``), unreduced, as a user
  of those two libraries would.
- Cold: a fresh ``python -m core render`` process on the block, as a user waits for it. Warm: the cached view (the
  3D page's second visit).
- In the browser (Debian's headless Chromium, SwiftShader WebGL): seconds from opening each HTML file to its first
  drawn frame (a WebGL canvas with content), and the file's size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VS = 2.75
CODES = (2, 3)


def peer(labels: np.ndarray, out: Path) -> dict:
    import plotly.graph_objects as go
    from skimage.measure import marching_cubes

    colours = {2: "#f58518", 3: "#e45756"}
    t0 = time.perf_counter()
    meshes = {}
    for code in CODES:
        verts, faces, _, _ = marching_cubes((labels == code).astype(np.uint8), level=0.5, spacing=(VS,) * 3)
        meshes[code] = (verts, faces)
    t1 = time.perf_counter()
    fig = go.Figure([go.Mesh3d(x=v[:, 2], y=v[:, 1], z=v[:, 0], i=f[:, 0], j=f[:, 1], k=f[:, 2], color=colours[c],
                               name=str(c)) for c, (v, f) in meshes.items()])
    fig.write_html(out, include_plotlyjs=True, full_html=True)
    t2 = time.perf_counter()
    return {"mesh": t1 - t0, "reduce": 0.0, "export": t2 - t1, "total": t2 - t0,
            "triangles": int(sum(len(f) for _, f in meshes.values())), "html_mb": out.stat().st_size / 2**20}


def ours(seg: Path, out: Path, edge: int, factor: int) -> dict:
    from core.phases import DEFAULT_PHASES
    from core.render.surfaces import RenderConfig
    from core.workflow.render import render_labels

    marks = []
    t0 = time.perf_counter()
    result = render_labels(seg, out, RenderConfig(phases=CODES, block=(0, edge) * 3, factor=factor, max_triangles=300_000),
                           voxel_size_um=VS, phases=DEFAULT_PHASES,
                           on_progress=lambda f, m: marks.append((time.perf_counter(), m)))
    total = time.perf_counter() - t0

    def at(prefix: str) -> float:
        return next(t for t, m in marks if m.startswith(prefix)) - t0

    mesh = at("Reducing")
    reduce = at("3D numbers") - mesh
    numbers = at("Saving") - at("3D numbers")
    return {"mesh": mesh, "reduce": reduce, "numbers": numbers, "export": total - at("Saving"), "total": total,
            "triangles": int(sum(result.record["triangles"].values())),
            "html_mb": result.html.stat().st_size / 2**20,
            "kept": ", ".join(f"{k} {v * 100:.1f} %" for k, v in result.record["volume_kept"].items())}


def first_frame(html: Path, selector_js: str, limit_s: float = 120.0) -> float | None:
    """Seconds from navigation to a drawn WebGL canvas in headless Chromium; None when none came within ``limit_s``."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import browser_page
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    with browser_page(height=900) as page:
        page.set_default_timeout(limit_s * 1000)
        t0 = time.perf_counter()
        try:
            page.goto(html.as_uri(), timeout=limit_s * 1000)
            page.wait_for_function(selector_js, timeout=limit_s * 1000)
        except PlaywrightTimeout:
            return None
        return time.perf_counter() - t0


def _s(v: float | None, limit: float = 120.0) -> str:
    return f"{v:.1f}" if v is not None else f"none within {limit:.0f}"


VTK_FRAME = "() => { const c = document.querySelector('canvas'); return c && c.width > 100; }"
PLOTLY_FRAME = "() => document.querySelector('.js-plotly-plot canvas') !== null"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--edge", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import tifffile

    from core.imaging.synthetic import DemoConfig, make_demo

    e = args.edge
    exp = make_demo(DemoConfig(steps=2, shape=(e, e, e), seed=0, imaging="fast"))
    labels = exp.truth[1]
    variants = {f"Reactomo `render`, {e}³ at full resolution": (e, 1),
                f"Reactomo `render`, {e}³ downsampled by 2": (e, 2),
                f"Reactomo `render`, {e // 2}³ (the page's default block)": (e // 2, 1)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        seg = tmp / "seg.tif"
        tifffile.imwrite(seg, labels)
        runs: dict[str, list[dict]] = {"peer": [], **{name: [] for name in variants}}
        for i in range(args.repeats):
            runs["peer"].append(peer(labels, tmp / f"peer{i}.html"))
            for j, (name, (edge, factor)) in enumerate(variants.items()):
                runs[name].append(ours(seg, tmp / f"ours{i}-{j}", edge, factor))
        frames = {name: first_frame(tmp / f"ours0-{j}" / "view.html", VTK_FRAME) for j, name in enumerate(variants)}
        frames["peer"] = first_frame(tmp / "peer0.html", PLOTLY_FRAME)
        cold = {}
        for j, (name, (edge, factor)) in enumerate(variants.items()):
            t0 = time.perf_counter()  # a whole fresh process, as `render` or a first visit of the 3D page waits
            subprocess.run([sys.executable, "-m", "core", "-q", "render", "--segmentation", str(seg), "--out",
                            str(tmp / f"cold{j}"), "--block", "0", str(edge), "0", str(edge), "0", str(edge),
                            "--factor", str(factor)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL, env={**os.environ})
            cold[name] = time.perf_counter() - t0

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    from bench.bench_forest import machine

    print(f"Demo's last step ({e}³ labels), bassanite and pores, {VS} µm voxels, budget 300 k triangles; {machine()}; "
          f"{time.strftime('%Y-%m-%d')}; median of {args.repeats}")
    print()
    print("| | mesh s | reduce s | export s | total s | triangles | enclosed / voxel volume | HTML MB | "
          "first frame in Chromium s | cold: fresh process + first frame s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| scikit-image marching cubes + plotly Mesh3d, {e}³ | {med('peer', 'mesh'):.2f} | – | "
          f"{med('peer', 'export'):.2f} | {med('peer', 'total'):.2f} | {runs['peer'][0]['triangles']:,} | – | "
          f"{med('peer', 'html_mb'):.1f} | {_s(frames['peer'])} | – |")
    for name in variants:
        f = frames[name]
        print(f"| {name} | {med(name, 'mesh'):.2f} | {med(name, 'reduce'):.2f} | {med(name, 'export'):.2f} | "
              f"{med(name, 'total'):.2f} | {runs[name][0]['triangles']:,} | {runs[name][0]['kept']} | "
              f"{med(name, 'html_mb'):.1f} | {_s(f)} | {cold[name]:.1f} + {_s(f)} |")
    first = next(iter(variants))
    print()
    print(f"Same {e}³ block, meshing to a written HTML: peer/ours {med('peer', 'total') / med(first, 'total'):.2f}×; "
          f"HTML {med('peer', 'html_mb') / med(first, 'html_mb'):.0f}× smaller; first frame ours {_s(frames[first])} s, "
          f"the peer's {_s(frames['peer'])} s.")


if __name__ == "__main__":
    main()
