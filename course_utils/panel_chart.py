"""The threshold panel's pictures: a chart widget (bqplot, or plotly's FigureWidget) and a strip of example images.

Why bqplot: both it and plotly's ``FigureWidget`` send only the changed numbers on a slider move (ipympl
re-renders the whole figure with Agg and ships a PNG, about 20x their Python-side cost: ``benchmarks/
panel_backends.py``).  In the browser they differ: ``benchmarks/panel_browser.py`` moves a slider over 10,000
samples in JupyterLab and times key press to redrawn chart, both libraries side by side in one run.  plotly.js
re-plots its traces on every restyle; bqplot's d3 moves the existing SVG elements, in about half the time (the
README has the figures).  plotly stays available (``chart="plotly"``) so that the benchmark can keep comparing.

Left: the frontier, accuracy against MACs per image for a shared threshold over the panel's split, with the
current thresholds as a point that moves along it and the full network as a dashed reference line.
Right: the exit histogram, each exit's bar split into samples that left there right and wrong.
Below (HTML): a static legend, and example images that leave early and late, each with predicted and true label.

DOM hooks for browser tests: the chart's widget has the class ``edcnn-panel-chart``, the examples
``edcnn-panel-examples``; each thumbnail's caption is ``.edcnn-example-caption``.
"""
from __future__ import annotations

import base64
import html
import io
from typing import Sequence

import numpy as np

from .errors import CourseError
from .panel_view import PanelView

RIGHT, WRONG, POINT, FULL, CURRENT = "#2ca02c", "#d62728", "#1f77b4", "#555555", "orange"
DEFAULT_LIBRARY = "bqplot"  # measured in the browser: see the module docstring


def axis_ranges(frontier_macs: Sequence[float], frontier_acc: Sequence[float], full_macs: float, full_acc: float,
                total: int) -> dict[str, tuple[float, float]]:
    """Fixed axis ranges (M MACs, accuracy %, samples), padded: a move then only moves the point and the bars.

    With automatic ranges either library would lay out and redraw the axes on every move (plotly: about twice
    the time, measured in the browser test)."""
    xs = [m / 1e6 for m in frontier_macs] + [full_macs / 1e6]
    accs = [100 * a for a in frontier_acc] + [100 * full_acc]
    pad_x, pad_y = 0.05 * (max(xs) - min(xs) or 1), 0.08 * (max(accs) - min(accs) or 1)
    return {"macs": (min(xs) - pad_x, max(xs) + pad_x), "acc": (min(accs) - pad_y, max(accs) + pad_y),
            "samples": (0.0, 1.05 * total)}


class PlotlyChart:
    """plotly's ``FigureWidget``: traces 0 frontier, 1 full network, 2 current point, 3 right, 4 wrong.

    The first view is drawn into the figure itself, not sent as an update: a page that renders the widget after
    the kernel has finished (Voila) builds it from the figure's data, and would miss an earlier update.
    """

    library = "plotly"

    def __init__(self, frontier_macs: Sequence[float], frontier_acc: Sequence[float], full_macs: float,
                 full_acc: float, num_exits: int, split_label: str, first: PanelView):
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        total = sum(first.exit_right) + sum(first.exit_wrong)
        ranges = axis_ranges(frontier_macs, frontier_acc, full_macs, full_acc, total)
        fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.12,
                            subplot_titles=(f"accuracy against cost ({split_label})",
                                            f"where samples leave ({split_label})"))
        xs = [m / 1e6 for m in frontier_macs]
        fig.add_scatter(x=xs, y=[100 * a for a in frontier_acc], mode="lines+markers", marker_size=4,
                        line_color=POINT, name="shared threshold, 0 to 1", row=1, col=1)
        fig.add_scatter(x=list(ranges["macs"]), y=[100 * full_acc] * 2, mode="lines",
                        line=dict(color=FULL, dash="dash"), name="full network (no early exit)", row=1, col=1)
        fig.add_scatter(x=[first.mean_macs / 1e6], y=[100 * first.accuracy], mode="markers",
                        marker=dict(size=14, color=CURRENT, line_width=1), name="current thresholds", row=1, col=1)
        exits_axis = [str(k + 1) for k in range(num_exits)]
        fig.add_bar(x=exits_axis, y=list(first.exit_right), marker_color=RIGHT, name="left here, right", row=1, col=2)
        fig.add_bar(x=exits_axis, y=list(first.exit_wrong), marker_color=WRONG, name="left here, wrong", row=1, col=2)
        fig.update_layout(barmode="stack", height=340, width=900, margin=dict(l=60, r=20, t=40, b=50),
                          legend=dict(orientation="h", yanchor="top", y=-0.2, x=0), template="plotly_white")
        fig.update_xaxes(title_text="M MACs per image", range=list(ranges["macs"]), row=1, col=1)
        fig.update_yaxes(title_text="accuracy (%)", range=list(ranges["acc"]), row=1, col=1)
        fig.update_xaxes(title_text="exit", row=1, col=2)
        fig.update_yaxes(title_text="samples", range=list(ranges["samples"]), row=1, col=2)
        self.ranges = ranges
        self.widget = go.FigureWidget(fig)
        self.widget.add_class("edcnn-panel-chart")

    def update(self, view: PanelView) -> None:
        """Move the point and restack the bars: one patch to the browser."""
        with self.widget.batch_update():
            self.widget.data[2].x, self.widget.data[2].y = [view.mean_macs / 1e6], [100 * view.accuracy]
            self.widget.data[3].y, self.widget.data[4].y = list(view.exit_right), list(view.exit_wrong)

    def shown(self) -> dict:
        """The numbers the widget holds: the point (M MACs, accuracy %) and the right and wrong bars."""
        d = self.widget.data
        return {"point": [d[2].x[0], d[2].y[0]], "right": list(d[3].y), "wrong": list(d[4].y)}


class BqplotChart:
    """bqplot: two figures side by side, the frontier (lines, the full network's line, the current point) and the
    stacked exit histogram, with each bar's count written on it.  d3 moves the existing SVG elements in the browser.

    Every mark starts at the first view, for the same reason as ``PlotlyChart``.  In the page the point is the
    left figure's only ``g.object_grp`` (its ``transform`` holds the pixel position), and the bars are the right
    figure's ``rect.bar`` elements, right then wrong for each exit (their ``height`` in pixels).
    """

    library = "bqplot"

    def __init__(self, frontier_macs: Sequence[float], frontier_acc: Sequence[float], full_macs: float,
                 full_acc: float, num_exits: int, split_label: str, first: PanelView):
        import bqplot as bq
        import ipywidgets as w

        total = sum(first.exit_right) + sum(first.exit_wrong)
        ranges = axis_ranges(frontier_macs, frontier_acc, full_macs, full_acc, total)
        # exactly these domains: bqplot would widen a domain narrower than min_range (0.6 by default: a smoke
        # model's MACs span less) and pad it
        exact = dict(min_range=0.0, allow_padding=False)
        sx = bq.LinearScale(min=ranges["macs"][0], max=ranges["macs"][1], **exact)
        sy = bq.LinearScale(min=ranges["acc"][0], max=ranges["acc"][1], **exact)
        scales = {"x": sx, "y": sy}
        frontier = bq.Lines(x=[m / 1e6 for m in frontier_macs], y=[100 * a for a in frontier_acc], scales=scales,
                            colors=[POINT], marker="circle", marker_size=12)
        full = bq.Lines(x=list(ranges["macs"]), y=[100 * full_acc] * 2, scales=scales, colors=[FULL],
                        line_style="dashed")
        self.point = bq.Scatter(x=[first.mean_macs / 1e6], y=[100 * first.accuracy], scales=scales,
                                colors=[CURRENT], stroke="black", default_size=160)
        left = bq.Figure(marks=[frontier, full, self.point], title=f"accuracy against cost ({split_label})",
                         axes=[bq.Axis(scale=sx, side="bottom", label="M MACs per image"),
                               bq.Axis(scale=sy, side="left", label="accuracy (%)")],
                         fig_margin=dict(top=40, bottom=45, left=60, right=15), padding_x=0.0, padding_y=0.0,
                         layout=w.Layout(width="500px", height="340px"))
        bx, by = bq.OrdinalScale(), bq.LinearScale(min=ranges["samples"][0], max=ranges["samples"][1], **exact)
        self.bars = bq.Bars(x=[str(k + 1) for k in range(num_exits)], y=[first.exit_right, first.exit_wrong],
                            type="stacked", colors=[RIGHT, WRONG], scales={"x": bx, "y": by}, padding=0.25)
        right = bq.Figure(marks=[self.bars], title=f"where samples leave ({split_label})",
                          axes=[bq.Axis(scale=bx, side="bottom", label="exit"),
                                bq.Axis(scale=by, side="left", label="samples", tick_format="d", label_offset="50px")],
                          fig_margin=dict(top=40, bottom=45, left=65, right=15), padding_y=0.0,
                          layout=w.Layout(width="420px", height="340px"))
        # the fixed scales span the plot areas exactly (no padding: the ranges have their own), so that a browser
        # test can read pixels back into numbers
        self.ranges = ranges
        # the legend is static HTML: bqplot redraws its SVG legends on every data change (measured: about 3 ms of
        # a move's redraw in the browser, for nothing)
        self.widget = w.VBox([w.HBox([left, right]), w.HTML(legend_html())])
        self.widget.add_class("edcnn-panel-chart")

    def update(self, view: PanelView) -> None:
        """Move the point (one message: x and y together) and restack the bars (one message)."""
        with self.point.hold_sync():
            self.point.x, self.point.y = [view.mean_macs / 1e6], [100 * view.accuracy]
        self.bars.y = [list(view.exit_right), list(view.exit_wrong)]

    def shown(self) -> dict:
        """The numbers the widget holds: the point (M MACs, accuracy %) and the right and wrong bars."""
        return {"point": [float(self.point.x[0]), float(self.point.y[0])],
                "right": [int(v) for v in self.bars.y[0]], "wrong": [int(v) for v in self.bars.y[1]]}


def legend_html() -> str:
    """The chart's legend, one line of HTML: it never changes, so it is never redrawn."""
    items = [(f'<span style="color:{POINT}">&#9679;&#8212;</span>', "shared threshold, 0 to 1 (the frontier)"),
             (f'<span style="color:{FULL}">- - -</span>', "full network (no early exit)"),
             (f'<span style="color:{CURRENT};font-size:16px">&#9679;</span>', "current thresholds"),
             (f'<span style="color:{RIGHT}">&#9632;</span>', "left here, right"),
             (f'<span style="color:{WRONG}">&#9632;</span>', "left here, wrong")]
    return ('<div style="display:flex;gap:18px;font-size:12px;margin-left:60px">'
            + "".join(f"<span>{mark} {html.escape(text)}</span>" for mark, text in items) + "</div>")


CHARTS = {"plotly": PlotlyChart, "bqplot": BqplotChart}


def build_chart(frontier_macs: Sequence[float], frontier_acc: Sequence[float], full_macs: float, full_acc: float,
                num_exits: int, split_label: str, first: PanelView, library: str = DEFAULT_LIBRARY):
    """The panel's chart, drawn with ``library`` ("plotly" or "bqplot"), showing ``first``."""
    if library not in CHARTS:
        raise CourseError(f"unknown chart library {library!r}: use one of {sorted(CHARTS)}")
    return CHARTS[library](frontier_macs, frontier_acc, full_macs, full_acc, num_exits, split_label, first)


class Thumbnails:
    """Base64 PNG thumbnails of uint8 ``(N, H, W, 3)`` images, encoded once per sample and kept."""

    def __init__(self, images_hwc: np.ndarray, scale: int | None = None):
        self.images = images_hwc
        h = images_hwc.shape[1]
        self.px = h * (scale or (4 if h < 16 else 2))  # displayed size: small images are enlarged, pixelated
        self._cache: dict[int, str] = {}

    def __call__(self, row: int) -> str:
        if row not in self._cache:
            from PIL import Image

            buf = io.BytesIO()
            Image.fromarray(self.images[row]).save(buf, format="PNG")
            self._cache[row] = base64.b64encode(buf.getvalue()).decode()
        return self._cache[row]


def caption(predicted: str, label: str) -> str:
    """A thumbnail's caption: ``pred cat · true dog``."""
    return f"pred {predicted} · true {label}"


def examples_html(view: PanelView, thumbs: Thumbnails | None, row_of: dict[int, int] | None,
                  class_names: Sequence[str]) -> str:
    """The example rows as HTML: a title per row, thumbnails framed green (right) or red (wrong), captions."""
    if thumbs is None or not view.rows:
        return ""
    parts = []
    for title, examples in view.rows:
        cells = []
        for ex in examples:
            color = RIGHT if ex.right else WRONG
            src = thumbs(row_of[ex.index] if row_of is not None else ex.index)
            text = html.escape(caption(class_names[ex.predicted], class_names[ex.label]))
            cells.append(f'<figure style="margin:0 6px;text-align:center">'
                         f'<img src="data:image/png;base64,{src}" width="{thumbs.px}" height="{thumbs.px}" '
                         f'style="image-rendering:pixelated;border:3px solid {color}"/>'
                         f'<figcaption class="edcnn-example-caption" style="font-size:11px">{text}</figcaption></figure>')
        parts.append(f'<div><b>{html.escape(title)}</b><div style="display:flex">{"".join(cells)}</div></div>')
    return "".join(parts)
