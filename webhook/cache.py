"""The one cache of the webhook: least recently used entries go first, bounded by bytes, entries may expire.

Every cache of a long-running process (registry documents, tag answers, tokens, pull secrets, challenges)
is one of these, so what each may hold is a number of bytes the policy sets, not a number of entries
whose size a registry or a Pod spec chooses.  An entry's weight is what `weigh` says of its value plus
its key and a fixed overhead; an entry heavier than the whole bound is not kept.  The one other kind,
`kept_when_short`, remembers a pure function of a string for strings of a bounded length only.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from operator import attrgetter
from time import monotonic
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
R = TypeVar("R")

MIB = 1024 * 1024
ENTRY_OVERHEAD = 240  # bytes of bookkeeping per entry: the ordered dict's node and the stored tuple
C = TypeVar("C", bound=type)

# Classes whose objects are weighed by a function of their own, not by walking their attributes.
_WEIGHERS: dict[type, Callable[[Any], int]] = {}
_HELD = "_held_elsewhere"  # the attribute `hold` sets on an object


def _nothing(_: object) -> int:
    return 0


def held_elsewhere(cls: C) -> C:
    """Class decorator: the policy or the node view holds these objects (targets, mirror settings) and
    many entries refer to the same ones, so an entry weighs its reference, not the object again.  Walking
    them for every entry was most of the weighing a cold image cost."""
    _WEIGHERS[cls] = _nothing
    return cls


def weighs_itself(cls: C) -> C:
    """Class decorator: its objects say what they hold in their `weight` (everything they refer to
    included), worked out once and kept where they never change, or cheaper than a walk."""
    _WEIGHERS[cls] = attrgetter("weight")
    return cls


def hold(item: Any) -> None:
    """Mark one object as held elsewhere for as long as it lives: `weight_of_fields` weighs it as nothing.
    For objects of a class of which only some are shared (the policy's registry settings, not those
    worked out per image for a host outside the policy)."""
    item.__dict__[_HELD] = True


def weight_of_fields(item: Any) -> int:
    """What an object with a `__dict__` holds: itself, its attribute dict and the values in it
    (nothing when `hold` marked it).  For a `weight` of a `weighs_itself` class."""
    attributes = item.__dict__
    if _HELD in attributes:
        return 0
    values = tuple(attributes.values())
    return sys.getsizeof(item) + sys.getsizeof(attributes) + size_of(values) - sys.getsizeof(values)


_LEAVES = (str, bytes, bytearray, int, float)
_EXACT_LEAVES = frozenset(_LEAVES)
_SEQUENCES = (list, tuple, set, frozenset)


def size_of(value: Any) -> int:
    """Approximate bytes `value` holds in memory, everything it refers to included (each object once).

    Walks containers, dataclass-like objects (`__dict__`, `__slots__`) and parsed JSON without recursion,
    so a document nested 100,000 deep is weighed, not a crash.  Every entry of every cache is weighed
    when put: exact types are checked first (an isinstance of a union costs several times more).  An
    object's attribute names are its class's, so only the values in its `__dict__` are walked."""
    seen: set[int] = set()
    total = 0
    pending = [value]
    getsizeof = sys.getsizeof
    weighers = _WEIGHERS
    while pending:
        item = pending.pop()
        kind = type(item)
        if item is None or kind is bool or id(item) in seen:
            continue
        seen.add(id(item))
        weigher = weighers.get(kind)
        if weigher is not None:
            total += weigher(item)
            continue
        total += getsizeof(item)
        if kind in _EXACT_LEAVES or isinstance(item, _LEAVES):
            continue
        if isinstance(item, dict):
            pending += item.keys()
            pending += item.values()
        elif isinstance(item, _SEQUENCES):
            pending += item
        else:
            attributes = getattr(item, "__dict__", None)
            if attributes is not None:
                total += getsizeof(attributes)
                pending += attributes.values()
            for name in getattr(kind, "__slots__", ()):
                pending.append(getattr(item, name, None))
    return total


def json_size(value: Any) -> int:
    """What parsed JSON holds (objects, arrays, strings, numbers), as `size_of` says, only faster.

    One decoding shares no object or array between two places, so nothing needs remembering but the
    object keys, which the decoder shares between objects (an equal key is the same string): each
    distinct key counts once.  Anything that is not a JSON value inside is weighed by `size_of`."""
    total = 0
    keys: set[str] = set()
    pending = [value]
    getsizeof = sys.getsizeof
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is dict:
            total += getsizeof(item)
            keys.update(item)
            pending += item.values()
        elif kind is list:
            total += getsizeof(item)
            pending += item
        elif kind is str or kind is int or kind is float:
            total += getsizeof(item)
        elif item is not None and kind is not bool:
            total += size_of(item)
    return total + sum(map(getsizeof, keys))


class Cache(Generic[K, V]):
    """A thread-safe LRU holding at most `max_bytes` of entries (by `weigh`), each with an optional expiry."""

    def __init__(self, max_bytes: int, weigh: Callable[[V], int] = size_of) -> None:
        self.max_bytes = max_bytes
        self._weigh = weigh
        self._entries: OrderedDict[K, tuple[float | None, int, V]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        """The weight of what is held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        """The value, or None when absent or expired; a hit makes the entry the most recently used."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, _, value = entry
            if expires is not None and expires <= monotonic():
                self._remove(key)
                return None
            self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V, ttl: float | None = None) -> None:
        """Keep `value` (for `ttl` seconds, None: until evicted), evicting the least recently used first."""
        weight = self._weigh(value) + size_of(key) + ENTRY_OVERHEAD
        expires = None if ttl is None else monotonic() + ttl
        with self._lock:
            self._remove(key)
            if weight > self.max_bytes:
                return
            self._entries[key] = (expires, weight, value)
            self._bytes += weight
            while self._bytes > self.max_bytes:
                self._remove(next(iter(self._entries)))

    def discard(self, key: K, value: V | None = None) -> None:
        """Forget `key`; given `value`, only while it holds that (another thread may have replaced it)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and (value is None or entry[2] == value):
                self._remove(key)

    def get_or_load(self, key: K, load: Callable[[], V], ttl: float | None = None) -> V:
        """The kept value, else `load()` kept for `ttl` seconds."""
        value = self.get(key)
        if value is None:
            value = load()
            self.put(key, value, ttl)
        return value

    def _remove(self, key: K) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry[1]


class Section(Generic[K, V]):
    """One kind of entry in a cache shared with other kinds: its keys are tagged with `kind`."""

    def __init__(self, cache: Cache[tuple[str, K], Any], kind: str) -> None:
        self._cache = cache
        self._kind = kind

    def get(self, key: K) -> V | None:
        value: V | None = self._cache.get((self._kind, key))
        return value

    def put(self, key: K, value: V, ttl: float | None = None) -> None:
        self._cache.put((self._kind, key), value, ttl)


def kept_when_short(max_length: int, max_entries: int) -> Callable[[Callable[[str], R]], Callable[[str], R]]:
    """Decorator for a pure function of a string asked again and again with the same few strings (an
    image name, a registry host, a token realm): its answers for strings of at most `max_length`
    characters are kept, the last `max_entries` of them.  A longer string, which a Pod spec or a registry
    may choose, is worked out each time, so what is kept stays within entries times length."""

    def decorate(function: Callable[[str], R]) -> Callable[[str], R]:
        kept = functools.lru_cache(maxsize=max_entries)(function)

        @functools.wraps(function)
        def answer(text: str) -> R:
            return kept(text) if len(text) <= max_length else function(text)

        return answer

    return decorate
