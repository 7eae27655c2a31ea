"""check_picklable: what the dask backend needs, checked before anything is sent."""

import threading
import tracemalloc
import weakref
from typing import Any

import numpy as np
import pytest

import threadensemble as te

pytest.importorskip("cloudpickle", reason="check_picklable needs cloudpickle (the dask extra)")


class Model:
    def __init__(self) -> None:
        self.grid = np.zeros((3, 3))
        self.cache: dict[str, Any] = {"ok": [1, 2], "handle": threading.Lock()}
        self.parent = self  # a cycle: the search must not loop


def takes_work(*args: Any, work: Any = None) -> None:
    pass


def test_names_the_innermost_unpicklable_object() -> None:
    with pytest.raises(TypeError, match=r"^args\[1\]\.cache\['handle'\] cannot be pickled \("):
        te.check_picklable(print, args=(1.0, Model()))
    with pytest.raises(TypeError, match=r"^state\[0\] cannot be pickled .*weakref"):
        te.check_picklable(takes_work, state=[weakref.ref(Model)], inject="work")


class Node:
    def __init__(self, next: "Node | None") -> None:
        self.next = next


def test_a_deep_path_is_shown_by_its_two_ends_and_its_depth() -> None:
    head = Node(None)
    head.lock = threading.Lock()  # type: ignore[attr-defined]
    for _ in range(999):
        head = Node(head)
    with pytest.raises(TypeError) as refused:
        te.check_picklable(print, args=(head,))
    message = str(refused.value)
    start, _, rest = message.partition(" ... ")
    assert start == "args[0]" + (".next" * 20)[:93], message[:300]
    end = f".lock (a path 1000 levels deep, {7 + 5 * 999 + 5:,} characters) cannot be pickled"
    assert rest.startswith(".next" * 19 + end), message[:300]
    assert len(message) < 700
    held = Node(None)
    held.lock = threading.Lock()  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match=r"^args\[0\]\.next\.lock cannot be pickled \("):
        te.check_picklable(print, args=(Node(held),))  # a short path is shown whole


def test_closures_are_searched_too() -> None:
    lock = threading.Lock()

    def simulate() -> None:
        with lock:
            pass

    with pytest.raises(TypeError, match=r"^simulate\.<closure lock> cannot be pickled"):
        te.check_picklable(simulate)


def test_what_cloudpickle_can_send_passes() -> None:
    class Local:  # defined in a function: pickled by value, as dask would
        pass

    te.check_picklable(
        lambda model, *, work: None,
        args=(Local(), np.random.default_rng(1)),
        kwargs={"table": {"a": np.ones(3)}},
        state=Local(),
        inject="work",
    )


def test_array_data_are_not_copied() -> None:
    big = np.zeros(50_000_000, dtype=np.uint8)  # 50 MB, never touched (zero pages)
    tracemalloc.start()
    try:
        state = {"same": big, "half": big[:25_000_000]}
        te.check_picklable(takes_work, args=(big,), state=state, inject="work")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


class LoadsBadly:
    """Pickles fine; its pickle fails to load (a __reduce__ whose arguments do not fit)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (LoadsBadly, ("unexpected",))


def test_an_object_whose_pickle_cannot_be_loaded_is_named() -> None:
    with pytest.raises(TypeError, match=r"^kwargs\['model'\]\[1\] pickles, but its pickle cannot"):
        te.check_picklable(print, kwargs={"model": [1, LoadsBadly()]})


def test_thread_local_generators_pass() -> None:
    te.check_picklable(print, args=(te.rng, te.ThreadLocalGenerator("wind")))
