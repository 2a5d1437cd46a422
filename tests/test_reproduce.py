"""The batch runner: skip-completed, resume after a kill, failure reports, seed aggregation, bad names."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml

from course_utils import reproduce, results_page
from course_utils.__main__ import main as cli
from course_utils.errors import CourseError, UnknownNameError

REPO = Path(__file__).resolve().parent.parent

# A real notebook, small and fast: it publishes a table whose figure depends on the seed.
TOY_CELLS = [
    ("SMOKE = False\nRESULTS_DIR = ''\nSEED = 0\nDATASET = 'digits'\nFAIL = False\nBLOCK_FILE = ''", ["parameters"]),
    ("import os, time\nwhile BLOCK_FILE and os.path.exists(BLOCK_FILE):\n    time.sleep(0.2)", []),
    ("assert not FAIL, 'this run was told to fail'", []),
    ("import os\nimport pandas as pd\nfrom course_utils import results\n"
     "table = pd.DataFrame([{'dataset': DATASET, 'accuracy': 0.5 + 0.1 * SEED, 'n': 10}])\n"
     "results.publish(RESULTS_DIR, metrics={'device': 'cpu (test)', 'scale': 'toy', 'accuracy': 0.5 + 0.1 * SEED,"
     " 'data_dir': os.environ.get('COURSE_DATA_DIR', '')}, tables={'toy': table})", []),
]


@pytest.fixture
def toy(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src, metadata={"tags": t}) for src, t in TOY_CELLS]
    path = tmp_path / "toy.ipynb"
    nbformat.write(nb, path)

    def config(grid, params=None):
        return {"experiments": {"toy": {"title": "Toy", "notebook": str(path), "table": "toy", "claim": "none",
                                        "headline": "accuracy {accuracy}", "dataset_param": "DATASET",
                                        "quick": {"grid": grid, "params": params or {}},
                                        "paper": {"grid": grid, "params": params or {}}}},
                "groups": {"all": ["toy"]}}

    return config, tmp_path / "results"


@pytest.mark.notebook
def test_seeds_aggregate_and_completed_runs_are_skipped(toy):
    config, results = toy
    cfg = config({"SEED": [0, 1, 2]})
    records = reproduce.run_batch(["toy"], results_dir=results, config=cfg, log=lambda *_: None)
    assert [r["status"] for r in records] == ["ok"] * 3
    record = json.loads(next((results / "runs" / "toy").glob("seed=0-*/record.json")).read_text())
    assert {"parameters", "device", "torch", "start", "end", "metrics"} <= set(record)
    assert record["metrics"]["accuracy"] == 0.5 and record["device"] == "cpu (test)"
    table = pd.read_csv(results / "toy.csv")
    assert len(table) == 1 and table["seeds"][0] == 3
    assert table["accuracy"][0] == pytest.approx(0.6) and table["accuracy_std"][0] == pytest.approx(0.1)
    half = 4.30265273 * 0.1 / 3 ** 0.5  # Student's t(0.975, 2 degrees of freedom) * std / sqrt(3)
    assert table["accuracy_ci95"][0] == pytest.approx(half, rel=1e-6) and table["tier"][0] == "quick"
    assert "0.6000 ± 0.2484" in (results / "toy.md").read_text()
    readme = (results / "README.md").read_text()
    assert "## Toy" in readme and "**Paper's claim:** none" in readme and "accuracy 0.6000 ± 0.2484" in readme
    lines = []
    again = reproduce.run_batch(["toy"], results_dir=results, config=cfg, log=lines.append)
    assert again == [] and "3 already complete, 0 to run" in lines[0]
    next((results / "runs" / "toy").glob("seed=1-*/notebook.ipynb")).unlink()  # a fresh clone: figures, no notebook
    runs = reproduce.plan(cfg, ["toy"], quick=True, results_dir=results)
    assert [reproduce.is_complete(r) for r in runs] == [True, False, True]


@pytest.mark.notebook
def test_failed_run_reports_its_error_cell_and_the_batch_goes_on(toy):
    config, results = toy
    cfg = config({"FAIL": [True, False]})
    lines = []
    records = reproduce.run_batch(["toy"], results_dir=results, config=cfg, log=lines.append)
    assert [r["status"] for r in records] == ["failed", "ok"]
    log = "\n".join(lines)
    assert "AssertionError: this run was told to fail" in log
    assert "assert not FAIL, 'this run was told to fail'" in log and "the cell In [4]:" in log
    assert "1 run(s) failed" in log


@pytest.mark.notebook
def test_a_killed_batch_resumes_where_it_stopped(toy, tmp_path):
    config, results = toy
    block = tmp_path / "block"
    block.touch()
    cfg = config({"SEED": [0, 1, 2]}, {"BLOCK_FILE": ""})
    cfg["experiments"]["toy"]["quick"]["grid"] = {"SEED": [0, 1, 2]}
    # seed 1 blocks while the file exists: kill the batch while it waits there
    cfg_path = tmp_path / "cfg.yaml"
    code = ("import sys, yaml; from pathlib import Path; from course_utils import reproduce\n"
            "cfg = yaml.safe_load(open(sys.argv[1])); block = sys.argv[2]\n"
            "orig = reproduce.execute\n"
            "def execute(run, **kw):\n"
            "    if run.parameters['SEED'] == 1: run.parameters['BLOCK_FILE'] = block\n"
            "    return orig(run, **kw)\n"
            "reproduce.execute = execute\n"
            "reproduce.run_batch(['toy'], results_dir=Path(sys.argv[3]), config=cfg)\n")
    cfg_path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-c", code, str(cfg_path), str(block), str(results)],
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while time.time() < deadline and not list((results / "runs" / "toy").glob("seed=1-*/notebook.ipynb")):
        time.sleep(0.5)
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    folders = {p.name.split("-")[0]: p for p in (results / "runs" / "toy").iterdir()}
    assert (folders["seed=0"] / "record.json").exists(), "the finished run kept its record"
    assert not (folders["seed=1"] / "record.json").exists(), "the killed run wrote no record"
    block.unlink()
    lines = []
    records = reproduce.run_batch(["toy"], results_dir=results, config=cfg, log=lines.append)
    assert "1 already complete, 2 to run" in lines[0]
    assert sorted(r["parameters"]["SEED"] for r in records) == [1, 2] and all(r["status"] == "ok" for r in records)
    assert pd.read_csv(results / "toy.csv")["seeds"][0] == 3


def test_unknown_experiment_gives_a_clear_error(capsys):
    with pytest.raises(UnknownNameError, match="unknown experiment 'speedy'. Known experiments: "):
        reproduce.experiment_names(reproduce.load_config(), ["speedy"])
    assert cli(["reproduce", "speedy", "--list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown experiment 'speedy'") and "Traceback" not in err


def test_missing_dataset_falls_back_to_digits_and_says_so(toy, monkeypatch):
    config, results = toy
    monkeypatch.setattr(reproduce, "_dataset_available", lambda name: name == "digits")
    runs = reproduce.plan(config({"DATASET": ["mnist", "digits"]}), ["toy"], quick=True, results_dir=results)
    assert len(runs) == 1, "both fall back to digits: one run"
    assert runs[0].parameters["DATASET"] == "digits" and "mnist not found" in runs[0].notes[0]


def test_aggregate_keeps_integer_and_text_columns_as_keys():
    frame = pd.DataFrame({"dataset": ["a", "a", "b"], "batch_size": [1, 1, 256], "seed": [0, 1, 0],
                          "ms": [1.0, 3.0, 5.0]})
    out = results_page.aggregate(frame)
    assert out[["dataset", "batch_size", "seeds"]].values.tolist() == [["a", 1, 2], ["b", 256, 1]]
    assert out["ms"].tolist() == [2.0, 5.0] and out["ms_std"].iloc[0] == pytest.approx(2 ** 0.5)
    assert out["ms_ci95"].iloc[0] == pytest.approx(12.7062047, rel=1e-6)  # t(0.975, 1) * sqrt(2) / sqrt(2)
    assert np.isnan(out["ms_ci95"].iloc[1])  # one seed: no interval
    # a setting that older runs lack reads back as a float column with NaN: it still identifies the row
    frame = pd.DataFrame({"width_mult": [0.5, 0.5, np.nan], "train_images": [54001.0, 54001.0, np.nan],
                          "seed": [1, 2, 0], "ms": [1.0, 3.0, 5.0]})
    out = results_page.aggregate(frame)
    assert out[["width_mult", "train_images", "seeds"]].values.tolist() == [[0.5, 54001.0, 2], ["", "", 1]]
    assert "width_mult_ci95" not in out and out["ms"].tolist() == [2.0, 5.0]
    assert "| 0.5000 | 54,001 | 2.00 ± 12.71 | 2 |" in results_page.markdown_table(out[["width_mult", "train_images", "ms",
                                                                                     "ms_ci95", "seeds"]])
    # precision is the numeric dtype: a run that also named its layout averages with the others in that dtype
    frame = pd.DataFrame({"precision": ["fp32", "fp32", "fp32+channels_last", "bf16+channels_last"],
                          "seed": [1, 2, 0, 0], "ms": [1.0, 3.0, 5.0, 7.0]})
    out = results_page.aggregate(frame)
    assert out[["precision", "seeds"]].values.tolist() == [["fp32", 3], ["bf16", 1]] and out["ms"].iloc[0] == 3.0


def test_headlines_are_per_tier_and_dataset_and_average_seeds_within_one():
    spec = {"headline": "{speedup}x", "dataset_param": "DATASET"}
    runs = [(Path("a"), {"parameters": {"DATASET": d, "SEED": s}, "metrics": {"speedup": v}})
            for d, s, v in [("mnist", 0, 20.0), ("mnist", 1, 30.0), ("cifar10", 0, 3.0)]]
    assert results_page.headlines(spec, runs) == ["- **cifar10** (quick tier): 3.00x",
                                                  "- **mnist** (quick tier): 25.00 ± 63.53x"]
    assert results_page.headlines(spec, runs[:2]) == ["25.00 ± 63.53x"]
    trained = (Path("b"), {"tier": "standard", "parameters": {"DATASET": "mnist", "SEED": 0}, "metrics": {}})
    assert results_page.headlines(spec, runs[:2] + [trained]) == [
        "- **mnist** (standard tier): n/a", "- **mnist** (quick tier): 25.00 ± 63.53x"], "trained first, never mixed"
    # a run that says it is not in the headline (mode (b) on seed 0 only) stays out of the mean
    second = (Path("c"), {"parameters": {"DATASET": "mnist", "SEED": 0}, "metrics": {"speedup": 99.0,
                                                                                    "in_headline": False}})
    assert results_page.headlines(spec, runs[:2] + [second]) == ["25.00 ± 63.53x"]
    # a figure only some runs publish (an ablation run on one seed) says how many runs it is from
    assert results_page.headline("{speedup}x", [{"speedup": 2.0}, {}, {}]) == "2.00x (1 of 3 runs)"
    # the unit stays with its number, and a missing figure has none ("n/a", never "n/ax" or "n/a%")
    assert results_page.headline("{cut}% less, {s}x.", [{"cut": 12.5}]) == "12.50% less, n/a."


def test_headline_fills_a_text_verdict_as_it_is_and_shows_disagreeing_runs():
    spec = {"headline": "gap {gap}. {verdict}"}
    runs = [(Path("a"), {"parameters": {"SEED": s}, "metrics": {"gap": g, "verdict": v, "shown": True}})
            for s, g, v in [(0, 0.5, "Reproduced."), (1, 1.5, "Reproduced.")]]
    assert results_page.headlines(spec, runs) == ["gap 1.00 ± 6.35. Reproduced."]
    runs[1][1]["metrics"]["verdict"] = "Not shown."
    assert results_page.headlines(spec, runs) == ["gap 1.00 ± 6.35. Reproduced. / Not shown."]
    assert results_page.headline("{shown}", [{"shown": True}]) == "n/a"  # a flag is no number to average
    assert results_page.headline("{side}x{side}", [{"side": 224}, {"side": 224}]) == "224x224"


def test_an_experiment_can_name_its_own_tier_label():
    spec = {"quick": {"label": "the notebook's defaults"}}
    assert results_page.tier_label("quick", spec) == "quick: the notebook's defaults"
    assert results_page.tier_label("quick", {}) == results_page.TIER_LABELS["quick"]


def test_the_walk_group_runs_notebooks_01_to_07_and_all_stays_short():
    config = reproduce.load_config()
    walk = reproduce.experiment_names(config, ["walk"])
    notebooks = sorted(config["experiments"][n]["notebook"] for n in walk)
    assert [Path(n).name[:2] for n in notebooks] == ["01", "02", "03", "04", "05", "06", "07"]
    assert not set(walk) & set(config["groups"]["all"])  # `make reproduce` stays within the hour
    assert set(reproduce.experiment_names(config, ["course"])) == set(config["experiments"])


def test_every_experiment_names_a_notebook_and_only_its_parameters():
    import ast

    config = reproduce.load_config()
    assert {"speedycnet", "edcnn", "nas", "architectures"} <= set(config["groups"]["all"])
    for name, spec in config["experiments"].items():
        nb = nbformat.read(reproduce.REPO / spec["notebook"], as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        declared = {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
                    for t in node.targets}
        assert "quick" in spec and "paper" in spec, f"{name}: every experiment has a quick and a paper tier"
        for block in (t for t in reproduce.TIERS if t in spec):
            grids = spec[block]["grid"] if isinstance(spec[block]["grid"], list) else [spec[block]["grid"]]
            used = {k for g in grids for k in g} | set(spec[block].get("params") or {})
            assert used <= declared, f"{name}/{block}: {sorted(used - declared)} are not parameters of the notebook"


def test_tiers_seeds_and_overrides_shape_the_plan(toy):
    config, results = toy
    cfg = config({"SEED": [0, 1, 2]}, {"EPOCHS": 2})
    cfg["experiments"]["toy"]["standard"] = {"grid": {"SEED": [0, 1, 2, 3]}, "params": {"EPOCHS": 30}}
    standard = reproduce.plan(cfg, ["toy"], tier="standard", results_dir=results)
    assert [r.parameters for r in standard] == [{"EPOCHS": 30, "SEED": s} for s in range(4)]
    one = reproduce.plan(cfg, ["toy"], tier="paper", seeds=1, overrides={"EPOCHS": 5}, results_dir=results)
    assert [r.parameters for r in one] == [{"EPOCHS": 5, "SEED": 0}]
    assert one[0].name.startswith("seed=0,epochs=5-"), "an override names the run folder"
    assert reproduce.plan(cfg, ["toy"], quick=True, results_dir=results)[0].parameters == {"EPOCHS": 2, "SEED": 0}
    # a list of grids is the union of their products: a second network on one seed, as runs of its own
    cfg["experiments"]["toy"]["standard"]["grid"] = [{"SEED": [0, 1, 2], "MODES": ["frozen"]},
                                                     {"SEED": [0], "MODES": ["joint"]}]
    union = reproduce.plan(cfg, ["toy"], tier="standard", results_dir=results)
    assert [(r.parameters["SEED"], r.parameters["MODES"]) for r in union] == \
        [(0, "frozen"), (1, "frozen"), (2, "frozen"), (0, "joint")]
    assert union[3].name.startswith("seed=0,modes=joint-") and len({r.folder for r in union}) == 4
    assert [r.parameters["SEED"] for r in reproduce.plan(cfg, ["toy"], tier="standard", seeds=1,
                                                          results_dir=results)] == [0, 0]
    assert [r.parameters["MODES"] for r in reproduce.plan(cfg, ["toy"], tier="standard", only={"SEED": 0},
                                                           results_dir=results)] == ["frozen", "joint"]
    # a grid entry that is not a mapping of lists names itself and the shape it needs, not a bare TypeError
    cfg["experiments"]["toy"]["standard"]["grid"] = [{"SEED": [0]}, "MODES=joint"]
    with pytest.raises(CourseError, match=r"toy\.standard\.grid: each grid is a mapping.*'MODES=joint'"):
        reproduce.plan(cfg, ["toy"], tier="standard", results_dir=results)
    cfg["experiments"]["toy"]["standard"]["grid"] = {"SEED": 0}
    with pytest.raises(CourseError, match=r"every grid value is a list.*SEED: \[0\]"):
        reproduce.plan(cfg, ["toy"], tier="standard", results_dir=results)
    with pytest.raises(UnknownNameError, match="unknown tier 'huge'.*quick, standard, paper"):
        reproduce.plan(cfg, ["toy"], tier="huge", results_dir=results)
    del cfg["experiments"]["toy"]["standard"]
    with pytest.raises(CourseError, match="has no 'standard' tier.*it has: quick, paper"):
        reproduce.plan(cfg, ["toy"], tier="standard", results_dir=results)
    assert reproduce.parse_overrides(["EPOCHS=5", "TAPS=[1, 2]", "NAME=vgg"]) == {
        "EPOCHS": 5, "TAPS": [1, 2], "NAME": "vgg"}
    with pytest.raises(CourseError, match="--set needs NAME=VALUE"):
        reproduce.parse_overrides(["EPOCHS"])


def test_only_slices_a_grid_into_the_same_folders_and_a_tier_adds_its_env(toy):
    config, results = toy
    cfg = config({"DATASET": ["digits"], "SEED": [0, 1]})
    cfg["experiments"]["toy"]["env"] = {"COURSE_THREADS": "1", "A": "x"}
    cfg["experiments"]["toy"]["standard"] = {"grid": {"DATASET": ["digits"], "SEED": [0, 1, 2]},
                                              "env": {"COURSE_THREADS": 2}}
    whole = reproduce.plan(cfg, ["toy"], tier="standard", results_dir=results)
    sliced = reproduce.plan(cfg, ["toy"], tier="standard", only={"SEED": 1}, results_dir=results)
    assert [r.folder for r in sliced] == [whole[1].folder], "a slice runs in the whole grid's folder"
    assert sliced[0].env == {"COURSE_THREADS": "2", "A": "x"}, "the tier's env overrides the experiment's"
    assert reproduce.plan(cfg, ["toy"], quick=True, results_dir=results)[0].env == {"COURSE_THREADS": "1", "A": "x"}
    with pytest.raises(CourseError, match="--only SEED=7 matches none of the planned runs of toy"):
        reproduce.plan(cfg, ["toy"], tier="standard", only={"SEED": 7}, results_dir=results)
    # where a run keeps its passes is no setting: the finished runs keep their folders when it moves
    cfg["experiments"]["toy"]["standard"]["params"] = {"PASS_DIR": "../checkpoints/passes"}
    assert [r.folder for r in reproduce.plan(cfg, ["toy"], tier="standard", results_dir=results)] == \
        [r.folder for r in whole]
    assert reproduce.plan(cfg, ["toy"], tier="standard", results_dir=results)[0].parameters["PASS_DIR"] == "../checkpoints/passes"


def test_every_committed_run_whose_figures_were_checked_reads_cleanly():
    """results.publish counts each figure's overprinted or clipped text and legends over data as it writes the PNG
    (runs published before that check have no count, and re-running them adds one)."""
    for metrics_file in sorted((reproduce.DEFAULT_RESULTS / "runs").glob("*/*/metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        if "figure_problems" in metrics:
            assert metrics["figure_problems"] == 0, f"{metrics_file.parent}: a figure does not read cleanly"


def test_publish_counts_and_prints_a_figure_that_does_not_read(tmp_path, capsys):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_utils import results

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.text(0.1, 0.5, "one label", fontsize=14)
    ax.text(0.15, 0.5, "another label", fontsize=14)
    clean, _ = plt.subplots()
    results.publish(tmp_path, metrics={"x": 1}, figures={"bad": fig, "clean": clean}, device="cpu")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["figure_problems"] > 0 and (tmp_path / "bad.png").exists()  # written, and counted
    out = capsys.readouterr().out
    assert "figure 'bad' does not read cleanly: text (axes 0) 'one label' overlaps" in out and "'clean'" not in out
    results.publish(tmp_path / "clean", metrics={"x": 1}, figures={"clean": clean}, device="cpu")
    assert json.loads((tmp_path / "clean" / "metrics.json").read_text())["figure_problems"] == 0
    plt.close("all")


def test_a_headline_figure_older_runs_lack_says_how_to_fill_it(tmp_path):
    folder = tmp_path / "runs" / "toy" / "seed=0-abc"
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(json.dumps({"status": "ok", "tier": "quick", "device": "cpu",
                                                    "parameters": {"SEED": 0}, "metrics": {"old": 1.0}}))
    config = {"experiments": {"toy": {"title": "Toy", "notebook": "n.ipynb", "table": "toy",
                                      "headline": "old {old}, new {new}"}}}
    readme = results_page.build_results_readme(config, tmp_path).read_text()
    assert "old 1.00, new n/a" in readme
    assert "> n/a: these runs predate that figure; `python -m course_utils reproduce toy --tier quick --force`" in readme


@pytest.mark.notebook
def test_a_relative_data_dir_reaches_the_kernel_and_moving_a_dir_parameter_reruns_nothing(toy, monkeypatch):
    """The kernel runs in the notebook's folder: a relative COURSE_DATA_DIR given on the command line (as in
    `COURSE_DATA_DIR=../shared/data python -m course_utils reproduce ...`) must reach it as an absolute path,
    or the run silently falls back to digits. A new PASS_DIR must not make finished runs look unfinished."""
    config, results = toy
    monkeypatch.chdir(results.parent)
    monkeypatch.setenv("COURSE_DATA_DIR", "shared/data")
    cfg = config({"SEED": [0]})
    [record] = reproduce.run_batch(["toy"], results_dir=results, config=cfg, log=lambda *_: None)
    assert record["metrics"]["data_dir"] == str(results.parent / "shared" / "data")
    assert os.environ["COURSE_DATA_DIR"] == "shared/data", "this process's environment is left as it was"
    cfg["experiments"]["toy"]["quick"]["params"] = {"PASS_DIR": "../checkpoints/passes"}
    lines = []
    reproduce.run_batch(["toy"], results_dir=results, config=cfg, log=lines.append)
    assert "1 already complete, 0 to run" in " ".join(lines)
