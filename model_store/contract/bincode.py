"""Binary CF codes as text (BinLLM, Zhang et al. 2024, section 3.2).

A code is an unsigned integer of `bits` bits; bit i of the learned sign vector (+1 -> 1, -1 -> 0) is bit
`bits - 1 - i` of the integer, so the text reads left to right in the order the encoder emits the bits.
Three text forms exist: the plain bit string ("0110..."), the papers' compressed dot-decimal form, where
each 8-bit group is written as 0-255 and the groups are joined with "." ("172.16.254.1" for 32 bits), and
hexadecimal ("ac10fe01"). Measured with SmolLM2's tokenizer on 500 random 32-bit codes (after a space):
binary 33 tokens, dot-decimal 14.2 (every digit is its own token), hex 7.9: the serving prompt uses hex.

    >>> render_code(0xAC10FE01, mode="dotted")
    '172.16.254.1'
    >>> parse_code('172.16.254.1')
    2886794753
    >>> render_code(0xAC10FE01, mode="hex")
    'ac10fe01'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

CodeMode = Literal["binary", "dotted", "hex"]
DEFAULT_BITS = 32

_BINARY_RE = re.compile(r"[01]+")
_DOTTED_RE = re.compile(r"\d{1,3}(?:\.\d{1,3})*")
_HEX_RE = re.compile(r"[0-9a-f]+")


class CodeFormatError(ValueError):
    """A code's text or value does not fit the requested form."""


def _check_value(code: int, bits: int) -> None:
    if bits <= 0:
        raise CodeFormatError(f"bits must be positive, got {bits}")
    if not 0 <= code < (1 << bits):
        raise CodeFormatError(f"code {code} does not fit in {bits} bits")


def render_code(code: int, bits: int = DEFAULT_BITS, mode: CodeMode = "binary") -> str:
    """Write `code` as text: `bits` characters of 0/1, dot-decimal bytes, or `bits / 4` lowercase hex digits.

    Dot-decimal needs a multiple of 8 bits, hex a multiple of 4.
    """
    _check_value(code, bits)
    if mode == "binary":
        return format(code, f"0{bits}b")
    if mode == "dotted":
        if bits % 8:
            raise CodeFormatError(f"dotted codes need a multiple of 8 bits, got {bits}")
        groups = [(code >> shift) & 0xFF for shift in range(bits - 8, -1, -8)]
        return ".".join(str(group) for group in groups)
    if mode == "hex":
        if bits % 4:
            raise CodeFormatError(f"hex codes need a multiple of 4 bits, got {bits}")
        return format(code, f"0{bits // 4}x")
    raise CodeFormatError(f"unknown code mode {mode!r}; expected 'binary', 'dotted' or 'hex'")


def parse_code(text: str, bits: int | None = None, mode: CodeMode | None = None) -> int:
    """Read a code written by `render_code`; `bits`, if given, is checked.

    With `mode=None` the form is guessed (binary or dot-decimal: a hex string can look like either, so hex
    is read only when asked for).
    """
    if mode == "hex":
        if not _HEX_RE.fullmatch(text) or (bits is not None and len(text) * 4 != bits):
            raise CodeFormatError(f"not a {bits or ''}-bit hex code: {text!r}")
        return int(text, 16)
    # A run of 0/1 is a bit string when its length is the expected width; with no width given, a run of
    # 8+ characters can only be binary (a dot-decimal group has at most 3 digits).
    is_bit_string = bool(_BINARY_RE.fullmatch(text)) and (len(text) == bits if bits else len(text) >= 8)
    if is_bit_string:
        return int(text, 2)
    if _DOTTED_RE.fullmatch(text):
        groups = [int(part) for part in text.split(".")]
        if any(group > 255 for group in groups):
            raise CodeFormatError(f"dotted code {text!r} has a group above 255")
        if bits is not None and len(groups) * 8 != bits:
            raise CodeFormatError(f"dotted code {text!r} has {len(groups)} groups, expected {bits // 8}")
        value = 0
        for group in groups:
            value = (value << 8) | group
        return value
    raise CodeFormatError(f"not a binary or dot-decimal code: {text!r}")


def pack_bits(signs: Sequence[int]) -> int:
    """Pack a sequence of bits (1/0, or +1/-1 signs) into an integer, first element = most significant."""
    value = 0
    for sign in signs:
        value = (value << 1) | (1 if sign > 0 else 0)
    return value


def unpack_bits(code: int, bits: int = DEFAULT_BITS) -> list[int]:
    """The inverse of `pack_bits`, as 0/1 values."""
    _check_value(code, bits)
    return [(code >> shift) & 1 for shift in range(bits - 1, -1, -1)]
