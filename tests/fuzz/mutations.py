"""Strategies that turn valid inputs into the broken ones users and clients send: flipped, cut, inserted and
repeated bytes, splices of two inputs, and pure noise."""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A seed input with 0-8 random edits (or, one time in ten, random bytes)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=4096))
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "splice", "zero"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            data = data[:at] if draw(st.booleans()) else data[:at] + data[at + draw(st.integers(1, 64)):]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        elif kind == "repeat" and data:
            data[at:at] = data[at:at + draw(st.integers(1, 256))] * draw(st.integers(1, 4))
        elif kind == "splice":
            other = draw(st.sampled_from(seeds))
            data = data[:at] + other[draw(st.integers(0, max(0, len(other) - 1))):]
        elif kind == "zero" and data:
            end = at + draw(st.integers(1, 64))
            data[at:end] = bytes(len(data[at:end]))
    return bytes(data)
