"""The fast route of the fingerprint: what lies below the recorded paths, hashed by `pickle`.

Every change deep in a large object graph is found; equal graphs hash equal whichever way they
were built or copied, in other processes and from any stack depth; the fast route and the walk
without regions agree on which models are equal.
"""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from threadensemble import _identity
from threadensemble._identity import differences, model_fingerprint

DEEP = 1500  # the payload hangs on the node this far down the chain: below the records


class Payload:
    """A node's data: one leaf of each kind."""

    def __init__(self) -> None:
        self.f, self.n, self.s, self.b = 0.5, 7, "text", b"raw"
        self.nested = [1, [2.0, (3, "x")], {"k": [4]}]
        self.array = np.arange(6.0)
        self.scalar = np.float64(2.5)
        self.fn = scale_one
        self.holder = Holder({"a", "b"})
        self.tags = Tags(["x", "y"])


class Holder:
    def __init__(self, items: set[str]) -> None:
        self.items = items


class Tags(set[str]):
    """A set subclass (its pickle lists its items in hash order)."""


class Link:
    def __init__(self, index: int, after: Link | None) -> None:
        self.index, self.weight, self.after = index, 0.25 * index, after
        self.payload: Payload | None = None


class SlottedLink:
    __slots__ = ("after", "index", "payload", "weight")

    def __init__(self, index: int, after: SlottedLink | None) -> None:
        self.index, self.weight, self.after = index, 0.25 * index, after
        self.payload: Payload | None = None


def scale_one(x: float) -> float:
    return x * 1.0


def scale_two(x: float) -> float:
    return x * 2.0


def chain(kind: type = Link, n: int = DEEP + 300) -> Any:
    """A chain of ``n`` links (the head is the last made), the payload ``DEEP`` down."""
    head = None
    for i in range(n):
        head = kind(i, head)
        if i == n - 1 - DEEP:
            head.payload = Payload()
    return head


def payload_of(head: Any) -> Payload:
    node = head
    while node.payload is None:
        node = node.after
    return node.payload


def fingerprint(value: Any, fast: bool = True) -> _identity.Fingerprint:
    return _identity._fingerprint({"args[0]": value}, fast=fast)


def regions_used(value: Any) -> int:
    """Return how many objects regions numbered in the fast walk of ``value``."""
    walk = _identity._Walk(fast=True)
    walk.digest("args[0]", value)
    return len(walk.kept)


class Twin:  # the same name, module and content as Payload's class after the swap below
    pass


def _other_payload_class() -> type:
    namespace: dict[str, Any] = {}
    exec(  # a class of the same name with one more method: other content
        "class Payload:\n    def extra(self):\n        return 1\n",
        {"__name__": __name__},
        namespace,
    )
    return namespace["Payload"]  # type: ignore[no-any-return]


CHANGES: dict[str, Callable[[Payload], None]] = {
    "float": lambda p: setattr(p, "f", 0.5000000001),
    "int": lambda p: setattr(p, "n", 8),
    "int to float": lambda p: setattr(p, "n", 7.0),
    "str": lambda p: setattr(p, "s", "texT"),
    "bytes": lambda p: setattr(p, "b", b"raW"),
    "nested list": lambda p: p.nested[1].__setitem__(1, (3, "y")),
    "dict in a list": lambda p: p.nested[2]["k"].append(5),
    "array element": lambda p: p.array.__setitem__(4, -1.0),
    "array dtype": lambda p: setattr(p, "array", p.array.astype(np.float32)),
    "numpy scalar": lambda p: setattr(p, "scalar", np.float32(2.5)),
    "attribute added": lambda p: setattr(p, "more", None),
    "attribute removed": lambda p: delattr(p, "b"),
    "class swapped": lambda p: setattr(p, "__class__", _other_payload_class()),
    "function": lambda p: setattr(p, "fn", scale_two),
    "set element in a deep object": lambda p: p.holder.items.add("c"),
    "set subclass element": lambda p: p.tags.add("z"),
}


@pytest.mark.parametrize("kind", [Link, SlottedLink])
def test_each_kind_of_change_deep_in_a_large_graph_is_found(kind: type) -> None:
    head = chain(kind)
    assert regions_used(head) > DEEP // 2  # the payload lies in a region
    before = fingerprint(head)
    assert fingerprint(chain(kind)).digest == before.digest  # built again: equal
    for name, change in CHANGES.items():
        changed = chain(kind)
        change(payload_of(changed))
        after = fingerprint(changed)
        assert after.digest != before.digest, name
        assert differences(before.record(), after.record()), name


def copies(value: Any) -> list[Any]:
    """Return a deep copy and a pickled copy (their recursion follows the chain)."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    try:
        return [copy.deepcopy(value), pickle.loads(pickle.dumps(value))]
    finally:
        sys.setrecursionlimit(limit)


def test_the_fast_route_and_the_walk_agree_on_equal_and_different() -> None:
    base = fingerprint(chain()).digest, fingerprint(chain(), fast=False).digest
    equal = [chain(), *copies(chain())]
    for value in equal:
        assert (fingerprint(value).digest, fingerprint(value, fast=False).digest) == base
    for name, change in CHANGES.items():
        changed = chain()
        change(payload_of(changed))
        assert fingerprint(changed).digest != base[0], name
        assert fingerprint(changed, fast=False).digest != base[1], name
    slotted = chain(SlottedLink)
    assert fingerprint(slotted).digest != base[0]
    assert fingerprint(slotted, fast=False).digest != base[1]


def test_attribute_order_is_content_as_in_the_walk() -> None:
    """A ``__dict__`` is a dict: its insertion order is content, in regions as in the walk."""
    head, other = chain(), chain()
    node = other
    for _ in range(DEEP - 10):
        node = node.after
    index, weight = node.index, node.weight
    del node.index, node.weight
    node.weight, node.index = weight, index  # the same values, assigned in another order
    for fast in (True, False):
        assert fingerprint(head, fast).digest != fingerprint(other, fast).digest


def test_shared_and_cyclic_objects_in_regions() -> None:
    """A graph with cycles (each link back to the head) and sharing hashes stably."""

    def looped() -> Link:
        head = chain()
        node: Link | None = head
        shared = Payload()
        while node is not None:
            node.payload = node.payload or (shared if node.index % 7 else None)
            node.back = head  # type: ignore[attr-defined]
            node = node.after
        return head

    first = fingerprint(looped())
    assert fingerprint(looped()).digest == first.digest
    assert all(fingerprint(c).digest == first.digest for c in copies(looped()))
    changed = looped()
    payload_of(changed.after.after).s = "other"  # type: ignore[union-attr]
    assert fingerprint(changed).digest != first.digest


def nested_in_frames(depth: int, action: Callable[[], str]) -> str:
    return action() if depth == 0 else nested_in_frames(depth - 1, action)


@pytest.mark.parametrize("nesting", [300, 700, 1400])
def test_the_digest_does_not_depend_on_the_callers_stack_depth(nesting: int) -> None:
    head = chain()
    deep: Any = 1.0
    for i in range(nesting):
        deep = [float(i), deep]
    payload_of(head).nested = deep  # containers nested deep, inside a region

    def digest() -> str:
        return model_fingerprint({"args[0]": head}).digest

    at_top = digest()
    assert nested_in_frames(500, digest) == at_top
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + 3000)
    try:
        assert digest() == at_top
    finally:
        sys.setrecursionlimit(limit)


GRAPH_IN_ANOTHER_PROCESS = """
import sys
sys.path[:0] = [{tests!r}]
from test_identity_regions import chain, payload_of
from threadensemble._identity import model_fingerprint
head = chain()
payload_of(head).holder.items |= {{"rain", "wind", "sun"}}
payload_of(head).nested.append({{"by": {{"a": 1.0, "b": 2.0}}, "keys": frozenset("xyz")}})
print(model_fingerprint({{"args[0]": head}}).digest)
"""


def test_a_large_graph_has_the_same_digest_in_other_processes() -> None:
    script = GRAPH_IN_ANOTHER_PROCESS.format(tests=os.path.dirname(__file__))
    digests = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        ).stdout
        for seed in ("0", "1", "2")
    }
    assert len(digests) == 1


class Small:
    def __init__(self, i: int) -> None:
        self.index, self.name, self.coef = i, f"S{i}", 0.5 * i


def test_many_small_objects_cost_little_memory_per_object() -> None:
    objects = [Small(i) for i in range(200_000)]
    tracemalloc.start()
    try:
        fingerprint(objects)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak / len(objects) < 250  # bytes per object (the walk alone kept about 450)


def test_an_object_pickled_in_a_region_and_listed_again_is_named_when_it_changes() -> None:
    """Its record, where it is reached again among the recorded paths, shows its own content."""

    def model() -> dict[str, Any]:
        head = chain()
        nodes, node = [], head
        while node is not None:
            nodes.append(node)
            node = node.after
        return {"chain": head, "deepest": nodes[-300:]}  # reached first deep in the chain

    before = fingerprint(model())
    assert fingerprint(model()).record() == before.record()
    changed = model()
    changed["deepest"][3].weight += 1.0
    found = differences(before.record(), fingerprint(changed).record())
    assert len(found) == 2  # where it was reached first (in a region), and where it is listed
    assert found[1].startswith("args[0]['deepest'][3]: Link "), found


# The adversarial cases: each at the root (walk) and hung below the recorded paths (regions).
class AttrDict(dict[str, int]):
    pass


class AttrList(list[int]):
    pass


class AttrSet(set[int]):
    pass


class SlotList(list[int]):
    __slots__ = ("k",)


class Chained:
    def __init__(self, after: Any) -> None:
        self.after = after


class Site:
    def __init__(self, name: str) -> None:
        self.name, self.neighbours = name, list[Any]()


def _with(obj: Any, value: Any) -> Any:
    obj.k = value
    return obj


def _defaultdict(factory: Any) -> Any:
    import collections

    made = collections.defaultdict(factory)
    made["a"] = 1
    return made


def _routes(obj: Any) -> list[Any]:
    deep: Any = obj
    for _ in range(1100):
        deep = Chained(deep)
    return [obj, deep]


def _extra_state_cases() -> list[tuple[str, Callable[[Any], Any], Any, Any]]:
    import collections
    import math
    import operator

    return [
        ("dict subclass attribute", lambda v: _with(AttrDict(a=1), v), 1, 1000),
        ("list subclass attribute", lambda v: _with(AttrList([1]), v), 1, 1000),
        ("list subclass slot", lambda v: _with(SlotList([1]), v), 1, 1000),
        ("set subclass attribute", lambda v: _with(AttrSet({1}), v), 1, 1000),
        ("defaultdict factory", _defaultdict, int, list),
        ("deque maxlen", lambda m: collections.deque([1], maxlen=m), 3, 4),
        ("ChainMap maps", lambda v: collections.ChainMap({"a": 1}, {"a": v}), 2, 3),
        ("bound builtin", lambda v: v.append, [1], [2]),
        ("ufunc", lambda v: v, np.add, np.subtract),
        ("operator", lambda v: v, operator.add, operator.sub),
        ("math", lambda v: v, math.sin, math.cos),
        ("long int", lambda v: v, 10**5000, 10**5000 + 1),
        ("long int in a list", lambda v: [v], 10**5000, 10**5000 + 1),
    ]


@pytest.mark.parametrize("case", _extra_state_cases(), ids=lambda c: c[0])
def test_extra_state_of_containers_and_c_callables_is_content(case: Any) -> None:
    """A container's state besides its items, a C callable by name: both routes, readable."""
    _, make, one, two = case
    for a, a_again, b in zip(_routes(make(one)), _routes(make(one)), _routes(make(two))):
        first = model_fingerprint({"args[0]": a})
        assert first.opaque == []
        assert model_fingerprint({"args[0]": a_again}).digest == first.digest
        assert model_fingerprint({"args[0]": b}).digest != first.digest


def test_a_ufunc_counts_by_numpy_version() -> None:
    record = model_fingerprint({"args[0]": np.exp}).paths["args[0]"]
    assert record.startswith(f"package numpy {np.__version__} ufunc numpy:exp")


def test_a_node_first_reached_in_a_cycle_is_not_reused_out_of_it() -> None:
    """Its digest says "my child is my 2nd ancestor": elsewhere that is another ancestor."""
    w: list[Any] = [1]
    x: list[Any] = [w]
    w.append(x)  # W == [1, X], X == [W]
    p: list[Any] = [None]
    q: list[Any] = [p]
    p[0] = q  # P == [Q], Q == [P]
    for route in (0, 1):
        one = model_fingerprint({"a": _routes(w)[route], "b": _routes(p)[route], "c": q})
        two = model_fingerprint({"a": _routes(w)[route], "b": _routes(p)[route], "c": x})
        assert one.digest != two.digest


def test_objects_of_one_cycle_through_a_set_hash_one_way_in_any_order() -> None:
    digests = set()
    keep = []  # other addresses, so other hash orders
    for _ in range(20):
        a, b, c = Site("a"), Site("b"), Site("c")
        a.neighbours, b.neighbours, c.neighbours = [b], [c], [a]
        keep.append((a, b, c))
        for number, route in enumerate(_routes({a, b, c})):
            digests.add((number, model_fingerprint({"args[0]": route}).digest))
    assert len(digests) == 2  # one per route
