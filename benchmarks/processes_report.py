"""The report of `benchmarks.processes`: a Markdown table per interpreter, targets, a bar chart.

``python -m benchmarks.processes_report DIR`` rewrites ``DIR/processes.md`` and
``DIR/processes.png`` from ``DIR/processes.json`` (no new measurement).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

__all__ = ["write_markdown", "write_plot", "write_report"]

THREADS = "threadensemble"
SERIAL = "serial"
PURE_PYTHON = ("fire", "mobility", "etas")  # the examples free-threading should speed up
MEMORY_TARGET = ("weather", "fire", "levelset")  # the examples with a large shared model
MIB = 2**20

Row = dict[str, Any]


def _rows(results: dict[str, Any], label: str, workers: int) -> dict[tuple[str, str], Row]:
    """Return (example, runner) -> row of one interpreter at one worker count, and serial's."""
    return {
        (r["example"], r["runner"]): r
        for r in results["interpreters"][label]["rows"]
        if r["workers"] == workers or r["runner"] == SERIAL
    }


def _median(row: Row) -> float:
    return float(statistics.median(row["times_s"]))


def _examples(results: dict[str, Any]) -> list[str]:
    return list(results["settings"]["cases"])


def _runners(results: dict[str, Any]) -> list[str]:
    first = next(iter(results["interpreters"].values()))
    return list(dict.fromkeys(r["runner"] for r in first["rows"]))


def _table(results: dict[str, Any], label: str) -> list[str]:
    settings = results["settings"]
    timed, memory = settings["workers"], settings["memory_workers"]
    at_timed, at_memory = _rows(results, label, timed), _rows(results, label, memory)
    lines = [
        f"| example | runner | model reaches the workers | {timed} workers: median s "
        f"| speedup over serial | peak RSS MB | {memory} workers: s | peak RSS MB "
        "| identical to serial |",
        "|---|---|---|--:|--:|--:|--:|--:|---|",
    ]
    for example in _examples(results):
        base = at_timed[(example, SERIAL)]
        for runner in _runners(results):
            row = at_timed[(example, runner)]
            big = at_memory.get((example, runner)) if runner != SERIAL else None
            same = all(
                r["fingerprints"] == base["fingerprints"] for r in (row, big) if r is not None
            )
            cells = [
                example,
                runner,
                row["transfer"] or "(in process)",
                f"{_median(row):.2f}",
                f"{_median(base) / _median(row):.2f}x",
                f"{row['peak_rss'] / MIB:.0f}",
                f"{_median(big):.2f}" if big else "",
                f"{big['peak_rss'] / MIB:.0f}" if big else "",
                "yes" if same else "**NO**",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _targets(results: dict[str, Any], label: str) -> list[str]:
    """Return one line per target, with the measured value, for one interpreter."""
    settings = results["settings"]
    timed, memory = settings["workers"], settings["memory_workers"]
    at_timed, at_memory = _rows(results, label, timed), _rows(results, label, memory)
    serial = at_timed
    peers = [r for r in _runners(results) if r not in (SERIAL, THREADS)]
    lines = []
    for example in PURE_PYTHON:
        if (example, THREADS) in at_timed:
            base, ours = serial[(example, SERIAL)], at_timed[(example, THREADS)]
            speedup = _median(base) / _median(ours)
            best = min(base["times_s"]) / min(ours["times_s"])
            lines.append(
                f"- {example}: {timed} workers {speedup:.2f}x serial (best of "
                f"{len(ours['times_s'])}: {best:.2f}x; target >= 1.8x): "
                + ("met" if speedup >= 1.8 else "**missed**")
            )
    for example in _examples(results):
        our_time = _median(at_timed[(example, THREADS)])
        fastest = min(peers, key=lambda p: _median(at_timed[(example, p)]))
        ratio = _median(at_timed[(example, fastest)]) / our_time
        lines.append(
            f"- {example}: threadensemble {our_time:.2f} s, fastest process-based peer {fastest} "
            f"{_median(at_timed[(example, fastest)]):.2f} s ({ratio:.2f}x; target > 1): "
            + ("met" if ratio > 1 else "**missed**")
        )
    for example in MEMORY_TARGET:
        if (example, THREADS) not in at_memory:
            continue
        our_rss = at_memory[(example, THREADS)]["peak_rss"]
        leanest = min(peers, key=lambda p: at_memory[(example, p)]["peak_rss"])
        ratio = our_rss / at_memory[(example, leanest)]["peak_rss"]
        lines.append(
            f"- {example}: peak RSS at {memory} workers {our_rss / MIB:.0f} MB, "
            f"{ratio:.2f} of the leanest peer ({leanest}, "
            f"{at_memory[(example, leanest)]['peak_rss'] / MIB:.0f} MB; target <= 0.33): "
            + ("met" if ratio <= 1 / 3 else "**missed**")
        )
    return lines


def write_markdown(results: dict[str, Any], path: Path) -> None:
    """Write the report: machine, settings, one table per interpreter, targets."""
    m, s = results["machine"], results["settings"]
    lines = [
        "# threadensemble against process-based ensembles",
        "",
        f"Generated by `{s['command']}` (see the docstring of `benchmarks/processes.py`)"
        + (" **in smoke mode: tiny sizes, not a measurement**." if s["smoke"] else "."),
        "",
        f"- Machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_gb']} GiB, "
        f"{m['platform']}; {m['date']}.",
        f"- Each run is a fresh process; wall time from the model built in that process (then "
        f"xarray warmed up, garbage collected) to the ensemble assembled there (median of "
        f"{s['repeats']}); peak RSS is the summed RSS of the "
        f"process and all its descendants, sampled every {s['sample_s'] * 1000:.0f} ms over the "
        "whole run (imports and model build included).",
        f"- Seed {s['seed']}; {s['thread_env']}; free-threaded interpreters with PYTHON_GIL=0.",
        "- Tasks are chunks of `ceil(n / (4 * workers))` realizations for every pool.",
        "- Every run waits for the CPUs to be idle before it starts (a shared machine), within "
        "limits (below).",
        "- Summed RSS counts pages shared between processes (libraries, shared memory) once per "
        "process that maps them: for the process-based runners it is an upper bound of the "
        "memory they actually use.",
        "",
        "| example | realizations | parameters |",
        "|---|--:|---|",
        *(
            f"| {name} | {c['realizations']} | {c['params'] or 'defaults'} |"
            for name, c in s["cases"].items()
        ),
        "",
    ]
    serial = {
        label: {r["example"]: r["fingerprints"] for r in info["rows"] if r["runner"] == SERIAL}
        for label, info in results["interpreters"].items()
    }
    same = all(prints == next(iter(serial.values())) for prints in serial.values())
    lines += [
        "Serial ensembles bitwise identical across the interpreters: "
        + ("yes." if same else "**no**."),
        "",
    ]
    busy = (
        f"another job kept the CPUs over {s['idle_cpu_percent']:g}% busy for "
        f"{s['idle_wait_s']:g} s, or {s['idle_budget_s']:g} s of waits were spent"
    )
    for label, info in results["interpreters"].items():
        gil = {r["gil_enabled"] for r in info["rows"]}
        lines += [
            f"## {label}: Python {info['version']}",
            "",
            f"Free-threaded build: {info['free_threaded']}; GIL enabled during the runs: "
            f"{' / '.join(map(str, sorted(gil)))}. /proc/loadavg before: {info['loadavg_before']}"
            f", after: {info['loadavg_after']} ({info['duration_s'] / 60:.1f} min). Runs started "
            f"on a busy machine ({busy}): "
            f"{sum(r['busy_starts'] for r in info['rows'])} of "
            f"{sum(len(r['times_s']) for r in info['rows'])}.",
            "",
            *_table(results, label),
            "",
            "Targets (set for free-threaded interpreters; on a standard build threads cannot "
            "run Python code in parallel, so the speed targets are out of reach by design):"
            if not info["free_threaded"]
            else "Targets:",
            "",
            *_targets(results, label),
            "",
        ]
    path.write_text("\n".join(lines))


def write_plot(results: dict[str, Any], path: Path) -> None:
    """Bar charts: speedup over serial (timed workers) and peak RSS (memory workers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    settings = results["settings"]
    labels = list(results["interpreters"])
    examples = _examples(results)
    runners = [r for r in _runners(results) if r != SERIAL]
    fig, axes = plt.subplots(2, len(labels), figsize=(6 * len(labels), 7), squeeze=False)
    width = 0.8 / len(runners)
    x = np.arange(len(examples))
    for col, label in enumerate(labels):
        timed = _rows(results, label, settings["workers"])
        memory = _rows(results, label, settings["memory_workers"])
        peaks = {r: [memory[(e, r)]["peak_rss"] / MIB for e in examples] for r in runners}
        # one outlier (the model pickled with every task) would flatten every other bar
        ordered = sorted(v for values in peaks.values() for v in values)
        cap = 1.1 * ordered[-2] if ordered[-1] > 2 * ordered[-2] else 1.05 * ordered[-1]
        for i, runner in enumerate(runners):
            speedups = [_median(timed[(e, SERIAL)]) / _median(timed[(e, runner)]) for e in examples]
            offset = x + (i - (len(runners) - 1) / 2) * width
            axes[0, col].bar(offset, speedups, width, label=runner)
            axes[1, col].bar(offset, np.minimum(peaks[runner], cap), width, label=runner)
            for at, peak in zip(offset, peaks[runner], strict=True):
                if peak > cap:
                    axes[1, col].text(at, cap, f"{peak:.0f}", ha="center", va="bottom", fontsize=7)
        axes[1, col].set_ylim(0, cap * 1.08)
        axes[0, col].axhline(1.0, color="black", linewidth=0.8)
        axes[0, col].axhline(1.8, color="grey", linewidth=0.8, linestyle="--")
        axes[0, col].set_title(f"{label}: speedup over serial, {settings['workers']} workers")
        axes[1, col].set_title(
            f"{label}: peak RSS of the run, {settings['memory_workers']} workers"
        )
        axes[1, col].set_ylabel("MB (summed over the process tree)")
        for ax in axes[:, col]:
            ax.set_xticks(x, examples)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(runners), fontsize="small")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path) -> None:
    """Write ``processes.md`` and ``processes.png`` in ``out`` from its ``processes.json``."""
    results = json.loads((out / "processes.json").read_text())
    write_markdown(results, out / "processes.md")
    write_plot(results, out / "processes.png")


if __name__ == "__main__":
    write_report(Path(sys.argv[1]))
