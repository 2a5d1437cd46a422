"""The live threshold panel: one slider per exit threshold and a budget slider over ``exits.sweep``.

    panel = ThresholdPanel(val_scores, net.costs, "max_softmax", exit_latency_ms=lat, images=val_images)
    panel            # in Jupyter: sliders, the accuracy / cost line, the exit distribution with sample images
    panel.sliders[0].value = 0.8         # what a user's drag does; the output updates at once
    panel.stats.value == format_stats(panel.sweep([0.8, ...]), full_macs=net.costs.full)

Every change calls the core's pure ``sweep`` on the cached validation scores (about a millisecond for
10,000 samples) and redraws a small PNG with PIL (a few milliseconds), so the panel follows a slider
without lag.  The stats line is plain text formatted from the ``SweepResult`` by ``format_stats``, so a
test, in Python or in a browser, can compute the same text for the same thresholds.  The budget slider
asks ``edcnn.BudgetController`` for the most accurate shared threshold whose mean MACs fit, and moves the
threshold sliders there.

DOM hooks for browser tests: the stats ``HTML`` has the class ``edcnn-panel-stats``, the budget line
``edcnn-panel-budget``, the plot ``edcnn-panel-plot``, the whole panel ``edcnn-panel``.
"""
from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import exits
from .checkpoint import load_checkpoint, save_checkpoint
from .device import single_thread, stopwatch
from .errors import CourseError, ThresholdError

PANEL_FORMAT = "course_utils.widgets.panel/1"
STEP = 0.01  # slider resolution of a threshold


def format_macs(macs: float) -> str:
    """MACs in millions with two decimals: ``12345678 -> "12.35 M"``."""
    return f"{macs / 1e6:.2f} M"


def format_stats(result: exits.SweepResult, *, full_macs: float | None = None) -> str:
    """The panel's stats line, e.g. ``accuracy 91.23% · 12.34 M MACs/image (61.0% of full) · exits 40.0% | 60.0%``.

    Adds ``· 1.23 ms/image est. (batch 1)`` when the result carries a latency estimate.  Deterministic: the
    same ``SweepResult`` always gives the same text.
    """
    parts = [f"accuracy {100 * result.accuracy:.2f}%"]
    cost = f"{format_macs(result.mean_macs)} MACs/image"
    if full_macs:
        cost += f" ({100 * result.mean_macs / full_macs:.1f}% of full)"
    parts.append(cost)
    if result.mean_latency_ms is not None:
        parts.append(f"{result.mean_latency_ms:.2f} ms/image est. (batch 1)")
    parts.append("exits " + " | ".join(f"{100 * f:.1f}%" for f in result.exit_fraction))
    return " · ".join(parts)


# ----------------------------------------------------------------------------- the picture
_GREEN, _RED, _GREY, _INK = (44, 160, 44), (214, 39, 40), (230, 230, 230), (40, 40, 40)


def _as_hwc(images: torch.Tensor) -> np.ndarray:
    """uint8 ``(N, C, H, W)`` (C = 1 or 3) -> uint8 ``(N, H, W, 3)`` numpy, once, for fast thumbnails."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise CourseError(f"images must be uint8 (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}; "
                          "pass the raw split from data.load, not normalised batches.")
    x = images.cpu()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())


def render_png(result: exits.SweepResult, labels: torch.Tensor, images_hwc: np.ndarray | None = None, *,
               per_row: int = 6, scale: int | None = None) -> bytes:
    """PNG bytes: the exit histogram (bars split into right and wrong) and sample images leaving early and late.

    images_hwc: uint8 ``(N, H, W, 3)`` aligned with ``labels``; a thumbnail's frame is green when that sample's
    prediction is right, red when wrong; ``scale`` (default: 2 below 24 pixels, else 1) enlarges them.
    Small on purpose: PNG encoding time grows with the pixels, and this runs on every slider move.
    """
    from PIL import Image, ImageDraw

    counts = result.exit_counts
    n, num_exits = max(sum(counts), 1), len(counts)
    right = [round(a * c) if a is not None else 0 for a, c in zip(result.exit_accuracy, counts)]
    chart_w, chart_h, top, bottom, pitch, bar = 40 + 34 * num_exits, 100, 32, 18, 34, 24
    rows: list[tuple[str, list[int]]] = []
    th = tw = 0
    if images_hwc is not None:
        h, w = images_hwc.shape[1:3]
        scale = scale or (2 if max(h, w) < 24 else 1)
        th, tw = h * scale, w * scale
        early_k = next((k for k, c in enumerate(counts[:-1]) if c), None)
        if early_k is not None:
            rows.append((f"leave early (exit {early_k + 1})", _first(result.exit_index, early_k, per_row)))
        rows.append((f"leave late (exit {num_exits})", _first(result.exit_index, num_exits - 1, per_row)))
    width = chart_w + (16 + per_row * (tw + 6) if rows else 0)
    height = max(top + chart_h + bottom, 10 + len(rows) * (th + 26))
    # pixels in numpy (one slice per rectangle or thumbnail), text with PIL's bitmap font, one PNG encode
    px = np.full((height, width, 3), 255, dtype=np.uint8)
    base = top + chart_h
    px[base, 30:chart_w - 6] = _INK
    for k, c in enumerate(counts):
        x0 = 36 + pitch * k
        full, good = round(chart_h * c / n), round(chart_h * right[k] / n)
        px[base - chart_h:base, x0:x0 + bar] = _GREY
        px[base - full:base, x0:x0 + bar] = _RED
        px[base - good:base, x0:x0 + bar] = _GREEN
    texts = [((8, 4), f"exit distribution ({n} samples)")]
    texts += [((36 + pitch * k, base - chart_h - 11), f"{100 * c / n:.0f}%") for k, c in enumerate(counts)]
    texts += [((36 + pitch * k + 9, base + 4), str(k + 1)) for k in range(num_exits)]
    y = 6
    for title, idx in rows:
        texts.append(((chart_w + 8, y), title))
        y += 14
        for j, i in enumerate(idx):
            x0 = chart_w + 8 + j * (tw + 6)
            ok = bool(result.predictions[i] == labels[i])
            px[y:y + th + 4, x0:x0 + tw + 4] = _GREEN if ok else _RED
            thumb = images_hwc[i]
            if scale > 1:
                thumb = thumb.repeat(scale, 0).repeat(scale, 1)
            px[y + 2:y + 2 + th, x0 + 2:x0 + 2 + tw] = thumb
        y += th + 12
    canvas = Image.fromarray(px)
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for xy, text in texts:
        draw.text(xy, text, fill=_INK, font=font)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", compress_level=1)  # speed over size: it is redrawn on every change
    return buf.getvalue()


@functools.lru_cache(maxsize=1)
def _font():
    from PIL import ImageFont

    return ImageFont.load_default_imagefont()  # the bitmap font: ~50x faster to draw than the FreeType default


def _first(exit_index: torch.Tensor, k: int, count: int) -> list[int]:
    """The first ``count`` sample indices that leave at exit ``k``."""
    return torch.nonzero(exit_index == k).flatten()[:count].tolist()


# ----------------------------------------------------------------------------- the panel
class ThresholdPanel:
    """Sliders for the exit thresholds of ``policy_name`` over cached ``scores``; see the module docstring.

    scores: ``exits.ExitScores`` of the validation split (``panel.scores``; ``save`` writes them to a file).
    costs: the network's ``ExitCosts`` (disabled heads are not charged).
    exit_latency_ms: measured ms per image to leave at each exit (batch 1), for the latency estimate.
    images: uint8 ``(N, C, H, W)`` aligned with ``scores``, for the sample thumbnails (optional).
    thresholds: the sliders' start values (default: 0.9 for max_softmax, 0.1 for entropy).
    """

    def __init__(self, scores: exits.ExitScores, costs: exits.ExitCosts, policy_name: str = "max_softmax", *,
                 exit_latency_ms: Sequence[float] | None = None, images: torch.Tensor | None = None,
                 thresholds: Sequence[float] | float | None = None):
        import ipywidgets as w

        from .edcnn import BudgetController

        if policy_name not in ("max_softmax", "entropy"):
            raise CourseError(f"the panel has one slider per threshold; policy {policy_name!r} has none. "
                              "Use 'max_softmax' or 'entropy'.")
        self.scores, self.costs, self.policy_name = scores, costs, policy_name
        self.exit_latency_ms = list(exit_latency_ms) if exit_latency_ms is not None else None
        self.images = images
        self._hwc = _as_hwc(images) if images is not None else None
        if self._hwc is not None and len(self._hwc) != len(scores):
            raise CourseError(f"{len(self._hwc)} images for {len(scores)} scored samples: pass the same split.")
        early = scores.num_exits - 1
        start = thresholds if thresholds is not None else (0.9 if policy_name == "max_softmax" else 0.1)
        start = [start] * early if isinstance(start, (int, float)) else list(start)
        exits.make_policy(policy_name, start).resolved(scores.num_exits)  # bad values fail here, clearly
        self.controller = BudgetController(scores, costs, policy_name, include_full=False)
        table = self.controller.table()
        lo, hi = float(table["mean_macs"].min()), float(table["mean_macs"].max())
        self.sliders = [w.FloatSlider(value=float(t), min=0.0, max=1.0, step=STEP, description=f"exit {k + 1} τ",
                                      readout=True, readout_format=".2f", continuous_update=True,
                                      style={"description_width": "initial"})
                        for k, t in enumerate(start)]
        step = max((hi - lo) / 1e6 / 200, 1e-4)
        self.budget = w.FloatSlider(value=hi / 1e6, min=lo / 1e6, max=hi / 1e6, step=step,
                                    description="budget M MACs/image", readout=True, readout_format=".3f",
                                    continuous_update=True, style={"description_width": "initial"},
                                    layout=w.Layout(width="480px"))
        self.stats = w.HTML()
        self.stats.add_class("edcnn-panel-stats")
        self.budget_text = w.HTML()
        self.budget_text.add_class("edcnn-panel-budget")
        self.plot = w.Image(format="png")
        self.plot.add_class("edcnn-panel-plot")
        self.widget = w.VBox([w.HTML(f"<b>{policy_name} exit thresholds</b> "
                                     f"(validation split, {len(scores)} samples)"),
                              *self.sliders, self.budget, self.budget_text, self.stats, self.plot])
        self.widget.add_class("edcnn-panel")
        self.result: exits.SweepResult | None = None
        self.last_update_ms = 0.0
        self._busy = False
        for s in self.sliders:
            s.observe(self._on_threshold, names="value")
        self.budget.observe(self._on_budget, names="value")
        self.update()

    # --- what a test or a user calls
    def thresholds(self) -> list[float]:
        """The sliders' current values, one per early exit."""
        return [float(s.value) for s in self.sliders]

    def sweep(self, thresholds: Sequence[float] | float | None = None) -> exits.SweepResult:
        """The core's ``sweep`` for ``thresholds`` (default: the sliders') on the panel's scores."""
        values = self.thresholds() if thresholds is None else thresholds
        return exits.sweep(self.scores, self.costs, exits.make_policy(self.policy_name, values), self.exit_latency_ms)

    def text_for(self, thresholds: Sequence[float] | float) -> str:
        """The stats line the panel shows for ``thresholds``."""
        return format_stats(self.sweep(thresholds), full_macs=self.costs.full)

    def set_thresholds(self, values: Sequence[float] | float) -> None:
        """Move every threshold slider at once (one redraw); out-of-range values raise ``ThresholdError``."""
        values = [values] * len(self.sliders) if isinstance(values, (int, float)) else list(values)
        exits.make_policy(self.policy_name, values).resolved(self.scores.num_exits)
        self._busy = True
        try:
            for s, v in zip(self.sliders, values):
                s.value = float(v)
        finally:
            self._busy = False
        self.update()

    def update(self) -> None:
        """Recompute the sweep and redraw the stats, the budget line and the picture."""
        with stopwatch() as watch:  # the whole update: sweep, text and PNG
            with single_thread():
                self.result = self.sweep()
            self.stats.value = format_stats(self.result, full_macs=self.costs.full)
            budget = self.budget.value * 1e6
            verdict = "within budget" if self.result.mean_macs <= budget + 0.5 else "over budget"
            self.budget_text.value = (f"budget {format_macs(budget)} MACs/image · thresholds "
                                      f"{', '.join(f'{t:.2f}' for t in self.thresholds())} · cost "
                                      f"{format_macs(self.result.mean_macs)} MACs/image ({verdict})")
            self.plot.value = render_png(self.result, self.scores.labels, self._hwc)
        self.last_update_ms = watch.ms

    def save(self, path: str | Path) -> None:
        """Write the cached scores, costs, latencies (and images) so that another process can rebuild the panel."""
        s = self.scores
        save_checkpoint({"format": PANEL_FORMAT, "policy_name": self.policy_name, "predictions": s.predictions,
                         "confidence": s.confidence, "entropy": s.entropy, "labels": s.labels,
                         "stage_macs": list(self.costs.stage_macs), "head_macs": list(self.costs.head_macs),
                         "exit_latency_ms": self.exit_latency_ms, "images": self.images,
                         "thresholds": self.thresholds()}, path)

    @classmethod
    def load(cls, path: str | Path, **overrides) -> "ThresholdPanel":
        """A panel from a file written by ``save`` (keyword ``overrides`` replace saved constructor arguments)."""
        state = load_checkpoint(path, expected_format=PANEL_FORMAT)
        scores = exits.ExitScores(state["predictions"], state["confidence"], state["entropy"], state["labels"])
        kwargs = {"exit_latency_ms": state["exit_latency_ms"], "images": state["images"],
                  "thresholds": state["thresholds"], **overrides}
        policy_name = kwargs.pop("policy_name", state["policy_name"])
        return cls(scores, exits.ExitCosts(state["stage_macs"], state["head_macs"]), policy_name, **kwargs)

    # --- slider callbacks
    def _on_threshold(self, change) -> None:
        if not self._busy:
            self.update()

    def _on_budget(self, change) -> None:
        if self._busy:
            return
        try:
            choice = self.controller.choose(macs_per_image=change["new"] * 1e6)
        except ThresholdError:  # below the cheapest setting (the slider's min is that setting, so rounding only)
            choice = self.controller.choose(macs_per_image=self.controller.cheapest() + 1)
        self.set_thresholds(choice.policy.resolved(self.scores.num_exits))

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
