"""The live threshold panel: one slider per exit threshold and a budget slider over ``exits.sweep``.

    panel = ThresholdPanel.from_bundle(edcnn.load_trained())      # a trained network's logits: no training
    panel = ThresholdPanel(val_scores, net.costs, "max_softmax", latency=latency_model, images=val_images)
    panel            # in Jupyter: the header, sliders, budget, the stats line, the chart and example images
    panel.sliders[0].value = 0.8         # what a user's drag does; the output updates at once
    panel.stats.value == panel.text_for(panel.thresholds())   # the core's sweep, formatted

Every change calls the core's pure ``sweep`` on the cached scores (about a millisecond for 10,000 samples),
then ``panel_view`` turns the result into the numbers drawn: the point on the frontier, the exit histogram
split into right and wrong, and example images (``panel_chart``).  The stats line is plain text formatted by
``format_stats``, so a test, in Python or in a browser, can compute the same text for the same thresholds.

The budget slider asks ``edcnn.BudgetController`` for the most accurate shared threshold whose cost fits, in
MACs per image or, with a latency model, in ms per image at the chosen batch size (predicted from the measured
per-stage times), and moves the threshold sliders there; the budget line shows the controller's choice.

The header names the split: thresholds are set on val; a panel over test is labelled as the one-time report.

DOM hooks for browser tests: the whole panel ``edcnn-panel``, the stats ``edcnn-panel-stats``, the budget line
``edcnn-panel-budget``, the header ``edcnn-panel-header``, and ``panel_chart``'s chart and examples.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import exits, panel_chart
from .checkpoint import load_checkpoint, save_checkpoint
from .device import single_thread, stopwatch
from .errors import CourseError, ThresholdError
from .panel_view import example_order, panel_view

PANEL_FORMAT = "course_utils.widgets.panel/1"
STEP = 0.01  # slider resolution of a threshold
MACS, MS = "M MACs/image", "ms/image"
SPLIT_TEXT = {"val": "validation split: thresholds are set here",
              "test": "test split: the one-time report (set thresholds on the validation panel)"}


def format_macs(macs: float) -> str:
    """MACs in millions with two decimals: ``12345678 -> "12.35 M"``."""
    return f"{macs / 1e6:.2f} M"


def format_stats(result: exits.SweepResult, *, full_macs: float | None = None, ms_per_image: float | None = None,
                 batch_size: int = 1) -> str:
    """The panel's stats line, e.g. ``accuracy 91.23% · 12.34 M MACs/image (61.0% of full) · exits 40.0% | 60.0%``.

    With ``ms_per_image`` (or a result carrying a batch-1 latency estimate) it adds
    ``· 1.234 ms/image predicted (batch 256)``.  Deterministic: the same inputs always give the same text.
    """
    parts = [f"accuracy {100 * result.accuracy:.2f}%"]
    cost = f"{format_macs(result.mean_macs)} MACs/image"
    if full_macs:
        cost += f" ({100 * result.mean_macs / full_macs:.1f}% of full)"
    parts.append(cost)
    if ms_per_image is not None:
        parts.append(f"{ms_per_image:.3f} ms/image predicted (batch {batch_size})")
    elif result.mean_latency_ms is not None:
        parts.append(f"{result.mean_latency_ms:.2f} ms/image est. (batch 1)")
    parts.append("exits " + " | ".join(f"{100 * f:.1f}%" for f in result.exit_fraction))
    return " · ".join(parts)


def bundle_header(bundle: exits.ExitBundle) -> str:
    """Markdown naming a bundle's network, data and scale and its full network's test accuracy (for the panel)."""
    meta = bundle.meta
    acc = meta.get("acc_full_test")
    return (f"**{meta.get('title', 'edCNN')}**  \n{meta.get('scale', '')}  \n" +
            (f"full network, test accuracy {100 * acc:.2f}%" if acc is not None else ""))


def _as_hwc(images: torch.Tensor) -> np.ndarray:
    """uint8 ``(N, C, H, W)`` (C = 1 or 3) -> uint8 ``(N, H, W, 3)`` numpy, once, for the thumbnails."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise CourseError(f"images must be uint8 (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}; "
                          "pass the raw split from data.load, not normalised batches.")
    x = images.cpu()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())


class ThresholdPanel:
    """Sliders for the exit thresholds of ``policy_name`` over cached ``scores``; see the module docstring.

    scores: ``exits.ExitScores`` of one split (``split``: "val" to set thresholds, "test" for the report).
    costs: the network's ``ExitCosts``.  latency: an ``edcnn.LatencyModel`` (ms budgets and estimates; optional).
    images: uint8 ``(M, C, H, W)`` thumbnails of the samples ``image_index`` (default: all N, in order).
    class_names: how labels are shown under the thumbnails.  title: the network, data and device, for the header.
    thresholds: the sliders' start values (default: 0.9 for max_softmax, 0.1 for entropy).
    chart: the plotting library of the chart, "plotly" or "bqplot" (``panel_chart``; the default was measured).
    """

    def __init__(self, scores: exits.ExitScores, costs: exits.ExitCosts, policy_name: str = "max_softmax", *,
                 latency=None, images: torch.Tensor | None = None, image_index: torch.Tensor | None = None,
                 class_names: Sequence[str] | None = None, split: str = "val", title: str = "",
                 thresholds: Sequence[float] | float | None = None, batch_size: int = 1,
                 chart: str = panel_chart.DEFAULT_LIBRARY):
        from .edcnn import BudgetController

        if policy_name not in ("max_softmax", "entropy"):
            raise CourseError(f"the panel has one slider per threshold; policy {policy_name!r} has none. "
                              "Use 'max_softmax' or 'entropy'.")
        if chart not in panel_chart.CHARTS:
            raise CourseError(f"unknown chart library {chart!r} for the panel; "
                              f"use one of {sorted(panel_chart.CHARTS)}.")
        self.chart_library = chart
        if split not in SPLIT_TEXT:
            raise CourseError(f"unknown split {split!r} for the panel; use 'val' (thresholds) or 'test' (report).")
        self.scores, self.costs, self.policy_name, self.split = scores, costs, policy_name, split
        self.latency, self.images, self.title = latency, images, title
        self.class_names = list(class_names) if class_names is not None else [str(c) for c in range(
            int(scores.labels.max()) + 1)]
        self.image_index = None if image_index is None else image_index.long()
        self._set_images(images)
        early = scores.num_exits - 1
        start = thresholds if thresholds is not None else (0.9 if policy_name == "max_softmax" else 0.1)
        start = [start] * early if isinstance(start, (int, float)) else list(start)
        exits.make_policy(policy_name, start).resolved(scores.num_exits)  # bad values fail here, clearly
        self.controller = BudgetController(scores, costs, policy_name, latency=latency, include_full=False,
                                           fallback="cheapest")
        self.choice = None  # the controller's last answer to the budget slider
        self._build_widgets(start, batch_size)
        self.result: exits.SweepResult | None = None
        self.view = None  # the numbers of the last redraw (panel_view.PanelView)
        self.last_update_ms = 0.0
        self._busy = False
        for s in self.sliders:
            s.observe(self._on_threshold, names="value")
        self.budget.observe(self._on_budget, names="value")
        self.unit.observe(self._on_unit, names="value")
        self.batch.observe(self._on_unit, names="value")
        self.update()

    def _set_images(self, images: torch.Tensor | None) -> None:
        self._thumbs, self._row_of = None, None
        if images is None:
            self._order = None
            return
        hwc = _as_hwc(images)
        if self.image_index is None and len(hwc) != len(self.scores):
            raise CourseError(f"{len(hwc)} images for {len(self.scores)} scored samples: pass the same split, "
                              "or image_index naming which samples the images are.")
        if self.image_index is not None and len(self.image_index) != len(hwc):
            raise CourseError(f"{len(hwc)} images but {len(self.image_index)} indices in image_index")
        self._thumbs = panel_chart.Thumbnails(hwc)
        if self.image_index is not None:
            self._row_of = {int(i): r for r, i in enumerate(self.image_index)}
        self._order = example_order(len(self.scores), self.image_index)

    def _build_widgets(self, start: list[float], batch_size: int) -> None:
        import ipywidgets as w

        self.sliders = [w.FloatSlider(value=float(t), min=0.0, max=1.0, step=STEP, description=f"exit {k + 1} τ",
                                      readout=True, readout_format=".2f", continuous_update=True,
                                      style={"description_width": "initial"})
                        for k, t in enumerate(start)]
        units = [MACS, MS] if self.latency is not None else [MACS]
        self.unit = w.ToggleButtons(options=units, value=MACS, description="budget in",
                                    style={"description_width": "initial"})
        self.batch = w.Dropdown(options=[1, 256], value=batch_size if batch_size in (1, 256) else 1,
                                description="batch size", disabled=self.latency is None,
                                style={"description_width": "initial"}, layout=w.Layout(width="160px"))
        self.budget = w.FloatSlider(description=f"budget {MACS}", readout=True, readout_format=".3f",
                                    continuous_update=True, style={"description_width": "initial"},
                                    layout=w.Layout(width="520px"))
        self._budget_range()
        self.header = w.HTML(f"<b>{self.policy_name} exit thresholds</b> · {SPLIT_TEXT[self.split]} "
                             f"({len(self.scores):,} samples)" + (f"<br>{self.title}" if self.title else ""))
        self.budget_text, self.stats, self.examples = w.HTML(), w.HTML(), w.HTML()
        for widget, name in ((self.header, "header"), (self.budget_text, "budget"), (self.stats, "stats"),
                             (self.examples, "examples")):
            widget.add_class(f"edcnn-panel-{name}")
        front = exits.frontier(self.scores, self.costs, self.policy_name)
        first = panel_view(exits.sweep(self.scores, self.costs, exits.make_policy(self.policy_name, start)),
                           self.scores.labels, self._order)
        self.chart = panel_chart.build_chart(front["mean_macs"].tolist(), front["accuracy"].tolist(), self.costs.full,
                                             self.scores.exit_accuracy()[-1], self.scores.num_exits, self.split, first,
                                             self.chart_library)
        self.widget = w.VBox([self.header, *self.sliders, w.HBox([self.unit, self.batch]), self.budget,
                              self.budget_text, self.stats, self.chart.widget, self.examples])
        self.widget.add_class("edcnn-panel")

    def _budget_range(self) -> None:
        """The budget slider spans the controller's cheapest to dearest setting, in the chosen unit."""
        costs = [self._cost_of(c.result) for c in self.controller.candidates]
        lo, hi = min(costs), max(costs)
        self.budget.min, self.budget.max = 0.0, max(hi, 1e-9)  # widen first: min may not pass max
        self.budget.min, self.budget.value = lo, hi
        self.budget.step = max((hi - lo) / 200, 1e-4)
        self.budget.description = f"budget {self.unit.value}" + (f" at batch {self.batch.value}"
                                                                 if self.unit.value == MS else "")

    def _cost_of(self, result: exits.SweepResult) -> float:
        """A result's cost in the budget slider's unit: M MACs per image, or predicted ms per image."""
        if self.unit.value == MACS:
            return result.mean_macs / 1e6
        return self.latency.ms_per_image(result.reach_fraction, self.batch.value)

    # --- what a test or a user calls
    def thresholds(self) -> list[float]:
        """The sliders' current values, one per early exit."""
        return [float(s.value) for s in self.sliders]

    def sweep(self, thresholds: Sequence[float] | float | None = None) -> exits.SweepResult:
        """The core's ``sweep`` for ``thresholds`` (default: the sliders') on the panel's scores."""
        values = self.thresholds() if thresholds is None else thresholds
        return exits.sweep(self.scores, self.costs, exits.make_policy(self.policy_name, values))

    def text_for(self, thresholds: Sequence[float] | float, batch_size: int | None = None) -> str:
        """The stats line the panel shows for ``thresholds`` (at ``batch_size``, default the panel's)."""
        return self._stats_text(self.sweep(thresholds), batch_size or self.batch.value)

    def budget_line(self, thresholds: Sequence[float], budget: float) -> str:
        """The budget line the panel shows for ``thresholds`` against ``budget`` (in the slider's unit)."""
        return self._budget_text(self.sweep(thresholds), list(thresholds), budget)

    def _stats_text(self, result: exits.SweepResult, batch_size: int) -> str:
        ms = self.latency.ms_per_image(result.reach_fraction, batch_size) if self.latency is not None else None
        return format_stats(result, full_macs=self.costs.full, ms_per_image=ms, batch_size=batch_size)

    def _budget_text(self, result: exits.SweepResult, thresholds: list[float], budget: float) -> str:
        cost = self._cost_of(result)
        unit = self.unit.value + (f" at batch {self.batch.value}" if self.unit.value == MS else "")
        verdict = "within budget" if cost <= budget * (1 + 1e-9) + 1e-9 else "over budget"
        line = (f"budget {budget:.3f} {unit} · thresholds {', '.join(f'{t:.2f}' for t in thresholds)} · "
                f"cost {cost:.3f} {unit} ({verdict})")
        if self.choice is not None:
            c = self.choice
            line += (f" · controller's choice for this budget: τ = {c.policy.resolved(self.scores.num_exits)[0]:.2f}"
                     f" on every exit, {self.split} accuracy {100 * c.expected.accuracy:.2f}%")
        return line

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
        """Recompute the sweep and redraw the stats, the budget line, the chart and the examples."""
        with stopwatch() as watch:  # the whole update, as a user waits for it
            with single_thread():
                self.result = self.sweep()
            self.view = view = panel_view(self.result, self.scores.labels, self._order)
            self.stats.value = self._stats_text(self.result, self.batch.value)
            self.budget_text.value = self._budget_text(self.result, self.thresholds(), self.budget.value)
            self.chart.update(view)
            self.examples.value = panel_chart.examples_html(view, self._thumbs, self._row_of, self.class_names)
        self.last_update_ms = watch.ms

    # --- files
    def save(self, path: str | Path) -> None:
        """Write the cached scores, costs, latency model (and images) so that another process can rebuild the panel."""
        s, lat = self.scores, self.latency
        save_checkpoint({"format": PANEL_FORMAT, "policy_name": self.policy_name, "predictions": s.predictions,
                         "confidence": s.confidence, "entropy": s.entropy, "labels": s.labels,
                         "stage_macs": list(self.costs.stage_macs), "head_macs": list(self.costs.head_macs),
                         "latency": None if lat is None else [lat.overhead_ms, lat.per_sample_ms, lat.device],
                         "images": self.images, "image_index": self.image_index, "class_names": self.class_names,
                         "split": self.split, "title": self.title, "thresholds": self.thresholds()}, path)

    @classmethod
    def load(cls, path: str | Path, **overrides) -> "ThresholdPanel":
        """A panel from a file written by ``save`` (keyword ``overrides`` replace saved constructor arguments)."""
        from .edcnn import LatencyModel

        state = load_checkpoint(path, expected_format=PANEL_FORMAT)
        scores = exits.ExitScores(state["predictions"], state["confidence"], state["entropy"], state["labels"])
        latency = LatencyModel(*state["latency"]) if state.get("latency") else None
        kwargs = {"latency": latency, "images": state["images"], "image_index": state.get("image_index"),
                  "class_names": state.get("class_names"), "split": state.get("split", "val"),
                  "title": state.get("title", ""), "thresholds": state["thresholds"], **overrides}
        policy_name = kwargs.pop("policy_name", state["policy_name"])
        return cls(scores, exits.ExitCosts(state["stage_macs"], state["head_macs"]), policy_name, **kwargs)

    @classmethod
    def from_bundle(cls, bundle: exits.ExitBundle, split: str = "val", policy_name: str = "max_softmax",
                    **kwargs) -> "ThresholdPanel":
        """A panel over one split of a trained network's ``ExitBundle``: its logits, costs and measured latency."""
        from .edcnn import LatencyModel

        latency = LatencyModel.from_exit_ms(bundle.exit_ms, bundle.device) if len(bundle.exit_ms) == 2 else None
        images = bundle.images if split == "val" else None  # the thumbnails are of val samples
        meta = bundle.meta
        title = kwargs.pop("title", meta.get("title", ""))
        defaults = {"latency": latency, "images": images, "image_index": bundle.image_index if images is not None
                    else None, "class_names": meta.get("class_names"), "title": title,
                    "thresholds": meta.get("thresholds", {}).get(policy_name)}
        return cls(bundle.scores(split), bundle.costs, policy_name, split=split, **{**defaults, **kwargs})

    # --- slider callbacks
    def _on_threshold(self, change) -> None:
        if not self._busy:
            self.update()

    def _on_unit(self, change) -> None:
        self._busy = True
        try:
            self.choice = None
            self._budget_range()
        finally:
            self._busy = False
        self.update()

    def _on_budget(self, change) -> None:
        from .edcnn.budget import BudgetWarning

        if self._busy:
            return
        b = self.batch.value
        ask = ({"macs_per_image": change["new"] * 1e6} if self.unit.value == MACS else
               {"ms_per_batch": change["new"] * b, "batch_size": b})
        with warnings.catch_warnings():  # below the cheapest setting only by rounding: the line says "over budget"
            warnings.simplefilter("ignore", BudgetWarning)
            self.choice = self.controller.choose(**ask)
        self.set_thresholds(self.choice.policy.resolved(self.scores.num_exits))

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
