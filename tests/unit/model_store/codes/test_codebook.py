from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_store.codes.codebook import (
    CODEBOOK_FILENAME,
    CodeBook,
    load_codes,
    pack_signs,
    unpack_signs,
    write_codes,
)
from model_store.contract.bincode import pack_bits
from model_store.contract.fusion import sigmoid
from model_store.errors import DataFormatError


def _book(user_codes: tuple[int, ...] = (0b1100, 0b0101), bias: float = 0.25) -> CodeBook:
    return CodeBook(
        bits=4,
        user_ids=np.array([3, 8], dtype=np.int64),
        user_codes=np.array(user_codes, dtype=np.uint64),
        item_ids=np.array([1, 2, 9], dtype=np.int64),
        item_codes=np.array([0b1100, 0b0011, 0b1111], dtype=np.uint64),
        unknown_user_code=0b1000,
        unknown_item_code=0b0000,
        scale=0.5,
        bias=bias,
    )


def test_pack_signs_matches_contract_pack_bits_first_element_most_significant() -> None:
    rng = np.random.default_rng(0)
    signs = np.where(rng.random((20, 32)) < 0.5, -1.0, 1.0)
    packed = pack_signs(signs)
    assert packed.tolist() == [pack_bits(row.tolist()) for row in signs]
    assert pack_signs(np.array([[1.0, -1.0, -1.0]])).tolist() == [0b100]


def test_unpack_signs_inverts_pack_signs_up_to_64_bits() -> None:
    signs = np.where(np.random.default_rng(1).random((5, 64)) < 0.5, -1.0, 1.0)
    signs[0, 0] = 1.0  # the top bit of a uint64
    assert np.array_equal(unpack_signs(pack_signs(signs), 64), signs)


def test_known_ids_have_codes_and_unknown_ids_have_none() -> None:
    book = _book()
    assert book.user_code(3) == 0b1100
    assert book.item_code(9) == 0b1111
    assert book.user_code(4) is None
    assert book.item_code(100) is None


def test_score_is_sigmoid_of_scaled_sign_inner_product_plus_bias() -> None:
    book = _book()
    # user 3 = ++-- ; item 1 = ++-- (dot 4) ; item 2 = --++ (dot -4)
    scores, unknown = book.score(np.array([3, 3]), np.array([1, 2]))
    expected = 1 / (1 + np.exp(-np.array([0.5 * 4 + 0.25, 0.5 * -4 + 0.25])))
    np.testing.assert_allclose(scores, expected)
    assert not unknown.any()


def test_score_uses_the_unknown_codes_and_flags_the_rows() -> None:
    book = _book()
    # unknown user = +--- , item 9 = ++++ : dot -2 ; user 8 = -+-+ , unknown item = ---- : dot 0
    scores, unknown = book.score(np.array([77, 8, 8]), np.array([9, 55, 9]))
    expected = 1 / (1 + np.exp(-np.array([0.5 * -2 + 0.25, 0.25, 0.5 * 0 + 0.25])))
    np.testing.assert_allclose(scores, expected)
    assert unknown.tolist() == [True, True, False]


def test_published_code_score_gives_the_codebook_scores_including_unknown_ids() -> None:
    book = _book()
    users, items = np.array([3, 3, 77, 8]), np.array([1, 2, 9, 55])
    scores, _unknown = book.score(users, items)
    published = book.code_score()  # what the service's fallback computes, without numpy
    served = [
        sigmoid(published.logit(book.user_code(int(u)), book.item_code(int(i))))
        for u, i in zip(users, items, strict=True)
    ]
    np.testing.assert_allclose(served, scores)


def test_version_is_stable_for_equal_codes_and_changes_with_any_code() -> None:
    assert _book().version == _book(bias=-3.0).version
    assert len(_book().version) == 12
    assert _book().version != _book(user_codes=(0b1100, 0b0111)).version


def test_unsorted_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="sorted"):
        CodeBook(
            4,
            np.array([5, 2]),
            np.array([0, 0], dtype=np.uint64),
            np.array([1]),
            np.array([0], dtype=np.uint64),
            0,
            0,
            1.0,
            0.0,
        )


def test_write_then_load_gives_the_same_codes_and_version(tmp_path: Path) -> None:
    book = _book()
    write_codes(book, tmp_path)
    loaded = load_codes(tmp_path)
    assert loaded.version == book.version
    assert (loaded.bits, loaded.scale, loaded.bias) == (4, 0.5, 0.25)
    assert loaded.user_code(8) == 0b0101
    assert loaded.item_code(2) == 0b0011
    assert loaded.unknown_user_code == 0b1000


def test_load_refuses_codes_that_do_not_match_the_recorded_version(tmp_path: Path) -> None:
    write_codes(_book(), tmp_path)
    header = json.loads((tmp_path / CODEBOOK_FILENAME).read_text())
    header["version"] = "000000000000"
    (tmp_path / CODEBOOK_FILENAME).write_text(json.dumps(header))
    with pytest.raises(DataFormatError, match="000000000000"):
        load_codes(tmp_path)


def test_load_of_a_directory_without_codes_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=CODEBOOK_FILENAME):
        load_codes(tmp_path)
