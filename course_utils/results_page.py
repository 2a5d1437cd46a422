"""The results page: every experiment's runs gathered into ``results/<experiment>.csv`` and ``.md`` (several
seeds as mean ± the 95% confidence interval), and ``results/README.md`` with each paper's claim beside our measured headline, table and
figures.  ``reproduce`` calls ``build_tables`` and ``build_results_readme`` after a batch.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .results import write_text


def records(name: str, results_dir: Path) -> list[tuple[Path, dict]]:
    out = []
    for record_file in sorted((results_dir / "runs" / name).glob("*/record.json")):
        record = json.loads(record_file.read_text())
        if record.get("status") == "ok":
            out.append((record_file.parent, record))
    return out


def ci95(std: float, n: int) -> float:
    """Half-width of the 95% confidence interval of a mean of ``n`` runs with sample std ``std`` (Student's t);
    NaN for a single run, which has no interval."""
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n > 1 else float("nan")


# Settings that identify a row even when a CSV reads them back as floats (older runs lack them: NaN makes the
# column float), so that width 0.5 never prints as "0.5000 ± 0.0000"
IDENTITY_COLUMNS = ("width_mult", "train_images", "precision", "tier", "reference", "chosen_on")


def aggregate(frame, seed_column: str = "seed"):
    """Mean, standard deviation and 95% confidence interval over seeds of every float column, grouped by the others.

    Text, boolean and integer columns (dataset, batch size, MACs) and ``IDENTITY_COLUMNS`` identify a row; the
    other float columns are measurements.  Returns a DataFrame with, for each float column ``c``: ``c`` (the
    mean), ``c_std`` (sample std, NaN for a single seed), ``c_ci95`` (the interval's half-width, NaN for a single
    seed), and ``seeds`` (how many runs were averaged).
    """
    import pandas as pd

    frame = frame.copy()
    if seed_column not in frame:
        frame[seed_column] = 0
    # precision is the numeric dtype only: runs before 2026-12-01 also named the layout (fp32+channels_last)
    if "precision" in frame:
        frame["precision"] = frame["precision"].map(lambda p: p.split("+")[0] if isinstance(p, str) else p)
    numeric = [c for c in frame.columns if c != seed_column and c not in IDENTITY_COLUMNS
               and pd.api.types.is_float_dtype(frame[c])]
    keys = [c for c in frame.columns if c not in numeric and c != seed_column]
    frame[keys] = frame[keys].astype(object).where(frame[keys].notna(), "")
    grouped = frame.groupby(keys, sort=False, dropna=False) if keys else frame.groupby(lambda _: 0)
    mean, std, count = grouped[numeric].mean(), grouped[numeric].std(ddof=1), grouped[numeric].count()
    out = mean.copy()
    for c in numeric:
        out[f"{c}_std"] = std[c]
        out[f"{c}_ci95"] = [ci95(sd, int(n)) for sd, n in zip(std[c], count[c])]
    out["seeds"] = grouped[seed_column].nunique()
    return out.reset_index(drop=not keys)


def format_value(value: Any, spread: Any = None) -> str:
    """A table cell: thousands separators, digits by magnitude, and `` ± spread`` when one is given."""
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        digits = 4 if abs(value) < 1 else 2 if abs(value) < 1000 else 0
        text = f"{value:,.{digits}f}"
        if spread is not None and isinstance(spread, float) and not math.isnan(spread):
            text += f" ± {spread:,.{digits}f}"
        return text
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)  # 2014 is a year, not 2,014
    return str(value)


def markdown_table(frame) -> str:
    """A GitHub Markdown table; a column ``c`` with ``c_ci95`` prints as ``mean ± half-width of its 95% CI``."""
    columns = [c for c in frame.columns if not c.endswith(("_std", "_ci95"))]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        cells = [format_value(row[c], row.get(f"{c}_ci95")) for c in columns]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def build_tables(name: str, config: dict, results_dir: Path):
    """Gather every completed run's table into ``results/<name>.csv`` and ``.md``; None if there is none."""
    import pandas as pd

    spec = config["experiments"][name]
    frames = []
    for folder, record in records(name, results_dir):
        table_file = folder / f"{spec['table']}.csv"
        if table_file.exists():
            frame = pd.read_csv(table_file)
            if "seed" not in frame and "SEED" in record["parameters"]:
                frame["seed"] = record["parameters"]["SEED"]
            frame["tier"] = record.get("tier", "quick")  # a quick demonstration is never averaged with a trained run
            frames.append(frame)
    if not frames:
        return None
    combined = pd.concat(frames, ignore_index=True)
    table = aggregate(combined)
    table.to_csv(results_dir / f"{name}.csv", index=False)
    write_text(results_dir / f"{name}.md", markdown_table(table) + "\n")
    return table


def build_results_readme(config: dict, results_dir: Path) -> Path:
    """Rebuild ``results/README.md``: one section per experiment, claims next to our measured figures."""
    lines = ["# Results", "",
             "Generated by `python -m course_utils reproduce`; do not edit by hand. Each table says the scale it was",
             "measured at and the device; each run's executed notebook and record are under `runs/`. Where several",
             "seeds were run, a figure reads mean ± the half-width of its 95% confidence interval (Student's t);",
             "the CSVs also keep each column's `_std` and `_ci95`.", ""]
    for name, spec in config["experiments"].items():
        runs = records(name, results_dir)
        lines += [f"## {spec.get('title', name)}", ""]
        if spec.get("claim"):
            lines += [f"**Paper's claim:** {spec['claim']}", ""]
        if spec.get("note"):
            lines += [f"**Note:** {spec['note']}", ""]
        if not runs:
            lines += [f"_Not run yet: `python -m course_utils reproduce {name} --quick`._", ""]
            continue
        table_md = results_dir / f"{name}.md"
        devices = sorted({r["device"] for _, r in runs})
        scales = sorted({str(r["metrics"].get("scale", "")) for _, r in runs} - {""})
        lines += [f"**Measured on:** {'; '.join(devices)}", ""]
        lines += [f"**Tier:** {tier_label(t, spec)}" for t in
                  dict.fromkeys(r.get("tier", "quick") for _, r in runs)] + [""]
        if scales:
            lines += ["**Scale:** " + "; ".join(scales), ""]
        notes = sorted({n for _, r in runs for n in r.get("notes", [])})
        lines += [f"> {n}" for n in notes] + ([""] if notes else [])
        if spec.get("headline"):
            said = headlines(spec, runs)
            lines += said + [""]
            if any("n/a" in line for line in said):  # a figure the notebook publishes now, which older runs lack
                lines += [f"> n/a: these runs predate that figure; `python -m course_utils reproduce {name} --tier "
                          f"{runs[0][1].get('tier', 'quick')} --force` fills it in.", ""]
        if table_md.exists():
            lines += [table_md.read_text().rstrip(), ""]
        for folder, _ in runs:  # every run's figures: an MNIST plot says nothing about CIFAR-10
            if len(runs) > 1:
                lines += [f"Figures of run `{folder.name}`:", ""]
            for png in sorted(folder.glob("*.png")):
                rel = png.relative_to(results_dir)
                lines += [f"![{png.stem}]({rel.as_posix()})", ""]
        lines += [f"Runs: {len(runs)} · `{results_dir.name}/{name}.csv` · "
                  f"notebook `{spec['notebook']}`", ""]
    path = results_dir / "README.md"
    results_dir.mkdir(parents=True, exist_ok=True)
    write_text(path, "\n".join(lines))
    return path


TIER_LABELS = {
    "quick": "quick: a minutes-long demonstration on small, briefly trained networks; it shows that everything "
             "runs and says nothing about the papers' claims",
    "standard": "standard: networks trained to the accuracy floors at CPU scale, several seeds",
    "paper": "paper: the papers' own scale (full width and data), run on the device named above",
}


TIERS_ORDER = ("quick", "standard", "paper")  # headlines list the most trained tier first


def tier_label(tier: str, spec: dict | None = None) -> str:
    """How the results page names a tier: the experiment's own ``label`` for it, else the common one."""
    own = ((spec or {}).get(tier) or {}).get("label")
    return f"{tier}: {own}" if own else TIER_LABELS.get(tier, tier)


def headlines(spec: dict, runs: list[tuple[Path, dict]]) -> list[str]:
    """One headline per tier and dataset: a mean over MNIST and CIFAR-10 runs would describe neither, and a
    quick demonstration is never averaged with a trained run. A run whose metrics say ``in_headline: false``
    (a second network trained on one seed only, say) is in the table but not in the headline: its metrics would
    count that seed's shared figures twice."""
    key = spec.get("dataset_param")
    groups: dict[tuple[str, str], list[dict]] = {}
    for _, record in runs:
        if record["metrics"].get("in_headline") is False:
            continue
        dataset = str(record["parameters"].get(key, "")) if key else ""
        groups.setdefault((record.get("tier", "quick"), dataset), []).append(record["metrics"])
    if len(groups) == 1:
        return [headline(spec["headline"], next(iter(groups.values())))]
    order = sorted(groups, key=lambda g: (-TIERS_ORDER.index(g[0]) if g[0] in TIERS_ORDER else 0, g[1]))
    return [f"- **{dataset or name}** ({name} tier): {headline(spec['headline'], groups[name, dataset])}"
            for name, dataset in order]


def headline(template: str, metrics: list[dict]) -> str:
    """Fill ``{metric}`` fields of a headline with the mean over runs (± the 95% confidence interval when several).

    A text metric (a notebook's verdict, say) is filled in as it is; runs that disagree are all shown.
    """
    import statistics

    def value(key: str, unit: str) -> str:
        texts = list(dict.fromkeys(m[key] for m in metrics if isinstance(m.get(key), str)))
        if texts:
            return " / ".join(texts) + unit
        xs = [m[key] for m in metrics if isinstance(m.get(key), (int, float)) and not isinstance(m.get(key), bool)]
        if not xs:
            return "n/a"  # not "n/ax": a missing figure has no unit
        part = f" ({len(xs)} of {len(metrics)} runs)" if len(xs) < len(metrics) else ""
        if all(isinstance(x, int) for x in xs) and len(set(xs)) == 1:
            return format_value(xs[0]) + unit + part  # a count or a size, the same in every run: 224, not 224.00
        mean = statistics.fmean(xs)
        return format_value(float(mean), ci95(statistics.stdev(xs), len(xs)) if len(xs) > 1 else None) + unit + part

    import re

    # a unit right after the field ("{speedup}x", "{cut}%") stays with the number, before "(k of n runs)"
    return re.sub(r"\{(\w+)\}(x(?![\w{])|%)?", lambda m: value(m.group(1), m.group(2) or ""), template)
