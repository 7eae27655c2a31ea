import threading
from typing import Any

import pytest

from threadensemble import WorkerInitError
from threadensemble._state import PerThreadState, copy_state


def test_every_thread_gets_its_own_deep_copy() -> None:
    master = {"buffer": [0] * 10, "nested": {"list": [1, 2]}}
    per_thread = PerThreadState(master)
    barrier = threading.Barrier(6)
    copies: dict[int, Any] = {}

    def worker(i: int) -> None:
        per_thread.initialize()
        barrier.wait()
        mine = per_thread.get()
        mine["buffer"][0] = i
        mine["nested"]["list"].append(i)
        barrier.wait()
        copies[i] = mine

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in copies.values()}) == 6
    for i, mine in copies.items():
        assert mine["buffer"][0] == i and mine["nested"]["list"] == [1, 2, i]
    assert master == {"buffer": [0] * 10, "nested": {"list": [1, 2]}}


def test_get_outside_a_worker_says_so() -> None:
    with pytest.raises(RuntimeError, match="not a worker"):
        PerThreadState({}).get()


def test_initializer_failure_is_recorded() -> None:
    class Fussy:
        def __deepcopy__(self, memo: dict[int, Any]) -> "Fussy":
            raise OSError("no")

    per_thread = PerThreadState(Fussy())
    with pytest.raises(OSError, match="no"):
        per_thread.initialize()
    assert isinstance(per_thread.init_errors[0], OSError)


def test_copy_state_names_the_type_and_the_cause() -> None:
    with pytest.raises(TypeError, match=r"copy.deepcopy failed on lock: TypeError"):
        copy_state(threading.Lock())
    copy_state({"fine": [1, 2]})


def test_lazy_copies_are_made_per_thread_on_first_get() -> None:
    master = {"buffer": [0]}
    per_thread = PerThreadState(master, lazy=True)
    seen: dict[int, list[int]] = {}

    def worker(i: int) -> None:
        first = per_thread.get()
        first["buffer"].append(i)
        seen[i] = [id(first), id(per_thread.get())]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(a == b for a, b in seen.values()), "one copy per thread, kept"
    assert len({a for a, _ in seen.values()}) == 4
    assert master == {"buffer": [0]}


def test_lazy_copy_failure_is_a_worker_init_error() -> None:
    class Fussy:
        def __deepcopy__(self, memo: dict[int, Any]) -> "Fussy":
            raise MemoryError("no room")

    with pytest.raises(WorkerInitError, match="could not deep-copy the state: MemoryError"):
        PerThreadState(Fussy(), lazy=True).get()
