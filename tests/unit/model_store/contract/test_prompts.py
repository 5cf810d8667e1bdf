import pytest

from model_store.contract.prompts import (
    CandidateItem,
    PromptStyle,
    UserContext,
    format_history,
    render_candidate_suffix,
    render_prompt,
    render_user_prefix,
)

USER = UserContext(history_titles=("", "Heat (1995)", "Ran (1985)"), code=0xAC10FE01)
ITEM = CandidateItem(title="Up (2009)", code=5)


def test_binllm_movie_prompt_is_the_papers_template_with_codes_as_text():
    text = render_prompt(USER, ITEM, PromptStyle(code_mode="dotted", answer_break="literal"))
    assert text == (
        '#Question: A user has given high ratings to the following movies: "Heat (1995)", "Ran (1985)". '
        "Additionally, we have information about the user's preferences encoded in the feature 172.16.254.1. "
        "Using all available information, make a prediction about whether the user would enjoy the movie "
        'titled "Up (2009)" with the feature 0.0.0.5? Answer with "Yes" or "No". \\n#Answer:'
    )


def test_text_only_book_prompt_is_the_tallrec_wording():
    text = render_prompt(USER, ITEM, PromptStyle(domain="book"), with_codes=False)
    assert text == (
        '#Question: A user has given high ratings to the following books: "Heat (1995)", "Ran (1985)". '
        "Leverage the information to predict whether the user would enjoy the book titled "
        '"Up (2009)"? Answer with "Yes" or "No". \n#Answer:'
    )


def test_binary_codes_are_32_bit_strings():
    text = render_prompt(USER, ITEM, PromptStyle(code_mode="binary"))
    assert format(0xAC10FE01, "032b") in text
    assert "0" * 29 + "101" in text


def test_missing_code_falls_back_to_text_only_wording():
    text = render_prompt(USER, CandidateItem(title="Up (2009)"), PromptStyle())
    assert "feature" not in text and "Leverage the information" in text


def test_history_keeps_the_last_ten_titles_in_quotes():
    titles = [f"T{i}" for i in range(15)]
    assert format_history(titles) == ", ".join(f'"T{i}"' for i in range(5, 15))


@pytest.mark.parametrize("with_codes", [True, False])
def test_candidates_of_one_user_share_the_user_prefix(with_codes):
    """The serving speed lever: everything user-only comes first, so prompts differ only after it."""
    style = PromptStyle()
    items = [CandidateItem(title=f"Movie {i} (19{i}0)", code=i * 977) for i in range(1, 6)]
    prefix = render_user_prefix(USER, style, with_codes=with_codes)
    prompts = [render_prompt(USER, item, style, with_codes=with_codes) for item in items]
    assert all(p.startswith(prefix) for p in prompts)
    assert all(USER.history_titles[-1] in prefix for _ in prompts)
    shared = len(prefix)
    assert len({p[:shared] for p in prompts}) == 1
    assert len({p[shared : shared + 3] for p in prompts}) >= 1
    for item, prompt in zip(items, prompts, strict=True):
        assert prompt == prefix + render_candidate_suffix(item, style, with_codes=with_codes)
        assert item.title not in prefix


def test_user_prefix_is_most_of_the_prompt():
    style = PromptStyle()
    prefix = render_user_prefix(USER, style, with_codes=True)
    prompt = render_prompt(USER, ITEM, style)
    assert len(prefix) / len(prompt) > 0.6


def test_default_answer_break_is_a_real_newline():
    assert render_prompt(USER, ITEM, PromptStyle()).endswith('"No". \n#Answer:')


SERVING = PromptStyle(layout="serving", code_mode="hex")


def test_serving_layout_puts_every_candidate_independent_word_before_the_candidate():
    text = render_prompt(USER, ITEM, SERVING)
    assert text == (
        '#Question: A user has given high ratings to the following movies: "Heat (1995)", "Ran (1985)". '
        "The user's preferences are encoded in the feature ac10fe01. Using all available information, "
        "predict whether the user would enjoy the movie below, given with its feature. "
        'Answer with "Yes" or "No".\n"Up (2009)" 00000005\n#Answer:'
    )
    assert render_candidate_suffix(ITEM, SERVING, with_codes=True) == '"Up (2009)" 00000005\n#Answer:'
    assert render_candidate_suffix(ITEM, SERVING, with_codes=False) == '"Up (2009)"\n#Answer:'


def test_serving_layout_text_only_and_literal_break():
    style = PromptStyle(layout="serving", domain="book", answer_break="literal")
    text = render_prompt(USER, ITEM, style, with_codes=False)
    assert "would enjoy the book below. " in text and "feature" not in text
    assert text.endswith('"Up (2009)"\\n#Answer:')


@pytest.mark.parametrize("layout", ["paper", "serving"])
def test_every_layout_is_prefix_plus_suffix(layout):
    style = PromptStyle(layout=layout, code_mode="hex")
    for codes in (True, False):
        prefix = render_user_prefix(USER, style, with_codes=codes)
        assert render_prompt(USER, ITEM, style, with_codes=codes) == prefix + render_candidate_suffix(
            ITEM, style, with_codes=codes
        )
