"""`make gpu-check`: prove the CUDA path in one short run on a GPU machine (about 10 minutes).

    python tools/gpu_check.py                      # on a CUDA machine
    COURSE_DEVICE=cpu python tools/gpu_check.py --smoke --results /tmp/gpu-check   # the CPU rehearsal (tests)

1. the tests marked ``cuda`` (autocast, channels_last, DeviceLoader on the device, ``infer`` equal to
   ``sweep``, synchronised timings): they skip on a machine without CUDA;
2. the ``paper`` tier of SpeedyCNet and edCNN with one seed, through the batch runner (``--set NAME=VALUE``
   passes parameters on, e.g. to shorten the epochs on a slower GPU);
3. ``gpu_check.json`` beside the runs: the device's name, versions, and each step's seconds and status.

Every record the runs write names the device that measured it, so nothing measured here can pass for a
CPU figure or the other way round.  Without CUDA it refuses to run the paper tier unless ``--smoke`` is
given (the rehearsal in smoke mode, used by the test suite) or ``COURSE_DEVICE`` asks for the CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXPERIMENTS = ("speedycnet", "edcnn")


def device_label() -> dict:
    import torch

    sys.path.insert(0, str(REPO))
    from course_utils.device import describe, get_device

    return {**describe(get_device()), "cuda_available": torch.cuda.is_available()}


def step(name: str, command: list[str], log: list[dict]) -> bool:
    print(f"\n== {name}: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    code = subprocess.call(command, cwd=REPO)
    log.append({"step": name, "command": command, "seconds": round(time.perf_counter() - started, 1),
                "status": "ok" if code in (0, 5) else f"failed ({code})"})  # pytest 5: every cuda test skipped
    return code in (0, 5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="notebooks in smoke mode (the CPU rehearsal)")
    parser.add_argument("--results", default=None, help="output folder (default: results/gpu/<device>)")
    parser.add_argument("--experiments", nargs="*", default=list(EXPERIMENTS))
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    info = device_label()
    if not info["cuda_available"] and not args.smoke and os.environ.get("COURSE_DEVICE", "").split(":")[0] != "cpu":
        print("error: no CUDA device here. Run this on a GPU machine, or rehearse it on the CPU with "
              "COURSE_DEVICE=cpu python tools/gpu_check.py --smoke", file=sys.stderr)
        return 2
    slug = "".join(c if c.isalnum() else "-" for c in info["device"]).strip("-").lower()
    out = Path(args.results) if args.results else REPO / "results" / "gpu" / slug
    out.mkdir(parents=True, exist_ok=True)
    print(f"gpu-check on {info['device']} (torch {info['torch']}, CUDA {info['cuda']}) -> {out}")
    log: list[dict] = []
    ok = step("cuda tests", [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
                             "-o", "addopts=", "tests/test_cuda.py"], log)
    runner = [sys.executable, "-m", "course_utils", "reproduce", *args.experiments, "--tier", "paper",
              "--seeds", "1", "--results", str(out)] + [f"--set={s}" for s in args.set]
    ok = step("paper tier, one seed", runner + (["--smoke"] if args.smoke else []), log) and ok
    summary = {**info, "smoke": args.smoke, "steps": log, "status": "ok" if ok else "failed",
               "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    from course_utils.results import write_text

    write_text(out / "gpu_check.json", json.dumps(summary, indent=2))  # atomic: whole or absent
    print(f"\ngpu-check {summary['status']}: {out / 'gpu_check.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
