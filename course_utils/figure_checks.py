"""Checks that a figure reads: no two labels print over each other, none is cut off, no legend hides data.

    fig = speedycnet.plots.cascade_figure(...)
    assert overlapping_text(fig) == []          # [("xtick '0.5' (axes 1)", "xtick '0.6' (axes 1)"), ...] if not
    assert all(legend_hides_data(ax) == [] for ax in fig.axes)
    problems({"name": fig, ...})                 # both, for a notebook to publish: {} when every figure reads

Both use matplotlib's own layout: the figure is drawn once (on an Agg canvas when it has no renderer of its
own) and every text is measured by ``Text.get_window_extent(renderer)``, in display pixels.  Texts are the
ones a reader sees: figure titles and labels, axes titles, axis labels, the tick labels actually drawn
(inside the view limits), the offset/exponent texts, ``ax.text``/``annotate`` texts, legend titles and
entries.  Rotated texts are compared as rotated rectangles, not as their (larger) axis-aligned boxes.
"""
from __future__ import annotations

import math
from typing import Iterator, Mapping

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.text import Text

TOLERANCE_PX = 1.0  # boxes that overlap by less than this (in each direction) only touch


def _renderer(fig: Figure):
    """Draw ``fig`` and return the renderer that laid it out (an Agg canvas when the figure has none)."""
    if not hasattr(fig.canvas, "get_renderer"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _shown(text: Text | None) -> bool:
    return text is not None and text.get_visible() and bool(text.get_text().strip()) and text.get_alpha() != 0


def _drawn_ticks(axis) -> list:
    """The ticks ``axis`` draws (inside its view limits); ``_update_ticks`` is how matplotlib picks them."""
    try:
        return list(axis._update_ticks())
    except AttributeError:  # a future matplotlib: every major tick whose location is in view
        lo, hi = sorted(axis.get_view_interval())
        return [t for t in axis.get_major_ticks() if lo <= t.get_loc() <= hi]


def _axes_texts(ax: Axes, name: str) -> Iterator[tuple[str, Text]]:
    for where, title in (("title", ax.title), ("left title", ax._left_title), ("right title", ax._right_title)):
        yield f"{where} ({name})", title
    for letter, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
        yield f"{letter}label ({name})", axis.label
        yield f"{letter} offset text ({name})", axis.get_offset_text()
        for tick in _drawn_ticks(axis):
            for label in (tick.label1, tick.label2):
                yield f"{letter}tick ({name})", label
    for text in ax.texts:
        yield f"text ({name})", text
    legend = ax.get_legend()
    if legend is not None and legend.get_visible():
        yield f"legend title ({name})", legend.get_title()
        for text in legend.get_texts():
            yield f"legend entry ({name})", text


def visible_texts(fig: Figure) -> list[tuple[str, Text]]:
    """Every text a reader sees in ``fig``, as ``(description, Text)``: what ``overlapping_text`` compares."""
    found: list[tuple[str, Text]] = []
    for attr, where in (("_suptitle", "suptitle"), ("_supxlabel", "supxlabel"), ("_supylabel", "supylabel")):
        found.append((where, getattr(fig, attr, None)))
    found += [("figure text", t) for t in fig.texts]
    for legend in fig.legends:
        if legend.get_visible():
            found += [("figure legend title", legend.get_title())]
            found += [("figure legend entry", t) for t in legend.get_texts()]
    for i, ax in enumerate(fig.axes):
        if ax.get_visible() and ax.axison:
            found += list(_axes_texts(ax, f"axes {i}"))
        elif ax.get_visible():  # axis("off"): titles and texts still show
            found += [(f"title (axes {i})", ax.title)] + [(f"text (axes {i})", t) for t in ax.texts]
    return [(f"{where} {text.get_text()!r}", text) for where, text in found if _shown(text)]


def _corners(text: Text, renderer) -> np.ndarray:
    """The four corners (display pixels) of the text's rotated box: its extent when not rotated, turned."""
    box = text.get_window_extent(renderer)
    angle = text.get_rotation() % 180
    if min(angle, 180 - angle) < 1e-6 or abs(angle - 90) < 1e-6:
        return np.array([[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1]])
    rotation = text.get_rotation()
    text.set_rotation(0)
    try:
        flat = text.get_window_extent(renderer)
    finally:
        text.set_rotation(rotation)
    w, h, theta = flat.width / 2, flat.height / 2, math.radians(rotation)
    c, s = math.cos(theta), math.sin(theta)
    centre = np.array([(box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2])  # a rectangle's box shares its centre
    return centre + np.array([[dx * c - dy * s, dx * s + dy * c] for dx, dy in ((-w, -h), (w, -h), (w, h), (-w, h))])


def _overlap(a: np.ndarray, b: np.ndarray, tolerance: float) -> bool:
    """Whether convex polygons ``a`` and ``b`` overlap by more than ``tolerance`` px along every separating axis."""
    for poly in (a, b):
        for i in range(len(poly)):
            edge = poly[(i + 1) % len(poly)] - poly[i]
            normal = np.array([-edge[1], edge[0]]) / (np.hypot(*edge) or 1.0)
            pa, pb = a @ normal, b @ normal
            if min(pa.max(), pb.max()) - max(pa.min(), pb.min()) <= tolerance:
                return False
    return True


def overlapping_text(fig: Figure, *, tolerance: float = TOLERANCE_PX) -> list[tuple[str, str]]:
    """Pairs of visible texts of ``fig`` whose boxes overlap, then texts cut off by the figure's edge.

    Returns ``[(description, description), ...]`` for overlaps and ``[(description, "outside the figure"), ...]``
    for texts reaching more than ``tolerance`` pixels past the canvas (they are clipped when saved); ``[]`` when
    the figure reads cleanly.  Draws the figure (Agg) to lay it out.
    """
    renderer = _renderer(fig)
    texts = visible_texts(fig)
    boxes = [_corners(text, renderer) for _, text in texts]
    found = []
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            if texts[i][1] is not texts[j][1] and _overlap(boxes[i], boxes[j], tolerance):
                found.append((texts[i][0], texts[j][0]))
    width, height = fig.bbox.width, fig.bbox.height
    for (name, _), box in zip(texts, boxes):
        if (box[:, 0].min() < -tolerance or box[:, 1].min() < -tolerance or box[:, 0].max() > width + tolerance
                or box[:, 1].max() > height + tolerance):
            found.append((name, "outside the figure"))
    return found


def _data_points(ax: Axes) -> Iterator[tuple[str, np.ndarray]]:
    """Display coordinates of the lines (vertices, and points between them) and markers ``ax`` plots."""
    for line in ax.get_lines():
        if not line.get_visible() or line.get_transform() != ax.transData:  # axhline and the like: references
            continue
        xy = np.column_stack([np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)])
        xy = xy[np.isfinite(xy).all(1)]
        if len(xy) > 1 and line.get_linestyle() not in ("None", "", " ", "none"):
            steps = np.linspace(0, 1, 9)[:-1, None]  # eight points per segment, so a crossing line counts
            xy = np.concatenate([a + steps * (b - a) for a, b in zip(xy[:-1], xy[1:])] + [xy[-1:]])
        if len(xy):
            yield f"line {line.get_label()!r}", ax.transData.transform(xy)
    for collection in ax.collections:
        offsets = collection.get_offsets()
        if collection.get_visible() and len(offsets):
            yield f"markers {collection.get_label()!r}", collection.get_offset_transform().transform(offsets)


def legend_hides_data(ax: Axes, *, tolerance: float = TOLERANCE_PX) -> list[str]:
    """What the legend of ``ax`` sits on: plotted lines and markers with a point under its frame, and bars
    (rectangles in data coordinates) whose area meets the frame by more than ``tolerance`` pixels.

    Reference lines spanning the axes (``axhline``, ``axvline``) are not data and are not counted.  Returns
    descriptions (``"bar 'removed'"``), ``[]`` when the axes has no legend or its legend covers nothing.
    Draws the figure (Agg) to lay it out.
    """
    legend = ax.get_legend()
    if legend is None or not legend.get_visible():
        return []
    renderer = _renderer(ax.figure)
    frame = legend.get_window_extent(renderer)
    hidden: list[str] = []
    for name, xy in _data_points(ax):
        inside = (xy[:, 0] > frame.x0) & (xy[:, 0] < frame.x1) & (xy[:, 1] > frame.y0) & (xy[:, 1] < frame.y1)
        if inside.any() and name not in hidden:
            hidden.append(name)
    series = {id(p): c.get_label() for c in ax.containers for p in c if hasattr(p, "get_bbox")}
    for patch in ax.patches:
        if not patch.get_visible() or patch.get_data_transform() != ax.transData:
            continue
        box = patch.get_window_extent(renderer)
        meets = (min(box.x1, frame.x1) - max(box.x0, frame.x0) > tolerance
                 and min(box.y1, frame.y1) - max(box.y0, frame.y0) > tolerance)
        name = f"bar {series.get(id(patch), patch.get_label())!r}"
        if meets and name not in hidden:
            hidden.append(name)
    return hidden


def problems(figures: Mapping[str, Figure]) -> dict[str, list[str]]:
    """Every figure's reading problems, for a notebook to publish: ``{name: ["a / b overlap", ...]}`` listing only
    figures with a problem (``{}`` when all read cleanly): overlapping or clipped text, legends over data."""
    found = {}
    for name, fig in figures.items():
        issues = [f"{a} / {b}" if b == "outside the figure" else f"{a} overlaps {b}" for a, b in overlapping_text(fig)]
        for i, ax in enumerate(fig.axes):
            issues += [f"the legend of axes {i} hides {what}" for what in legend_hides_data(ax)]
        if issues:
            found[name] = issues
    return found
