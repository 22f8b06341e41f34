"""RFC 6962 Merkle tree hashes over event ids, computed from a stream.

The leaves are the event ids in sequence order. ``leaf = sha256(0x00 || id)`` and
``node = sha256(0x01 || left || right)``; a tree of ``n`` leaves splits at the largest power
of two smaller than ``n`` (RFC 6962 section 2.1). Domain-separated leaf and node hashes stop
a node from passing as a leaf.

Why a Merkle root and not only the hash chain: a root over the first ``n`` ids can be
recomputed from any longer ledger that extends it, and a consistency proof lets someone who
kept only two roots check that the later tree extends the earlier one, with ``O(log n)``
hashes instead of the whole history.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(event_id: str) -> bytes:
    """Hash of one leaf (an event id)."""
    return hashlib.sha256(b"\x00" + event_id.encode("utf-8")).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash of an inner node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def largest_power_of_two_below(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


class RootBuilder:
    """Merkle root of a stream of leaves in ``O(log n)`` memory.

    The stack holds the roots of complete subtrees of decreasing size (one per set bit of the
    leaf count); folding it from the right gives exactly RFC 6962's split at the largest power
    of two, because every complete left subtree is a power of two.
    """

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[tuple[int, bytes]] = []  # (leaf count, subtree root)

    def add(self, event_id: str) -> None:
        """Append one leaf."""
        count, digest = 1, leaf_hash(event_id)
        while self._stack and self._stack[-1][0] == count:
            left_count, left = self._stack.pop()
            count, digest = left_count + count, node_hash(left, digest)
        self._stack.append((count, digest))
        self.size += 1

    def root(self) -> bytes:
        """The root of the leaves added so far (``sha256("")`` when there are none)."""
        if not self._stack:
            return EMPTY_ROOT
        digest = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            digest = node_hash(left, digest)
        return digest


def merkle_root(event_ids: Iterable[str]) -> bytes:
    """Root over every id of a stream."""
    builder = RootBuilder()
    for event_id in event_ids:
        builder.add(event_id)
    return builder.root()


def consistency_ranges(m: int, n: int) -> list[tuple[int, int]]:
    """Leaf ranges whose subtree roots form RFC 6962's consistency proof from ``m`` to ``n``.

    The proof is ``SUBPROOF(m, D[0:n], true)``; which subtrees it names depends only on the
    sizes, so the ranges are worked out first and hashed afterwards in one pass over the ids.
    The ranges are disjoint and listed in proof order.
    """
    if not 0 < m <= n:
        raise ValueError(f"a consistency proof needs 0 < m <= n (got m={m}, n={n})")
    ranges: list[tuple[int, int]] = []
    start, size, complete = 0, n, True
    pending: list[tuple[int, int]] = []
    while m != size:
        k = largest_power_of_two_below(size)
        if m <= k:
            pending.append((start + k, start + size))
            size = k
        else:
            pending.append((start, start + k))
            start, size, m, complete = start + k, size - k, m - k, False
    if not complete:
        ranges.append((start, start + size))
    ranges.extend(reversed(pending))
    return ranges


def subtree_roots(event_ids: Iterable[str], ranges: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """Roots of several disjoint leaf ranges, computed in one pass over the ids."""
    wanted = sorted(ranges)
    roots: dict[tuple[int, int], bytes] = {}
    if not wanted:
        return roots
    index, position, builder = 0, 0, RootBuilder()
    for event_id in event_ids:
        begin, end = wanted[index]
        if begin <= position < end:
            builder.add(event_id)
            if position == end - 1:
                roots[(begin, end)] = builder.root()
                builder, index = RootBuilder(), index + 1
                if index == len(wanted):
                    break
        position += 1
    return roots


def consistency_proof(event_ids: Iterable[str], m: int, n: int) -> list[bytes]:
    """RFC 6962 consistency proof between the trees of the first ``m`` and ``n`` ids."""
    if m == n:
        return []
    ranges = consistency_ranges(m, n)
    roots = subtree_roots(_first(event_ids, n), ranges)
    missing = [r for r in ranges if r not in roots]
    if missing:
        raise ValueError(f"the ledger has fewer than {n} events")
    return [roots[r] for r in ranges]


def _first(items: Iterable[str], n: int) -> Iterator[str]:
    for position, item in enumerate(items):
        if position == n:
            return
        yield item


def verify_consistency(m: int, n: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]) -> bool:
    """Check a consistency proof (the verification algorithm of RFC 9162 section 2.1.4.2).

    Returns True when the tree of size ``n`` with root ``second_root`` extends the tree of
    size ``m`` with root ``first_root``.
    """
    if m < 0 or n < m:
        return False
    if m == 0:  # the empty tree is a prefix of every tree
        return not proof and first_root == EMPTY_ROOT
    if m == n:
        return not proof and first_root == second_root
    if not proof:
        return False
    path = list(proof)
    if m & (m - 1) == 0:  # a power of two: the old root is itself a node of the new tree
        path.insert(0, first_root)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                while not (fn & 1) and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == first_root and sr == second_root and sn == 0
