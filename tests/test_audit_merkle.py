"""The streaming Merkle root and consistency proofs agree with RFC 6962's recursive definitions."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from studyledger.audit import merkle


def mth(ids: list[str]) -> bytes:
    """RFC 6962 section 2.1, written as the recursion it states."""
    if not ids:
        return merkle.EMPTY_ROOT
    if len(ids) == 1:
        return merkle.leaf_hash(ids[0])
    k = merkle.largest_power_of_two_below(len(ids))
    return merkle.node_hash(mth(ids[:k]), mth(ids[k:]))


def subproof(m: int, ids: list[str], complete: bool) -> list[bytes]:
    """RFC 6962 section 2.1.2 SUBPROOF."""
    n = len(ids)
    if m == n:
        return [] if complete else [mth(ids)]
    k = merkle.largest_power_of_two_below(n)
    if m <= k:
        return subproof(m, ids[:k], complete) + [mth(ids[k:])]
    return subproof(m - k, ids[k:], False) + [mth(ids[:k])]


IDS = [f"evt-{i:032x}" for i in range(70)]


def test_known_small_trees() -> None:
    a, b, c = (merkle.leaf_hash(x) for x in IDS[:3])
    assert merkle.merkle_root([]) == merkle.EMPTY_ROOT
    assert merkle.merkle_root(IDS[:1]) == a
    assert merkle.merkle_root(IDS[:3]) == merkle.node_hash(merkle.node_hash(a, b), c)


@given(st.integers(min_value=0, max_value=70))
@settings(max_examples=60, deadline=None)
def test_streaming_root_equals_recursive_root(n: int) -> None:
    assert merkle.merkle_root(IDS[:n]) == mth(IDS[:n])


@given(st.integers(min_value=1, max_value=70), st.integers(min_value=0, max_value=70))
@settings(max_examples=120, deadline=None)
def test_consistency_proofs_match_rfc_and_verify(m: int, extra: int) -> None:
    n = min(m + extra, 70)
    proof = merkle.consistency_proof(IDS, m, n)
    assert proof == ([] if m == n else subproof(m, IDS[:n], True))
    assert merkle.verify_consistency(m, n, mth(IDS[:m]), mth(IDS[:n]), proof)


@given(st.integers(min_value=1, max_value=40), st.integers(min_value=1, max_value=30),
       st.integers(min_value=0, max_value=69))
@settings(max_examples=80, deadline=None)
def test_a_changed_leaf_fails_the_proof(m: int, extra: int, victim: int) -> None:
    n = m + extra
    forged = list(IDS[:n])
    forged[victim % n] = "evt-forged"
    proof = merkle.consistency_proof(forged, m, n)
    # The old root is the honest one: a history that changed any leaf cannot extend it,
    # and a history that changed only new leaves still does.
    honest_old = mth(IDS[:m])
    expected = victim % n >= m
    assert merkle.verify_consistency(m, n, honest_old, mth(forged), proof) is expected


def test_malformed_proofs_are_refused() -> None:
    proof = merkle.consistency_proof(IDS, 5, 9)
    old, new = mth(IDS[:5]), mth(IDS[:9])
    assert not merkle.verify_consistency(5, 9, old, new, proof[:-1])
    assert not merkle.verify_consistency(5, 9, old, new, [*proof, proof[0]])
    assert not merkle.verify_consistency(5, 9, old, new, [])
    assert not merkle.verify_consistency(9, 5, new, old, proof)
    assert merkle.verify_consistency(0, 9, merkle.EMPTY_ROOT, new, [])
    assert not merkle.verify_consistency(4, 4, old, new, [])
