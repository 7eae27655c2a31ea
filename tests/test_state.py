import threading
from typing import Any

import numpy as np
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
    seen: dict[int, list[Any]] = {}
    together = threading.Barrier(4)  # every thread holds its copy while the others make theirs

    def worker(i: int) -> None:
        first = per_thread.get()
        first["buffer"].append(i)
        together.wait()
        seen[i] = [first, per_thread.get()]  # the copies themselves: their ids stay unique

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(a is b for a, b in seen.values()), "one copy per thread, kept"
    assert len({id(a) for a, _ in seen.values()}) == 4
    assert sorted(a["buffer"][1] for a, _ in seen.values()) == [0, 1, 2, 3]
    assert master == {"buffer": [0]}


def test_lazy_copy_failure_is_a_worker_init_error() -> None:
    class Fussy:
        def __deepcopy__(self, memo: dict[int, Any]) -> "Fussy":
            raise MemoryError("no room")

    with pytest.raises(WorkerInitError, match="could not deep-copy the state: MemoryError"):
        PerThreadState(Fussy(), lazy=True).get()


class Fitted:
    def __init__(self) -> None:
        self.params = np.arange(20_000.0)  # 156 KiB: shared
        self.small = np.zeros(4)  # copied
        self.table = {"big": np.ones((300, 100)), "names": ["a", "b"]}
        self.sim: np.ndarray | None = None


def test_shared_copies_refer_to_the_large_arrays_and_copy_everything_else() -> None:
    master = Fitted()
    per_thread = PerThreadState(master, share=())
    barrier = threading.Barrier(4)
    copies: dict[int, Fitted] = {}

    def worker(i: int) -> None:
        barrier.wait()  # all four copy the master at once
        per_thread.initialize()
        mine = per_thread.get()
        mine.sim = np.full(3, i)  # rebinding: this copy only
        mine.small[:] = i  # a copied array: this copy only
        mine.table["names"].append(str(i))
        copies[i] = mine

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for mine in copies.values():  # the data is shared; the array objects are each thread's own
        assert mine.params.base is master.params and mine.params is not master.params
        assert mine.table["big"].base is master.table["big"]
        with pytest.raises(ValueError, match="cannot set WRITEABLE flag"):
            mine.params.flags.writeable = True
    copies[0].params.shape = (100, 200)  # metadata of one thread's view only
    assert master.params.shape == copies[1].params.shape == (20_000,)
    for i, mine in copies.items():
        assert mine is not master and mine.table is not master.table
        assert mine.sim is not None and mine.sim[0] == i and mine.small[0] == i
        assert mine.table["names"] == ["a", "b", str(i)]
    assert master.sim is None and not master.small.any() and master.table["names"] == ["a", "b"]
    assert not master.params.flags.writeable and master.small.flags.writeable


def test_footprint_counts_what_a_copy_allocates() -> None:
    master = Fitted()
    plain = PerThreadState(master).footprint()
    shared = PerThreadState(master, share=()).footprint()
    big = master.params.nbytes + master.table["big"].nbytes
    assert plain.shared_arrays == 0 and plain.shared_bytes == 0 and plain.shareable_bytes == big
    assert plain.copied_bytes > big
    assert shared.shared_arrays == 2 and shared.shared_bytes == shared.shareable_bytes == big
    assert shared.copied_bytes < 5_000
    private = PerThreadState(Fitted(), share=("state.table['big']",)).footprint()
    assert private.shared_bytes == master.params.nbytes and private.copied_bytes > 240_000


def _raised(function: Any, *args: Any) -> ValueError:
    with pytest.raises(ValueError, match=r"read-only|invalid literal") as info:
        function(*args)
    return info.value


def test_a_write_error_names_the_shared_array_and_its_views() -> None:
    base = np.zeros(20_000)
    master = {"base": base, "view": base[100:], "table": {"x": np.ones(10_000)}}
    per_thread = PerThreadState(master, share=())
    per_thread.initialize()
    mine = per_thread.get()
    assert np.shares_memory(mine["view"], mine["base"])  # both views of the master's base
    assert per_thread.footprint().shared_bytes == base.nbytes + 80_000  # the view counted once

    def write_view(state: Any) -> None:
        state["view"][0] = 1.0

    def write_key(state: Any) -> None:
        state["table"]["x"] += 1.0

    def write_alias(state: Any) -> None:
        window = state["base"][:10]
        window.fill(2.0)

    for function, path in [
        (write_view, "state['view']"),
        (write_key, "state['table']['x']"),
        (write_alias, "state['base']"),
    ]:
        error = per_thread.shared_write_error(_raised(function, mine))
        assert error is not None and f"simulate wrote into {path}," in str(error)
        assert f"private_state=[{path!r}]" in str(error)
    assert not base.any() and (master["table"]["x"] == 1.0).all()


def test_other_value_errors_are_left_as_they_are() -> None:
    master = Fitted()
    unrelated = _raised(int, "x")
    assert PerThreadState(master, share=()).shared_write_error(unrelated) is None
    read_only = np.zeros(3)
    read_only.flags.writeable = False

    def write_own(array: np.ndarray) -> None:
        array[0] = 1

    without_sharing = _raised(write_own, read_only)
    assert PerThreadState(master).shared_write_error(without_sharing) is None
    assert not hasattr(unrelated, "__notes__") and not hasattr(without_sharing, "__notes__")


def test_array_subclasses_and_object_arrays_are_copied_not_shared() -> None:
    master = {
        "masked": np.ma.masked_array(np.zeros(20_000), mask=False),  # its mask is a second array
        "objects": np.array([[1.0]] * 20_000, dtype=object),
        "plain": np.zeros(20_000),
    }
    per_thread = PerThreadState(master, share=())
    per_thread.initialize()
    mine = per_thread.get()
    mine["masked"][3] = np.ma.masked
    assert not master["masked"].mask.any() and master["masked"].flags.writeable
    assert master["objects"].flags.writeable and mine["objects"][0] is not master["objects"][0]
    assert per_thread.footprint().shared_arrays == 1


def test_a_write_into_another_read_only_array_is_left_alone() -> None:
    per_thread = PerThreadState(Fitted(), share=())
    read_only = np.zeros(3)
    read_only.flags.writeable = False

    def write_elsewhere(array: np.ndarray) -> None:
        array[0] = 1

    error = _raised(write_elsewhere, read_only)
    assert per_thread.shared_write_error(error) is None
    assert not hasattr(error, "__notes__")  # the array written is known: not one of ours


def test_a_write_error_it_cannot_place_gets_a_note() -> None:
    per_thread = PerThreadState(Fitted(), share=())
    read_only = np.zeros(3)
    read_only.flags.writeable = False
    namespace: dict[str, Any] = {}
    exec("def write_unseen(array):\n    array[0] = 1\n", namespace)  # no source to read

    error = _raised(namespace["write_unseen"], read_only)
    assert per_thread.shared_write_error(error) is None
    note = error.__notes__[0]
    assert "state.params" in note and "keep it private with private_state=" in note
