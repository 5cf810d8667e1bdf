import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_store.contract.bincode import (
    CodeFormatError,
    pack_bits,
    parse_code,
    render_code,
    unpack_bits,
)

codes32 = st.integers(min_value=0, max_value=2**32 - 1)


def test_dotted_matches_the_papers_example():
    assert render_code(0xAC10FE01, mode="dotted") == "172.16.254.1"
    assert parse_code("172.16.254.1") == 0xAC10FE01


def test_binary_is_32_characters_most_significant_first():
    text = render_code(0b101, mode="binary")
    assert text == "0" * 29 + "101"
    assert len(text) == 32


@given(codes32)
def test_binary_round_trip(code):
    assert parse_code(render_code(code, mode="binary"), bits=32) == code
    assert parse_code(render_code(code, mode="binary")) == code


@given(codes32)
def test_dotted_round_trip(code):
    text = render_code(code, mode="dotted")
    assert len(text.split(".")) == 4
    assert parse_code(text, bits=32) == code


@given(
    st.integers(min_value=1, max_value=8).flatmap(
        lambda n: st.tuples(st.just(8 * n), st.integers(0, 2 ** (8 * n) - 1))
    )
)
def test_round_trip_any_byte_width(width_and_code):
    bits, code = width_and_code
    for mode in ("binary", "dotted"):
        assert parse_code(render_code(code, bits, mode), bits=bits) == code  # type: ignore[arg-type]


@given(st.lists(st.sampled_from([-1, 1]), min_size=1, max_size=64))
def test_pack_unpack_round_trip(signs):
    code = pack_bits(signs)
    assert unpack_bits(code, len(signs)) == [1 if s > 0 else 0 for s in signs]


@pytest.mark.parametrize("text", ["", "256.1.1.1", "1.2.3", "abc", "1..2", "01x1"])
def test_parse_refuses_malformed_text(text):
    with pytest.raises(CodeFormatError):
        parse_code(text, bits=32)


def test_render_refuses_values_that_do_not_fit():
    with pytest.raises(CodeFormatError):
        render_code(2**32, bits=32)
    with pytest.raises(CodeFormatError):
        render_code(-1)
    with pytest.raises(CodeFormatError):
        render_code(1, bits=12, mode="dotted")


def test_hex_codes_are_eight_lowercase_digits_and_read_back_when_asked():
    assert render_code(0xAC10FE01, mode="hex") == "ac10fe01"
    assert render_code(5, mode="hex") == "00000005"
    assert parse_code("ac10fe01", bits=32, mode="hex") == 0xAC10FE01
    with pytest.raises(CodeFormatError):
        parse_code("ac10fe0", bits=32, mode="hex")
    with pytest.raises(CodeFormatError):
        render_code(1, bits=10, mode="hex")
