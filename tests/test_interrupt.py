import os
import signal
import threading
from collections.abc import Iterator

import pytest

from threadensemble._interrupt import deferred_keyboard_interrupt


@pytest.fixture
def python_sigint_handler() -> Iterator[None]:
    """Python's own SIGINT handler (pytest-xdist workers ignore SIGINT)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.usefixtures("python_sigint_handler")
def test_ctrl_c_is_held_until_checked_and_a_second_one_raises_at_once() -> None:
    with deferred_keyboard_interrupt() as interrupt:
        interrupt.check()  # nothing yet
        ctrl_c()
        assert interrupt.received  # the handler ran, and raised nothing here
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
        with pytest.raises(KeyboardInterrupt):
            ctrl_c()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.usefixtures("python_sigint_handler")
def test_the_handler_is_restored_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), deferred_keyboard_interrupt():
        raise RuntimeError
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_handler_of_the_users_is_left_alone() -> None:
    calls: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))
    try:
        with deferred_keyboard_interrupt() as interrupt:
            ctrl_c()
            assert calls == [signal.SIGINT]
            assert not interrupt.received
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("python_sigint_handler")
def test_outside_the_main_thread_nothing_is_installed() -> None:
    seen: list[object] = []

    def run() -> None:
        with deferred_keyboard_interrupt() as interrupt:
            seen.append(signal.getsignal(signal.SIGINT))
            interrupt.check()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [signal.default_int_handler]
