"""Benchmarks of threadensemble; not part of the package (see ``docs/benchmarks.md``).

One subpackage per suite, shared helpers in one place:

- `benchmarks.interpreters`: standard CPython 3.13 against free-threaded 3.13t, threadensemble
  on both at 1 to 8 workers (``nox -s compare``);
- `benchmarks.pools`: threadensemble (threads and processes) against thread pools and process
  pools, every example at two lengths (``nox -s processes``);
- `benchmarks.overhead`: the library's fixed costs (import, first ensemble, µs per no-op
  realization with and without ``output_dir``);
- `benchmarks.state_memory`: peak memory of a weather-generator-shaped state at 1 to 8 workers,
  with whole per-thread copies and with ``share_state=True``;
- `benchmarks.fingerprint`: what the run identity's fingerprint costs on big and on example
  models;
- `benchmarks.models`: two workloads of our own (pure-Python CPU-bound, numpy-heavy);
- `benchmarks.workloads`: the registry of every workload (the package examples plus ours);
- `benchmarks.common`: what every suite needs (the child processes' environment, the
  free-threading probe, the machine's description, peak memory).

The benchmarks use threadensemble's public API only.
"""
