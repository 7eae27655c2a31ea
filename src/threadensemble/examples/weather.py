"""Multisite weather generator: a fitted vector-autoregressive model with phase randomization.

What it models
    Daily temperature, precipitation and relative humidity at several stations.  The factory
    fits the model to a synthetic "observed" record: a seasonal cycle per station and variable,
    a VAR(1) process on the standardized anomalies (all stations and variables jointly), and
    the amplitude spectrum of the VAR residuals.  A realization draws new residuals by FFT phase
    randomization (same spectrum, random phases: the surrogate keeps the observed low-frequency
    variability), runs them through the VAR, and transforms back.

Where the expensive part is
    Fitting (least squares over the whole record, residual spectra) happens once in `build`;
    the fitted `WeatherModel` is shared read-only by all threads.  The generator's working
    state (`GeneratorState`, the ``vgs`` of the original code) holds buffers it mutates on every
    realization: it is the part each thread gets its own copy of.

Threading
    The simulation code draws from a module-level ``rng`` as legacy code does; assigning
    ``rng = threadensemble.rng`` makes every call site draw from the calling thread's
    per-realization stream without editing them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr

import threadensemble as te

__all__ = ["GeneratorState", "WeatherModel", "build", "simulate"]

rng = te.rng  # was: rng = np.random.default_rng(); every call site below stays as it was

VARIABLES = ("temperature", "precipitation", "humidity")


@dataclass(frozen=True)
class WeatherModel:
    """The fitted model: shared by all threads, never written to."""

    stations: tuple[str, ...]
    variables: tuple[str, ...]
    seasonal_mean: np.ndarray  # (n_series, 366)
    seasonal_std: np.ndarray  # (n_series, 366)
    var_coefficients: np.ndarray  # (n_series, n_series) VAR(1) matrix
    residual_amplitude: np.ndarray  # (n_series, n_freq) of the fitted residuals
    residual_std: np.ndarray  # (n_series,)
    wet_threshold: float


@dataclass
class GeneratorState:
    """The generator's mutable working state (``vgs``): one copy per worker thread."""

    anomalies: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    innovations: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    realizations_done: int = 0


def _synthetic_record(n_stations: int, n_years: int, seed: int) -> np.ndarray:
    """Return an "observed" record (n_series, n_days) with seasonality and spatial coherence."""
    gen = np.random.default_rng(seed)
    n_days = 365 * n_years
    doy = np.arange(n_days) % 365
    season = np.sin(2 * np.pi * (doy - 105) / 365)
    n_series = n_stations * len(VARIABLES)
    mix = np.linalg.cholesky(0.6 * np.ones((n_series, n_series)) + 0.4 * np.eye(n_series))
    noise = mix @ gen.standard_normal((n_series, n_days))
    ar = np.empty_like(noise)
    ar[:, 0] = noise[:, 0]
    for t in range(1, n_days):
        ar[:, t] = 0.7 * ar[:, t - 1] + noise[:, t]
    record = np.empty_like(ar)
    for s in range(n_stations):
        t_row, p_row, h_row = (s * len(VARIABLES) + v for v in range(len(VARIABLES)))
        record[t_row] = 10 + s + 9 * season + 3 * ar[t_row]
        record[p_row] = np.maximum(0.0, ar[p_row] - 0.3) ** 1.5 * 2
        record[h_row] = np.clip(70 - 10 * season + 8 * ar[h_row], 5, 100)
    return record


def build(n_stations: int = 4, n_years: int = 10, n_days: int = 365, seed: int = 0) -> te.ModelSpec:
    """Fit the weather generator and return it ready to run.

    Parameters
    ----------
    n_stations : int
        Number of stations.
    n_years : int
        Length of the synthetic observed record used for fitting.
    n_days : int
        Length of each simulated series.
    seed : int
        Seed of the synthetic record (not of the simulations).
    """
    record = _synthetic_record(n_stations, n_years, seed)
    n_series, n_obs = record.shape
    doy = np.arange(n_obs) % 365
    mean = np.stack([record[:, doy == d].mean(axis=1) for d in range(365)], axis=1)
    std = np.stack([record[:, doy == d].std(axis=1) for d in range(365)], axis=1)
    kernel = np.ones(15) / 15  # smooth the day-of-year statistics (circularly)
    mean = np.stack([np.convolve(np.tile(m, 3), kernel, "same")[365:730] for m in mean])
    std = np.stack([np.convolve(np.tile(s, 3), kernel, "same")[365:730] for s in std]) + 1e-6
    z = (record - mean[:, doy]) / std[:, doy]
    past, now = z[:, :-1], z[:, 1:]
    coefficients = np.linalg.lstsq(past.T, now.T, rcond=None)[0].T
    residuals = now - coefficients @ past
    spectrum = np.abs(np.fft.rfft(residuals[:, : n_days - 1], axis=1))
    model = WeatherModel(
        stations=tuple(f"S{i:02d}" for i in range(n_stations)),
        variables=VARIABLES,
        seasonal_mean=mean,
        seasonal_std=std,
        var_coefficients=coefficients,
        residual_amplitude=spectrum,
        residual_std=residuals.std(axis=1),
        wet_threshold=0.05,
    )
    times = np.arange("2000-01-01", n_days, dtype="datetime64[D]").astype("datetime64[ns]")
    vgs = GeneratorState(
        anomalies=np.zeros((n_series, n_days)), innovations=np.zeros((n_series, n_days - 1))
    )
    return te.ModelSpec(
        simulate=simulate,
        args=(model, times),
        state=vgs,
        inject="vgs",
        description=f"VAR(1) weather generator, {n_stations} stations x {len(VARIABLES)} "
        f"variables x {n_days} days",
    )


def _phase_randomize(amplitude: np.ndarray, n: int, out: np.ndarray) -> None:
    """Fill ``out`` (n_series, n) with surrogates of the given amplitude spectra, random phases."""
    phases = rng.uniform(0, 2 * np.pi, amplitude.shape[1])  # one phase set: keeps cross-correlation
    phases[0] = 0.0
    out[:] = np.fft.irfft(amplitude * np.exp(1j * phases), n=n, axis=1)
    out /= out.std(axis=1, keepdims=True)


def simulate(model: WeatherModel, times: np.ndarray, *, vgs: GeneratorState) -> xr.Dataset:
    """One realization: daily weather at every station, as (station, variable, time)."""
    n_series, n_days = vgs.anomalies.shape
    _phase_randomize(model.residual_amplitude, n_days - 1, vgs.innovations)
    vgs.innovations *= model.residual_std[:, None]
    vgs.anomalies[:, 0] = rng.standard_normal(n_series)
    for t in range(1, n_days):
        vgs.anomalies[:, t] = model.var_coefficients @ vgs.anomalies[:, t - 1]
        vgs.anomalies[:, t] += vgs.innovations[:, t - 1]
    doy = (times.astype("datetime64[D]").astype(np.int64) - 10957) % 365
    values = model.seasonal_mean[:, doy] + model.seasonal_std[:, doy] * vgs.anomalies
    values = values.reshape(len(model.stations), len(model.variables), n_days)
    values[:, 1] = np.where(values[:, 1] < model.wet_threshold, 0.0, values[:, 1])
    values[:, 2] = np.clip(values[:, 2], 0.0, 100.0)
    vgs.realizations_done += 1
    return xr.Dataset(
        {"weather": (("station", "variable", "time"), values)},
        coords={"station": list(model.stations), "variable": list(model.variables), "time": times},
    )
