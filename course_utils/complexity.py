"""What a network costs: parameters, multiply-accumulates (MACs), activation memory, latency.

    p = profile(model, (1, 3, 224, 224))   # p.params, p.macs, p.layers (a DataFrame), p.activation_bytes
    print(p)                                # ResNet at (1, 3, 224, 224): 11.69 M params, 1.81 G MACs, ...
    lat = measure_latency(model, (1, 3, 224, 224), runs=30)
    lats = measure_latencies({"a": net_a, "b": net_b}, (1, 3, 224, 224))  # interleaved: a fair comparison

What the counter counts
-----------------------
MACs come from ``torch.utils.flop_counter.FlopCounterMode``, which sees every ATen operator that
runs and applies a formula to the shapes of the ones it knows, so the count does not depend on which
module or function called the operator:

* convolutions of any kind (``nn.Conv1d/2d/3d``, transposed, grouped, depthwise, and ``F.conv2d``
  called directly in a ``forward``): ``N * C_out * (C_in / groups) * prod(kernel) * prod(out_hw)``
  MACs (a transposed convolution uses the *input* spatial size instead);
* matrix products (``nn.Linear``, ``@``, ``torch.mm/bmm/baddbmm/addmm``): ``M * K * N``;
* scaled dot-product attention.

``FlopCounterMode`` reports FLOPs as 2 x MACs; ``macs`` here is that number / 2.

It does NOT count, by design: bias additions, BatchNorm (folded into the convolution at inference),
activations (ReLU, SiLU, sigmoid...), pooling, softmax, residual additions, concatenation,
channel shuffle, up-sampling, or any other element-wise or data-movement operator. These cost
memory traffic, often more time than their MAC count suggests, which is why latency is measured
separately (``measure_latency``) rather than inferred from MACs.

``params`` is ``sum(p.numel() for p in model.parameters())``: every parameter, trainable or not,
each shared parameter once; buffers (BatchNorm running statistics) are not parameters.

What the activation memory counts
---------------------------------
``activation_bytes`` is the sum, over every call of a leaf module (one without children) in the
forward pass, of the bytes of the tensors it returned, *except* outputs that share memory with one
of that call's inputs: an in-place ``ReLU(inplace=True)``, ``Identity``, ``Dropout`` in eval mode or
a ``Flatten`` view allocate nothing new. It approximates what training must keep for the backward
pass, and it is the sum of every layer's output, not the memory that inference needs at once.
It leaves out tensors made by functional code in a ``forward`` (``x + identity``, ``torch.cat``),
the input, and the weights. ``peak_bytes`` is the inference peak above weights and input, read
from CUDA's allocator counters; it is ``None`` on the CPU and on ``meta``, where torch keeps none.

``device="meta"`` counts parameters, MACs and activation bytes without any arithmetic (shapes
only), so a large model costs nothing to profile: build it with ``with torch.device("meta"):``.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .device import device_name, elapsed_ms, num_threads, synchronize
from .errors import CourseError

LAYER_COLUMNS = ["name", "type", "kind", "output_shape", "params", "macs", "activation_bytes"]


# ----------------------------------------------------------------------------- formatting
def format_count(n: float, unit: str = "") -> str:
    """``11689512`` -> ``'11.69 M'``: decimal SI prefixes, two decimals (``unit`` is appended)."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.2f} {prefix}{unit}"
    return f"{n:g} {unit}".rstrip()


def _format_bytes(n: float) -> str:
    for factor, prefix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= factor:
            return f"{n / factor:.2f} {prefix}"
    return f"{int(n)} B"


# ----------------------------------------------------------------------------- the model's input
def _as_shape(input_size: Sequence[int] | torch.Size) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in input_size)
        ok = len(shape) >= 1 and all(s > 0 and s == orig for s, orig in zip(shape, input_size))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise CourseError(
            f"input_size must be a tuple of positive ints with the batch first, e.g. (1, 3, 224, 224) "
            f"for one RGB 224x224 image or (1, 1, 28, 28) for MNIST; got {input_size!r}."
        )
    return shape


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device of the model's first parameter or buffer, and its first floating dtype."""
    tensors = list(model.parameters()) + list(model.buffers())
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
    return device, dtype


@contextmanager
def _on_device(model: nn.Module, device: str | torch.device | None) -> Iterator[torch.device]:
    """Run the model on ``device`` (default: where it already is), moving it back afterwards."""
    home, _ = _model_device_dtype(model)
    target = home if device is None else torch.device(device)
    if target.type == "cuda" and target.index is None:
        target = torch.device("cuda", torch.cuda.current_device())
    if target == home:
        yield target
        return
    if target.type == "meta" or home.type == "meta":
        # to("meta") throws the weights away, and a meta model has none to move back
        raise CourseError(
            f"the model is on {home} but device={str(target)!r} was asked for. Moving to or from 'meta' "
            "loses the weights: build the model on meta instead (with torch.device('meta'): model = ...) "
            "and call with device=None."
        )
    model.to(target)
    try:
        yield target
    finally:
        model.to(home)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration, then every submodule's own train/eval flag back as it was."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _expected_input(model: nn.Module, shape: tuple[int, ...]) -> tuple[str, str]:
    """What the model's first conv/linear layer wants, and an input_size that would satisfy it."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            dims = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}[len(m.kernel_size)]
            want = f"(N, {m.in_channels}, {', '.join(dims)})"
            fix = (f"pass input_size=({shape[0]}, {m.in_channels}, {', '.join(dims)}) with {', '.join(dims)} "
                   "large enough for its downsampling (224 for ImageNet models, 32 for CIFAR ones)")
        elif isinstance(m, nn.Linear):
            want = f"(N, ..., {m.in_features})"
            fix = f"pass input_size=({shape[0]}, {m.in_features})"
        else:
            continue
        return f"its first layer {name or '(root)'!r} ({type(m).__name__}) wants inputs shaped {want}", fix
    return ("it has no convolution or linear layer to say what input it expects",
            "pass the shape its forward() expects, batch first")


def _bad_input_error(model: nn.Module, shape: tuple[int, ...], err: Exception, layer: str | None) -> CourseError:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    where = f" in layer {layer!r}" if layer else ""
    expected, fix = _expected_input(model, shape)
    return CourseError(
        f"{type(model).__name__} could not run on an input of shape {shape}{where}: {reason.rstrip('.')}. "
        f"{expected[0].upper()}{expected[1:]}. Fix: {fix}."
    )


def _forward(model: nn.Module, x: torch.Tensor, shape: tuple[int, ...], layer_stack: list | None = None) -> Any:
    """``model(x)``, with a shape mistake turned into a CourseError that names the expected input."""
    try:
        return model(x)
    except CourseError:
        raise
    except torch.OutOfMemoryError:
        raise  # not an input mistake: the message would mislead
    except (RuntimeError, ValueError) as err:
        layer = layer_stack[-1].name if layer_stack else None
        raise _bad_input_error(model, shape, err, layer) from err


# ----------------------------------------------------------------------------- profile
@dataclass(frozen=True, eq=False)
class Profile:
    """What one forward pass of a model at ``input_size`` costs (see the module docstring)."""

    model: str  # the model's class name
    input_size: tuple[int, ...]
    params: int  # every parameter, shared ones once
    macs: int  # multiply-accumulates of one forward pass on the whole input (all samples)
    activation_bytes: int  # sum of leaf modules' new output tensors
    layers: pd.DataFrame = field(repr=False)  # one row per leaf-module call, columns LAYER_COLUMNS
    peak_bytes: int | None = None  # CUDA only: peak memory above weights + input

    @property
    def flops(self) -> int:
        """FLOPs as FlopCounterMode counts them: 2 x MACs (a multiply and an add)."""
        return 2 * self.macs

    def summary(self) -> str:
        """One line, e.g. ``ResNet at (1, 3, 224, 224): 11.69 M params, 1.82 G MACs, 9.56 MiB activations``."""
        text = (f"{self.model} at {self.input_size}: {format_count(self.params)} params, "
                f"{format_count(self.macs)} MACs, {_format_bytes(self.activation_bytes)} activations")
        if self.peak_bytes is not None:
            text += f", {_format_bytes(self.peak_bytes)} peak"
        return text

    def __repr__(self) -> str:
        return f"Profile({self.summary()})"

    __str__ = summary


@dataclass
class _Frame:
    name: str
    module: nn.Module
    start_flops: int
    inputs: tuple
    child_flops: int = 0


def _new_bytes(output: Any, inputs: tuple) -> int:
    """Bytes of the output tensors that do not share memory with an input (in-place ops, views)."""
    def root(t: torch.Tensor) -> torch.Tensor:
        return t._base if t._base is not None else t

    def shares(a: torch.Tensor, b: torch.Tensor) -> bool:
        if a.device.type == "meta":  # no addresses on meta: rely on identity and view bases
            return root(a) is root(b)
        return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()

    ins = [t for t in inputs if isinstance(t, torch.Tensor)]
    outs = [output] if isinstance(output, torch.Tensor) else [
        t for t in (output.values() if isinstance(output, dict) else output if isinstance(output, (tuple, list)) else ())
        if isinstance(t, torch.Tensor)]
    return sum(o.numel() * o.element_size() for o in outs if not any(shares(o, i) for i in ins))


def _shape_of(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, (tuple, list)):
        return tuple(_shape_of(o) for o in output)
    return None


class _LayerRecorder:
    """Forward hooks on every module of ``model`` that turn the counter's running total into ``rows``.

    Each call pushes a frame; its end charges the MACs counted since, less its children's, to the
    module (``own``), and records a row for a leaf, or for a parent that ran counted operators or
    holds parameters of its own.  Each parameter is charged once, to the first module that owns it.
    """

    def __init__(self, model: nn.Module, counter: FlopCounterMode):
        self.counter = counter
        self.names = {m: (n or "(root)") for n, m in model.named_modules()}
        self.rows: list[dict] = []
        self.stack: list[_Frame] = []
        self.seen_params: set[int] = set()
        self.handles: list = []

    def own_params(self, m: nn.Module) -> int:
        fresh = [p for p in m.parameters(recurse=False) if id(p) not in self.seen_params]
        self.seen_params.update(id(p) for p in fresh)
        return sum(p.numel() for p in fresh)

    def pre_hook(self, m: nn.Module, args: tuple) -> None:
        self.stack.append(_Frame(self.names[m], m, self.counter.get_total_flops(), args))

    def post_hook(self, m: nn.Module, args: tuple, output: Any) -> None:
        frame = self.stack.pop()
        flops = self.counter.get_total_flops() - frame.start_flops
        if self.stack:
            self.stack[-1].child_flops += flops
        is_leaf = next(m.children(), None) is None
        own = flops - frame.child_flops
        n_params = self.own_params(m)
        if is_leaf or own or n_params:
            self.rows.append({
                "name": frame.name, "type": type(m).__name__, "kind": "leaf" if is_leaf else "own",
                "output_shape": _shape_of(output) if is_leaf else None, "params": n_params,
                "macs": own // 2, "activation_bytes": _new_bytes(output, frame.inputs) if is_leaf else 0,
            })

    def __enter__(self) -> "_LayerRecorder":
        for m in self.names:
            self.handles.append(m.register_forward_pre_hook(self.pre_hook))
            self.handles.append(m.register_forward_hook(self.post_hook))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def table(self) -> pd.DataFrame:
        """The rows so far, plus a ``not run`` row for each module whose parameters no call used."""
        for m, name in self.names.items():  # e.g. unused aux heads
            n_params = self.own_params(m)
            if n_params:
                self.rows.append({"name": name, "type": type(m).__name__, "kind": "not run", "output_shape": None,
                                  "params": n_params, "macs": 0, "activation_bytes": 0})
        return pd.DataFrame(self.rows, columns=LAYER_COLUMNS).astype(
            {"params": "int64", "macs": "int64", "activation_bytes": "int64"})


def profile(model: nn.Module, input_size: Sequence[int] | torch.Size, *,
            device: str | torch.device | None = None) -> Profile:
    """Count the parameters, MACs and activation memory of one forward pass on a random input.

    Args:
        model: any ``nn.Module`` taking one tensor. It runs in eval mode under ``torch.no_grad``;
            every submodule's train/eval flag is restored afterwards.
        input_size: the input's full shape, batch first, e.g. ``(1, 3, 224, 224)``; the channel
            count goes here too, e.g. ``(1, 1, 28, 28)`` for MNIST. MACs scale with the batch.
        device: where to run; default the model's own device. A model on another device is moved
            there for the call and moved back. ``"meta"`` needs a model built on meta.

    Returns:
        a ``Profile``; ``layers`` has one row per leaf-module call in execution order (a module
        called twice gives two rows); an ``own`` row for a module with children that holds parameters
        of its own or whose own ``forward`` ran counted operators (a functional ``F.conv2d``, a
        ConvNeXt block's layer scale), after its children's rows; a ``not run`` row
        for each module whose parameters the forward pass never used, so that
        ``layers.macs.sum() == macs`` and ``layers.params.sum() == params`` always hold.
    """
    shape = _as_shape(input_size)
    counter = FlopCounterMode(display=False)
    recorder = _LayerRecorder(model, counter)
    with _on_device(model, device) as dev, _eval_mode(model), torch.no_grad():
        _, dtype = _model_device_dtype(model)
        x = torch.randn(shape, device=dev, dtype=dtype)
        with _CudaPeak(dev) as peak, recorder, counter:
            _forward(model, x, shape, recorder.stack)
    layers = recorder.table()
    return Profile(model=type(model).__name__, input_size=shape, params=sum(p.numel() for p in model.parameters()),
                   macs=counter.get_total_flops() // 2, activation_bytes=int(layers.activation_bytes.sum()),
                   layers=layers, peak_bytes=peak.bytes)


class _CudaPeak:
    """The peak CUDA memory allocated inside the block above what was allocated at its start (None off CUDA)."""

    def __init__(self, device: torch.device):
        self.device, self.bytes, self._base = device, None, 0

    def __enter__(self) -> "_CudaPeak":
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._base


# ----------------------------------------------------------------------------- the seeds' arithmetic
def _conv(in_ch: int, out_ch: int, kernel: int | tuple[int, int], stride: int, padding: str | int | tuple,
          groups: int) -> nn.Conv2d:
    if padding == "same" and stride != 1:  # torch refuses 'same' with a stride: pad k // 2 instead
        k = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        padding = (k[0] // 2, k[1] // 2)
    return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, groups=groups, bias=False)


def _hw(input_hw: int | tuple[int, int]) -> tuple[int, int]:
    return (input_hw, input_hw) if isinstance(input_hw, int) else tuple(input_hw)


def conv_macs(in_ch: int, out_ch: int, kernel: int | tuple[int, int], input_hw: int | tuple[int, int],
              stride: int = 1, padding: str | int | tuple[int, int] = "same", groups: int = 1) -> int:
    """MACs of one ``nn.Conv2d`` on one ``(1, in_ch, H, W)`` input, counted by ``profile``.

    The layer is built for real and counted, so the number is the counter's, not a formula's.
    ``padding='same'`` with ``stride > 1`` pads ``kernel // 2``; ``kernel`` may be ``(kh, kw)``.
    """
    conv = _conv(in_ch, out_ch, kernel, stride, padding, groups)
    return profile(conv, (1, in_ch, *_hw(input_hw))).macs


def conv_params(in_ch: int, out_ch: int, kernel: int | tuple[int, int], groups: int = 1) -> int:
    """Weights of that ``nn.Conv2d`` without bias: ``out_ch * in_ch / groups * kh * kw``."""
    return sum(p.numel() for p in _conv(in_ch, out_ch, kernel, 1, 0, groups).parameters())


def separable_conv_macs(in_ch: int, out_ch: int, kernel: int | tuple[int, int], input_hw: int | tuple[int, int],
                        stride: int = 1) -> int:
    """MACs of a depthwise ``kernel`` convolution followed by a pointwise 1x1, counted by ``profile``."""
    block = nn.Sequential(_conv(in_ch, in_ch, kernel, stride, "same", groups=in_ch), _conv(in_ch, out_ch, 1, 1, 0, 1))
    return profile(block, (1, in_ch, *_hw(input_hw))).macs


# ----------------------------------------------------------------------------- latency
@dataclass(frozen=True)
class Latency:
    """Wall-clock time of one forward pass of a batch (milliseconds), over ``runs`` timed runs."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    runs: int
    batch_size: int
    device: str  # e.g. "cpu (AMD EPYC 7B13, 2 threads)"
    threads: int  # torch.get_num_threads() while timing
    samples_ms: tuple[float, ...] = field(repr=False, default=())  # every timed run, in order

    def summary(self) -> str:
        """E.g. ``3.21 ms median (p10 3.10, p90 3.42) over 30 runs, batch 1, cpu (...), 2 threads``."""
        return (f"{self.median_ms:.2f} ms median (p10 {self.p10_ms:.2f}, p90 {self.p90_ms:.2f}) over "
                f"{self.runs} runs, batch {self.batch_size}, {self.device}, {self.threads} threads")

    __str__ = summary


def measure_latency(model: nn.Module, input_size: Sequence[int] | torch.Size, *,
                    device: str | torch.device | None = None, warmup: int = 5, runs: int = 30,
                    threads: int | None = None) -> Latency:
    """Time ``model`` on a random ``input_size`` batch: ``warmup`` untimed runs, then ``runs`` timed ones.

    Eval mode and ``torch.inference_mode``; each run is timed by ``device.elapsed_ms``, which
    synchronises CUDA before and after, so that the queued kernels are inside the interval.
    ``threads`` sets ``torch.set_num_threads`` for the measurement only (restored afterwards).
    The median and the 10th/90th percentiles are reported because timings have a long right tail.
    Memory format and dtype are the model's: convert it (``channels_last``, ``.half()``) beforehand.
    """
    shape = _as_shape(input_size)
    if runs < 1 or warmup < 0 or (threads is not None and threads < 1):
        raise CourseError(f"need runs >= 1, warmup >= 0 and threads >= 1 (or None); got runs={runs}, "
                          f"warmup={warmup}, threads={threads}.")
    with _on_device(model, device) as dev, _eval_mode(model), num_threads(threads), torch.inference_mode():
        _, dtype = _model_device_dtype(model)
        x = torch.randn(shape, device=dev, dtype=dtype)
        for _ in range(max(warmup, 1)):  # at least one: it also checks the input shape
            _forward(model, x, shape)
        times = [elapsed_ms(lambda: model(x), dev) for _ in range(runs)]
        used_threads = torch.get_num_threads()
        hardware = device_name(dev)
    return _summarise(times, shape[0], hardware, used_threads)


def _summarise(times: Sequence[float], batch_size: int, hardware: str, threads: int) -> Latency:
    p10, median, p90 = np.percentile(times, [10, 50, 90])
    return Latency(median_ms=float(median), p10_ms=float(p10), p90_ms=float(p90), mean_ms=float(np.mean(times)),
                   runs=len(times), batch_size=batch_size, device=hardware, threads=threads,
                   samples_ms=tuple(times))


def measure_latencies(models: Mapping[str, nn.Module], input_size: Sequence[int] | torch.Size, *,
                      device: str | torch.device | None = None, warmup: int = 5, runs: int = 30,
                      threads: int | None = None) -> dict[str, Latency]:
    """Time several models on the same random batch, interleaved: ``{name: Latency}``.

    Timing models one after the other lets whatever drifts during the measurement (the allocator
    warming up, the clock, another process) land on one model only; the first model measured is often
    the slowest for no reason of its own. Here every model is warmed up first, then each of the ``runs``
    rounds times every model once, starting one model further along each round, so drift is shared.
    Same conventions as ``measure_latency``: eval mode, inference mode, synchronised timings, the
    models' own dtype and memory format, ``threads`` for the measurement only.
    """
    shape = _as_shape(input_size)
    if not models:
        raise CourseError("measure_latencies needs at least one model: pass {name: model}.")
    if runs < 1 or warmup < 0 or (threads is not None and threads < 1):
        raise CourseError(f"need runs >= 1, warmup >= 0 and threads >= 1 (or None); got runs={runs}, "
                          f"warmup={warmup}, threads={threads}.")
    names = list(models)
    with ExitStack() as stack:
        devs = [stack.enter_context(_on_device(models[n], device)) for n in names]
        for n in names:
            stack.enter_context(_eval_mode(models[n]))
        stack.enter_context(num_threads(threads))
        stack.enter_context(torch.inference_mode())
        inputs = [torch.randn(shape, device=d, dtype=_model_device_dtype(models[n])[1]) for n, d in zip(names, devs)]
        for _ in range(max(warmup, 1)):
            for n, x in zip(names, inputs):
                _forward(models[n], x, shape)
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(runs):
            for k in range(len(names)):
                i = (r + k) % len(names)  # rotate the starting model: none always follows the same one
                model, x = models[names[i]], inputs[i]
                times[names[i]].append(elapsed_ms(lambda: model(x), devs[i]))
        used_threads = torch.get_num_threads()
        hardware = device_name(devs[0])
    return {n: _summarise(times[n], shape[0], hardware, used_threads) for n in names}
