"""Command line: ``python -m core <command> ...`` drives the same core functions as the pages.

Every user error is one sentence on stderr (``error: ...``) and exit status 2; nothing is changed. Success prints
short human-readable lines on stdout (``--json`` where a machine reads the result).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from core.errors import ReactomoError

log = logging.getLogger("core.cli")

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one sentence and exit status 2, like every other user error."""

    def error(self, message: str):  # type: ignore[override]
        sub = self.prog.removeprefix("python -m core").strip()
        hint = f"python -m core {sub} --help" if sub else "python -m core --help"
        raise ReactomoError(f"{message[0].upper()}{message[1:]} (see `{hint}`).")


def _progress_printer(quiet: bool):
    last = {"pct": -10}

    def on_progress(fraction: float, message: str) -> None:
        pct = int(fraction * 100)
        if not quiet and (pct >= last["pct"] + 10 or fraction >= 1.0):
            last["pct"] = pct
            print(f"[{pct:3d}%] {message}", file=sys.stderr, flush=True)

    return on_progress


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(t) for t in text.replace(";", ",").split(",") if t.strip()]
    except ValueError:
        raise ReactomoError(f"{what} must be numbers separated by commas; got '{text}'.") from None
    if not all(math.isfinite(v) for v in values):
        raise ReactomoError(f"{what} must be finite numbers; got '{text}'.")
    return values


# ---------------------------------------------------------------------------------------------------- commands
def cmd_demo(args) -> int:
    from core.synthetic import DemoConfig, write_demo

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ReactomoError(f"The output folder {out} already exists and is not empty; choose a new folder.")
    config = _demo_config(args)
    dataset = write_demo(out, config, on_progress=_progress_printer(args.quiet))
    print(f"Demo experiment written to {out}: {len(dataset['steps'])} steps of {'×'.join(map(str, config.shape))} voxels, "
          f"label step {dataset['label_step']} (slices {dataset['label_slices']}).")
    return 0


def _demo_config(args):
    from core.synthetic import DemoConfig

    kwargs = {}
    if args.steps is not None:
        kwargs["steps"] = args.steps
    if args.shape is not None:
        kwargs["shape"] = tuple(args.shape)
    if args.seed is not None:
        kwargs["seed"] = args.seed
    if getattr(args, "voxel_size", None) is not None:
        kwargs["voxel_size_um"] = args.voxel_size
    if getattr(args, "interval", None) is not None:
        kwargs["interval_s"] = args.interval
    config = DemoConfig(**kwargs)
    config.validate()
    return config


def cmd_demo_project(args) -> int:
    from core.data import create_demo_project

    config = _demo_config(args)
    project = create_demo_project(args.name, config=config, if_missing=args.if_missing, on_progress=_progress_printer(args.quiet))
    print(f"Project '{project.name}' is ready at {project.root} ({len(project.scans())} steps).")
    return 0


def cmd_project(args) -> int:
    from core.project import create_project, delete_project, list_projects, open_project

    if args.action == "list":
        rows = list_projects()
        if args.json:
            print(json.dumps([_summary_dict(r) for r in rows], indent=2))
        elif not rows:
            print("No projects yet: `python -m core demo-project` makes one with the demo experiment.")
        for r in rows if not args.json else []:
            d = _summary_dict(r)
            print(f"{d['name']:<24} {d.get('n_steps', 0):>4} steps   updated {d.get('updated', '')}")
        return 0
    if not args.name:
        raise ReactomoError(f"`project {args.action}` needs a project name.")
    if args.action == "create":
        project = create_project(args.name)
        print(f"Created project '{project.name}' at {project.root}.")
    elif args.action == "delete":
        moved = delete_project(args.name)
        print(f"Moved project '{args.name}' to {moved} (recoverable).")
    elif args.action == "show":
        project = open_project(args.name)
        status = project.status()
        if args.json:
            print(json.dumps({"name": project.name, "root": str(project.root), "manifest": project.manifest,
                              "status": [_status_dict(s) for s in status]}, indent=2, default=str))
        else:
            print(f"Project '{project.name}' at {project.root}")
            for s in status:
                d = _status_dict(s)
                print(f"  [{'x' if d['done'] else ' '}] {d['title']:<14} {d['detail']}")
    return 0


def _summary_dict(r) -> dict:
    if hasattr(r, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(r)
    return dict(r)


def _status_dict(s) -> dict:
    if hasattr(s, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(s)
    return dict(s)


def cmd_data(args) -> int:
    """Set a project's scans and acquisition settings (the Data page, headless)."""
    from core.data import register_scans
    from core.phases import PhaseTable
    from core.project import data_roots, open_project

    project = open_project(args.project)
    # Parse everything before touching the project, so bad input changes nothing.
    times = _floats(args.times, "--times") if args.times else None
    phases = None
    if args.phases:
        try:
            phases = PhaseTable.from_dict(json.loads(Path(args.phases).read_text()))
        except FileNotFoundError:
            raise ReactomoError(f"The phase table file {args.phases} does not exist.") from None
        except json.JSONDecodeError as exc:
            raise ReactomoError(f"The phase table file {args.phases} is not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    roi = None
    if args.roi:
        z0, z1, y0, y1, x0, x1 = args.roi
        roi = {"z": [z0, z1], "y": [y0, y1], "x": [x0, x1]}
    with project.transaction():
        if phases is not None:
            project.set_phases(phases)
        if args.voxel_size is not None:
            project.set_voxel_size(args.voxel_size)
        if args.interval is not None:
            project.set_interval(args.interval)
        if args.scans:
            register_scans(project, args.scans, allowed_roots=data_roots(), times_s=times,
                           check_values=not args.no_check, on_progress=_progress_printer(args.quiet))
        elif times is not None:
            project.set_scans(project.scans(), times_s=times)
        if args.clear_roi:
            project.set_roi(None)
        elif roi is not None:
            project.set_roi(roi)
    scans = project.scans()
    m = project.manifest
    shape = "×".join(map(str, scans[0].shape)) if scans else "-"
    print(f"Project '{project.name}': {len(scans)} steps of {shape} {scans[0].dtype if scans else ''}, "
          f"voxel {m['voxel_size_um']} µm, region {m.get('roi') or 'whole volume'}.")
    return 0


def cmd_histograms(args) -> int:
    """Write the grey-value histogram of every step (the Data page chart) as CSV."""
    import numpy as np

    from core.atomic import atomic_write_text
    from core.data import step_histograms
    from core.project import open_project

    project = open_project(args.project)
    scans = project.scans()
    if not scans:
        raise ReactomoError(f"Project '{project.name}' has no scans yet; add them with `python -m core data {project.name} --scans PATH`.")
    edges, counts = step_histograms(scans, bins=args.bins)
    times = project.times_s()
    lines = ["step,name,time_s,bin_low,bin_high,fraction"]
    for i, s in enumerate(scans):
        for b in range(counts.shape[1]):
            lines.append(f"{i},{s.name},{times[i]:g},{edges[b]:.6g},{edges[b + 1]:.6g},{counts[i, b]:.6g}")
    text = "\n".join(lines) + "\n"
    if args.out:
        atomic_write_text(args.out, text)
        print(f"Wrote {len(scans)} histograms of {counts.shape[1]} bins to {args.out}.")
    else:
        sys.stdout.write(text)
    peaks = edges[np.argmax(counts, axis=1)]
    log.info("histogram peaks per step: %s", peaks)
    return 0


# ---------------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m core", description="Reactomo: phase volumes over time from 4D micro-CT, checked by the reaction's chemistry.")
    p.add_argument("--workspace", help="workspace folder holding the projects (default: ./workspace or $REACTOMO_WORKSPACE)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def demo_options(sp):
        sp.add_argument("--steps", type=int, help="number of time steps (default 10)")
        sp.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), help="voxels per step (default 40 256 256)")
        sp.add_argument("--seed", type=int, help="random seed (default 0)")
        sp.add_argument("--voxel-size", type=float, help="voxel size in µm (default 2.75)")
        sp.add_argument("--interval", type=float, help="seconds between steps (default 300)")

    d = sub.add_parser("demo", help="write the demo experiment (scans, truth, scribbles, dataset.json) to a folder")
    d.add_argument("out", help="output folder (new or empty)")
    demo_options(d)
    d.set_defaults(func=cmd_demo)

    dp = sub.add_parser("demo-project", help="create a project holding the demo experiment")
    dp.add_argument("--name", default="demo", help="project name (default: demo)")
    dp.add_argument("--if-missing", action="store_true", help="open the project if it already exists instead of failing")
    demo_options(dp)
    dp.set_defaults(func=cmd_demo_project)

    pr = sub.add_parser("project", help="list, create, show or delete projects")
    pr.add_argument("action", choices=["list", "create", "show", "delete"])
    pr.add_argument("name", nargs="?")
    pr.add_argument("--json", action="store_true", help="machine-readable output")
    pr.set_defaults(func=cmd_project)

    da = sub.add_parser("data", help="set a project's scans, times, voxel size, phase table and region (the Data page)")
    da.add_argument("project")
    da.add_argument("--scans", help="a folder, a glob, or a multi-page TIFF; a folder of 2D slices is one step")
    da.add_argument("--voxel-size", type=float, help="voxel size in µm")
    da.add_argument("--interval", type=float, help="seconds between steps (times = step × interval)")
    da.add_argument("--times", help="explicit time of every step in seconds, comma-separated")
    da.add_argument("--roi", type=int, nargs=6, metavar=("Z0", "Z1", "Y0", "Y1", "X0", "X1"), help="region of interest, half-open voxel ranges")
    da.add_argument("--clear-roi", action="store_true", help="use the whole volume")
    da.add_argument("--phases", help="JSON file with the phase table (a list of phases)")
    da.add_argument("--no-check", action="store_true", help="skip the NaN/constant-image check of every step")
    da.set_defaults(func=cmd_data)

    h = sub.add_parser("histograms", help="grey-value histogram of every step as CSV")
    h.add_argument("project")
    h.add_argument("--bins", type=int, default=256)
    h.add_argument("--out", help="CSV file (default: stdout)")
    h.set_defaults(func=cmd_histograms)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        if args.workspace:
            os.environ["REACTOMO_WORKSPACE"] = str(Path(args.workspace).resolve())
        if not getattr(args, "command", None):
            parser.print_help()
            return EXIT_USER_ERROR
        return int(args.func(args) or 0)
    except ReactomoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
