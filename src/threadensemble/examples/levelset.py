"""Level-set fire front on large input layers: every member reads the same arrays, uncopied.

What it models
    A fire front spreading from its current perimeter (the state estimate) for the next hours:
    the front is the zero level set of ``phi``, advanced by ``phi_t + R |grad phi| = 0`` with
    a first-order upwind (Godunov) scheme.  The rate of spread ``R`` at each point depends on
    the fuel and its moisture, and on the wind and the slope along the front's outward normal.
    Each member perturbs the wind (direction, speed), the fuel moisture and the perimeter.

Where the expensive part is
    The input layers: fuel spread rate, moisture, the two slope components and the two wind
    components, as float32 rasters of ``size x size`` cells over the whole region (the default
    is small; operational layers are thousands of cells a side, hundreds of MB).  A forecast
    simulates a window of ``window x window`` cells around the fire, on views of the layers.

Threading
    All members read the same layers with zero copies (``layers.fuel[rows, cols]`` is a view).
    A process pool copies every layer into every worker, or needs them moved into shared
    memory first.  The front's working arrays (`FrontState`) are the per-thread state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

import threadensemble as te

__all__ = ["FireEstimate", "FrontState", "Layers", "build", "simulate"]

WIND_FACTOR = 0.3  # R grows by this fraction per m/s of wind along the normal
SLOPE_FACTOR = 3.0  # and by this fraction per unit of upslope gradient along the normal
EXTINCTION_MOISTURE = 0.3  # fuel moisture at which fire stops spreading
CFL = 0.4
REPORT_EVERY = 10.0  # minutes between burnt-area reports


@dataclass(frozen=True)
class Layers:
    """The region's input rasters (float32, rows run north): shared read-only by all threads."""

    fuel: np.ndarray  # spread rate in still air on flat ground, dry fuel, m/min
    moisture: np.ndarray  # dead fuel moisture, fraction
    slope_x: np.ndarray  # elevation gradient, east component
    slope_y: np.ndarray  # north component
    wind_u: np.ndarray  # terrain-adjusted wind, m/s, towards east
    wind_v: np.ndarray  # towards north
    cell_size: float  # m

    @property
    def nbytes(self) -> int:
        """Total size of the rasters, bytes."""
        rasters = (self.fuel, self.moisture, self.slope_x, self.slope_y, self.wind_u, self.wind_v)
        return sum(a.nbytes for a in rasters)


@dataclass(frozen=True)
class FireEstimate:
    """The fire now (a circular perimeter) and the forecast set-up."""

    row: int  # centre, cells
    col: int
    radius: float  # m
    window: int  # cells a side of the simulated window, centred on the fire
    horizon: float  # minutes

    def window_slices(self) -> tuple[slice, slice]:
        """Return the (rows, cols) of the layers the forecast reads."""
        half = self.window // 2
        return slice(self.row - half, self.row - half + self.window), slice(
            self.col - half, self.col - half + self.window
        )


@dataclass
class FrontState:
    """The front's working arrays, reused by every member on a thread."""

    phi: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    arrival: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))


def _smooth_field(size: int, scale: float, gen: np.random.Generator) -> np.ndarray:
    """Return a Gaussian random field (float32, in [0, 1]) with features of ``scale`` cells."""
    # float32 throughout: large layers are built without float64 temporaries twice their size
    noise = np.fft.rfft2(gen.standard_normal((size, size), dtype=np.float32))
    ky = np.fft.fftfreq(size).astype(np.float32)[:, None]
    kx = np.fft.rfftfreq(size).astype(np.float32)[None, :]
    noise *= np.exp(-((kx**2 + ky**2) * np.float32(np.pi * scale) ** 2))
    values = np.asarray(np.fft.irfft2(noise, s=(size, size)), np.float32)
    values -= values.min()
    values /= values.max()
    return values


def build(
    size: int = 512,
    window: int = 96,
    cell_size: float = 30.0,
    wind_speed: float = 5.0,
    wind_direction: float = 30.0,
    horizon: float = 120.0,
    seed: int = 0,
) -> te.ModelSpec:
    """Make the region's layers and the fire's state estimate; return the forecast model.

    Parameters
    ----------
    size : int
        Cells a side of the layers (memory: ``24 * size**2`` bytes for the six float32 layers).
    window : int
        Cells a side of the simulated window around the fire (at most ``size``).
    cell_size : float
        Side of a cell, m.
    wind_speed : float
        Mean wind speed, m/s.
    wind_direction : float
        Direction the wind blows towards, degrees counter-clockwise from east.
    horizon : float
        Forecast length, minutes.
    seed : int
        Seed of the synthetic layers (not of the members).
    """
    if not 8 <= window <= size:
        raise ValueError(f"window must be in [8, size={size}], got {window}")
    gen = np.random.default_rng(seed)
    relief = _smooth_field(size, 40.0, gen)
    elevation = 600.0 * relief  # m
    slope_y, slope_x = np.gradient(elevation, cell_size)
    vegetation = _smooth_field(size, 15.0, gen)
    fuel = np.where(vegetation < 0.15, 0.0, 0.5 + 5.5 * vegetation)  # low spots: lakes, rock
    moisture = 0.04 + 0.12 * _smooth_field(size, 25.0, gen) + 0.06 * relief
    exposure = 0.7 + 0.6 * relief  # ridges are windier than valleys
    towards = math.radians(wind_direction)
    layers = Layers(  # float32 already: asarray makes no copy
        fuel=np.asarray(fuel, np.float32),
        moisture=np.asarray(moisture, np.float32),
        slope_x=np.asarray(slope_x, np.float32),
        slope_y=np.asarray(slope_y, np.float32),
        wind_u=np.asarray(wind_speed * math.cos(towards) * exposure, np.float32),
        wind_v=np.asarray(wind_speed * math.sin(towards) * exposure, np.float32),
        cell_size=cell_size,
    )
    estimate = FireEstimate(size // 2, size // 2, 4 * cell_size, window, horizon)
    return te.ModelSpec(
        simulate=simulate,
        args=(layers, estimate),
        state=FrontState(),
        inject="front",
        description=f"level-set fire front, {window}^2 window of {size}^2 layers "
        f"({layers.nbytes / 1e6:.0f} MB)",
    )


def _member_rates(
    layers: Layers, rows: slice, cols: slice
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return this member's still-air spread rate and wind components on the window."""
    rng = te.get_rng()
    rotation = rng.normal(0.0, math.radians(15.0))
    gust = math.exp(rng.normal(0.0, 0.2))
    drying = rng.normal(0.0, 0.02)
    moisture = layers.moisture[rows, cols] + np.float32(drying)
    dryness = np.clip(1.0 - moisture / EXTINCTION_MOISTURE, 0.0, 1.0)
    base = layers.fuel[rows, cols] * dryness
    cos, sin = np.float32(gust * math.cos(rotation)), np.float32(gust * math.sin(rotation))
    u, v = layers.wind_u[rows, cols], layers.wind_v[rows, cols]
    return base, cos * u - sin * v, sin * u + cos * v


def _start_front(front: FrontState, estimate: FireEstimate, cell_size: float) -> None:
    """Set ``phi`` to the signed distance to this member's perimeter (with a ghost border)."""
    radius = estimate.radius * math.exp(te.get_rng().normal(0.0, 0.1))
    n = estimate.window
    centre = (n - 1) / 2
    y, x = np.mgrid[-1 : n + 1, -1 : n + 1].astype(np.float32)
    if front.phi.shape != (n + 2, n + 2):
        front.phi = np.empty((n + 2, n + 2), np.float32)
        front.arrival = np.empty((n, n), np.float32)
    np.hypot(y - centre, x - centre, out=front.phi)
    front.phi *= np.float32(cell_size)
    front.phi -= np.float32(radius)
    front.arrival.fill(np.nan)
    front.arrival[front.phi[1:-1, 1:-1] <= 0] = 0.0


def _advance(phi: np.ndarray, rate_terms: tuple[np.ndarray, ...], dt: float, dx: float) -> None:
    """Advance ``phi`` by one upwind step; ``rate_terms`` = (base, u, v, slope_x, slope_y)."""
    base, u, v, sx, sy = rate_terms
    phi[0], phi[-1] = phi[1], phi[-2]  # ghost cells: zero gradient at the window's edge
    phi[:, 0], phi[:, -1] = phi[:, 1], phi[:, -2]
    inner = phi[1:-1, 1:-1]
    back_x = np.maximum(inner - phi[1:-1, :-2], 0.0)
    ahead_x = np.minimum(phi[1:-1, 2:] - inner, 0.0)
    back_y = np.maximum(inner - phi[:-2, 1:-1], 0.0)
    ahead_y = np.minimum(phi[2:, 1:-1] - inner, 0.0)
    upwind = np.sqrt(back_x**2 + ahead_x**2 + back_y**2 + ahead_y**2) / dx
    gx = phi[1:-1, 2:] - phi[1:-1, :-2]  # outward normal, up to a positive factor
    gy = phi[2:, 1:-1] - phi[:-2, 1:-1]
    norm = np.sqrt(gx**2 + gy**2) + np.float32(1e-12)
    wind = np.maximum(u * gx + v * gy, 0.0) / norm
    slope = np.maximum(sx * gx + sy * gy, 0.0) / norm
    rate = base * (1.0 + WIND_FACTOR * wind + SLOPE_FACTOR * slope)
    inner -= np.float32(dt) * rate * upwind


def simulate(layers: Layers, estimate: FireEstimate, *, front: FrontState) -> xr.Dataset:
    """One member: arrival times on the window and burnt area every `REPORT_EVERY` minutes."""
    rows, cols = estimate.window_slices()
    base, u, v = _member_rates(layers, rows, cols)
    sx, sy = layers.slope_x[rows, cols], layers.slope_y[rows, cols]
    _start_front(front, estimate, layers.cell_size)
    fastest = float(base.max()) * (
        1.0
        + WIND_FACTOR * float(np.hypot(u, v).max())
        + SLOPE_FACTOR * float(np.hypot(sx, sy).max())
    )
    dt = CFL * layers.cell_size / max(fastest, 1e-6)
    clock = 0.0
    while clock < estimate.horizon:
        step = min(dt, estimate.horizon - clock)
        _advance(front.phi, (base, u, v, sx, sy), step, layers.cell_size)
        clock += step
        reached = (front.phi[1:-1, 1:-1] <= 0) & np.isnan(front.arrival)
        front.arrival[reached] = clock
    return _member_output(front.arrival, estimate, layers.cell_size)


def _member_output(arrival: np.ndarray, estimate: FireEstimate, cell_size: float) -> xr.Dataset:
    rows, cols = estimate.window_slices()
    reports = np.arange(0.0, estimate.horizon + REPORT_EVERY / 2, REPORT_EVERY)
    burnt = np.sort(arrival[~np.isnan(arrival)])
    hectares = np.searchsorted(burnt, reports, side="right") * cell_size**2 / 1e4
    return xr.Dataset(
        {
            "arrival_time": (("y", "x"), arrival.copy(), {"units": "min"}),
            "burnt_area": ("time", hectares, {"units": "ha"}),
        },
        coords={
            "y": ("y", np.arange(rows.start, rows.stop) * cell_size, {"units": "m"}),
            "x": ("x", np.arange(cols.start, cols.stop) * cell_size, {"units": "m"}),
            "time": ("time", reports, {"units": "min"}),
        },
    )
