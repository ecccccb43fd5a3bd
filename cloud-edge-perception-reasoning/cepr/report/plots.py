"""The report's figures, as PNG bytes (matplotlib, Agg canvas; imported only when a report is made, so
``import cepr`` never pulls matplotlib).

Each function takes plain values (cases, curves) and returns ``bytes`` of one PNG. Figures are built on a bare
``Figure`` with the Agg canvas, never through pyplot, so no global backend or figure state is touched.
"""

from __future__ import annotations

import io
import math

import numpy as np

from cepr.errors import CeprError
from cepr.metrics.joint import wilson_interval

DPI = 110


def _mpl():
    try:
        import matplotlib
    except ImportError:
        raise CeprError("the report's plots need matplotlib: pip install -e '.[report]' (or pip install "
                        "matplotlib)") from None
    del matplotlib  # only checked here: figures render on the Agg canvas below, the global backend is left alone
    from matplotlib.figure import Figure

    return Figure


def figure(w: float, h: float):
    return _mpl()(figsize=(w, h), dpi=DPI, layout="constrained")


def png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def colours(n: int) -> list:
    """One colour per case, the same in every figure."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _style(i: int) -> str:
    return ("-", "--", "-.", ":")[(i // 10) % 4]


def call_performance(points: list[dict], random_line: list | None, oracle: list | None,
                     curves: dict[str, list] | None = None) -> bytes:
    """Accuracy against cloud share: one marker per case with its Wilson interval (``points``: label, share,
    accuracy, lo, hi, colour, bound), the Random line and the Oracle curve where known, and per policy its
    settings joined into a curve (``curves``: policy -> closed points)."""
    fig = figure(11.0, 5.6)
    ax = fig.add_subplot()
    if random_line:
        xs, ys = zip(*random_line)
        ax.plot(xs, ys, "--", color="0.45", lw=1.4, label="Random (edge-only to cloud-only)")
    if oracle:
        xs, ys = zip(*oracle)
        ax.plot(xs, ys, ":", color="0.15", lw=1.6, label="Oracle (reads the labels)")
    for pts in (curves or {}).values():
        xs, ys = zip(*pts)
        ax.plot(xs, ys, "-", lw=0.8, alpha=0.35, color="0.3")
    for p in points:
        if math.isnan(p["share"]) or math.isnan(p["accuracy"]):
            continue
        yerr = None
        if not (math.isnan(p["lo"]) or math.isnan(p["hi"])):
            yerr = [[max(0.0, p["accuracy"] - p["lo"])], [max(0.0, p["hi"] - p["accuracy"])]]  # rounding
        ax.errorbar([p["share"]], [p["accuracy"]], yerr=yerr, fmt="D" if p["bound"] else "o", ms=7,
                    color=p["colour"], capsize=3, lw=1, label=p["label"] + (" (bound)" if p["bound"] else ""),
                    mfc="white" if p["bound"] else p["colour"])
    ax.set_xlabel("cloud share (samples sent to the cloud)")
    ax.set_ylabel("accuracy (95% Wilson interval)")
    ax.set_xlim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return png(fig)


def sweep_curves(doc: dict) -> bytes:
    """A ``cepr sweep`` result: every policy's call-performance curve, with the Random and Oracle references."""
    fig = figure(11.0, 5.6)
    ax = fig.add_subplot()
    refs = doc.get("references") or {}
    # a curve of only its closing points (EdgeOnly, CloudOnly) is the Random line: drawn once, as Random
    curves = {k: v for k, v in (doc.get("curves") or {}).items() if len(v.get("points") or []) > 2}
    cols = colours(len(curves))
    for (name, c), col in zip(curves.items(), cols):
        xs, ys = zip(*c["points"])
        ax.plot(xs, ys, "-o", ms=3, lw=1.4, color=col,
                label=f"{name} (APGR {_num(c.get('apgr'), 3)})" + (", reads the labels" if c.get("upper_bound")
                                                                      else ""))
    for key, style, colour, title in (("random", "--", "0.45", "Random reference"),
                                      ("oracle", ":", "0.1", "Oracle reference")):
        r = refs.get(key) or {}
        if r.get("points"):
            xs, ys = zip(*r["points"])
            ax.plot(xs, ys, style, color=colour, lw=1.8, label=f"{title} (APGR {_num(r.get('apgr'), 3)})")
    for key, marker in (("edge_only", "s"), ("cloud_only", "^")):
        r = refs.get(key) or {}
        if r.get("accuracy") is not None:
            ax.plot([r["cloud_share"]], [r["accuracy"]], marker, color="k", ms=7,
                    label=key.replace("_", "-") + f" {r['accuracy']:.3f}")
    ax.set_xlabel("cloud share")
    ax.set_ylabel("accuracy")
    ax.set_xlim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return png(fig)


def latency_cdfs(series: list[tuple[str, np.ndarray, object]]) -> bytes:
    """Empirical CDF of per-sample end-to-end latency per case (``series``: label, latencies ms, colour); log x."""
    fig = figure(11.0, 5.2)
    ax = fig.add_subplot()
    lo, hi = math.inf, -math.inf
    for i, (label, lat, col) in enumerate(series):
        lat = np.sort(lat[np.isfinite(lat)])
        if lat.size == 0:
            continue
        lo, hi = min(lo, float(lat[0])), max(hi, float(lat[-1]))
        y = np.arange(1, lat.size + 1) / lat.size
        ax.step(np.r_[lat[0], lat], np.r_[0.0, y], where="post", color=col, ls=_style(i), lw=1.5,
                label=f"{label} (p95 {np.percentile(lat, 95):.0f} ms)")
    if math.isfinite(lo):
        _log_ms_axis(ax, lo, hi)
    for ms in (150, 300):
        ax.axvline(ms, color="0.6", lw=0.8, ls=":")
    ax.axhline(0.95, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("end-to-end latency per sample, ms (edge + cloud round trip with the modelled link; log scale)")
    ax.set_ylabel("share of samples answered within")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return png(fig)


def _log_ms_axis(ax, lo: float, hi: float) -> None:
    """A log x axis in ms with plain tick labels (1, 2, 5 per decade) that never overlap."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    ax.set_xscale("log")
    lo, hi = max(lo, 1e-3), max(hi, lo * 1.01)
    ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
             for m in (1, 2, 5) if lo / 1.5 <= m * 10.0 ** e <= hi * 1.5]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xlim(lo / 1.15, hi * 1.15)


def bytes_per_sample(rows: list[tuple[str, float, float, float, object]]) -> bytes:
    """Mean uplink and downlink bytes per sample per case (``rows``: label, up, down, up per request sent,
    colour); horizontal bars, values written on them."""
    n = max(1, len(rows))
    fig = figure(11.0, 1.2 + 0.42 * n)
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    up = np.array([r[1] for r in rows], np.float64)
    down = np.array([r[2] for r in rows], np.float64)
    ax.barh(y - 0.2, np.nan_to_num(up) / 1e3, 0.38, color=[r[4] for r in rows], label="uplink")
    ax.barh(y + 0.2, np.nan_to_num(down) / 1e3, 0.38, color=[r[4] for r in rows], alpha=0.45, hatch="//",
            label="downlink")
    top = np.nanmax(np.r_[up, down, 1.0]) / 1e3
    for yi, u, d, r in zip(y, up, down, rows):
        req = "" if math.isnan(r[3]) else f"  ({r[3] / 1e3:,.1f} kB per request sent)"
        ax.text((0 if math.isnan(u) else u) / 1e3 + top * 0.01, yi - 0.2, ("–" if math.isnan(u) else
                f"{u / 1e3:,.1f} kB") + req, va="center", fontsize=7.5)
        ax.text((0 if math.isnan(d) else d) / 1e3 + top * 0.01, yi + 0.2, "–" if math.isnan(d) else
                f"{d / 1e3:,.2f} kB", va="center", fontsize=7.5, color="0.35")
    ax.set_yticks(y, [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.45)
    ax.set_xlabel("mean kB per sample (samples kept on the edge count 0)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    return png(fig)


def per_task_accuracy(tasks: list[str], series: list[tuple[str, dict[str, tuple[int, int]], object]]) -> bytes:
    """Accuracy per task with its 95% Wilson interval, one marker per case (``series``: label, task ->
    (correct, n), colour), dodged side by side within each task."""
    fig = figure(11.0, 5.0)
    ax = fig.add_subplot()
    m = max(1, len(series))
    width = 0.8 / m
    for j, (label, per, col) in enumerate(series):
        xs, ys, lo, hi = [], [], [], []
        for i, t in enumerate(tasks):
            k, n = per.get(t, (0, 0))
            if n == 0:
                continue
            a = k / n
            w_lo, w_hi = wilson_interval(k, n)
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(a)
            lo.append(max(0.0, a - w_lo))  # Wilson's bound can pass 0/1 accuracy by a rounding error
            hi.append(max(0.0, w_hi - a))
        if xs:
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", ms=4, color=col, capsize=2, lw=1, label=label)
    for i in range(1, len(tasks)):
        ax.axvline(i - 0.5, color="0.85", lw=0.8)
    ax.set_xticks(range(len(tasks)), [t.replace("_", " ") for t in tasks])
    ax.set_xlim(-0.5, len(tasks) - 0.5)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("accuracy (95% Wilson interval)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return png(fig)


def example_panels(rgb: np.ndarray, mask_rgb: np.ndarray | None, label_rgb: np.ndarray | None,
                   mask_title: str) -> bytes:
    """One example frame: the RGB frame, the edge's predicted mask over it, and the ground-truth label."""
    panels = [("frame", rgb)]
    panels.append((mask_title, mask_rgb))
    if label_rgb is not None:
        panels.append(("ground-truth label", label_rgb))
    h, w = rgb.shape[:2]
    fig = figure(2.7 * len(panels), 2.7 * h / w + 0.35)
    for i, (title, img) in enumerate(panels, 1):
        ax = fig.add_subplot(1, len(panels), i)
        ax.set_axis_off()
        ax.set_title(title, fontsize=9)
        if img is None:
            ax.text(0.5, 0.5, "not available", ha="center", va="center", fontsize=9, transform=ax.transAxes)
        else:
            ax.imshow(img, interpolation="nearest")
    return png(fig)


def _num(v, digits: int) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(f) else f"{f:.{digits}f}"
