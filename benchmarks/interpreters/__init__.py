"""Suite 1: standard CPython 3.13 against free-threaded 3.13t, threadensemble on both.

``nox -s compare`` runs it (``python -m benchmarks.interpreters``) and writes
``docs/benchmarks/report.md``, ``speedup.png`` and ``results.json``.  Modules:

- `benchmarks.interpreters.compare`: runs `measure` under each interpreter, writes the report
  (``python -m benchmarks.interpreters`` is its command line);
- `benchmarks.interpreters.measure`: times one workload at one worker count in the running
  interpreter (one process per measurement);
- `benchmarks.interpreters.results`: the saved results' types, medians and speedups;
- `benchmarks.interpreters.report`: the Markdown table and the speedup plot, from the results;
- `benchmarks.interpreters.contention`: what threads cost each other on one interpreter (the
  same realizations on 1 and 2 workers, and 2 private processes).
"""
