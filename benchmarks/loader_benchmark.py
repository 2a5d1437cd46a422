"""Loader benchmark: course_utils.data.DeviceLoader vs torchvision's dataset + DataLoader.

    python benchmarks/loader_benchmark.py --dataset cifar10 --max-images 20000

Reports images per second for both, measured side by side in one run.  The logic lives in
course_utils/loader_benchmark.py, which notebook 00 and the batch runner also use.
"""
from course_utils.loader_benchmark import main

if __name__ == "__main__":
    main()
