"""The fast recipe against plain SGD + step schedule: time to a target val accuracy, side by side in one run.

    python benchmarks/recipe_benchmark.py                                  # VGG16-BN x0.5, CIFAR-10, 90%
    python benchmarks/recipe_benchmark.py --model mobilenet_v2 --width 1.0
    python benchmarks/recipe_benchmark.py --train-per-class 100 --epochs 2 --target 0.3   # a quick look

Both recipes train the same architecture from the same initial weights on the same data pipeline
(``DeviceLoader``: whole split on the device, crop + flip there), one after the other in this process,
with the numeric format that ``precision.choose_precision`` measured fastest for this model here. Each
stops at the first epoch whose val accuracy reaches the target. Prints both times (wall clock and CPU
seconds) and the CPU. A recipe that never reaches the target in its epoch budget says so, with its best.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from course_utils import data, models, precision, recipe, results  # noqa: E402
from course_utils.device import device_name, get_device  # noqa: E402
from course_utils.errors import CourseError  # noqa: E402
from course_utils.experiment_data import prepare  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--model", default="vgg16_bn")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--target", type=float, default=0.90)
    parser.add_argument("--epochs", type=int, default=30, help="fast recipe's epoch budget (its schedule's length)")
    parser.add_argument("--plain-epochs", type=int, default=None, help="plain recipe's budget (default: 2x --epochs)")
    parser.add_argument("--train-per-class", type=int, default=0, help="0: the whole training split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args(argv)
    dev = get_device()
    d = prepare(args.dataset, train_per_class=args.train_per_class, device=dev, seed=args.seed)

    def build() -> torch.nn.Module:
        torch.manual_seed(args.seed)  # the same initial weights for both recipes
        return models.create(args.model, num_classes=d.num_classes, small_input=True, in_channels=d.in_channels,
                             width_mult=args.width)

    choice = precision.choose_precision(build(), (256, d.in_channels, d.image_size, d.image_size), dev)
    print(f"precision: {choice}")
    budgets = {"fast": args.epochs, "plain": args.plain_epochs or 2 * args.epochs}
    rows = {}
    for name, epochs in budgets.items():
        config = recipe.recipe(name, epochs, seed=args.seed, precision=choice.precision,
                               channels_last=choice.channels_last, progress=False)
        if name == "fast":  # test-time flip only where a mirror image is the same class (not digits)
            config.tta_flip = data.info(d.name).augment
        loader = d.train_loader.view(batch_size=config.batch_size)
        rows[name] = {**recipe.time_to_accuracy(build, loader, d.val_loader, config, args.target),
                      "epoch_budget": epochs, "batch_size": config.batch_size, "precision": choice.precision}
        print(f"{name:5s}: {_describe(rows[name])}")
    report = {"dataset": d.label, "model": f"{args.model} x{args.width}", "train_images": len(d.train[1]),
              "device": device_name(dev), "precision_ms_per_step": choice.ms_per_step, "recipes": rows}
    fast_s, plain_s = rows["fast"]["seconds_to_target"], rows["plain"]["seconds_to_target"]
    if fast_s and plain_s:
        print(f"fast recipe: {plain_s / fast_s:.2f}x faster to {args.target:.0%} than plain SGD + step schedule")
    print(f"{report['model']} on {report['dataset']} ({report['train_images']} training images), {report['device']}")
    if args.json:
        results.write_text(args.json, json.dumps(report, indent=2))  # atomic: no half-written file
    return report


def _describe(row: dict) -> str:
    if row["reached"]:
        return (f"{row['target']:.0%} val accuracy after {row['seconds_to_target']:.0f} s "
                f"({row['cpu_seconds_to_target']:.0f} CPU s), epoch {row['epochs_run']} of {row['epoch_budget']}")
    return (f"did not reach {row['target']:.0%} in {row['epoch_budget']} epochs ({row['seconds']:.0f} s); "
            f"best val accuracy {row['best_val_accuracy']:.4f}")


if __name__ == "__main__":
    try:
        main()
    except (CourseError, ValueError) as err:  # an unknown model or dataset, a malformed option: one line, no traceback
        sys.exit(f"error: {err}")
