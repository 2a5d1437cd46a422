"""The threshold panel's pictures: a plotly ``FigureWidget`` and a strip of example images.

Why plotly's FigureWidget: ``benchmarks/panel_backends.py`` measured the Python side of one slider move over
10,000 samples for plotly, bqplot and ipympl (matplotlib's widget backend). ipympl re-renders the whole figure
with Agg and ships a PNG on every move (about 20x the others); plotly and bqplot send only the changed numbers,
and plotly is the more widely maintained of the two. The browser renders the patch (``tests/browser``).

Left: the frontier, accuracy against MACs per image for a shared threshold over the panel's split, with the
current thresholds as a point that moves along it and the full network as a dashed reference line.
Right: the exit histogram, each exit's bar split into samples that left there right and wrong.
Below (HTML): example images that leave early and late, each with its predicted and true label.

DOM hooks for browser tests: the chart's widget has the class ``edcnn-panel-chart`` (plotly's graph div inside
it holds ``data``), the examples ``edcnn-panel-examples``; each thumbnail's caption is ``.edcnn-example-caption``.
"""
from __future__ import annotations

import base64
import html
import io
from typing import Sequence

import numpy as np

from .panel_view import PanelView

RIGHT, WRONG, POINT, FULL = "#2ca02c", "#d62728", "#1f77b4", "#555555"


def build_chart(frontier_macs: Sequence[float], frontier_acc: Sequence[float], full_macs: float, full_acc: float,
                num_exits: int, split_label: str, first: PanelView):
    """A ``FigureWidget`` showing ``first``: traces 0 frontier, 1 full network, 2 current point, 3 right, 4 wrong.

    The first view is drawn into the figure itself, not sent as an update: a page that renders the widget after
    the kernel has finished (Voila) builds it from the figure's data, and would miss an earlier update.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.12,
                        subplot_titles=(f"accuracy against cost ({split_label})", f"where samples leave ({split_label})"))
    xs = [m / 1e6 for m in frontier_macs]
    fig.add_scatter(x=xs, y=[100 * a for a in frontier_acc], mode="lines+markers", marker_size=4, line_color=POINT,
                    name="shared threshold, 0 to 1", row=1, col=1)
    fig.add_scatter(x=[min(xs + [full_macs / 1e6]), max(xs + [full_macs / 1e6])], y=[100 * full_acc] * 2,
                    mode="lines", line=dict(color=FULL, dash="dash"), name="full network (no early exit)", row=1, col=1)
    fig.add_scatter(x=[first.mean_macs / 1e6], y=[100 * first.accuracy], mode="markers", marker=dict(size=14, color="orange", line_width=1),
                    name="current thresholds", row=1, col=1)
    exits_axis = [str(k + 1) for k in range(num_exits)]
    fig.add_bar(x=exits_axis, y=list(first.exit_right), marker_color=RIGHT, name="left here, right", row=1, col=2)
    fig.add_bar(x=exits_axis, y=list(first.exit_wrong), marker_color=WRONG, name="left here, wrong", row=1, col=2)
    fig.update_layout(barmode="stack", height=340, width=900, margin=dict(l=60, r=20, t=40, b=50),
                      legend=dict(orientation="h", yanchor="top", y=-0.2, x=0), template="plotly_white")
    # fixed ranges: a move then only restyles the point and the bars; with autorange plotly.js would lay out and
    # redraw both axes on every move (measured in the browser test: about twice the time)
    lo_x, hi_x = min(xs + [full_macs / 1e6]), max(xs + [full_macs / 1e6])
    accs = [100 * a for a in frontier_acc] + [100 * full_acc]
    pad_x, pad_y = 0.05 * (hi_x - lo_x or 1), 0.08 * (max(accs) - min(accs) or 1)
    fig.update_xaxes(title_text="M MACs per image", range=[lo_x - pad_x, hi_x + pad_x], row=1, col=1)
    fig.update_yaxes(title_text="accuracy (%)", range=[min(accs) - pad_y, max(accs) + pad_y], row=1, col=1)
    fig.update_xaxes(title_text="exit", row=1, col=2)
    fig.update_yaxes(title_text="samples", range=[0, 1.05 * (sum(first.exit_right) + sum(first.exit_wrong))],
                     row=1, col=2)
    widget = go.FigureWidget(fig)
    widget.add_class("edcnn-panel-chart")
    return widget


def update_chart(widget, view: PanelView) -> None:
    """Move the point and restack the bars: one patch to the browser."""
    with widget.batch_update():
        widget.data[2].x, widget.data[2].y = [view.mean_macs / 1e6], [100 * view.accuracy]
        widget.data[3].y, widget.data[4].y = list(view.exit_right), list(view.exit_wrong)


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
