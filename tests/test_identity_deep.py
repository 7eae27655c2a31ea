"""The fingerprint of large, deep object graphs: what lies below the recorded paths.

Every change deep in a large object graph is found; equal graphs hash equal whichever way they
were built or copied, in other processes and from any stack depth.
"""

from __future__ import annotations

import copy
import os
import pickle
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from conftest import outputs_under_hash_seeds
from threadensemble._identity import Fingerprint, differences, model_fingerprint

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


def fingerprint(value: Any) -> Fingerprint:
    return model_fingerprint({"args[0]": value})


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


def test_attribute_order_is_content_as_in_the_walk() -> None:
    """A ``__dict__`` is a dict: its insertion order is content, deep down as at the top."""
    head, other = chain(), chain()
    node = other
    for _ in range(DEEP - 10):
        node = node.after
    index, weight = node.index, node.weight
    del node.index, node.weight
    node.weight, node.index = weight, index  # the same values, assigned in another order
    assert fingerprint(head).digest != fingerprint(other).digest


def test_shared_and_cyclic_objects_deep_down() -> None:
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
import threading
sys.path[:0] = [{tests!r}]
from test_identity_deep import chain, payload_of
from threadensemble._identity import model_fingerprint
head = chain()
payload_of(head).holder.items |= {{"rain", "wind", "sun"}}
payload_of(head).nested.append({{"by": {{"a": 1.0, "b": 2.0}}, "keys": frozenset("xyz")}})
print(model_fingerprint({{"args[0]": head}}).digest)
"""


def test_a_large_graph_has_the_same_digest_in_other_processes() -> None:
    script = GRAPH_IN_ANOTHER_PROCESS.format(tests=os.path.dirname(__file__))
    digests = outputs_under_hash_seeds(script, ("0", "1", "2"), timeout=300)
    assert len(digests) == 1


def test_an_object_reached_deep_and_listed_again_is_named_when_it_changes() -> None:
    """Its record, where it is reached again among the recorded paths, changes with it."""

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
    assert any(f.startswith("args[0]['deepest'][3]: Link ") for f in found), found


# The adversarial cases: each at the root and hung below the recorded paths.
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
    for a, a_again, b in zip(
        _routes(make(one)), _routes(make(one)), _routes(make(two)), strict=True
    ):
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


# The second adversarial round: each at the root and below the recorded paths.
class Bare:
    pass


def _bare(attributes: dict[Any, Any]) -> Bare:
    made = Bare()
    made.__dict__.update(attributes)
    return made


def _normal(scale: float) -> tuple[str, float]:
    return "normal", scale


def _uniform(scale: float) -> tuple[str, float]:
    return "uniform", scale


_KINDS: dict[int, str] = {}


class Rebuilt:
    """Its kind is kept outside the object (as a C type's would be): only its reduce says it."""

    __slots__ = ("__weakref__",)

    def __init__(self, kind: str) -> None:
        _KINDS[id(self)] = kind

    def __reduce__(self) -> tuple[Any, tuple[float]]:
        return (_normal if _KINDS[id(self)] == "normal" else _uniform), (1.0,)


class Garbage:
    __slots__ = ()

    def __reduce_ex__(self, protocol: Any) -> Any:
        return Garbage, (), None, 5  # list items that are not iterable


def _pairs_that_differ() -> list[tuple[str, Any, Any]]:
    normal, uniform = Rebuilt("normal"), Rebuilt("uniform")
    return [
        ("NUL in a name", _bare({"x": 1, "y": 2}), _bare({"x\0v1\0.y": 2})),
        ("key 1 and name '1'", _bare({1: 5}), _bare({"1": 5})),
        ("name 'a.b' and nested", _bare({"a.b": 1}), _bare({"a": _bare({"b": 1})})),
        ("the rebuild callable of a reduce", normal, uniform),
        ("memoryview bytes", memoryview(b"ab"), memoryview(b"ac")),
        ("memoryview format", memoryview(b"abcd"), memoryview(b"abcd").cast("h")),
        ("memoryview shape", memoryview(b"abcd").cast("B", (2, 2)), memoryview(b"abcd")),
        ("bound C method's object", np.arange(3.0).dot, np.arange(1.0, 4.0).dot),
    ]


@pytest.mark.parametrize("pair", _pairs_that_differ(), ids=lambda p: p[0])
def test_different_content_never_collides(pair: tuple[str, Any, Any]) -> None:
    _, one, two = pair
    for a, b in zip(_routes(one), _routes(two), strict=True):
        first = fingerprint(a)
        assert first.opaque == []
        assert fingerprint(b).digest != first.digest


def test_a_memoryview_counts_by_content() -> None:
    data = bytearray(b"abcdef")
    for a, b in zip(_routes(memoryview(data)), _routes(memoryview(bytes(data))), strict=True):
        assert fingerprint(a).digest == fingerprint(b).digest
    strided = memoryview(b"abcdef")[::2]
    assert fingerprint(strided).digest == fingerprint(memoryview(b"ace")).digest


def test_a_reduce_that_cannot_be_read_is_listed_at_its_path() -> None:
    for route, value in enumerate(_routes([Garbage()])):
        found = fingerprint(value)
        assert len(found.opaque) == 1, route
        assert found.opaque[0].endswith("[0] (Garbage)"), found.opaque


def test_the_digest_does_not_depend_on_the_recursion_limit_or_stack_size() -> None:
    head = chain()
    expected = fingerprint(head).digest
    limit, size = sys.getrecursionlimit(), threading.stack_size()
    found: list[str] = []
    try:
        sys.setrecursionlimit(500)
        assert fingerprint(head).digest == expected
        threading.stack_size(64 * 1024)
        thread = threading.Thread(target=lambda: found.append(fingerprint(head).digest))
        thread.start()
        thread.join()
    finally:
        sys.setrecursionlimit(limit)
        threading.stack_size(size)
    assert found == [expected]


def test_a_change_in_one_root_leaves_the_others_digests() -> None:
    shared = [Bare() for _ in range(1500)]
    before = model_fingerprint({"args[0]": [*shared], "kwargs['cfg']": shared})
    after = model_fingerprint({"args[0]": [Bare(), *shared], "kwargs['cfg']": shared})
    assert before.roots["kwargs['cfg']"] == after.roots["kwargs['cfg']"]
    assert before.roots["args[0]"] != after.roots["args[0]"]
