import threading

import threadensemble as te
from threadensemble._context import realization_context


def test_outside_a_realization() -> None:
    assert te.current_realization() is None
    assert te.cancelled() is False


def test_inside_a_realization_and_after() -> None:
    cancel = threading.Event()
    with realization_context(4, cancel):
        assert te.current_realization() == 4
        assert not te.cancelled()
        cancel.set()
        assert te.cancelled()
    assert te.current_realization() is None
    assert te.cancelled() is False


def test_context_is_per_thread() -> None:
    barrier = threading.Barrier(2)
    seen: list[int | None] = []

    def other() -> None:
        barrier.wait()
        seen.append(te.current_realization())

    thread = threading.Thread(target=other)
    with realization_context(1, threading.Event()):
        thread.start()
        barrier.wait()
        thread.join()
    assert seen == [None]
