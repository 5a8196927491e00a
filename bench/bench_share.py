"""Export and import of the demo project as one .reactomo.zip: time and archive size, as whole CLI processes.

Run: .venv/bin/python bench/bench_share.py [--repeats 3]

The demo project (10 steps of 40 x 256 x 256, as "Load demo experiment" makes it) is segmented with the shipped model
and analysed, then ``python -m core export`` (scans by reference, and ``--with-scans``) and ``python -m core import``
each run as a separate process, the way a user waits for them (Python start-up and imports included). The peer is
what a user does without Reactomo's archive: ``zip -r`` of the project folder (no checksums, no checks on unpacking),
and ``unzip`` of it. Prints a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _timed(cmd: list[str], env: dict, cwd: Path) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=cwd, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from core.analysis.results import AnalysisConfig
    from core.workflow.analysis import analyse_segmentation
    from core.workflow.data import create_demo_project
    from core.workflow.segment import segment_project

    tmp = Path(tempfile.mkdtemp(prefix="bench-share-"))
    try:
        ws = tmp / "ws"
        ws.mkdir()
        t = time.perf_counter()
        p = create_demo_project("demo", workspace=ws)
        segment_project(p, ROOT / "models" / "demo-unet", name="s1")
        analyse_segmentation(p, "s1", config=AnalysisConfig())
        print(f"demo project made, segmented and analysed in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        env = {**os.environ, "REACTOMO_WORKSPACE": str(ws), "REACTOMO_DATA_ROOT": str(tmp)}
        py = [sys.executable, "-m", "core", "-q"]
        project_bytes = sum(f.stat().st_size for f in p.root.rglob("*") if f.is_file())
        rows = []
        for label, extra in (("scans by reference", []), ("with the scans", ["--with-scans"])):
            ex, im, size = [], [], 0
            for r in range(args.repeats):
                out = tmp / f"demo-{r}{'-s' if extra else ''}.reactomo.zip"
                ex.append(_timed(py + ["export", "demo", "--out", str(out), *extra], env, ROOT))
                size = out.stat().st_size
                im.append(_timed(py + ["import", str(out), "--name", f"copy{r}{'s' if extra else ''}"], env, ROOT))
                out.unlink()
            rows.append((f"Reactomo, {label}", statistics.median(ex), statistics.median(im), size))
        if shutil.which("zip") and shutil.which("unzip"):
            ex, im = [], []
            for r in range(args.repeats):
                out = tmp / f"plain-{r}.zip"
                ex.append(_timed(["zip", "-q", "-r", str(out), "demo"], env, ws))
                dest = tmp / f"unz-{r}"
                im.append(_timed(["unzip", "-q", str(out), "-d", str(dest)], env, tmp))
                size = out.stat().st_size
                out.unlink()
            rows.append(("`zip -r` / `unzip` of the project folder (peer: no checks)", statistics.median(ex),
                         statistics.median(im), size))
        print(f"\nDemo project: 10 steps of 40 x 256 x 256, {project_bytes / 1e6:.1f} MB on disk; "
              f"{platform.machine()}, {os.cpu_count()} cores, median of {args.repeats}.\n")
        print("| archive | export s | import s | archive MB |")
        print("|---|---|---|---|")
        for name, e, i, s in rows:
            print(f"| {name} | {e:.2f} | {i:.2f} | {s / 1e6:.1f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
