import functools
from typing import Any

import numpy as np
import pytest
import xarray as xr

from threadensemble._shared import changes, fingerprint, reachable, read_only_arrays


class Model:
    def __init__(self) -> None:
        self.grid = np.zeros((4, 4))
        self.view = self.grid[1:]
        self.layers = {"fuel": np.ones(3), "names": ["a", "a"]}


def closure_over(table: np.ndarray) -> Any:
    def lookup(i: int) -> float:
        return float(table[i])

    return lookup


def test_reachable_walks_attributes_containers_closures_and_partials() -> None:
    table = np.arange(3.0)
    roots = {
        "args[0]": Model(),
        "args[1]": closure_over(table),
        "args[2]": functools.partial(sum, [1]),
    }
    paths = [path for path, _ in reachable(roots)]
    assert "args[0].grid" in paths
    assert "args[0].layers['fuel']" in paths
    assert "args[0].layers['names'][1]" in paths  # repeated small objects are each listed
    assert "args[1].<closure table>" in paths
    assert "args[2].args[0]" in paths


def test_depth_is_bounded() -> None:
    nested: dict[str, Any] = {"a": {"b": {"c": {"d": {"e": np.zeros(1)}}}}}
    paths = [path for path, _ in reachable({"x": nested}, max_depth=2)]
    assert "x['a']['b']" in paths
    assert "x['a']['b']['c']" not in paths


def test_read_only_for_the_block_then_restored() -> None:
    model = Model()
    already_read_only = np.ones(2)
    already_read_only.flags.writeable = False
    roots = {"m": model, "r": already_read_only}
    with read_only_arrays(roots) as count:
        assert count == 3  # grid, its view, fuel
        with pytest.raises(ValueError, match="read-only"):
            model.grid[0, 0] = 1.0
        with pytest.raises(ValueError, match="read-only"):
            model.view[0, 0] = 1.0
    model.grid[0, 0] = 1.0
    model.view[0, 0] = 1.0
    assert model.layers["fuel"].flags.writeable
    assert not already_read_only.flags.writeable


def test_flags_are_restored_after_an_error() -> None:
    model = Model()
    with pytest.raises(RuntimeError), read_only_arrays({"m": model}):
        raise RuntimeError
    assert model.grid.flags.writeable


def test_fingerprint_changes_name_the_path() -> None:
    model = Model()
    before = fingerprint({"m": model})
    model.layers["names"][1] = "b"
    model.grid[2, 2] = 5.0
    found = changes(before, fingerprint({"m": model}))
    assert "m.layers['names'][1]: 'a' -> 'b'" in found
    assert any(c.startswith("m.grid: array(4, 4) float64") for c in found)
    assert changes(before, before) == []


def test_generator_state_is_fingerprinted() -> None:
    gen = np.random.default_rng(1)
    before = fingerprint({"g": gen})
    gen.random()
    assert changes(before, fingerprint({"g": gen}))[0].startswith("g: Generator state")


def test_fingerprint_of_values_made_on_access_is_stable() -> None:
    # A Dataset makes a new DataArray on each access: the walk must not mistake a later one for
    # an earlier one whose id has been reused.
    roots = {f"ds{i}": xr.Dataset({"v": ("x", np.arange(3.0) + i)}) for i in range(20)}
    first = fingerprint(roots)
    assert len([path for path in first if path.endswith("['v']")]) == 20
    assert changes(first, fingerprint(roots)) == []
