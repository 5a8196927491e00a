"""Many users at once: N browsers browsing a big scan on one dashboard server.

Run: .venv/bin/python bench/bench_load.py [--users 1,4,8] [--actions 20] [--shape 512,1024,1024]

- Data: one project holding ONE scan of 512×1024×1024 uint16 (1 GiB, an uncompressed multi-page TIFF written with
  :func:`core.imaging.io.write_volume`, so memory-mapped): a smooth random field in three grey levels (pores, gypsum,
  a bright phase) plus noise, fixed seed. The scan is written once; the OS file cache is warm for every N.
- Server: ``streamlit run app.py`` as the browser tests start it (127.0.0.1, headless), a FRESH server for each N, so
  that each N's memory starts from the same idle server (and its caches are cold: the first Data page computes the
  histograms and the display range once for everyone).
- Users: one headless Debian Chromium, N browser contexts (separate Streamlit sessions), one asyncio task each
  (Playwright's async API). Each user opens the home page, then ``/data?project=NAME`` (the "open" time), then does
  ``--actions`` actions with a think time of 0.2-0.8 s before each (not counted): four moves of the slice slider of
  the slice viewer with a key (ArrowLeft/Right: one slice, PageUp/Down: 10 % of the slices; the new slice is a
  1024×1024 XY image the server reads, windows and sends as a PNG), then two page switches through the sidebar
  (Data → Home or Analysis, then back to Data), and again; 20 actions = 14 slice moves + 6 page switches.
- Latency of an action: from the key press or click until the new content is shown (the slice viewer's title names
  the new slice; the page's own title) AND the app is idle again (Streamlit's status widget detached).
- Memory: the resident memory (RSS) of the server process and its children (psutil), sampled every 0.5 s: idle
  before the users, the peak while they browse, and 3 s after they closed their tabs.

The browsers run on the same machine as the server, so on a small machine they compete for the same cores: the
latencies are what users would see from a server with that much CPU left over, not the server's time alone.
Prints a Markdown table for the README. Cleans up its temporary workspace and stops the server (and any worker the
server started) at the end, also on errors or Ctrl+C.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROJECT = "load"
CHROMIUM = os.environ.get("REACTOMO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [  # as tests/conftest.py: Debian's Chromium in a container, never `playwright install`
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
STATUS = '[data-testid="stStatusWidget"]'
SLIDER = 'input[type="range"][aria-label="Slice (z)"]'
# the slice viewer shows the slider's value in its title ("... · XY slice 257"); true once both agree (and moved)
SLICE_SHOWN = """(old) => {
  const i = document.querySelector('%s');
  if (!i || (old !== null && i.value === old)) return false;
  return [...document.querySelectorAll('.js-plotly-plot .gtitle')].some(e => e.textContent.endsWith('slice ' + i.value));
}""" % SLIDER.replace("'", "\\'")


# ------------------------------------------------------------------------------------------------ the scan
def write_scan(path: Path, shape: tuple[int, int, int], seed: int = 0) -> None:
    """A smooth random field (cells of ~16 slices × 32 px) in three grey levels plus Gaussian noise, uint16."""
    from scipy.ndimage import zoom

    from core.imaging.io import write_volume

    nz, ny, nx = shape
    rng = np.random.default_rng(seed)
    cz, cy, cx = nz // 16 + 2, ny // 32 + 2, nx // 32 + 2
    coarse = rng.standard_normal((cz, cy, cx)).astype(np.float32)
    planes = np.stack([zoom(c, (ny / cy, nx / cx), order=1) for c in coarse])  # (cz, ny, nx), smooth in y and x
    vol = np.empty(shape, dtype=np.uint16)
    levels = np.array([6000, 18000, 26000], dtype=np.float32)  # pores, gypsum, a bright phase
    zpos = np.linspace(0, cz - 1.001, nz)
    for z in range(nz):  # linear in z between the coarse planes; one slice at a time keeps the temporaries small
        k, w = int(zpos[z]), np.float32(zpos[z] - int(zpos[z]))
        f = (1 - w) * planes[k] + w * planes[k + 1]
        grey = levels[np.digitize(f, (-0.55, 0.6))] + 1500.0 * rng.standard_normal((ny, nx), dtype=np.float32)
        vol[z] = np.clip(grey, 0, 65535).astype(np.uint16)
    write_volume(path, vol)


def make_workspace(tmp: Path, shape: tuple[int, int, int]) -> Path:
    from core.workflow.data import register_scans
    from core.workflow.project import create_project

    ws = tmp / "workspace"
    ws.mkdir()
    scan = tmp / "data" / "scan_t000.tif"
    write_scan(scan, shape)
    project = create_project(PROJECT, workspace=ws, voxel_size_um=2.75)
    with project.transaction():  # as the Data page's "Open scans" does
        register_scans(project, scan, allowed_roots=[tmp])
    return ws


# ------------------------------------------------------------------------------------------------ the server
class Server:
    """``streamlit run app.py`` on a free local port (the lines of tests/conftest.py's launch_streamlit), in its own
    process group so that stop() ends it and anything it started."""

    def __init__(self, workspace: Path, data_root: Path, log_path: Path):
        self.workspace, self.log_path = workspace, log_path
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "REACTOMO_WORKSPACE": str(workspace), "REACTOMO_DATA_ROOT": str(data_root)}
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.time() + 90
        while True:
            try:
                if urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"streamlit did not start: {log_path.read_text()[-2000:]}")
                time.sleep(0.3)

    def rss_mb(self) -> float:
        """Resident memory of the server and its children, MB (MiB)."""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return float("nan")
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                self.proc.wait(10)
        stop_worker(self.workspace)
        self._log.close()


def stop_worker(workspace: Path) -> None:
    """Kill the workspace's job worker, if the server started one (its own session: nothing else stops it)."""
    import json

    try:
        pid = json.loads((Path(workspace) / ".worker.json").read_text())["pid"]
        os.kill(int(pid), signal.SIGKILL)
    except (OSError, ValueError, KeyError, TypeError):
        pass


class Sampler(threading.Thread):
    def __init__(self, server: Server, every: float = 0.5):
        super().__init__(daemon=True)
        self.server, self.every, self.samples = server, every, []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append(self.server.rss_mb())
            self._stop_event.wait(self.every)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


# ------------------------------------------------------------------------------------------------ the users
async def idle(pg) -> None:
    await pg.wait_for_selector(STATUS, state="detached", timeout=180_000)


async def user(browser, url: str, seed: int, n_actions: int, deadline: float, out: dict) -> None:
    rng = random.Random(seed)
    ctx = await browser.new_context(viewport={"width": 1500, "height": 1000})
    pg = await ctx.new_page()
    pg.set_default_timeout(180_000)
    try:
        # a fresh server answers its very first deep link with "page not found": open the home page first
        await pg.goto(url + "/")
        await pg.wait_for_selector('[data-testid="stApp"]')
        await pg.wait_for_timeout(300)
        await idle(pg)
        t0 = time.perf_counter()
        await pg.goto(f"{url}/data?project={PROJECT}")
        await pg.wait_for_function(SLICE_SHOWN, arg=None)
        await idle(pg)
        out["open"].append(time.perf_counter() - t0)
        nav = '[data-testid="stSidebarNav"] a[href="%s"]'
        detour = done = 0
        while done < n_actions and time.time() < deadline:
            await pg.wait_for_timeout(rng.uniform(200, 800))  # think time, not counted
            if done % 6 == 4 and done + 2 <= n_actions:  # after 4 slices: away from the Data page and back (2 actions)
                away = ("/", "Reactomo") if detour % 2 == 0 else ("/analysis", "Analysis")
                detour += 1
                done += 2
                t0 = time.perf_counter()
                await pg.click(nav % (url + away[0]))
                await pg.locator("h1", has_text=away[1]).first.wait_for()
                await idle(pg)
                out["page"].append(time.perf_counter() - t0)
                await pg.wait_for_timeout(rng.uniform(200, 800))
                t0 = time.perf_counter()
                await pg.click(nav % (url + "/data"))
                await pg.wait_for_function(SLICE_SHOWN, arg=None)
                await idle(pg)
                out["page"].append(time.perf_counter() - t0)
                continue
            done += 1
            slider = pg.locator(SLIDER)
            old = await slider.input_value()
            top = int(await slider.get_attribute("max"))
            v = int(old)
            key = rng.choice(["ArrowRight", "ArrowLeft", "PageUp", "PageDown", "PageUp", "PageDown"])
            if (v >= top - top // 10 and key in ("ArrowRight", "PageUp")) or (v <= top // 10 and key in ("ArrowLeft", "PageDown")):
                key = {"ArrowRight": "ArrowLeft", "PageUp": "PageDown", "ArrowLeft": "ArrowRight", "PageDown": "PageUp"}[key]
            t0 = time.perf_counter()
            await slider.press(key)
            await pg.wait_for_function(SLICE_SHOWN, arg=old)
            await idle(pg)
            out["slice"].append(time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - one user's failure is counted, the others go on
        out["errors"].append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    finally:
        await ctx.close()


async def run_users(url: str, n: int, n_actions: int, max_seconds: float) -> dict:
    from playwright.async_api import async_playwright

    out = {"open": [], "slice": [], "page": [], "errors": []}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            deadline = time.time() + max_seconds
            await asyncio.gather(*(user(browser, url, 1000 * n + i, n_actions, deadline, out) for i in range(n)))
        finally:
            await browser.close()
    return out


def one_n(tmp: Path, ws: Path, n: int, args) -> dict:
    server = Server(ws, data_root=tmp, log_path=tmp / f"streamlit-{n}.log")
    try:
        time.sleep(1.0)
        before = server.rss_mb()
        sampler = Sampler(server)
        sampler.start()
        t0 = time.perf_counter()
        try:
            res = asyncio.run(run_users(server.url, n, args.actions, args.max_seconds))
        finally:
            wall = time.perf_counter() - t0
            time.sleep(3.0)  # the tabs are closed; let the server drop the sessions
            after = server.rss_mb()
            sampler.stop()
        res.update(n=n, wall=wall, before=before, peak=max([before, after, *sampler.samples]), after=after)
        if res["errors"]:
            print(f"N={n}: {len(res['errors'])} user(s) stopped early: {res['errors'][:3]}", file=sys.stderr)
            print(server.log_path.read_text()[-1500:], file=sys.stderr)
        return res
    finally:
        server.stop()


def pct(xs, q) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", default="1,4,8", help="comma-separated numbers of simultaneous users")
    ap.add_argument("--actions", type=int, default=20, help="actions per user (a page switch counts as two)")
    ap.add_argument("--shape", default="512,1024,1024", help="z,y,x of the scan")
    ap.add_argument("--max-seconds", type=float, default=150.0, help="stop each N's users after this long")
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    users = [int(v) for v in args.users.split(",")]

    # a SIGTERM (e.g. `timeout`) runs the finally blocks too: the server and the temporary folder go
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="reactomo-load-"))
    rows = []
    try:
        t0 = time.perf_counter()
        ws = make_workspace(tmp, shape)
        size_mb = (tmp / "data" / "scan_t000.tif").stat().st_size / 2**20
        print(f"scan {'×'.join(map(str, shape))} uint16, {size_mb:.0f} MB, written in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
        for n in users:
            res = one_n(tmp, ws, n, args)
            rows.append(res)
            lat = res["slice"] + res["page"]
            print(f"N={n}: {len(lat)} actions in {res['wall']:.0f} s, p50 {pct(lat, 50):.2f} s, "
                  f"peak {res['peak']:.0f} MB", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    cpu = platform.processor() or platform.machine()
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores ({cpu}), no GPU; one scan {'×'.join(map(str, shape))} "
          f"uint16 ({size_mb:.0f} MB, uncompressed, memory-mapped); {args.actions} actions per user planned, "
          f"think time 0.2-0.8 s; a fresh server per N")
    print()
    print("| users | actions | latency p50 / p90 / p99 (s) | slice p50 / p90 (s) | page switch p50 / p90 (s) | "
          "first Data page, max (s) | server RSS idle (MB) | peak RSS (MB) | RSS after (MB) |")
    print("|---:|---:|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        lat = r["slice"] + r["page"]
        failed = f" ({len(r['errors'])} user(s) stopped early)" if r["errors"] else ""
        print(f"| {r['n']} | {len(lat)}{failed} | {pct(lat, 50):.2f} / {pct(lat, 90):.2f} / {pct(lat, 99):.2f} | "
              f"{pct(r['slice'], 50):.2f} / {pct(r['slice'], 90):.2f} | {pct(r['page'], 50):.2f} / {pct(r['page'], 90):.2f} | "
              f"{max(r['open'], default=float('nan')):.1f} | {r['before']:.0f} | {r['peak']:.0f} | {r['after']:.0f} |")


if __name__ == "__main__":
    main()
