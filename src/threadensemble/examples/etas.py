"""Earthquake aftershock forecasts: ensembles of ETAS catalogues (a branching process).

What it models
    The next ``horizon`` days of seismicity in a region after an observed sequence (a
    mainshock and its first aftershocks), with the epidemic-type aftershock sequence model
    (Ogata 1988, J. Am. Stat. Assoc. 83:9).  Background events arrive as a Poisson process
    whose spatial density is a smoothed map of past seismicity.  Every event, observed or
    simulated, triggers a Poisson number of direct aftershocks, ``K * 10**(alpha * (m - m_c))``
    on average over all time, at Omori-Utsu delays ``(t + c)**-p``, power-law distances
    ``(r**2 + d**2)**-q`` and Gutenberg-Richter magnitudes (``b``), generation after
    generation, until no new event falls in the forecast window.  A realization is one
    catalogue: a few hundred to a few thousand events, a different number each time.

Where the expensive part is
    `build`: the background rate map, kernel-smoothed from a long synthetic past catalogue,
    with its cumulative table for drawing locations, and the observed sequence.  A realization
    is small and pure Python (a queue of events, a few draws each); operational forecasts run
    tens of thousands of them, which is where per-task overheads show.

Output
    The catalogue along a ragged ``event`` dimension (``ragged=("event",)``): in the ensemble,
    shorter catalogues are padded with NaN, and ``n_events`` says how many events are real.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import xarray as xr

import threadensemble as te
from threadensemble.examples._draws import uniforms

__all__ = ["Etas", "Event", "Region", "build", "simulate"]

KM_PER_DEGREE = 111.2


@dataclass(frozen=True)
class Etas:
    """ETAS parameters (times in days, distances in km), of the order of Californian fits."""

    background_rate: float = 0.3  # events >= m_c per day in the region
    productivity: float = 0.18  # K: direct aftershocks of an m_c event, over all time
    alpha: float = 0.8  # productivity grows as 10**(alpha * (m - m_c))
    c: float = 0.01  # Omori-Utsu (t + c)**-p
    p: float = 1.1
    d: float = 1.0  # spatial kernel (r**2 + d**2)**-q, km
    q: float = 1.5
    b: float = 1.0  # Gutenberg-Richter
    m_c: float = 2.5  # completeness: smallest magnitude simulated
    m_max: float = 8.0

    def branching_ratio(self) -> float:
        """Return the mean number of direct aftershocks per event (< 1: the cascade dies out)."""
        span = self.m_max - self.m_c
        mean_boost = self.b / (self.b - self.alpha) * (1 - 10 ** (-(self.b - self.alpha) * span))
        return self.productivity * mean_boost / (1 - 10 ** (-self.b * span))

    def omori_fraction(self, start: float, stop: float) -> float:
        """Return the fraction of an event's aftershocks at delays in [start, stop), days."""
        return self.omori_cdf(stop) - self.omori_cdf(start)

    def expected_aftershocks(self, magnitude: float, start: float, stop: float) -> float:
        """Return the mean number of direct aftershocks at delays in [start, stop)."""
        boost = 10 ** (self.alpha * (magnitude - self.m_c))
        return self.productivity * boost * self.omori_fraction(start, stop)

    def omori_cdf(self, delay: float) -> float:
        """Return the fraction of an event's aftershocks within ``delay`` days of it."""
        return 1.0 - math.pow(self.c / (delay + self.c), self.p - 1)


@dataclass(frozen=True)
class Region:
    """The background model: a rate map over a lat/lon grid, as a cumulative table."""

    lat0: float  # south-west corner of the grid, degrees
    lon0: float
    cell: float  # grid spacing, degrees
    n_lon: int
    cumulative: tuple[float, ...]  # of the rate per cell, row-major, ending at 1


Event: TypeAlias = tuple[float, float, float, float, int]
"""An earthquake: (time in days from the forecast start, lat, lon, magnitude, generation).

Generation 0 is a background or observed event, generation n an aftershock of generation n - 1.
A plain tuple rather than a class: on free-threaded CPython 3.13, threads creating instances of
the same class contend on its reference count (fixed in 3.14), and a catalogue creates thousands.
"""


def _past_catalogue(
    faults: np.ndarray, n_events: int, gen: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Return epicentres (lat, lon) of a long past catalogue: scattered along the faults."""
    which = gen.integers(0, len(faults), n_events)
    along = gen.random(n_events)
    start, end = faults[which, :2], faults[which, 2:]
    points = start + along[:, None] * (end - start)
    points += 0.05 * gen.standard_t(3, (n_events, 2))
    return points[:, 0], points[:, 1]


def _rate_map(
    lat: np.ndarray, lon: np.ndarray, grid: tuple[np.ndarray, np.ndarray], bandwidth: float
) -> np.ndarray:
    """Return a Gaussian kernel density of the epicentres on the grid (sums to 1)."""
    glat, glon = grid
    density = np.zeros(glat.shape)
    for start in range(0, len(lat), 256):  # in blocks: bounded memory
        dlat = glat[..., None] - lat[start : start + 256]
        dlon = (glon[..., None] - lon[start : start + 256]) * math.cos(math.radians(glat.mean()))
        density += np.exp(-(dlat**2 + dlon**2) / (2 * bandwidth**2)).sum(axis=-1)
    density += 1e-3 * density.mean()  # events can happen anywhere, rarely
    normalized: np.ndarray = density / density.sum()
    return normalized


def _observed_sequence(etas: Etas, lat: float, lon: float, gen: np.random.Generator) -> list[Event]:
    """Return a mainshock one day before the forecast start and its first-day aftershocks."""
    mainshock: Event = (-1.0, lat, lon, 6.8, 0)
    n = gen.poisson(etas.expected_aftershocks(mainshock[3], 0.0, 1.0))
    draws = iter(gen.random(4 * n).tolist())
    events = [mainshock]
    for _ in range(n):
        delay = _omori_delay(etas, draws, 0.0, 1.0)
        dlat, dlon = _offset(etas, draws, lat)
        events.append((-1.0 + delay, lat + dlat, lon + dlon, _magnitude(etas, draws), 0))
    return events


def build(
    horizon: float = 30.0,
    n_past_events: int = 5_000,
    grid_cells: int = 64,
    seed: int = 0,
) -> te.ModelSpec:
    """Build the background model and the observed sequence; return the forecast model.

    Parameters
    ----------
    horizon : float
        Forecast length, days.
    n_past_events : int
        Size of the synthetic past catalogue the background map is smoothed from.
    grid_cells : int
        Cells per side of the background rate map (a 4 x 4 degree region).
    seed : int
        Seed of the synthetic past and observed catalogues (not of the forecasts).
    """
    gen = np.random.default_rng(seed)
    etas = Etas()
    lat0, lon0, extent = 33.0, -119.0, 4.0
    faults = np.array([[33.3, -118.8, 35.0, -116.5], [34.0, -118.9, 34.4, -116.2],
                       [33.5, -117.2, 36.6, -117.8]])  # fmt: skip
    lat, lon = _past_catalogue(faults, n_past_events, gen)
    cell = extent / grid_cells
    centres = np.arange(grid_cells) * cell + cell / 2
    glat, glon = np.meshgrid(lat0 + centres, lon0 + centres, indexing="ij")
    density = _rate_map(lat, lon, (glat, glon), bandwidth=0.08)
    cumulative = np.cumsum(density.ravel())
    region = Region(
        lat0=lat0,
        lon0=lon0,
        cell=cell,
        n_lon=grid_cells,
        cumulative=tuple((cumulative / cumulative[-1]).tolist()),
    )
    observed = tuple(_observed_sequence(etas, 34.2, -117.6, gen))
    return te.ModelSpec(
        simulate=simulate,
        args=(etas, region, observed, horizon),
        ragged=("event",),
        description=f"ETAS aftershock forecast, {horizon:g} days after an M6.8 mainshock",
    )


def _omori_delay(etas: Etas, draws: Iterator[float], start: float, stop: float) -> float:
    """Draw a delay in [start, stop) from the Omori-Utsu law, by inversion."""
    low, high = etas.omori_cdf(start), etas.omori_cdf(stop)
    u = low + next(draws) * (high - low)
    return etas.c * (math.pow(1.0 - u, -1.0 / (etas.p - 1)) - 1.0)


def _offset(etas: Etas, draws: Iterator[float], lat: float) -> tuple[float, float]:
    """Draw an epicentre offset (dlat, dlon), degrees, from the power-law spatial kernel."""
    r = etas.d * math.sqrt((1.0 - next(draws)) ** (1.0 / (1.0 - etas.q)) - 1.0)
    angle = 2 * math.pi * next(draws)
    dlat = r * math.sin(angle) / KM_PER_DEGREE
    dlon = r * math.cos(angle) / (KM_PER_DEGREE * math.cos(math.radians(lat)))
    return dlat, dlon


def _magnitude(etas: Etas, draws: Iterator[float]) -> float:
    """Draw a Gutenberg-Richter magnitude in [m_c, m_max), by inversion."""
    tail = 1.0 - 10 ** (-etas.b * (etas.m_max - etas.m_c))
    return etas.m_c - math.log10(1.0 - next(draws) * tail) / etas.b


def _background(etas: Etas, region: Region, horizon: float, draws: Iterator[float]) -> list[Event]:
    """Draw the background events of the forecast window."""
    n = int(te.get_rng("counts").poisson(etas.background_rate * horizon))
    events = []
    for _ in range(n):
        index = bisect_left(region.cumulative, next(draws))
        row, col = divmod(index, region.n_lon)
        lat = region.lat0 + (row + next(draws)) * region.cell
        lon = region.lon0 + (col + next(draws)) * region.cell
        events.append((horizon * next(draws), lat, lon, _magnitude(etas, draws), 0))
    return events


def _aftershocks(etas: Etas, parent: Event, horizon: float, draws: Iterator[float]) -> list[Event]:
    """Draw the direct aftershocks of ``parent`` that fall in the forecast window."""
    time, lat, lon, magnitude, generation = parent
    start = max(0.0, -time)  # an observed parent: only its aftershocks still to come
    stop = horizon - time
    mean = etas.expected_aftershocks(magnitude, start, stop)
    children: list[Event] = []
    for _ in range(int(te.get_rng("counts").poisson(mean))):
        delay = _omori_delay(etas, draws, start, stop)
        dlat, dlon = _offset(etas, draws, lat)
        children.append(
            (time + delay, lat + dlat, lon + dlon, _magnitude(etas, draws), generation + 1)
        )
    return children


def simulate(etas: Etas, region: Region, observed: tuple[Event, ...], horizon: float) -> xr.Dataset:
    """One catalogue of the forecast window: background events and every aftershock cascade."""
    draws = uniforms()
    catalogue = _background(etas, region, horizon, draws)
    parents = [*observed, *catalogue]
    while parents:  # generation by generation, until the cascade leaves the window
        children = [c for p in parents for c in _aftershocks(etas, p, horizon, draws)]
        catalogue.extend(children)
        parents = children
    catalogue.sort()  # by time (the first field)
    # (n, 5) floats; generation is float anyway once padded with NaN in the ensemble
    columns = np.array(catalogue, dtype=float).reshape(-1, 5).T
    return xr.Dataset(
        {
            "time": ("event", columns[0], {"units": "days"}),
            "latitude": ("event", columns[1]),
            "longitude": ("event", columns[2]),
            "magnitude": ("event", columns[3]),
            "generation": ("event", columns[4]),
            "n_events": ((), len(catalogue)),
        }
    )
