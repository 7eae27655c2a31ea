"""The comparison report: a Markdown table and a speedup plot, from saved results.

Regenerate them without re-running anything::

    python -m benchmarks.interpreters.report RESULTS.json
"""

from __future__ import annotations

import argparse
import math
import shlex
from pathlib import Path
from typing import Any

from benchmarks.interpreters.results import Results, Run, load, median, speedup

__all__ = ["PLOT", "REPORT", "same_configure_flags", "write_markdown", "write_plot"]

REPORT = "report.md"
PLOT = "speedup.png"


def _labels(results: Results) -> list[str]:
    return list(results["interpreters"])


def _runs(results: Results, workload: str, label: str) -> list[Run]:
    runs = [r for r in results["runs"] if (r["workload"], r["interpreter"]) == (workload, label)]
    return sorted(runs, key=lambda r: r["workers"])


def _build(info: dict[str, Any]) -> str:
    return "free-threaded" if info["free_threaded"] else "standard"


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def same_configure_flags(results: Results) -> bool:
    """Return True when all interpreters were configured alike, apart from the GIL and prefix."""

    def flags(info: dict[str, Any]) -> list[str]:
        return [
            arg
            for arg in shlex.split(info["config_args"])
            if arg != "--disable-gil" and not arg.startswith("--prefix=")
        ]

    return len({tuple(flags(info)) for info in results["interpreters"].values()}) == 1


def _load_warning(machine: dict[str, Any]) -> list[str]:
    """Say so when other processes took more than a tenth of one CPU during the run."""
    others = machine.get("others_cpu_s")
    if others is None or others < 0.1 * machine["duration_s"]:
        return []
    return [
        f"**Loaded machine**: other processes used {others:.0f} CPU-seconds during the "
        f"{machine['duration_s']:.0f} s of the run ({others / machine['duration_s']:.0%} of one "
        f"CPU, on {machine['cores']}), competing with these measurements: speedups are "
        "understated and the spread is wide. Re-run on a quiet machine for representative "
        "figures.",
        "",
    ]


def _header(results: Results) -> list[str]:
    machine, settings = results["machine"], results["settings"]
    labels = " vs ".join(_labels(results))
    lines = [f"# threadensemble on threads: {labels}", ""]
    if settings["smoke"]:
        lines += ["**Smoke run** (tiny sizes, one run): checks the pipeline, means nothing.", ""]
    lines += [
        f"Written by `nox -s compare` on {machine['date']} in {machine['duration_s']:.0f} s.",
        "",
        *_load_warning(machine),
        "## Machine",
        "",
        f"- CPU: {machine['cpu_model']}; {machine['cores']} logical CPUs available to the "
        f"process; {machine['platform']}",
        f"- load average (1, 5, 15 min) before the run: {machine['loadavg_before']}; "
        f"after: {machine['loadavg_after']} (counting the benchmark's own threads)",
        *(
            [f"- CPU time of other processes during the run: {machine['others_cpu_s']:.1f} s"]
            if "others_cpu_s" in machine
            else []
        ),
        f"- environment of every measurement: {settings['thread_env']}; the free-threaded "
        "interpreter also gets `PYTHON_GIL=0`",
        "",
        "## Interpreters",
        "",
        "| interpreter | Python | build | GIL enabled during the runs | numpy | threadensemble |",
        "|---|---|---|---|---|---|",
    ]
    for label, info in results["interpreters"].items():
        gil = {r["gil_enabled"] for r in results["runs"] if r["interpreter"] == label}
        gil_text = ", ".join(_yes_no(g) for g in sorted(gil)) or "n/a"
        lines.append(
            f"| {label} | {info['python']} | {_build(info)} | {gil_text} | {info['numpy']} "
            f"| {info['threadensemble']} |"
        )
    same = _yes_no(same_configure_flags(results))
    lines += ["", f"Same `./configure` flags apart from `--disable-gil` and `--prefix`: {same}."]
    for label, info in results["interpreters"].items():
        lines.append(f"- {label}: `{info['executable']}`: `{info['config_args'] or '(none)'}`")
    return lines


def _summary(results: Results) -> list[str]:
    labels = _labels(results)
    base, others = labels[0], labels[1:]
    head = ["workload", "realizations per run"]
    head += [f"1-worker time {o} / {base}" for o in others]
    head += [f"speedup, 2 workers, {label}" for label in labels]
    head += [f"best median time (s), {label}" for label in labels]
    lines = ["## Summary", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for workload in results["workloads"]:
        name = workload["name"]
        runs = {label: _runs(results, name, label) for label in labels}
        one = {label: [r for r in runs[label] if r["workers"] == 1] for label in labels}
        cells = [name, str(workload["realizations"])]
        for other in others:
            ok = one[base] and one[other]
            cells.append(f"{median(one[other][0]) / median(one[base][0]):.2f}" if ok else "n/a")
        for label in labels:
            two = [r for r in runs[label] if r["workers"] == 2]
            value = speedup(results, two[0]) if two else None
            cells.append(f"{value:.2f}" if value else "n/a")
        for label in labels:
            best = min((median(r) for r in runs[label]), default=None)
            cells.append(f"{best:.3f}" if best is not None else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _table(results: Results) -> list[str]:
    lines = [
        "## Results",
        "",
        "| workload | interpreter | workers | median wall time (s) | min-max (s) "
        "| speedup over 1 worker | parallel efficiency | peak RSS (MiB) | GIL enabled "
        "| Python | numpy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for workload in results["workloads"]:
        for label, info in results["interpreters"].items():
            for run in _runs(results, workload["name"], label):
                value = speedup(results, run)
                rss = run["peak_rss_bytes"]
                cells = [
                    workload["name"],
                    label,
                    str(run["workers"]),
                    f"{median(run):.3f}",
                    f"{min(run['times_s']):.3f}-{max(run['times_s']):.3f}",
                    f"{value:.2f}" if value else "n/a",
                    f"{value / run['workers']:.0%}" if value else "n/a",
                    f"{rss / 2**20:.0f}" if rss else "n/a",
                    _yes_no(run["gil_enabled"]),
                    f"{info['python']} {_build(info)}",
                    info["numpy"],
                ]
                lines.append("| " + " | ".join(cells) + " |")
    return lines


def _method(results: Results) -> list[str]:
    settings = results["settings"]
    lines = [
        "## Method",
        "",
        f"- Every row is the median of {settings['rounds'] * settings['repeats']} timed runs of "
        "`ModelSpec.run(n, n_workers=w, seed=..., progress=False)` (results kept in memory): "
        f"{settings['rounds']} fresh processes, at different times, of {settings['repeats']} "
        "runs each, after one untimed warm-up run of one realization per worker. Peak RSS: "
        "the largest maximum resident set size of those processes.",
        "- Every interpreter and worker count computes the same realizations (same number, same "
        "seeds). The number of realizations per run is chosen once per workload, on 1 worker of "
        f"{_labels(results)[0]}, for runs of about {settings['target_seconds']} s, as a multiple "
        f"of every worker count in {settings['workers']}.",
        "- Speedup = median time on 1 worker / median time on w workers, same interpreter. "
        "Parallel efficiency = speedup / w; with C cores it cannot exceed C / w beyond C workers.",
        "- Configurations run interleaved (interpreters alternate; each round goes the other "
        "way), so a change in the machine's load affects both interpreters alike. The machine "
        "may be shared with other work: see the load averages and the min-max spread.",
        "- Workloads: `threadensemble.examples.EXAMPLES`, then those of `benchmarks/models.py`:",
    ]
    for workload in results["workloads"]:
        lines.append(f"  - `{workload['name']}` (`{workload['ref']}`): {workload['description']}")
    return lines


def write_markdown(results: Results, path: Path) -> None:
    """Write the Markdown report."""
    lines = [*_header(results), "", *_summary(results), "", *_table(results), ""]
    lines += [f"![speedup against workers]({PLOT})", "", *_method(results), ""]
    if results["failures"]:
        lines += ["## Failures", ""]
        for failure in results["failures"]:
            error = failure["error"].strip().replace("\n", " / ")
            where = f"{failure['workload']} on {failure['interpreter']} ({failure['step']})"
            lines.append(f"- {where}: `{error}`")
        lines.append("")
    path.write_text("\n".join(lines))


def write_plot(results: Results, path: Path) -> None:
    """Write a PNG of speedup against workers, one panel per workload, with the ideal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [w["name"] for w in results["workloads"]]
    cols = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.4 * rows), squeeze=False)
    workers = results["settings"]["workers"]
    cores = results["machine"]["cores"]
    for ax, name in zip(axes.flat, names, strict=False):
        top = float(cores)
        for label in _labels(results):
            runs = _runs(results, name, label)
            points = [(r["workers"], speedup(results, r)) for r in runs]
            xs = [w for w, s in points if s]
            ys = [s for _, s in points if s]
            ax.plot(xs, ys, marker="o", label=label)
            top = max(top, *ys) if ys else top
        ax.plot(workers, workers, "k--", linewidth=0.8, label="ideal")
        ax.axvline(cores, color="grey", linestyle=":", linewidth=0.8, label=f"{cores} cores")
        ax.set_xscale("log", base=2)
        ax.set_xticks(workers, [str(w) for w in workers])
        ax.set_ylim(0, top * 1.25)
        ax.set_title(name)
        ax.set_xlabel("workers (threads)")
        ax.set_ylabel("speedup over 1 worker")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    labels = " vs ".join(_labels(results))
    fig.suptitle(f"threadensemble speedup: {labels} ({results['machine']['cpu_model']})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Command line: rewrite the report and plot next to (or away from) a results file."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.interpreters.report")
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, help="directory (default: that of RESULTS)")
    args = parser.parse_args(argv)
    out = args.out or args.results.parent
    results = load(args.results)
    write_markdown(results, out / REPORT)
    write_plot(results, out / PLOT)


if __name__ == "__main__":
    main()
