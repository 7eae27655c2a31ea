"""Suite 2: threadensemble against thread pools and process pools, on the example models.

``nox -s processes`` runs it (``python -m benchmarks.pools``) on 3.13 and 3.13t and writes
``docs/benchmarks/processes.md``, ``processes.png`` and ``processes.json``.  Modules:

- `benchmarks.pools.run`: the driver (``python -m benchmarks.pools`` is its command line): every
  example, length and runner in a fresh process, interleaved repeats, memory sampled;
- `benchmarks.pools.runners`: the runners (serial, threadensemble threads and processes, a
  hand-rolled thread pool, joblib, mpire, ``multiprocessing`` pools, ``ProcessPoolExecutor``)
  and one timed run of one of them (``python -m benchmarks.pools.runners``);
- `benchmarks.pools.workers`: what runs in their workers (the model's payloads, seeding as
  threadensemble does through its public API);
- `benchmarks.pools.memory`: peak PSS (RSS where there is none) summed over a process tree;
- `benchmarks.pools.report`: the Markdown tables, the targets and the plot, from the results.
"""
