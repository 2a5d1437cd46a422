"""The batch runner: papermill over parameter grids, one folder per run, tables at the end.

    python -m course_utils reproduce speedycnet --quick
    python -m course_utils reproduce all --quick --jobs 2

The grids live in ``reproduce.yaml`` at the repo root: per experiment, a notebook, the table it
publishes, and a ``quick`` (CPU-scale) and ``paper`` (GPU-scale) parameter grid.  Every run writes,
under ``results/runs/<experiment>/<run>/``:

* ``notebook.ipynb`` — the executed notebook;
* what the notebook published (``metrics.json``, CSV tables, PNG figures);
* ``record.json`` — parameters, device, torch version, start and end time, status, the figures.

A run whose ``record.json`` says ``ok`` for the same parameters is skipped, so a batch restarted
after a crash or Ctrl-C picks up where it stopped (a killed run never wrote its record).  A failed
run is reported with its notebook's error cell and the batch goes on.  At the end every
experiment's runs are gathered into ``results/<experiment>.csv`` and ``.md`` (several seeds as
mean ± std), and ``results/README.md`` is rebuilt.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from .errors import CourseError, DataNotFoundError, UnknownNameError
from .results import write_text
from .results_page import build_results_readme, build_tables

REPO = Path(__file__).resolve().parent.parent
CONFIG_PATH = REPO / "reproduce.yaml"
DEFAULT_RESULTS = REPO / "results"


# ----------------------------------------------------------------------------- the plan
@dataclass
class Run:
    """One notebook execution with one parameter set."""

    experiment: str
    notebook: Path
    parameters: dict[str, Any]
    folder: Path
    notes: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the notebook's kernel
    tier: str = "quick"  # which of reproduce.yaml's tiers planned it (recorded, and shown on the results page)

    @property
    def name(self) -> str:
        return self.folder.name


def load_config(path: Path = CONFIG_PATH) -> dict:
    """The experiments and groups in ``reproduce.yaml``."""
    import yaml

    with open(path) as f:
        return yaml.safe_load(f)


def experiment_names(config: dict, names: list[str]) -> list[str]:
    """Expand group names (``all``) and check every name; unknown ones raise with the known list."""
    experiments, groups = config["experiments"], config.get("groups", {})
    out = []
    for name in names or ["all"]:
        if name in groups:
            out.extend(groups[name])
        elif name in experiments:
            out.append(name)
        else:
            known = ", ".join(sorted(experiments) + sorted(groups))
            raise UnknownNameError(f"unknown experiment {name!r}. Known experiments: {known}.")
    return list(dict.fromkeys(out))


def _identity(params: dict[str, Any] | None) -> dict[str, Any]:
    """The parameters that make a run what it is. Where it keeps its files (PASS_DIR, CHECKPOINT_DIR) is no
    setting of the experiment: moving them must neither rename nor re-run the runs already finished."""
    return {k: v for k, v in (params or {}).items() if not k.endswith("_DIR")}


def _run_folder_name(params: dict[str, Any], grid_keys: list[str]) -> str:
    readable = ",".join(f"{k.lower()}={params[k]}" for k in grid_keys) or "default"
    digest = hashlib.sha1(json.dumps(_identity(params), sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{readable}-{digest}"


def _dataset_available(name: str) -> bool:
    from . import data

    if name == "digits":
        return True
    try:
        data.locate(name, download=os.environ.get("COURSE_OFFLINE") != "1")
        return True
    except DataNotFoundError:
        return False


TIERS = ("quick", "standard", "paper")  # demonstration (any CPU) / trained networks (2-core CPU) / papers' scale (GPU)


def resolve_tier(quick: bool | None = None, tier: str | None = None) -> str:
    """The tier to run: ``tier`` if given, else ``"quick"`` when ``quick``, else ``"paper"``."""
    if tier is None:
        return "quick" if quick else "paper"
    if tier not in TIERS:
        raise UnknownNameError(f"unknown tier {tier!r}. Use one of: {', '.join(TIERS)}.")
    return tier


def _check_grid(grid: Any, name: str, tier: str) -> dict:
    """One grid as a fresh dict, or a CourseError naming the entry and the shape it needs."""
    where = f"{CONFIG_PATH.name}, experiments.{name}.{tier}.grid"
    if not isinstance(grid, dict):
        raise CourseError(f"{where}: each grid is a mapping of parameter -> list of values (or a list of such "
                          f"mappings), got {grid!r}. Write it as {{SEED: [0, 1, 2]}}.")
    bad = {k: v for k, v in grid.items() if not isinstance(v, list)}
    if bad:
        raise CourseError(f"{where}: every grid value is a list of the values to run, got {bad!r}. "
                          f"Write one value as a one-item list ({next(iter(bad))}: [{next(iter(bad.values()))!r}]), "
                          f"or move it to params.")
    return dict(grid)


def _setting(spec: dict, name: str, tier: str, seeds: int | None) -> dict:
    """The tier's grid and params for one experiment; ``seeds`` keeps the first N values of its SEED grid."""
    if tier not in spec:
        have = [t for t in TIERS if t in spec]
        raise CourseError(f"experiment {name!r} has no {tier!r} tier in {CONFIG_PATH.name} (it has: "
                          f"{', '.join(have)}). Run it with --tier {have[0]}, or add the tier to the file.")
    setting = spec[tier]
    # a grid is one mapping (its product is the runs) or a list of them (the union of their products: e.g. a
    # second network trained on one seed only, as its own runs, so the other runs need not wait for it)
    raw = setting.get("grid") or {}
    grids = [_check_grid(g or {}, name, tier) for g in (raw if isinstance(raw, list) else [raw])]
    if seeds is not None:
        if seeds < 1:
            raise CourseError("--seeds must be at least 1")
        for grid in grids:
            if "SEED" in grid:
                grid["SEED"] = list(grid["SEED"])[:seeds]
    # a tier's env adds to (and overrides) the experiment's: a trained tier may want every core
    env = {**(spec.get("env") or {}), **(setting.get("env") or {})}
    return {"grids": grids, "params": setting.get("params") or {}, "env": env}


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["EPOCHS=5", "TAPS=[1, 2]"]`` -> ``{"EPOCHS": 5, "TAPS": [1, 2]}`` (values read as YAML)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise CourseError(f"--set needs NAME=VALUE (a notebook parameter), got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def _grid_runs(name: str, spec: dict, setting: dict, grid: dict, scale: str, results_dir: Path,
               overrides: dict[str, Any] | None, only: dict[str, Any] | None) -> list[Run]:
    """The runs of one grid: its product, with the tier's fixed parameters and the overrides added."""
    runs = []
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        params = {**(setting.get("params") or {}), **dict(zip(keys, values)), **(overrides or {})}
        notes = []
        dataset_key = spec.get("dataset_param")
        if dataset_key and dataset_key in params and not _dataset_available(params[dataset_key]):
            notes.append(f"{params[dataset_key]} not found on this machine: ran on the embedded digits set")
            params[dataset_key] = "digits"
        folder = results_dir / "runs" / name / _run_folder_name(params, keys + sorted(set(overrides or {}) - set(keys)))
        if any(params.get(k) != v for k, v in (only or {}).items()):
            continue
        env = {k: str(v) for k, v in setting["env"].items()}
        runs.append(Run(name, REPO / spec["notebook"], params, folder, notes, env, scale))
    return runs


def plan(config: dict, names: list[str], *, quick: bool | None = None, results_dir: Path,
         tier: str | None = None, seeds: int | None = None, overrides: dict[str, Any] | None = None,
         only: dict[str, Any] | None = None) -> list[Run]:
    """Every run of the named experiments: the product of each grid (or the union over a list of grids), with
    fixed parameters added.

    tier: ``"quick"``, ``"standard"`` or ``"paper"`` (``quick=True`` is the old spelling of ``"quick"``).
    seeds: keep only the first N seeds of each grid (e.g. 1 for a GPU check).
    overrides: parameters set on every run, over the tier's (``--set EPOCHS=5``); they name the run folder.
    only: keep only the runs whose parameters have these values (``--only DATASET=mnist``): a slice of a grid,
        in the same run folders as the whole grid.
    A run whose dataset is not on this machine (and cannot be downloaded) falls back to the
    embedded ``digits`` set, and its record says so.
    """
    runs = []
    scale = resolve_tier(quick, tier)
    for name in experiment_names(config, names):
        spec = config["experiments"][name]
        setting = _setting(spec, name, scale, seeds)
        for grid in setting["grids"]:
            runs.extend(_grid_runs(name, spec, setting, grid, scale, results_dir, overrides, only))
    if only and not runs:
        raise CourseError(f"--only {' '.join(f'{k}={v}' for k, v in only.items())} matches none of the planned runs "
                          f"of {', '.join(names)}: check the name and value against `--list` without --only (a dataset "
                          f"not found on this machine is planned as digits: set COURSE_DATA_DIR).")
    # the same parameters twice (e.g. two datasets that both fell back to digits) run once
    unique = {}
    for r in runs:
        unique.setdefault(r.folder, r)
    return list(unique.values())


def is_complete(run: Run) -> bool:
    """True when the run's record says it finished with these exact parameters.

    The executed notebook must be there too: git keeps the published figures of our runs but not the
    executed notebooks, so on a fresh clone every run executes again instead of passing off ours.
    """
    record = run.folder / "record.json"
    if not record.exists() or not (run.folder / "notebook.ipynb").exists():
        return False
    try:
        saved = json.loads(record.read_text())
    except json.JSONDecodeError:
        return False
    return saved.get("status") == "ok" and _identity(saved.get("parameters")) == _identity(run.parameters)


# ----------------------------------------------------------------------------- running
def _error_cell(notebook_path: Path) -> str:
    """The source and error of the first failed cell of an executed notebook."""
    import nbformat

    try:
        nb = nbformat.read(notebook_path, as_version=4)
    except Exception:
        return "(the executed notebook could not be read)"
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                source = "\n".join("    " + line for line in cell.source.splitlines()[-8:])
                return f"the cell In [{cell.get('execution_count')}]:\n{source}\n  {out.get('ename')}: {out.get('evalue')}"
    return "(no error cell found)"


def execute(run: Run, *, smoke: bool = False, log=print) -> dict:
    """Run one notebook through papermill into ``run.folder``; return and write its record."""
    import papermill
    import torch

    from .device import device_name, get_device

    if run.folder.exists():  # a half-finished earlier attempt: start it clean
        shutil.rmtree(run.folder)
    run.folder.mkdir(parents=True)
    params = {**run.parameters, "RESULTS_DIR": str(run.folder.resolve())}
    if smoke:
        params["SMOKE"] = True
    record = {"experiment": run.experiment, "run": run.name, "tier": run.tier,
              "notebook": os.path.relpath(run.notebook, REPO),
              "parameters": run.parameters, "notes": run.notes, "torch": torch.__version__,
              "device": device_name(get_device()), "start": dt.datetime.now().isoformat(timespec="seconds")}
    t0 = time.perf_counter()
    env = dict(run.env)
    data_dir = os.environ.get("COURSE_DATA_DIR")
    if data_dir and "COURSE_DATA_DIR" not in env:  # the kernel runs in notebooks/: a relative path would miss the
        env["COURSE_DATA_DIR"] = os.path.abspath(data_dir)  # data there, and the run would fall back to digits
    saved_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        papermill.execute_notebook(str(run.notebook), str(run.folder / "notebook.ipynb"), parameters=params,
                                   cwd=str(run.notebook.parent), kernel_name="python3", progress_bar=False)
        record["status"] = "ok"
    except papermill.PapermillExecutionError as err:
        record.update(status="failed", error=f"{err.ename}: {err.evalue}",
                      error_cell=_error_cell(run.folder / "notebook.ipynb"))
    except Exception as err:  # kernel died, notebook missing, ...
        record.update(status="failed", error=f"{type(err).__name__}: {err}", error_cell="")
    finally:
        for k, v in saved_env.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    record["end"] = dt.datetime.now().isoformat(timespec="seconds")
    record["seconds"] = round(time.perf_counter() - t0, 1)
    metrics_file = run.folder / "metrics.json"
    record["metrics"] = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    if record["status"] == "ok" and record["metrics"].get("device"):
        record["device"] = record["metrics"]["device"]
    if record["status"] == "ok" and not metrics_file.exists():
        record.update(status="failed", error="the notebook finished but published no metrics.json", error_cell="")
    write_text(run.folder / "record.json", json.dumps(record, indent=2, default=str))
    return record


def _execute_quietly(run: Run, smoke: bool) -> dict:
    return execute(run, smoke=smoke)


def run_batch(names: list[str], *, quick: bool = True, jobs: int = 1, results_dir: Path = DEFAULT_RESULTS,
              force: bool = False, smoke: bool = False, config: dict | None = None, log=print,
              tier: str | None = None, seeds: int | None = None, overrides: dict[str, Any] | None = None,
              only: dict[str, Any] | None = None) -> list[dict]:
    """Plan, skip what is complete, run the rest (``jobs`` at a time), then rebuild every table."""
    config = config or load_config()
    tier = resolve_tier(quick, tier)
    runs = plan(config, names, tier=tier, seeds=seeds, overrides=overrides, results_dir=results_dir, only=only)
    todo = [r for r in runs if force or not is_complete(r)]
    log(f"{len(runs)} runs planned, {len(runs) - len(todo)} already complete, {len(todo)} to run "
        f"(the {tier} tier's grids from {CONFIG_PATH.name}).")
    records = []

    def report(run: Run, record: dict) -> None:
        status = record["status"]
        log(f"[{status:6s}] {run.experiment}/{run.name} in {record['seconds']:.0f} s -> {run.folder}")
        for note in run.notes:
            log(f"         note: {note}")
        if status != "ok":
            log(f"         {record['error']}\n         {record.get('error_cell', '')}".replace("\n", "\n         "))
        records.append(record)

    if jobs > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_execute_quietly, r, smoke): r for r in todo}
            for future, run in futures.items():
                report(run, future.result())
    else:
        for i, run in enumerate(todo, 1):
            log(f"[{i}/{len(todo)}] {run.experiment}/{run.name} ...")
            report(run, execute(run, smoke=smoke))
    for name in experiment_names(config, names):
        build_tables(name, config, results_dir)
    build_results_readme(config, results_dir)
    failed = [r for r in records if r["status"] != "ok"]
    log(f"\nResults: {results_dir / 'README.md'}  (runs under {results_dir / 'runs'})")
    if failed:
        log(f"{len(failed)} run(s) failed; fix them and run the same command again: completed runs are skipped.")
    return records


# ----------------------------------------------------------------------------- command line
def main(argv: list[str]) -> int:
    """``python -m course_utils reproduce [experiment ...] [--quick] [--jobs N] [--results DIR]``."""
    import argparse

    config = load_config()
    known = sorted(config["experiments"]) + sorted(config.get("groups", {}))
    parser = argparse.ArgumentParser(prog="python -m course_utils reproduce",
                                     description="Run the course's notebooks over parameter grids and rebuild results/.")
    parser.add_argument("experiments", nargs="*", default=["all"], help=f"any of: {', '.join(known)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="= --tier quick: the demonstration (minutes, any CPU)")
    parser.add_argument("--tier", choices=TIERS, default=None,
                        help="quick (demonstration), standard (trained networks, 2-core CPU, hours), paper (GPU); "
                             "default: paper, or quick with --quick")
    parser.add_argument("--seeds", type=int, default=None, help="run only the first N seeds of each grid")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="set a notebook parameter on every run (repeatable), e.g. --set EPOCHS=5")
    parser.add_argument("--only", action="append", default=[], metavar="NAME=VALUE",
                        help="run only the grid's runs with this parameter value (repeatable), e.g. --only DATASET=mnist")
    parser.add_argument("--jobs", type=int, default=1, help="independent runs in parallel processes")
    parser.add_argument("--results", default=str(DEFAULT_RESULTS), help="output folder (default: results/)")
    parser.add_argument("--force", action="store_true", help="re-run runs that are already complete")
    parser.add_argument("--smoke", action="store_true", help="run every notebook in smoke mode (for testing)")
    parser.add_argument("--list", action="store_true", help="print the planned runs and exit")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        raise CourseError("--jobs must be at least 1")
    results_dir = Path(args.results).resolve()
    if args.list:
        for run in plan(config, args.experiments, quick=args.quick, tier=args.tier, seeds=args.seeds,
                        overrides=parse_overrides(args.set), results_dir=results_dir, only=parse_overrides(args.only)):
            done = "done" if is_complete(run) else "todo"
            print(f"{done}  {run.experiment}/{run.name}  {run.parameters}")
        return 0
    records = run_batch(args.experiments, quick=args.quick, jobs=args.jobs, results_dir=results_dir,
                        force=args.force, smoke=args.smoke, config=config, tier=args.tier, seeds=args.seeds,
                        overrides=parse_overrides(args.set), only=parse_overrides(args.only))
    return 1 if any(r["status"] != "ok" for r in records) else 0


