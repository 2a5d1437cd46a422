"""What one training epoch of each table network costs on this machine, in each numeric format.

    python benchmarks/epoch_cost.py                       # CIFAR-10 shapes, 45,000 training images
    python benchmarks/epoch_cost.py --models vgg16_bn:0.5 mobilenet_v2:1.0 --batch 256

The standard tier must train every baseline to its accuracy floor within about three hours on the course's
2-core CPU; this measures whether that is possible before anyone spends the hours. For each network it
times a few real training steps (forward, loss, backward, SGD update) with ``precision.choose_precision``
on random CIFAR-shaped batches, side by side in one process, and extrapolates the median step to one
epoch of the training split. Prints a table, the CPU, and whether it has native bf16.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from course_utils import models, precision  # noqa: E402
from course_utils.device import device_name, get_device  # noqa: E402
from course_utils.errors import CourseError  # noqa: E402

DEFAULT_MODELS = ["vgg16_bn:0.5", "vgg16_bn:1.0", "mobilenet_v1:1.0", "mobilenet_v2:1.0", "mobilenet_v2:0.5"]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=DEFAULT_MODELS, help="name:width_mult")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--images", type=int, default=45_000, help="training images per epoch")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    dev = get_device()
    rows = []
    print(f"{'network':22s} {'format':20s} {'ms/step':>9s} {'min/epoch':>10s}   (batch {args.batch}, "
          f"{args.images} images/epoch)")
    for spec in args.models:
        name, _, width = spec.partition(":")
        net = models.create(name, num_classes=10, small_input=True, width_mult=float(width or 1.0))
        choice = precision.choose_precision(net, (args.batch, 3, args.size, args.size), dev, steps=args.steps)
        steps_per_epoch = -(-args.images // args.batch)
        for fmt, ms in choice.ms_per_step.items():
            row = {"network": spec, "format": fmt, "ms_per_step": ms, "minutes_per_epoch": ms * steps_per_epoch / 6e4,
                   "chosen": fmt == choice.name}
            rows.append(row)
            print(f"{spec:22s} {fmt + (' *' if row['chosen'] else ''):20s} {ms:9.0f} {row['minutes_per_epoch']:10.1f}")
    print(f"* fastest (chosen); {device_name(dev)}; native bf16: {'yes' if precision.native_bf16(dev) else 'no'}")
    return rows


if __name__ == "__main__":
    try:
        main()
    except (CourseError, ValueError) as err:  # an unknown model or dataset, a malformed option: one line, no traceback
        sys.exit(f"error: {err}")
