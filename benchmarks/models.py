"""Two benchmark models of our own, each a factory returning a `threadensemble.ModelSpec`.

`pure_python` is CPU-bound pure Python (it holds the GIL all the time on a standard build);
`numpy_heavy` spends its time in numpy ufuncs on medium arrays (numpy releases the GIL inside
them, so even a standard build overlaps part of the work).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import xarray as xr

import threadensemble as te

__all__ = ["numpy_heavy", "pure_python"]


@dataclass(frozen=True)
class Epidemic:
    """A stochastic SIR epidemic (Gillespie algorithm): shared read-only by all threads."""

    population: int
    initial_infected: int
    infection_rate: float
    recovery_rate: float
    times: tuple[float, ...]


def simulate_epidemic(epidemic: Epidemic) -> xr.Dataset:
    """One realization: the number of infected people on the time grid, event by event."""
    draw = random.Random(int(te.get_rng().integers(2**63)))  # pure-Python generator per realization
    n = epidemic.population
    susceptible, infected = n - epidemic.initial_infected, epidemic.initial_infected
    times = epidemic.times
    counts = [0] * len(times)
    t, k = 0.0, 0
    while k < len(times):
        infect = epidemic.infection_rate * susceptible * infected / n
        total = infect + epidemic.recovery_rate * infected
        t = t + draw.expovariate(total) if total > 0 else float("inf")
        while k < len(times) and times[k] < t:
            counts[k] = infected
            k += 1
        if draw.random() * total < infect:
            susceptible, infected = susceptible - 1, infected + 1
        else:
            infected -= 1
    return xr.Dataset({"infected": ("time", np.array(counts))}, coords={"time": list(times)})


def pure_python(population: int = 20_000) -> te.ModelSpec:
    """SIR epidemic simulated event by event in pure Python (no numpy in the hot loop)."""
    epidemic = Epidemic(
        population=population,
        initial_infected=10,
        infection_rate=0.3,
        recovery_rate=0.1,
        times=tuple(float(day) for day in range(200)),
    )
    return te.ModelSpec(
        simulate=simulate_epidemic,
        args=(epidemic,),
        description=f"pure-Python Gillespie SIR epidemic, population {population}",
    )


@dataclass(frozen=True)
class Field:
    """A heterogeneous 2-D medium: shared read-only by all threads."""

    diffusivity: np.ndarray  # (n, n), at most 0.25 for stability
    noise: float
    n_steps: int


class FieldBuffers:
    """Per-thread working arrays, overwritten by every realization."""

    def __init__(self, n: int) -> None:
        self.u = np.zeros((n, n))
        self.flux = np.zeros((n - 2, n - 2))
        self.kick = np.zeros((n, n))


def simulate_field(field: Field, *, buffers: FieldBuffers) -> xr.Dataset:
    """One realization: a noise-driven diffusion, stepped with whole-array numpy operations."""
    rng = te.get_rng()
    u, flux, kick = buffers.u, buffers.flux, buffers.kick
    inner = u[1:-1, 1:-1]
    u[:] = 0.0
    mean, var = np.empty(field.n_steps), np.empty(field.n_steps)
    for step in range(field.n_steps):
        np.add(u[:-2, 1:-1], u[2:, 1:-1], out=flux)
        flux += u[1:-1, :-2]
        flux += u[1:-1, 2:]
        flux -= 4.0 * inner
        flux *= field.diffusivity[1:-1, 1:-1]
        inner += flux
        rng.standard_normal(out=kick)
        kick *= field.noise
        u += kick
        mean[step] = u.mean()
        var[step] = u.var()
    return xr.Dataset({"mean": ("step", mean), "variance": ("step", var)})


def numpy_heavy(n: int = 192, n_steps: int = 60) -> te.ModelSpec:
    """Noise-driven diffusion on an ``n`` x ``n`` grid with whole-array numpy operations."""
    gen = np.random.default_rng(0)
    field = Field(diffusivity=gen.uniform(0.05, 0.2, (n, n)), noise=0.1, n_steps=n_steps)
    return te.ModelSpec(
        simulate=simulate_field,
        args=(field,),
        state=FieldBuffers(n),
        inject="buffers",
        description=f"numpy stochastic diffusion, {n}x{n} grid, {n_steps} steps",
    )
