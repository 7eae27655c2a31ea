"""The report of `benchmarks.pools`: tables per interpreter and length, targets, a bar chart.

``python -m benchmarks.pools.report DIR`` rewrites ``DIR/processes.md`` and
``DIR/processes.png`` from ``DIR/processes.json`` (no new measurement).
``python -m benchmarks.pools.report DIR A.json [LABEL=]B.json ...`` first writes
``DIR/processes.json`` from the results of several runs of the same settings (`merge`): on
other interpreters, or on the same one with other runners or code, its section renamed
``LABEL`` (a run of one interpreter).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks.pools.runners import THREAD_RUNNERS

__all__ = ["merge", "write_markdown", "write_plot", "write_report"]

THREADS = "threadensemble"
PROCESSES = "threadensemble processes"
HAND_ROLLED = "ThreadPoolExecutor + local copy"
THREAD_PEERS = ("joblib threads", "mpire threading")
SERIAL = "serial"
MIB = 2**20

Row = dict[str, Any]


def _rows(
    results: dict[str, Any], label: str, length: str, workers: int
) -> dict[tuple[str, str], Row]:
    """Return (example, runner) -> row of one interpreter, length and worker count (+ serial)."""
    return {
        (r["example"], r["runner"]): r
        for r in results["interpreters"][label]["rows"]
        if r["length"] == length and (r["workers"] == workers or r["runner"] == SERIAL)
    }


def _median(row: Row) -> float:
    return float(statistics.median(row["times_s"]))


def _examples(results: dict[str, Any]) -> list[str]:
    return list(results["settings"]["cases"])


def _runners(results: dict[str, Any], label: str) -> list[str]:
    return list(dict.fromkeys(r["runner"] for r in results["interpreters"][label]["rows"]))


def _process_peers(results: dict[str, Any], label: str) -> list[str]:
    return [r for r in _runners(results, label) if r not in (SERIAL, PROCESSES, *THREAD_RUNNERS)]


def _table(results: dict[str, Any], label: str, length: str) -> list[str]:
    settings = results["settings"]
    timed, memory, kind = settings["workers"], settings["memory_workers"], settings["memory"]
    at_timed = _rows(results, label, length, timed)
    at_memory = _rows(results, label, length, memory) if length == "short" else {}
    header = (
        f"| example | n | runner | model reaches the workers | {timed} workers: median s "
        f"| speedup over serial | whole process s | peak {kind} MB |"
    )
    rule = "|---|--:|---|---|--:|--:|--:|--:|"
    if at_memory:
        header += f" {memory} workers: peak {kind} MB |"
        rule += "--:|"
    lines = [header + " identical to serial |", rule + "---|"]
    for example in _examples(results):
        if (example, SERIAL) not in at_timed:
            continue
        base = at_timed[(example, SERIAL)]
        for runner in _runners(results, label):
            row = at_timed.get((example, runner))
            if row is None:
                continue
            big = at_memory.get((example, runner)) if runner != SERIAL else None
            same = all(
                r["fingerprints"] == base["fingerprints"] for r in (row, big) if r is not None
            )
            cells = [
                example,
                str(row["realizations"]),
                runner,
                row["transfer"] or "(in process)",
                f"{_median(row):.2f}",
                f"{_median(base) / _median(row):.2f}x",
                f"{statistics.median(row['process_times_s']):.2f}",
                f"{row['peak_memory'] / MIB:.0f}",
            ]
            if at_memory:
                cells.append(f"{big['peak_memory'] / MIB:.0f}" if big else "")
            cells.append("yes" if same else "**NO**")
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def _targets(results: dict[str, Any], label: str, length: str) -> list[str]:
    """Return one line per target of issue 12, with the measured values.

    The time targets are for long runs, the memory target for the short length's memory run.
    """
    settings = results["settings"]
    free = results["interpreters"][label]["free_threaded"]
    at = _rows(results, label, length, settings["workers"])
    lines = []
    for example in _examples(results) if length == "long" else ():
        ours = _median(at[(example, THREADS)]) if (example, THREADS) in at else None
        if ours is not None and (example, HAND_ROLLED) in at:
            hand = _median(at[(example, HAND_ROLLED)])
            lines.append(
                f"- {example}: threads {ours:.2f} s, hand-rolled thread pool {hand:.2f} s "
                f"({ours / hand - 1:+.0%}; target within +5%): {_verdict(ours <= 1.05 * hand)}"
            )
        peers = [p for p in THREAD_PEERS if (example, p) in at]
        if ours is not None and free and peers:
            fastest = min(peers, key=lambda p: _median(at[(example, p)]))
            peer = _median(at[(example, fastest)])
            lines.append(
                f"- {example}: threads {ours:.2f} s, fastest thread-based peer {fastest} "
                f"{peer:.2f} s (target: ahead): {_verdict(ours < peer)}"
            )
        process_peers = [p for p in _process_peers(results, label) if (example, p) in at]
        if not free and (example, PROCESSES) in at and process_peers:
            theirs = _median(at[(example, PROCESSES)])
            fastest = min(process_peers, key=lambda p: _median(at[(example, p)]))
            peer = _median(at[(example, fastest)])
            lines.append(
                f"- {example}: processes backend {theirs:.2f} s, fastest process peer {fastest} "
                f"{peer:.2f} s ({theirs / peer - 1:+.0%}; target within +10%): "
                + _verdict(theirs <= 1.10 * peer)
            )
    if length == "short":
        memory = _rows(results, label, length, settings["memory_workers"])
        for example in _examples(results):
            peers = [p for p in _process_peers(results, label) if (example, p) in memory]
            if (example, THREADS) not in memory or not peers:
                continue
            ours = memory[(example, THREADS)]["peak_memory"]
            leanest = min(peers, key=lambda p: memory[(example, p)]["peak_memory"])
            ratio = ours / memory[(example, leanest)]["peak_memory"]
            lines.append(
                f"- {example}: peak {settings['memory']} at {settings['memory_workers']} workers "
                f"{ours / MIB:.0f} MB, {ratio:.2f} of the leanest process peer ({leanest}; "
                f"target <= 0.33): {_verdict(ratio <= 1 / 3)}"
            )
    return lines


def _where_threads_lose(free_threaded: bool) -> str:
    if free_threaded:
        return (
            "Free-threaded, GIL off: threads run Python code in parallel and share the model "
            "as it is (no pickling, one copy in memory); where they lose, the model's own "
            "contention (reference counts and locks on shared objects, allocator) is the cause "
            "(`python -m benchmarks.interpreters.contention` measures it)."
        )
    return (
        "Standard build: threads cannot run Python code in parallel (the GIL), so for "
        "pure-Python models every thread runner is at best as fast as the serial loop, and "
        'process pools (threadensemble\'s `backend="processes"` included) win; threads win '
        "only where the model releases the GIL (numpy on large arrays), and on memory."
    )


def write_markdown(results: dict[str, Any], path: Path) -> None:
    """Write the report: machine, settings, tables per interpreter and length, targets."""
    m, s = results["machine"], results["settings"]
    lines = [
        "# threadensemble against thread and process pools",
        "",
        f"Generated by `{s['command']}` (see the docstring of `benchmarks/pools/run.py`)"
        + (" **in smoke mode: tiny sizes, not a measurement**." if s["smoke"] else "."),
        "",
        f"- Machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_gb']} GiB, "
        f"{m['platform']}; {m['date']}.",
        f"- Each run is a fresh process; wall time from the model built in that process to the "
        f'ensemble assembled there (median of {s["repeats"]}, interleaved; "whole process": '
        "from starting the interpreter to its exit, imports and model build included); peak "
        "memory is the "
        f"summed {s['memory']} of the process and all its descendants, sampled every "
        f"{s['sample_s'] * 1000:.0f} ms over one more run of each row (imports and model build "
        "included; the timed runs are not sampled, as sampling costs the CPUs time)"
        + (
            " (PSS shares each page among the processes that map it)."
            if s["memory"] == "PSS"
            else " (RSS counts shared pages once per process: an upper bound for pools)."
        ),
        f"- Lengths: {', '.join(s['lengths'])}"
        + (
            f" (long: realizations scaled so that the serial loop takes at least "
            f"{s['long_seconds']:g} s)."
            if "long" in s["lengths"]
            else " (`--long` adds runs where the serial loop takes at least 20 s)."
        ),
        f"- Seed {s['seed']}; {s['thread_env']}; free-threaded interpreters with PYTHON_GIL=0.",
        "- Tasks are chunks of `ceil(n / (4 * workers))` realizations for every peer pool; "
        "threadensemble's processes backend sizes its tasks itself (about 50 ms of work each).",
        "",
        "| example | short: realizations | parameters |",
        "|---|--:|---|",
        *(
            f"| {name} | {c['realizations']} | {c['params'] or 'defaults'} |"
            for name, c in s["cases"].items()
        ),
        "",
    ]
    for label, info in results["interpreters"].items():
        gil = {r["gil_enabled"] for r in info["rows"]}
        skipped = info.get("skipped_runners") or []
        lines += [
            f"## {label}: Python {info['version']}",
            "",
            f"Free-threaded build: {info['free_threaded']}; GIL enabled during the runs: "
            f"{' / '.join(map(str, sorted(gil)))}. /proc/loadavg before: {info['loadavg_before']}"
            f", after: {info['loadavg_after']} ({info['duration_s'] / 60:.1f} min). Runs started "
            f"on a busy machine: {sum(r['busy_starts'] for r in info['rows'])} of "
            f"{sum(len(r['times_s']) for r in info['rows'])}."
            + (
                f" Not run (not selected or not installed): {', '.join(skipped)}."
                if skipped
                else ""
            )
            + "".join(f" {what}: {why}." for what, why in info.get("unavailable", {}).items()),
            "",
            _where_threads_lose(info["free_threaded"]),
            "",
        ]
        for length in s["lengths"]:
            lines += [f"### {length}", "", *_table(results, label, length), ""]
            if targets := _targets(results, label, length):
                lines += ["Targets:", "", *targets, ""]
    path.write_text("\n".join(lines))


def write_plot(results: dict[str, Any], path: Path) -> None:
    """Bar charts per interpreter and length: speedup over serial; peak memory (short)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    settings = results["settings"]
    panels = [
        (label, length) for label in results["interpreters"] for length in settings["lengths"]
    ]
    examples = _examples(results)
    fig, axes = plt.subplots(2, len(panels), figsize=(6 * len(panels), 7), squeeze=False)
    x = np.arange(len(examples))
    handles: list[Any] = []
    names: list[str] = []
    for col, (label, length) in enumerate(panels):
        runners = [r for r in _runners(results, label) if r != SERIAL]
        width = 0.8 / len(runners)
        timed = _rows(results, label, length, settings["workers"])
        memory = _rows(results, label, "short", settings["memory_workers"])
        for i, runner in enumerate(runners):
            offset = x + (i - (len(runners) - 1) / 2) * width
            speedups = [
                _median(timed[(e, SERIAL)]) / _median(timed[(e, runner)])
                if (e, runner) in timed and (e, SERIAL) in timed
                else 0.0
                for e in examples
            ]
            axes[0, col].bar(offset, speedups, width, label=runner)
            peaks = [
                memory[(e, runner)]["peak_memory"] / MIB if (e, runner) in memory else 0.0
                for e in examples
            ]
            axes[1, col].bar(offset, peaks, width, label=runner)
        axes[0, col].axhline(1.0, color="black", linewidth=0.8)
        axes[0, col].set_title(
            f"{label}, {length}: speedup over serial, {settings['workers']} workers"
        )
        axes[1, col].set_title(
            f"{label}: peak {settings['memory']}, {settings['memory_workers']} workers (short)"
        )
        axes[1, col].set_ylabel("MB (summed over the process tree)")
        for ax in axes[:, col]:
            ax.set_xticks(x, examples)
        if len(runners) > len(names):
            handles, names = axes[0, col].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(6, len(names)), fontsize="small")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path) -> None:
    """Write ``processes.md`` and ``processes.png`` in ``out`` from its ``processes.json``."""
    results = json.loads((out / "processes.json").read_text())
    write_markdown(results, out / "processes.md")
    try:
        write_plot(results, out / "processes.png")
    except ImportError as exc:  # the bench extra has matplotlib; a bare environment may not
        print(f"no plot: {exc}", file=sys.stderr)


_SAME = ("smoke", "workers", "memory_workers", "repeats", "seed", "sample_s", "memory", "lengths",
         "long_seconds", "thread_env")  # fmt: skip


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the results of several runs on one machine as one (their interpreters differ).

    Their settings must agree (``_SAME``); the examples and commands are combined.
    """
    first = runs[0]
    for run in runs[1:]:
        differ = [k for k in _SAME if run["settings"][k] != first["settings"][k]]
        if differ or run["machine"]["cpu_model"] != first["machine"]["cpu_model"]:
            raise ValueError(f"runs of other settings cannot be merged: {differ or 'machine'}")
        if set(run["interpreters"]) & set(first["interpreters"]):
            raise ValueError(f"two runs of {sorted(set(run['interpreters']))}: merge one each")
    settings = {
        **first["settings"],
        "command": "; ".join(r["settings"]["command"] for r in runs),
        "cases": {k: v for r in runs for k, v in r["settings"]["cases"].items()},
    }
    machine = {**first["machine"], "date": ", ".join(r["machine"]["date"] for r in runs)}
    interpreters = {k: v for r in runs for k, v in r["interpreters"].items()}
    return {"machine": machine, "settings": settings, "interpreters": interpreters}


def _load(argument: str) -> dict[str, Any]:
    """Load a run's results from ``PATH`` or ``LABEL=PATH`` (its one interpreter renamed)."""
    label, _, path = argument.rpartition("=")
    run: dict[str, Any] = json.loads(Path(path).read_text())
    if label:
        (only,) = run["interpreters"].values()
        run["interpreters"] = {label: only}
    return run


if __name__ == "__main__":
    out = Path(sys.argv[1])
    if len(sys.argv) > 2:
        merged = merge([_load(argument) for argument in sys.argv[2:]])
        out.mkdir(parents=True, exist_ok=True)
        (out / "processes.json").write_text(json.dumps(merged, indent=1) + "\n")
    write_report(out)
