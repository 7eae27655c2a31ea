"""Agent mobility: where people go, by exploration and preferential return (d-EPR).

What it models
    The destination diary of one agent per realization, trip after trip, in a city of
    buildings (the d-EPR model: Song et al. 2010, Nature Physics 6:818; Pappalardo et al.
    2015, Nature Communications 6:8166).  The agent lives in a residential building drawn at
    random.  Before each trip it stays a random time (a power law with an exponential cut-off);
    then, with probability ``rho * S**-gamma`` (``S``: places visited so far), it explores: it
    goes somewhere new, chosen from where it is by a gravity model (attractiveness over squared
    distance, among the nearest buildings); otherwise it returns to a place it knows, chosen in
    proportion to its past visits.  ``S`` then grows like ``n**(1 / (1 + gamma))`` with the
    number of trips ``n``, and a few places collect most visits.

Where the expensive part is
    `build`: the city (building positions and attractiveness) and, for every building, the
    cumulative gravity weights of its nearest candidate destinations (pure-Python lists in a
    dict: several MB of small objects), wrapped in a closure, ``city.explore``.  A realization
    is a pure-Python loop over trips that reads them.

Threading
    Standard pickle rejects the closure (a nested function), so a process pool would rebuild
    the city in every worker, or cloudpickle it to every worker; threads share it as it is.
    Each trip draws from `uniforms`, batches of the realization's own stream.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import xarray as xr

import threadensemble as te
from threadensemble.examples._draws import uniforms

__all__ = ["City", "Explorer", "Habits", "build", "gravity_explorer", "simulate"]

MAX_NEARBY_TRIES = 32  # draws among the nearest buildings before exploring the whole city

Explorer: TypeAlias = Callable[[int, Container[int], Iterator[float]], int]
"""``explore(origin, visited, draws)``: a building not in ``visited``, chosen from ``origin``."""


@dataclass(frozen=True)
class City:
    """Buildings and the gravity model over them: shared read-only by every thread."""

    x: np.ndarray  # building positions, m
    y: np.ndarray
    attractiveness: np.ndarray
    homes: np.ndarray  # indices of the residential buildings
    explore: Explorer


@dataclass(frozen=True)
class Habits:
    """Parameters of the EPR model (defaults: Song et al. 2010)."""

    rho: float = 0.6  # exploration propensity
    gamma: float = 0.21  # how fast exploring becomes rarer
    beta: float = 0.8  # exponent of the waiting-time power law
    min_stay: float = 0.5  # hours
    stay_cutoff: float = 17.0  # hours, exponential cut-off of the waiting times
    n_trips: int = 5000


def gravity_explorer(
    x: np.ndarray, y: np.ndarray, attractiveness: np.ndarray, n_candidates: int
) -> Explorer:
    """Return the gravity model of exploration as a closure over per-building tables.

    From each building the candidates are its ``n_candidates`` nearest neighbours, weighted by
    attractiveness over squared distance (plus 50 m squared: no building is infinitely close).
    When all the candidates drawn were visited already, the agent explores the whole city,
    uniformly.

    Parameters
    ----------
    x, y : numpy.ndarray
        Building positions, m.
    attractiveness : numpy.ndarray
        Building attractiveness (the gravity model's destination mass).
    n_candidates : int
        Candidate destinations per building.

    Returns
    -------
    callable
        ``explore(origin, visited, draws) -> building``.
    """
    n_buildings = len(x)
    tables = _gravity_tables(x, y, attractiveness, n_candidates)

    def explore(origin: int, visited: Container[int], draws: Iterator[float]) -> int:
        candidates, cumulative = tables[origin]
        total = cumulative[-1]
        for _ in range(MAX_NEARBY_TRIES):
            choice = candidates[bisect_left(cumulative, next(draws) * total)]
            if choice not in visited:
                return choice
        while True:  # the caller explores only while some building is unvisited
            choice = int(next(draws) * n_buildings)
            if choice not in visited:
                return choice

    return explore


def _gravity_tables(
    x: np.ndarray, y: np.ndarray, attractiveness: np.ndarray, n_candidates: int
) -> dict[int, tuple[list[int], list[float]]]:
    """Return building -> (its nearest candidates, their cumulative gravity weights)."""
    n_buildings = len(x)
    tables: dict[int, tuple[list[int], list[float]]] = {}
    chunk = 256  # origins per block: bounds the distance matrix to chunk x n_buildings
    for start in range(0, n_buildings, chunk):
        origins = np.arange(start, min(start + chunk, n_buildings))
        d2 = (x[origins, None] - x[None, :]) ** 2 + (y[origins, None] - y[None, :]) ** 2
        d2[np.arange(len(origins)), origins] = np.inf
        nearest = np.argsort(d2, axis=1, kind="stable")[:, :n_candidates]
        rows = np.arange(len(origins))[:, None]
        weights = attractiveness[nearest] / (d2[rows, nearest] + 50.0**2)
        cumulative = np.cumsum(weights, axis=1)
        for i, origin in enumerate(origins.tolist()):
            tables[origin] = (nearest[i].tolist(), cumulative[i].tolist())
    return tables


def _city(n_buildings: int, extent: float, gen: np.random.Generator) -> np.ndarray:
    """Return (n_buildings, 2) positions: neighbourhoods of various densities, and sprawl."""
    n_centres = max(3, n_buildings // 200)
    centres = gen.uniform(0.1 * extent, 0.9 * extent, (n_centres, 2))
    spread = gen.uniform(0.02, 0.08, n_centres) * extent
    which = gen.integers(0, n_centres, n_buildings)
    positions = centres[which] + spread[which, None] * gen.standard_normal((n_buildings, 2))
    sprawl = gen.random(n_buildings) < 0.15
    positions[sprawl] = gen.uniform(0, extent, (int(sprawl.sum()), 2))
    return np.clip(positions, 0.0, extent)


def build(
    n_buildings: int = 2000,
    n_candidates: int = 100,
    extent: float = 10_000.0,
    n_trips: int = 5000,
    rho: float = 0.6,
    gamma: float = 0.21,
    seed: int = 0,
) -> te.ModelSpec:
    """Build the city and its gravity model; return the mobility model ready to run.

    Parameters
    ----------
    n_buildings : int
        Number of buildings.
    n_candidates : int
        Nearest buildings the gravity model chooses among, from each building.
    extent : float
        Side of the (square) city, m.
    n_trips : int
        Trips per agent (one agent per realization).
    rho, gamma : float
        Exploration parameters: an agent who has visited ``S`` places explores with
        probability ``rho * S**-gamma``.
    seed : int
        Seed of the synthetic city (not of the agents).
    """
    gen = np.random.default_rng(seed)
    positions = _city(n_buildings, extent, gen)
    attractiveness = gen.lognormal(0.0, 1.0, n_buildings)
    homes = np.flatnonzero(gen.random(n_buildings) < 0.7)
    x, y = positions[:, 0], positions[:, 1]
    city = City(x, y, attractiveness, homes, gravity_explorer(x, y, attractiveness, n_candidates))
    return te.ModelSpec(
        simulate=simulate,
        args=(city, Habits(rho=rho, gamma=gamma, n_trips=n_trips)),
        description=f"d-EPR mobility, {n_buildings} buildings, {n_trips} trips per agent",
    )


def _stay(draws: Iterator[float], habits: Habits) -> float:
    """Draw a stay (hours) from ``t**-(1 + beta) * exp(-t / cutoff)``, ``t >= min_stay``.

    A Pareto draw, accepted with probability ``exp(-(t - min_stay) / cutoff)``: exactly the
    truncated power law.
    """
    while True:
        stay = habits.min_stay * math.pow(1.0 - next(draws), -1.0 / habits.beta)
        if next(draws) < math.exp((habits.min_stay - stay) / habits.stay_cutoff):
            return stay


def simulate(city: City, habits: Habits) -> xr.Dataset:
    """One agent's diary: where it is after each trip, when, and its visits per building."""
    draws = uniforms()
    n_buildings = len(city.x)
    place = int(city.homes[int(next(draws) * len(city.homes))])
    history = [place]  # one entry per stay: a uniform pick from it is a preferential return
    visited = {place}
    clock = 0.0
    times, distinct = [clock], [1]
    for _ in range(habits.n_trips):
        clock += _stay(draws, habits)
        exploring = next(draws) < habits.rho * len(visited) ** -habits.gamma
        if exploring and len(visited) < n_buildings:
            place = city.explore(place, visited, draws)
            visited.add(place)
        else:
            place = history[int(next(draws) * len(history))]
        history.append(place)
        times.append(clock)
        distinct.append(len(visited))
    return xr.Dataset(
        {
            "place": ("trip", np.array(history)),
            "arrival_time": ("trip", np.array(times), {"units": "h"}),
            "distinct_places": ("trip", np.array(distinct)),
            "visits": ("building", np.bincount(history, minlength=n_buildings)),
        },
        coords={
            "trip": np.arange(habits.n_trips + 1),
            "building": np.arange(n_buildings),
            "building_x": ("building", city.x, {"units": "m"}),
            "building_y": ("building", city.y, {"units": "m"}),
        },
    )
