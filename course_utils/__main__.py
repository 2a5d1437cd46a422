"""``python -m course_utils reproduce ...``: the course's command line.

User errors (an unknown experiment, missing data, a corrupt checkpoint) print one clear line,
not a traceback.
"""
from __future__ import annotations

import sys

from .errors import CourseError

USAGE = """usage: python -m course_utils <command> [options]

commands:
  reproduce [experiment ...] [--quick] [--jobs N]   run the notebooks over reproduce.yaml's grids into results/
  benchmark-loader [--dataset NAME]                  DeviceLoader vs torchvision's DataLoader, side by side

`python -m course_utils reproduce --help` lists the experiments."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    try:
        if command == "reproduce":
            from .reproduce import main as reproduce

            return reproduce(rest)
        if command == "benchmark-loader":
            from .loader_benchmark import main as benchmark

            benchmark(rest)
            return 0
        print(f"error: unknown command {command!r}.\n\n{USAGE}", file=sys.stderr)
        return 2
    except CourseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished runs are kept; run the same command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
