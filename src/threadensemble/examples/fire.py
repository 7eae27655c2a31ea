"""Fire spread predictor: thousands of pure-Python cells, minimum travel time, spot fires.

What it models
    A wildfire burning for the next hours from the current state estimate (the cells burning
    now, with their ignition times).  The landscape is a grid of `Cell` objects: each holds the
    spread rate of its fuel, its wind exposure, its neighbours with the travel time to each in
    still air (fuel and slope), a weak reference to its `Landscape` (the parent), and callbacks
    run when it ignites: crown-fuel cells throw embers downwind (spot fires), town cells raise
    an alert.  Wind speeds the fire up along its direction and slows it against it; arrival
    times follow by Dijkstra's algorithm (minimum travel time).  Each member perturbs the wind
    (direction and speed) and draws its own spot fires.

Where the expensive part is
    `build`: terrain, fuel and wind-exposure fields, then the cell graph (several thousand
    objects with eight neighbours each, their travel times and callbacks).  A member is a cheap
    run from the state estimate, all of it Python bytecode.

Threading
    The landscape cannot be pickled (weak references, closures), so a process pool would have
    to rebuild it in every worker; threads share it as it is.  What a member changes lives in
    `FireState`, one copy per thread (legacy code would keep it on the cells themselves).
"""

from __future__ import annotations

import heapq
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
import xarray as xr

import threadensemble as te

__all__ = ["Cell", "FireState", "Landscape", "StateEstimate", "build", "simulate"]

# Named streams: a member that throws more embers does not shift its wind perturbation.
wind_rng = te.ThreadLocalGenerator("wind")
spotting_rng = te.ThreadLocalGenerator("spotting")

# The eight neighbours (row offset, column offset); rows run north, columns east.
OFFSETS = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))
HEADINGS = tuple(math.atan2(dr, dc) for dr, dc in OFFSETS)  # radians counter-clockwise from east

# Spread rate in still air on flat ground (m/min) of each fuel class, and its name.
FUELS = {0: ("none", 0.0), 1: ("grass", 4.0), 2: ("shrub", 2.0), 3: ("forest", 1.0)}
CROWN_FUEL = 3  # the class whose burning cells throw embers
WIND_FACTOR = 0.18  # per m/s of wind along the heading: rate x exp(WIND_FACTOR * speed * cos)
REFERENCE_WIND = 5.0  # m/s: ember probability and distance grow in proportion to the wind
WIND_DIRECTION_SD = math.radians(15.0)  # member perturbations
WIND_SPEED_SD = 0.2  # of log(speed)


class Landscape:
    """The terrain as a grid of cells: built once, shared read-only by every thread.

    Parameters
    ----------
    rows, cols : int
        Grid size; row 0 is the southern edge, column 0 the western one.
    cell_size : float
        Side of a cell, in metres.
    wind_speed : float
        Forecast wind speed, m/s.
    wind_towards : float
        Direction the forecast wind blows towards, radians counter-clockwise from east.
    """

    def __init__(
        self, rows: int, cols: int, cell_size: float, wind_speed: float, wind_towards: float
    ) -> None:
        self.rows, self.cols, self.cell_size = rows, cols, cell_size
        self.wind_speed, self.wind_towards = wind_speed, wind_towards
        self.cells: list[Cell] = []

    def cell_at(self, row: int, col: int) -> Cell | None:
        """Return the cell at (row, col), or None outside the grid."""
        if 0 <= row < self.rows and 0 <= col < self.cols:
            return self.cells[row * self.cols + col]
        return None


class Cell:
    """One grid cell: its fuel, exposure, neighbours, parent and ignition callbacks."""

    __slots__ = ("col", "edges", "exposure", "fuel", "index", "landscape", "on_ignite", "row")

    def __init__(
        self, index: int, row: int, col: int, fuel: int, exposure: float, landscape: Landscape
    ) -> None:
        self.index, self.row, self.col = index, row, col
        self.fuel = fuel
        self.exposure = exposure  # wind speed multiplier: ridges are windier than valleys
        self.edges: list[Edge] = []
        self.landscape = weakref.ref(landscape)  # the parent, without a reference cycle
        self.on_ignite: list[IgnitionCallback] = []

    @property
    def rate(self) -> float:
        """Spread rate in still air on flat ground, m/min (0 for cells that cannot burn)."""
        return FUELS[self.fuel][1]


Edge: TypeAlias = tuple[Cell, float, int]
"""A way to a burnable neighbour: (neighbour, minutes to reach it in still air, heading index)."""


@dataclass
class FireState:
    """What one member changes: arrival times, the front's priority queue, alerts.

    One copy per worker thread; `start` resets it for each member.
    """

    arrival: list[float] = field(default_factory=list)  # minutes, per cell index
    front: list[tuple[float, int]] = field(default_factory=list)  # (arrival, cell index) heap
    wind_speed: float = 0.0
    wind_towards: float = 0.0
    town_reached: float = math.inf
    spot_fires: int = 0

    def start(self, n_cells: int, wind_speed: float, wind_towards: float) -> None:
        """Reset for a new member with this wind."""
        self.arrival = [math.inf] * n_cells
        self.front.clear()
        self.wind_speed, self.wind_towards = wind_speed, wind_towards
        self.town_reached = math.inf
        self.spot_fires = 0

    def ignite(self, index: int, time: float) -> bool:
        """Let the fire reach cell ``index`` at ``time``; return False if it was there earlier."""
        if time >= self.arrival[index]:
            return False
        self.arrival[index] = time
        heapq.heappush(self.front, (time, index))
        return True


IgnitionCallback: TypeAlias = Callable[[Cell, float, FireState], None]
"""Called as ``callback(cell, time, fire)`` when the fire reaches ``cell``."""


@dataclass(frozen=True)
class StateEstimate:
    """The fire now: cells burning, with their ignition times (minutes), and the horizon."""

    ignitions: tuple[tuple[int, float], ...]
    horizon: float


def _terrain(rows: int, cols: int, cell_size: float, gen: np.random.Generator) -> np.ndarray:
    """Return elevations (m): a sum of Gaussian hills."""
    y, x = np.mgrid[0:rows, 0:cols] * cell_size
    elevation = np.zeros((rows, cols))
    for _ in range(max(4, rows * cols // 600)):
        cy, cx = gen.uniform(0, rows * cell_size), gen.uniform(0, cols * cell_size)
        width = gen.uniform(8, 20) * cell_size
        elevation += gen.uniform(40, 160) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / width**2)
    return elevation


def _fuel_classes(elevation: np.ndarray, gen: np.random.Generator) -> np.ndarray:
    """Return a fuel class per cell: grass low down, forest high up, a creek that cannot burn."""
    rows, cols = elevation.shape
    relief = (elevation - elevation.min()) / np.ptp(elevation)
    noisy = relief + 0.15 * gen.standard_normal(elevation.shape)
    fuel = np.select([noisy < 0.3, noisy < 0.55], [1, 2], default=CROWN_FUEL)
    creek_col = (0.5 * cols + 0.1 * cols * np.sin(np.arange(rows) / 6)).astype(int)
    fuel[np.arange(rows), creek_col] = 0
    fuel[np.arange(rows), np.minimum(creek_col + 1, cols - 1)] = 0
    ford = fuel[rows // 3 : rows // 3 + 3]  # where the fire can cross the creek (a view)
    ford[ford == 0] = 1
    return fuel


def _connect(landscape: Landscape, elevation: np.ndarray) -> None:
    """Give every cell its edges to burnable neighbours, with still-air travel times."""
    size = landscape.cell_size
    for cell in landscape.cells:
        for heading, (dr, dc) in enumerate(OFFSETS):
            neighbour = landscape.cell_at(cell.row + dr, cell.col + dc)
            if neighbour is None or neighbour.rate == 0.0:
                continue
            distance = size * math.hypot(dr, dc)
            rise = elevation[neighbour.row, neighbour.col] - elevation[cell.row, cell.col]
            minutes = distance / (neighbour.rate * _slope_factor(rise / distance))
            cell.edges.append((neighbour, minutes, heading))


def _slope_factor(tan_slope: float) -> float:
    """Spread rate multiplier of a slope: fast uphill (Forestry Canada), slower downhill."""
    if tan_slope >= 0:
        return math.exp(3.533 * tan_slope**1.2)
    return math.exp(1.2 * tan_slope)


def _spotter(probability: float, mean_distance: float, delay: float) -> IgnitionCallback:
    """Return the callback of crown-fuel cells: it may throw an ember downwind."""

    def spot(cell: Cell, time: float, fire: FireState) -> None:
        strength = fire.wind_speed / REFERENCE_WIND
        if spotting_rng.random() >= probability * strength:
            return
        distance = mean_distance * strength * spotting_rng.standard_exponential()
        heading = fire.wind_towards + 0.3 * spotting_rng.standard_normal()
        landscape = cell.landscape()
        assert landscape is not None  # the landscape outlives its cells
        cells = distance / landscape.cell_size
        row = cell.row + round(cells * math.sin(heading))
        col = cell.col + round(cells * math.cos(heading))
        target = landscape.cell_at(row, col)
        if target is not None and target.rate > 0 and fire.ignite(target.index, time + delay):
            fire.spot_fires += 1

    return spot


def _raise_alert(cell: Cell, time: float, fire: FireState) -> None:
    """Record when the fire first reaches the town (the callback of town cells)."""
    fire.town_reached = min(fire.town_reached, time)


def _add_callbacks(landscape: Landscape, spot: IgnitionCallback) -> None:
    """Make crown-fuel cells throw embers, and town cells (east of the creek) raise alerts."""
    rows, cols = landscape.rows, landscape.cols
    for cell in landscape.cells:
        if cell.fuel == CROWN_FUEL:
            cell.on_ignite.append(spot)
        if rows // 2 <= cell.row < rows // 2 + rows // 8 and cell.col >= cols - cols // 5:
            cell.on_ignite.append(_raise_alert)


def build(
    rows: int = 60,
    cols: int = 80,
    cell_size: float = 50.0,
    wind_speed: float = 6.0,
    wind_direction: float = 20.0,
    spotting: float = 0.05,
    horizon: float = 240.0,
    seed: int = 0,
) -> te.ModelSpec:
    """Build the landscape and the state estimate; return the predictor ready to run.

    Parameters
    ----------
    rows, cols : int
        Grid size (cells).
    cell_size : float
        Side of a cell, in metres.
    wind_speed : float
        Forecast wind speed, m/s.
    wind_direction : float
        Direction the wind blows towards, degrees counter-clockwise from east.
    spotting : float
        Probability that a burning crown-fuel cell throws an ember, at a wind of 5 m/s.
    horizon : float
        Forecast length, minutes.
    seed : int
        Seed of the synthetic terrain and fuel (not of the members).
    """
    gen = np.random.default_rng(seed)
    elevation = _terrain(rows, cols, cell_size, gen)
    fuel = _fuel_classes(elevation, gen)
    exposure = 0.6 + 0.8 * (elevation - elevation.min()) / np.ptp(elevation)
    landscape = Landscape(rows, cols, cell_size, wind_speed, math.radians(wind_direction))
    landscape.cells = [
        Cell(r * cols + c, r, c, int(fuel[r, c]), float(exposure[r, c]), landscape)
        for r in range(rows)
        for c in range(cols)
    ]
    _connect(landscape, elevation)
    _add_callbacks(landscape, _spotter(spotting, mean_distance=8 * cell_size, delay=5.0))
    origin = (rows // 3) * cols + cols // 5
    ignitions = tuple(
        (origin + dr * cols + dc, 3.0 * (abs(dr) + abs(dc)))
        for dr in (-1, 0, 1)
        for dc in (-1, 0, 1)
    )
    return te.ModelSpec(
        simulate=simulate,
        args=(landscape, StateEstimate(ignitions, horizon)),
        state=FireState(),
        inject="fire",
        description=f"fire spread on {rows} x {cols} cells, {horizon:g} min ahead",
    )


def simulate(landscape: Landscape, estimate: StateEstimate, *, fire: FireState) -> xr.Dataset:
    """One member: arrival times over the landscape, burnt fraction, spot fires, town alert."""
    speed = landscape.wind_speed * math.exp(WIND_SPEED_SD * wind_rng.standard_normal())
    towards = landscape.wind_towards + WIND_DIRECTION_SD * wind_rng.standard_normal()
    fire.start(len(landscape.cells), speed, towards)
    for index, time in estimate.ignitions:
        fire.ignite(index, time)
    _spread(landscape.cells, fire, estimate.horizon)
    return _member_output(landscape, fire, estimate.horizon)


def _spread(cells: list[Cell], fire: FireState, horizon: float) -> None:
    """Burn outwards from the front in arrival order (Dijkstra) until the horizon."""
    arrival, front = fire.arrival, fire.front
    # exp(-WIND_FACTOR * speed * exposure * cos(heading - wind)) speeds up or slows down a way
    along = [-WIND_FACTOR * fire.wind_speed * math.cos(h - fire.wind_towards) for h in HEADINGS]
    while front:
        time, index = heapq.heappop(front)
        if time > horizon:
            break
        if time > arrival[index]:
            continue  # a stale entry: the fire reached this cell earlier
        cell = cells[index]
        for callback in cell.on_ignite:
            callback(cell, time, fire)
        exposure = cell.exposure
        for neighbour, minutes, heading in cell.edges:
            reached = time + minutes * math.exp(exposure * along[heading])
            if reached < arrival[neighbour.index]:
                arrival[neighbour.index] = reached
                heapq.heappush(front, (reached, neighbour.index))


def _member_output(landscape: Landscape, fire: FireState, horizon: float) -> xr.Dataset:
    arrival = np.array(fire.arrival).reshape(landscape.rows, landscape.cols)
    arrival[arrival > horizon] = np.nan
    size = landscape.cell_size
    return xr.Dataset(
        {
            "arrival_time": (("y", "x"), arrival, {"units": "min", "long_name": "fire arrival"}),
            "burnt_fraction": ((), np.count_nonzero(~np.isnan(arrival)) / arrival.size),
            "town_reached": ((), fire.town_reached if fire.town_reached <= horizon else np.nan),
            "spot_fires": ((), fire.spot_fires),
        },
        coords={
            "y": ("y", np.arange(landscape.rows) * size, {"units": "m"}),
            "x": ("x", np.arange(landscape.cols) * size, {"units": "m"}),
        },
    )
