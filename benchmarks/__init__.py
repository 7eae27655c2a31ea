"""Benchmarks of threadensemble: standard CPython against free-threaded CPython.

Not part of the package.  ``nox -s compare`` runs them (see ``noxfile.py``) and writes the report
into ``docs/benchmarks/``.  Modules:

- `benchmarks.models`: two workloads of our own (pure-Python CPU-bound, numpy-heavy);
- `benchmarks.workloads`: the registry of every workload (the package examples plus ours);
- `benchmarks.measure`: times one workload at one worker count in the running interpreter;
- `benchmarks.compare`: runs `measure` under each interpreter and writes the report;
- `benchmarks.report`: the Markdown table and the speedup plot, from the saved results.
"""
