"""The command line: ``threadensemble demo | run | info | check``."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from ._config import BACKENDS
from ._errors import EnsembleError, OutputDirError, WorkerInitError
from ._netcdf import read_realization, realization_files
from ._report import last_run_report
from ._results import REALIZATION_DIM
from ._runtime import runtime_info
from ._spec import ModelSpec
from ._store import MANIFEST_NAME, ensemble_files, manifest_size, read_manifest
from .examples import EXAMPLES

__all__ = ["main"]


class CommandError(Exception):
    """Bad input on the command line: reported in one line, exit status 2."""


def load_factory(target: str) -> Any:
    """Return the factory named ``MODULE:FACTORY`` (or an example's short name)."""
    target = EXAMPLES.get(target, target)
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise CommandError(
            f"model must be MODULE:FACTORY or one of {sorted(EXAMPLES)}, got {target!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CommandError(f"cannot import {module_name!r}: {exc}") from exc
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise CommandError(f"{module_name!r} has no callable {attribute!r}")
    return factory


def _parse_params(items: Sequence[str]) -> dict[str, Any]:
    params = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.isidentifier():
            raise CommandError(f"--param must be NAME=VALUE, got {item!r}")
        try:
            params[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            params[name] = text
    return params


def build_spec(target: str, params: Sequence[str] = ()) -> ModelSpec:
    """Build the model of ``target`` with ``NAME=VALUE`` factory parameters."""
    factory = load_factory(target)
    kwargs = _parse_params(params)
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:  # a parameter the factory does not take: the command line's fault
        raise CommandError(f"{target}: {exc}") from exc
    except ValueError:  # no signature to check (some C callables): let the call say
        pass
    spec = factory(**kwargs)  # an error of the factory itself keeps its traceback
    if not isinstance(spec, ModelSpec):
        raise CommandError(
            f"{target} returned {type(spec).__name__}, not a threadensemble.ModelSpec"
        )
    return spec


_MAX_LABELS = 12  # a summary line per label, for dimensions with at most this many


def _by_label(name: str, var: xr.DataArray) -> list[tuple[str, xr.DataArray]]:
    """Split ``var`` along its dimension labelled by the fewest names (``variable``, say).

    Such a dimension often holds quantities in different units (temperature, precipitation),
    whose values must not be averaged together.  Without one, ``var`` stays whole.
    """
    labelled = [
        d
        for d in var.dims
        if d in var.coords and var[d].dtype.kind in "OU" and var.sizes[d] <= _MAX_LABELS
    ]
    if not labelled:
        return [(name, var)]
    dim = min(labelled, key=lambda d: var.sizes[d])
    return [(f"{name}[{label}]", var.sel({dim: label})) for label in var[dim].values.tolist()]


def _summary(ens: xr.Dataset) -> str:
    lines = [f"  dims: {dict(ens.sizes)}"]
    for name, var in ens.data_vars.items():
        if var.dtype.kind not in "fiu":
            continue
        for label, part in _by_label(str(name), var):
            per_realization = part.mean([d for d in part.dims if d != REALIZATION_DIM])
            lines.append(
                f"  {label}: mean {part.mean().item():.4g}, spread between realizations "
                f"{per_realization.std().item():.4g}"
            )
    return "\n".join(lines)


def _with_warmup(spec: ModelSpec, warmup: bool) -> ModelSpec:
    """Return ``spec`` warmed up with ``--warmup``: by its own warm-up function if it has one."""
    if warmup and spec.warmup is False:  # True, or the model's own function, stays
        return dataclasses.replace(spec, warmup=True)
    return spec


def _run(spec: ModelSpec, args: argparse.Namespace) -> int:
    info = runtime_info()
    print(f"{spec.description or spec.simulate.__qualname__}")
    print(f"{info.describe()}, {info.cpu_count} CPUs")
    spec = _with_warmup(spec, args.warmup)
    start = time.perf_counter()
    ens = spec.run(
        args.n,
        n_workers=args.jobs,
        seed=args.seed,
        output_dir=args.output,
        overwrite=args.overwrite,
        progress=not args.quiet,
        retries=args.retries,
        backend=args.backend,
        run_id=args.run_id,
    )
    elapsed = time.perf_counter() - start
    files = len(realization_files(Path(args.output)))
    report = last_run_report()
    computed = report.n_computed if report is not None else ens.sizes["realization"]
    print(
        f"{ens.sizes['realization']} realizations ({computed} computed now, the others "
        f"resumed from files) in {elapsed:.2f} s, {files} files in {args.output}/"
        if computed < ens.sizes["realization"]
        else f"{computed} realizations in {elapsed:.2f} s, {files} files in {args.output}/"
    )
    if report is not None:
        print(report.describe())
    print(_summary(ens))
    return 0


def _check(spec: ModelSpec, args: argparse.Namespace) -> int:
    spec = _with_warmup(spec, args.warmup)
    report = spec.check(sample=args.sample, n_workers=args.jobs, seed=args.seed)
    print(report)
    return 0 if report.ok else 1


def _info(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    if not directory.is_dir():
        raise CommandError(f"no such directory: {str(directory)!r}")
    manifest = read_manifest(directory)
    files = ensemble_files(directory, manifest)
    print(f"ensemble directory {directory}/")
    if manifest is None:
        print(f"  no {MANIFEST_NAME}: not written by threadensemble")
    else:
        config = manifest["config"]
        n = manifest_size(manifest)
        missing = sorted(set(range(n)) - files.keys())
        print(f"  model: {config['simulate']} (state injected as {config['inject']!r})")
        print(f"  seed: {config['seed'] or config['seed_scheme']}, run {manifest['digest']}")
        print(
            f"  realizations: {len(files)} of {n} done, {len(missing)} missing, "
            f"{len(manifest['failed'])} failed in the last run"
        )
        for k, error in manifest["failed"].items():
            print(f"    failed {k}: {error}")
        if stopped := manifest.get("stopped"):
            print(f"  the last run stopped early: {stopped}")
    if files:
        first = read_realization(next(iter(files.values())))
        for name, var in first.data_vars.items():
            print(f"  variable {name}{var.dims}: {var.dtype}, shape {var.shape}")
        size = sum(p.stat().st_size for p in files.values())
        print(f"  {len(files)} files, {size / 1e6:.1f} MB")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="threadensemble", description="Run and inspect ensembles of stochastic simulations."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def add_run_options(p: argparse.ArgumentParser, n: int, output: str | None) -> None:
        p.add_argument("-n", type=int, default=n, help=f"realizations (default {n})")
        p.add_argument(
            "-j", "--jobs", type=int, default=None, help="worker threads (default: CPUs)"
        )
        p.add_argument("--seed", type=int, default=1, help="run seed (default 1)")
        p.add_argument(
            "-o",
            "--output",
            default=output,
            required=output is None,
            help="output directory, one NetCDF file per realization"
            + (f" (default {output})" if output else ""),
        )
        p.add_argument("--overwrite", action="store_true", help="replace another run's files")
        p.add_argument("--retries", type=int, default=0, help="retries of a failed realization")
        p.add_argument(
            "--warmup",
            action="store_true",
            help="warm the state up first, by the model's own warm-up if it has one "
            "(else as the model says)",
        )
        p.add_argument(
            "--run-id", default=None, help="the model's version name, instead of its fingerprint"
        )
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        p.add_argument("--backend", choices=BACKENDS, default="threads",
                       help="worker threads (default) or worker processes")  # fmt: skip

    def add_model_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", help=f"MODULE:FACTORY, or an example: {', '.join(EXAMPLES)}")
        p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                       help="factory parameter (repeatable)")  # fmt: skip

    demo = commands.add_parser("demo", help="run the built-in weather generator example")
    add_run_options(demo, 16, "threadensemble-demo")
    run = commands.add_parser("run", help="run a model built by MODULE:FACTORY")
    add_model_arguments(run)
    add_run_options(run, 10, None)
    info = commands.add_parser("info", help="summarise an ensemble directory")
    info.add_argument("directory")
    check = commands.add_parser(
        "check", help="check that a model gives the same results on threads as on one worker"
    )
    add_model_arguments(check)
    check.add_argument("--sample", type=int, default=8, help="realizations to run (default 8)")
    check.add_argument("-j", "--jobs", type=int, default=4, help="threads (default 4)")
    check.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    check.add_argument(
        "--warmup",
        action="store_true",
        help="warm the state up first, by the model's own warm-up if it has one",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        spec = None
        if args.command in ("run", "check"):
            spec = build_spec(args.model, args.param)
    except CommandError as exc:
        print(f"threadensemble: error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "demo":
            return _run(build_spec("weather"), args)
        if args.command == "run":
            assert spec is not None
            return _run(spec, args)
        if args.command == "check":
            assert spec is not None
            return _check(spec, args)
        return _info(args)
    except (CommandError, TypeError, ValueError, OutputDirError, WorkerInitError) as exc:
        # The library's own checks of the run's arguments (raised before anything starts).
        message = str(exc).replace("overwrite=True", "--overwrite")  # the library's keyword
        print(f"threadensemble: error: {message}", file=sys.stderr)
        return 2
    except EnsembleError as exc:
        print(f"threadensemble: {exc}", file=sys.stderr)
        return 1
