import copy
import pickle
import threading
from typing import Any

import numpy as np
import pytest

import threadensemble as te
from threadensemble._rng import (
    as_seed_sequence,
    realization_seeds,
    realization_streams,
    seed_sequence_record,
)


def test_reseed_makes_the_default_stream_reproducible() -> None:
    te.reseed(11)
    first = te.get_rng().random(4)
    te.reseed(11)
    np.testing.assert_array_equal(first, te.get_rng().random(4))


def test_get_rng_returns_the_same_generator_until_reseeded() -> None:
    te.reseed(1)
    assert te.get_rng() is te.get_rng()
    assert te.get_rng("wind") is te.get_rng("wind")
    assert te.get_rng("wind") is not te.get_rng()


def test_named_streams_do_not_shift_each_other() -> None:
    te.reseed(5)
    wind_alone = te.get_rng("wind").random(3)
    te.reseed(5)
    te.get_rng("rain").random(1000)
    te.get_rng().random(17)
    np.testing.assert_array_equal(wind_alone, te.get_rng("wind").random(3))


def test_named_streams_differ_from_each_other_and_from_the_default() -> None:
    te.reseed(5)
    draws = {name: te.get_rng(name).random(4).tobytes() for name in (None, "a", "b")}
    assert len(set(draws.values())) == 3


def test_every_thread_has_its_own_generator() -> None:
    barrier = threading.Barrier(4)
    generators: dict[int, np.random.Generator] = {}

    def grab(i: int) -> None:
        barrier.wait()
        generators[i] = te.get_rng()  # kept alive, so ids below cannot be reused

    threads = [threading.Thread(target=grab, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(g) for g in generators.values()}) == 4


def test_reseed_affects_only_the_calling_thread() -> None:
    te.reseed(3)
    expected = te.get_rng().random(2)
    te.reseed(3)
    barrier = threading.Barrier(2)

    def reseed_elsewhere() -> None:
        barrier.wait()
        te.reseed(999)
        te.get_rng().random(10)

    other = threading.Thread(target=reseed_elsewhere)
    other.start()
    barrier.wait()
    other.join()
    np.testing.assert_array_equal(expected, te.get_rng().random(2))


def test_proxy_forwards_to_the_calling_threads_stream() -> None:
    proxy = te.ThreadLocalGenerator("wind")
    te.reseed(8)
    a = proxy.normal(size=3)
    te.reseed(8)
    np.testing.assert_array_equal(a, te.get_rng("wind").normal(size=3))
    assert "wind" in repr(proxy)
    te.reseed(8)
    expected = te.get_rng().random(2)
    te.reseed(8)
    np.testing.assert_array_equal(te.rng.random(2), expected)


def test_proxy_in_threads_gives_each_thread_its_own_numbers() -> None:
    barrier = threading.Barrier(3)
    out: dict[int, np.ndarray] = {}

    def draw(i: int) -> None:
        barrier.wait()
        with realization_streams(np.random.SeedSequence(100, spawn_key=(i,))):
            out[i] = te.rng.random(1000)

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(3):
        expected = np.random.Generator(np.random.PCG64(np.random.SeedSequence(100, spawn_key=(i,))))
        np.testing.assert_array_equal(out[i], expected.random(1000))


def test_realization_streams_restore_the_previous_streams() -> None:
    te.reseed(4)
    outer = te.get_rng()
    with realization_streams(np.random.SeedSequence(1)):
        assert te.get_rng() is not outer
    assert te.get_rng() is outer


def test_realization_seeds_equal_spawned_children() -> None:
    seeds = realization_seeds(42, 5)
    children = np.random.SeedSequence(42).spawn(5)
    for k, theirs in enumerate(children):
        ours = seeds.fresh(k)
        assert ours.entropy == theirs.entropy
        assert ours.spawn_key == theirs.spawn_key
        assert ours.generate_state(4).tolist() == theirs.generate_state(4).tolist()
        assert seeds.record(k) == seed_sequence_record(theirs)


@pytest.mark.parametrize("seed_for", [None, lambda k: [7, k]])
def test_every_attempt_gets_a_sequence_of_its_own(seed_for: Any) -> None:
    # Generator.spawn advances the sequence it was seeded from: an attempt that spawns must
    # leave the next attempt of that realization (a retry) the same children.
    seeds = realization_seeds(np.random.SeedSequence(3, spawn_key=(1,)), 2, seed_for)
    first = seeds.fresh(1)
    spawned = [c.generate_state(2).tolist() for c in first.spawn(2)]
    again = seeds.fresh(1)
    assert again is not first and again.n_children_spawned == 0
    assert [c.generate_state(2).tolist() for c in again.spawn(2)] == spawned
    assert seeds.record(1) == seed_sequence_record(again)


def test_seed_for_scheme_is_used_as_given() -> None:
    seeds = realization_seeds(None, 3, seed_for=lambda k: 1000 * k)
    assert [seeds.fresh(k).entropy for k in range(3)] == [0, 1000, 2000]


def test_seed_for_with_repeated_seeds_is_refused() -> None:
    with pytest.raises(ValueError, match=r"seed_for\(0\) and seed_for\(2\) give the same seed"):
        realization_seeds(None, 3, seed_for=lambda k: k % 2)


@pytest.mark.parametrize(
    ("seed", "error", "match"),
    [
        (-1, ValueError, "non-negative"),
        (1.5, TypeError, "non-negative int"),
        (True, TypeError, "non-negative int"),
        ("42", TypeError, "non-negative int"),
        ([], TypeError, "non-negative int"),
        (np.random.default_rng(1), TypeError, "cannot be split"),
    ],
)
def test_bad_seeds_are_refused(seed: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        as_seed_sequence(seed)  # type: ignore[arg-type]


def test_seed_sequence_and_int_list_are_accepted() -> None:
    seq = np.random.SeedSequence(9)
    assert as_seed_sequence(seq) is seq
    assert as_seed_sequence([1, 2]).entropy == [1, 2]


def test_bad_stream_name_is_refused() -> None:
    with pytest.raises(TypeError, match="stream name"):
        te.get_rng(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="stream name"):
        te.ThreadLocalGenerator(3)  # type: ignore[arg-type]


def test_realization_seed_is_what_the_ensemble_seeds_realization_k_with() -> None:
    def draw() -> dict[str, object]:
        return {"x": te.get_rng().random(2)}

    ens = te.simulate_ensemble(draw, 5, seed=[3, 4], n_workers=2, progress=False)
    for k in range(5):
        te.reseed(te.realization_seed([3, 4], k))
        assert (te.get_rng().random(2) == ens["x"].values[k]).all()
    with pytest.raises(TypeError, match="not None"):
        te.realization_seed(None, 0)
    with pytest.raises(ValueError, match="k must be a realization index"):
        te.realization_seed(1, -1)


def test_a_fresh_seed_sequence_spawns_what_the_original_did_first() -> None:
    from threadensemble._rng import fresh_seed_sequence

    kept = np.random.SeedSequence(11, spawn_key=(3,))
    first = fresh_seed_sequence(kept)
    children = [c.generate_state(2).tolist() for c in first.spawn(2)]
    again = fresh_seed_sequence(kept)  # the kept sequence was not advanced by first.spawn
    assert [c.generate_state(2).tolist() for c in again.spawn(2)] == children
    assert kept.n_children_spawned == 0


class Station:
    """A state holding the documented fix for a generator attribute: ``self.rng = te.rng``."""

    def __init__(self) -> None:
        self.rng = te.rng
        self.wind = te.ThreadLocalGenerator("wind")
        self.buf = np.zeros(3)


def station_draws(*, station: Station) -> dict[str, np.ndarray]:
    station.buf[:] = station.rng.random(3) + station.wind.random(3)
    return {"x": station.buf.copy()}


def test_thread_local_generator_copies_and_pickles_as_its_stream() -> None:
    for copied in (
        copy.deepcopy(te.ThreadLocalGenerator("wind")),
        copy.copy(te.ThreadLocalGenerator("wind")),
        pickle.loads(pickle.dumps(te.ThreadLocalGenerator("wind"))),
    ):
        assert isinstance(copied, te.ThreadLocalGenerator)
        assert repr(copied) == repr(te.ThreadLocalGenerator("wind"))
    assert pickle.loads(pickle.dumps(te.rng)).random() >= 0.0
    with pytest.raises(AttributeError):
        te.rng.__missing_dunder__  # noqa: B018  (not forwarded to a generator)
    one = te.simulate_ensemble(
        station_draws, 4, state=Station(), inject="station", seed=1, n_workers=1, progress=False
    )
    two = te.simulate_ensemble(
        station_draws, 4, state=Station(), inject="station", seed=1, n_workers=2, progress=False
    )
    assert one.identical(two)
    assert te.check(station_draws, state=Station(), inject="station", sample=2, n_workers=2).ok


@pytest.mark.parametrize(("first", "second"), [(0, [0, 0]), (7, [7, 0]), (2**32, [0, 1])])
def test_seed_for_giving_two_forms_of_one_seed_is_refused(first: object, second: object) -> None:
    def seed_for(k: int) -> Any:
        return first if k == 0 else second

    with pytest.raises(ValueError, match=r"seed_for\(0\) and seed_for\(1\) give seeds .* same"):
        te.simulate_ensemble(
            lambda: {"x": te.get_rng().random(2)},
            2,
            seed_for=seed_for,
            progress=False,
        )
