import datetime
import functools
import pickle
import tracemalloc
import warnings
import weakref
from typing import Any

import numpy as np
import pytest
import xarray as xr

from threadensemble._shared import (
    PathTable,
    Walk,
    changes,
    fingerprint,
    reachable,
    read_only_arrays,
    tokens,
    walk_paths,
)


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


def test_any_depth_is_walked_each_object_once() -> None:
    nested: dict[str, Any] = {"a": {"b": {"c": {"d": {"e": {"f": np.zeros(1)}}}}}}
    nested["a"]["b"]["loop"] = nested  # a cycle
    paths = [path for path, _ in reachable({"x": nested})]
    assert "x['a']['b']['c']['d']['e']['f']" in paths
    assert len(paths) == len(set(paths))


class Node:
    def __init__(self, next: "Node | None") -> None:
        self.next = next
        self.count = 0


def chain(depth: int) -> Node:
    head = None
    for _ in range(depth):
        head = Node(head)
    assert head is not None
    return head


def test_walk_paths_are_the_paths_of_reachable_and_shared_between_walks() -> None:
    roots = {"args[0]": chain(300), "args[1]": {"a": [np.zeros(2)]}}  # deep and shallow paths
    expected = [(path, id(obj)) for path, obj in reachable(roots)]
    table = PathTable()
    first, again = list(walk_paths(roots, table)), list(walk_paths(roots, table))
    assert [(str(path), id(obj)) for path, obj in first] == expected
    assert [p for p, _ in first] == [p for p, _ in again]  # WalkPaths: the same objects
    assert not all(isinstance(path, str) for path, _ in first)  # deep ones share prefixes
    deepest = "args[0]" + ".next" * 299
    assert [str(p) for p, _ in first if str(p).startswith(deepest)] == [
        deepest,
        deepest + ".next",  # None
        deepest + ".count",
    ]


def test_fingerprints_of_a_deep_chain_take_memory_linear_in_its_depth() -> None:
    """A path per object, each a str of its depth's length, would take quadratic memory."""
    peaks = {}
    for depth in (5_000, 20_000):
        head, table = chain(depth), PathTable()
        tracemalloc.start()
        walk = Walk()
        before = tokens(walk_paths({"m": head}, table, walk), walk)
        tail = head
        while tail.next is not None:
            tail = tail.next
        tail.count += 1
        found = changes(before, tokens(walk_paths({"m": head}, table), Walk()))
        peaks[depth] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert found == ["m" + ".next" * (depth - 1) + ".count: 0 -> 1"]
    assert peaks[20_000] < 8 * peaks[5_000], peaks  # quadratic: 16 times; linear: 4
    assert peaks[20_000] < 40e6, peaks  # the strs of the paths alone: 2 GB


def test_budget_is_reported_when_hit() -> None:
    walk = Walk(max_objects=10)
    assert len(list(reachable({"x": list(range(100))}, walk))) == 10
    assert walk.budget_hit and walk.objects == 10
    walk = Walk(max_bytes=1000)
    found = fingerprint({"small": np.zeros(10), "big": np.zeros(1000)}, walk)
    assert "not hashed" in found["big"] and walk.budget_hit and walk.bytes == 80


def test_xarray_variables_and_closures_of_reachable_functions_are_walked() -> None:
    class Sub:
        def __init__(self) -> None:
            self.ds = xr.Dataset({"v": ("x", np.arange(3.0))}, coords={"x": [1, 2, 3]})

    class Top:
        def __init__(self) -> None:
            self.sub = Sub()
            self.lookup = closure_over(np.arange(2.0))

    paths = dict(reachable({"model": Top()}))
    assert isinstance(paths["model.sub.ds['v'].values"], np.ndarray)
    assert "model.lookup.<closure table>" in paths
    top = Top()
    with read_only_arrays({"model": top}), pytest.raises(ValueError, match="read-only"):
        top.sub.ds["v"].values[0] = 1.0  # five levels down
    top.sub.ds["v"].values[0] = 1.0


def test_read_only_for_the_block_then_restored() -> None:
    model = Model()
    already_read_only = np.ones(2)
    already_read_only.flags.writeable = False
    roots = {"m": model, "r": already_read_only}
    with read_only_arrays(roots) as protection:
        assert len(protection.arrays) == 3  # grid, its view, fuel
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


def test_object_arrays_are_fingerprinted_element_wise() -> None:
    times = np.array([datetime.datetime(2000, 1, d) for d in (1, 2)] + [None], dtype=object)
    before = fingerprint({"t": times})
    assert before == fingerprint({"t": times.copy()})  # by value, not by address
    times[2] = datetime.datetime(2000, 1, 3)
    assert changes(before, fingerprint({"t": times}))[0].startswith("t: array(3,) object")


def test_arrays_backed_by_bytes_are_left_writeable_and_named() -> None:
    # numpy keeps the pickle's bytes as the memory of arrays over 1,000 bytes (protocol <= 4),
    # and cannot make them writeable again once they were made read-only.
    model = pickle.loads(pickle.dumps({"big": np.arange(500.0), "small": np.arange(3.0)}, 4))
    assert isinstance(model["big"].base, bytes) and model["big"].flags.writeable
    view = model["big"][10:]
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        with read_only_arrays({"m": model, "v": view}) as protection:
            assert protection.unprotected == ["m['big']"]
            assert len(protection.arrays) == 2  # small, and the view (its base stays writeable)
            assert model["big"].flags.writeable and not view.flags.writeable
    assert "1 shared arrays were left writeable (m['big'])" in str(warned[0].message)
    assert model["big"].flags.writeable and view.flags.writeable and model["small"].flags.writeable


def test_views_of_read_only_bases_are_restored_after_their_bases() -> None:
    base = np.zeros(10)
    views = [base[1:], base[1:][1:], base[1:][1:][1:]]
    with read_only_arrays({"views": list(reversed(views)), "base": base}) as protection:
        assert len(protection.arrays) == 4 and not any(a.flags.writeable for a in views)
    assert all(a.flags.writeable for a in [base, *views])


def test_weak_containers_are_not_walked() -> None:
    class Node:
        pass

    keep = [Node(), Node()]
    registry = weakref.WeakValueDictionary({i: node for i, node in enumerate(keep)})
    before = fingerprint({"r": registry})
    del keep[1]  # collected: the registry shrinks, which is no change of the model's
    assert changes(before, fingerprint({"r": registry})) == []
