"""Which plotting widget the threshold panel is built on: the Python-side update cost of each, measured.

    python benchmarks/panel_backends.py                 # 10,000 samples, 6 exits, 40 slider moves
    python benchmarks/panel_backends.py --samples 5000 --moves 20

The same three views (the frontier with a moving point and the full network's line, the exit histogram split
into right and wrong, 12 example thumbnails with their labels) are drawn from the same ``panel_view`` numbers by:

* plotly's ``FigureWidget`` (anywidget): one ``batch_update`` per move, a JSON patch for the browser to render;
* bqplot: mark attributes under ``hold_sync``, d3 renders in the browser;

  both are the panel's own charts (``panel_chart.PlotlyChart``, ``panel_chart.BqplotChart``), with the panel's
  HTML examples;
* ipympl (matplotlib's widget backend): artists updated, the figure rendered by Agg on the server, and the
  PNG difference image the browser is sent (``draw`` + ``get_diff_image``).

Each move is timed from the slider value to the widget state being serialised (the sweep included), with the
process's CPU time, on one thread as the panel runs. The browser's own render time is not in these numbers;
``benchmarks/panel_browser.py`` measures key press to redrawn chart in JupyterLab for the first two. Speed goals
live here, never in tests. The scores are synthetic (exit k right with probability 0.5 + 0.1 k): the cost depends on the number
of samples and exits, not on what the network learned.
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from course_utils import exits, panel_chart  # noqa: E402
from course_utils.device import device_name, single_thread, stopwatch  # noqa: E402
from course_utils.panel_view import example_order, panel_view  # noqa: E402


def mosaic(images: np.ndarray, view) -> np.ndarray:
    """The example rows as one uint8 picture (H, W, 3), a green frame for right, red for wrong."""
    side = images.shape[1] + 4
    out = np.full((side * max(len(view.rows), 1), side * 6, 3), 255, np.uint8)
    for r, (_, row) in enumerate(view.rows):
        for j, ex in enumerate(row):
            y, x = r * side, j * side
            out[y:y + side, x:x + side] = (44, 160, 44) if ex.right else (214, 39, 40)
            out[y + 2:y + side - 2, x + 2:x + side - 2] = images[ex.index]
    return out


def png(picture: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def library_chart(library: str):
    """The panel's own chart (``panel_chart``) for ``library``, with the panel's HTML examples beside it."""

    class Chart:
        name = f"{library} ({panel_chart.CHARTS[library].__name__})"

        def __init__(self, front, full_acc, num_exits, first, images):
            macs = front["mean_macs"].tolist()
            self.chart = panel_chart.build_chart(macs, front["accuracy"].tolist(), max(macs), full_acc, num_exits,
                                                 "val", first, library)
            self.thumbs = panel_chart.Thumbnails(images)

        def update(self, view):
            self.chart.update(view)
            panel_chart.examples_html(view, self.thumbs, None, [str(c) for c in range(10)])

    return Chart


class Ipympl:
    name = "ipympl (matplotlib widget)"

    def __init__(self, front, full_acc, num_exits, first, images):
        import matplotlib
        from ipympl.backend_nbagg import Canvas, FigureManager
        from matplotlib.figure import Figure

        matplotlib.rcParams["figure.dpi"] = 100
        self.fig = Figure(figsize=(9.8, 3.2))
        self.canvas = Canvas(self.fig)
        FigureManager(self.canvas, 0)
        a1, a2, a3 = self.fig.subplots(1, 3)
        a1.plot(front["mean_macs"] / 1e6, front["accuracy"])
        a1.axhline(full_acc, ls="--")
        (self.point,) = a1.plot([0], [0], "o", ms=10)
        self.right = a2.bar(range(1, num_exits + 1), [0] * num_exits)
        self.wrong = a2.bar(range(1, num_exits + 1), [0] * num_exits, bottom=[0] * num_exits)
        a2.set_ylim(0, 1)
        self.img = a3.imshow(np.zeros((72, 216, 3), np.uint8))
        self.title = a3.set_title("")
        self.a2, self.n, self.images = a2, None, images

    def update(self, view):
        picture = mosaic(self.images, view)  # the examples drawn into the figure
        n = sum(view.exit_right) + sum(view.exit_wrong)
        self.point.set_data([view.mean_macs / 1e6], [view.accuracy])
        for k, (r, wr) in enumerate(zip(view.exit_right, view.exit_wrong)):
            self.right[k].set_height(r / n)
            self.wrong[k].set_y(r / n)
            self.wrong[k].set_height(wr / n)
        self.img.set_data(picture)
        self.title.set_text(" · ".join(t for t, _ in view.rows))
        self.canvas.draw()
        self.canvas.get_diff_image()  # the PNG ipympl sends to the browser


def run(backend_cls, scores, costs, images, values, latency) -> dict:
    front = exits.frontier(scores, costs, "max_softmax")
    order = example_order(len(scores))
    thresholds = [0.9] * (scores.num_exits - 1)
    first = panel_view(exits.sweep(scores, costs, exits.make_policy("max_softmax", thresholds)), scores.labels, order)
    backend = backend_cls(front, scores.exit_accuracy()[-1], scores.num_exits, first, images)
    wall, cpu = [], []
    for value in values:
        thresholds[0] = float(value)
        with stopwatch() as watch, single_thread():
            result = exits.sweep(scores, costs, exits.make_policy("max_softmax", thresholds), latency)
            view = panel_view(result, scores.labels, order)
            backend.update(view)
        wall.append(watch.ms)
        cpu.append(watch.cpu_seconds * 1e3)
    return {"backend": backend.name, "median_ms": statistics.median(wall), "p90_ms": float(np.percentile(wall, 90)),
            "cpu_median_ms": statistics.median(cpu)}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--exits", type=int, default=6)
    parser.add_argument("--moves", type=int, default=40)
    args = parser.parse_args(argv)
    scores = exits.synthetic_scores(args.samples, args.exits, 0, base=0.5, step=0.1, noise=0.7, margin_right=3.0)
    costs = exits.ExitCosts([2_000_000] * args.exits, [10_000] * args.exits)
    images = torch.randint(0, 256, (args.samples, 32, 32, 3), dtype=torch.uint8).numpy()
    values = np.linspace(0.3, 0.95, args.moves)[np.random.default_rng(0).permutation(args.moves)]
    latency = [float(k + 1) for k in range(args.exits)]
    rows = [run(cls, scores, costs, images, values, latency)
            for cls in (library_chart("plotly"), library_chart("bqplot"), Ipympl)]
    print(f"panel update, Python side, {args.samples} samples, {args.exits} exits, {args.moves} moves, "
          f"{device_name('cpu')}:")
    for r in rows:
        print(f"  {r['backend']:28s} median {r['median_ms']:6.1f} ms   p90 {r['p90_ms']:6.1f} ms   "
              f"cpu median {r['cpu_median_ms']:6.1f} ms")
    return rows


if __name__ == "__main__":
    main()
