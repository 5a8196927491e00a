"""Static images (PNG, SVG, PDF) of the Analysis charts, for papers and slides.

Rendering goes through kaleido 1.x, which drives a headless Chrome/Chromium (Debian's ``/usr/bin/chromium``; the
``BROWSER_PATH`` environment variable points it elsewhere). Starting the browser costs about 2 s, so
:func:`figure_images` renders every chart in ONE browser session. Nothing is downloaded at run time: when no browser
is found the user gets one sentence saying what to install.

Each exported chart carries its method sentence (``fig.layout.meta["method"]``) as a small note under the plot, so
an image pasted into a paper keeps how its numbers were made; the figure on the page is not changed.
"""

from __future__ import annotations

import asyncio
import html
import re
import textwrap
import threading
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from core.errors import ReactomoError

__all__ = ["FORMATS", "figure_images", "slugify", "with_method_note", "zip_images"]

#: The formats :func:`figure_images` writes.
FORMATS = ("png", "svg", "pdf")
#: Width in layout pixels when neither the caller nor the figure gives one (the page's charts stretch to the column).
DEFAULT_WIDTH = 1000
DEFAULT_HEIGHT = 500
_NOTE_FONT = 11
_NOTE_LINE_PX = 15


def slugify(name: str) -> str:
    """A file-name-safe form of a chart title: ``"Molar evolution (internal standard)"`` -> ``molar-evolution-internal-standard``."""
    s = re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-")
    return s or "chart"


def _unique_slugs(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        s = slugify(n)
        if s in seen:
            seen[s] += 1
            s = f"{s}-{seen[s]}"
        else:
            seen[s] = 1
        out.append(s)
    return out


def _method(fig: go.Figure) -> str:
    meta = fig.layout.meta
    return str(meta.get("method", "")) if isinstance(meta, dict) else ""


def with_method_note(fig: go.Figure, *, width: float | None = None, height: float | None = None) -> go.Figure:
    """A copy of ``fig`` sized for export, with its method sentence as a small grey note under the plot.

    The bottom margin grows by the note's height. With ``height`` the image keeps that height (the plot shrinks);
    without it the figure grows. ``fig`` itself is not changed.
    """
    out = go.Figure(fig)
    w = float(width or fig.layout.width or DEFAULT_WIDTH)
    base_h = float(fig.layout.height or DEFAULT_HEIGHT)
    out.update_layout(width=w, height=float(height or base_h))
    method = _method(fig).strip()
    if not method:
        return out
    m = fig.layout.margin
    left, right, bottom = (m.l if m.l is not None else 80), (m.r if m.r is not None else 80), (m.b if m.b is not None else 80)
    top = m.t if m.t is not None else 100
    chars = max(40, int((w - left - right) / (0.55 * _NOTE_FONT)))  # average glyph ≈ 0.55 em
    lines = textwrap.wrap(method, chars)
    extra = _NOTE_LINE_PX * len(lines) + 14
    # a horizontal legend under the plot (the charts' layout) can wrap onto more rows than the bottom margin holds:
    # the note goes under the legend's estimated last row, and the margin grows by the overflow too
    plot_h = base_h - top - bottom
    below = bottom
    leg = fig.layout.legend
    if leg.orientation == "h" and leg.y is not None and leg.y < 0:
        below = max(bottom, -float(leg.y) * plot_h + _legend_height(fig, w) + 8)
    out.update_layout(height=float(height or base_h + extra + below - bottom), margin_b=below + extra)
    out.add_annotation(text="<br>".join(html.escape(line, quote=False) for line in lines), xref="paper", yref="paper",
                       x=0, y=0, xanchor="left", yanchor="top", yshift=-below, showarrow=False, align="left",
                       font=dict(size=_NOTE_FONT, color="#555555"), name="method")
    return out


def _legend_height(fig: go.Figure, width: float) -> float:
    """Estimated pixel height of a horizontal legend: items (symbol + text at ~0.6 em a glyph) in equal columns."""
    size = float((fig.layout.legend.font.size if fig.layout.legend.font and fig.layout.legend.font.size else None)
                 or (fig.layout.font.size if fig.layout.font and fig.layout.font.size else None) or 12)
    items = [str(t.name or "") for t in fig.data if t.showlegend is not False and t.name]
    if not items:
        return 0.0
    # plotly lays a horizontal legend out in columns as wide as its widest item
    widest = max(40 + 0.6 * size * len(name) + 10 for name in items)
    per_row = max(1, int(width // widest))
    rows = -(-len(items) // per_row)
    return rows * (size + 8)


def _check_format(fmt: Any) -> str:
    f = str(fmt).lower().lstrip(".") if isinstance(fmt, str) else None
    if f not in FORMATS:
        raise ReactomoError(f"The image format must be one of {', '.join(FORMATS)}; got {fmt!r}.")
    return f


def _no_browser(fmt: str) -> ReactomoError:
    return ReactomoError(f"{fmt.upper()} export needs Chromium (Debian: apt install chromium; or set BROWSER_PATH to a "
                         "Chrome/Chromium executable); the charts can still be saved as SVG from the chart toolbar.")


async def _render(specs: list[tuple[str, dict, dict]], browser: str | None, timeout: float) -> dict[str, bytes]:
    import kaleido

    kw: dict[str, Any] = {"path": browser} if browser else {}
    out: dict[str, bytes] = {}
    # mathjax=False: no CDN fetch (the charts use no LaTeX); plotly.js comes from the installed plotly package
    async with kaleido.Kaleido(n=1, timeout=timeout, mathjax=False, **kw) as k:
        for name, fig, opts in specs:
            out[name] = await k.calc_fig(fig, opts=opts)
    return out


def _run_in_thread(coro_fn, *args) -> Any:
    """Run an async function in its own thread and event loop (Streamlit's script thread may hold a loop)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro_fn(*args))
        except BaseException as exc:  # noqa: BLE001 - carried to the caller
            box["error"] = exc

    t = threading.Thread(target=target, name="reactomo-export", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def figure_images(figs: Sequence[tuple[str, go.Figure]], fmt: str = "png", *, scale: float = 2,
                  width: float | None = None, height: float | None = None, browser: str | None = None,
                  timeout: float = 90) -> dict[str, bytes]:
    """Render every ``(name, figure)`` to ``fmt`` in one browser session; ``{slug(name): bytes}`` in input order.

    Parameters
    ----------
    figs : sequence of (str, plotly Figure)
        E.g. :func:`core.analysis.results.figures`; names become file-name slugs (:func:`slugify`, made unique).
    fmt : {"png", "svg", "pdf"}
    scale : float
        Pixel density of raster formats: the PNG is ``width × scale`` by ``height × scale`` pixels.
    width, height : float, optional
        Size in layout pixels (default: the figure's own, else 1000 wide; the figure grows by its method note).
    browser : str, optional
        Chrome/Chromium executable (default: ``BROWSER_PATH``, else the one on ``PATH``).
    timeout : float
        Seconds allowed per image.

    Raises
    ------
    ReactomoError
        Unknown format, bad size, no browser, or the browser failing (one sentence; never a download attempt).
    """
    fmt = _check_format(fmt)
    try:
        scale = float(scale)
        ok = 0 < scale <= 10 and all(v is None or 10 <= float(v) <= 10_000 for v in (width, height))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ReactomoError(f"The image scale must be from 0 to 10 and the size from 10 to 10000 pixels; got scale "
                            f"{scale!r}, width {width!r}, height {height!r}.")
    names = _unique_slugs([n for n, _ in figs])
    specs = []
    for slug, (_, fig) in zip(names, figs):
        f = with_method_note(fig, width=width, height=height)
        specs.append((slug, f.to_dict(), {"format": fmt, "scale": scale, "width": f.layout.width, "height": f.layout.height}))
    if not specs:
        return {}
    try:
        from choreographer.errors import ChromeNotFoundError
    except ImportError:
        raise ReactomoError(f"{fmt.upper()} export needs the kaleido package (pip install kaleido==1.5.0) and Chromium; "
                            "the charts can still be saved as SVG from the chart toolbar.") from None
    try:
        return _run_in_thread(_render, specs, browser, float(timeout))
    except ChromeNotFoundError:
        raise _no_browser(fmt) from None
    except (FileNotFoundError, PermissionError) as exc:  # a browser path that is not an executable
        raise _no_browser(fmt) from exc
    except Exception as exc:  # noqa: BLE001 - the browser crashed or timed out: one sentence for the user
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ReactomoError(f"The charts could not be rendered as {fmt.upper()} ({detail}); check that Chromium "
                            "starts (Debian: apt install chromium), or save them as SVG from the chart toolbar.") from None


def zip_images(images: dict[str, bytes], fmt: str) -> bytes:
    """A zip archive of ``{name: bytes}`` as ``<name>.<fmt>`` files."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED if fmt == "svg" else zipfile.ZIP_STORED) as z:
        for name, data in images.items():
            z.writestr(f"{name}.{fmt}", data)
    return buf.getvalue()
