"""CoLLM's soft tokens: each packed-embedding marker becomes one id whose table row holds its values, the
embedding projects that row, prefix sharing and batching give the same margins as whole prompts, gradients
reach the projector."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model_store.contract.prompts import (
    CandidateItem,
    PromptStyle,
    UserContext,
    embedding_marker,
    pack_embedding,
    render_candidate_suffix,
    render_prompt,
    render_user_prefix,
    unpack_embedding,
)
from model_store.llm.answer import find_answer_tokens
from model_store.llm.dataset import PromptSet
from model_store.llm.grouped import ordered_margins
from model_store.llm.soft_tokens import (
    Projector,
    SoftTokenEmbedding,
    embedding_table,
    encode_prompts,
    install_projector,
    remove_projector,
    soft_token,
)
from model_store.llm.trainer import grouped_prompts, pad_token_id, score_groups

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STYLE = PromptStyle(layout="serving", encoding="embeddings", code_mode="hex")


def packed(*values: float) -> str:
    return pack_embedding(list(values))


def test_text_without_markers_tokenises_exactly_as_the_tokenizer_does(tiny_llama):
    _, tokenizer = tiny_llama
    texts = ['#Question: A user liked "Heat (1995)".', "plain"]
    encoded = encode_prompts(tokenizer, texts)
    assert encoded.ids == [list(ids) for ids in tokenizer(texts)["input_ids"]] and encoded.table is None


def test_each_marker_is_one_soft_token_whose_row_holds_its_values(tiny_llama):
    _, tokenizer = tiny_llama
    user, item = packed(0.5, -0.25), packed(1.0, 0.125)
    text = f"feature {embedding_marker(user)}. Film {embedding_marker(item)}\n#Answer:"
    encoded = encode_prompts(tokenizer, [text, f"again {embedding_marker(item)}"])
    head = list(tokenizer("feature ")["input_ids"])
    middle = list(tokenizer(". Film ", add_special_tokens=False)["input_ids"])
    tail = list(tokenizer("\n#Answer:", add_special_tokens=False)["input_ids"])
    assert encoded.ids[0] == [*head, soft_token(0), *middle, soft_token(1), *tail]
    assert encoded.ids[1][-1] == soft_token(1)  # the same embedding, the same row
    assert encoded.table is not None
    torch.testing.assert_close(encoded.table, torch.tensor([[0.5, -0.25], [1.0, 0.125]]))


def test_packing_keeps_float16_precision_and_refuses_garbage():
    values = [0.123456, -0.999, 0.0, 0.5]
    np.testing.assert_allclose(unpack_embedding(pack_embedding(values)), values, atol=5e-4)
    assert len(pack_embedding([0.1] * 32)) == 86
    with pytest.raises(ValueError, match="not a packed embedding"):
        unpack_embedding("A")


def test_the_prompt_contract_writes_the_embedding_where_the_code_would_be():
    user = UserContext(history_titles=("Heat (1995)",), code=5, embedding=packed(0.5))
    item = CandidateItem(title="Ran (1985)", code=9, embedding=packed(-0.5))
    prompt = render_prompt(user, item, STYLE)
    codes = render_prompt(user, item, STYLE.model_copy(update={"encoding": "codes"}))
    assert "<|emb" not in codes
    marked = prompt.replace(embedding_marker(packed(0.5)), "U").replace(embedding_marker(packed(-0.5)), "I")
    assert marked == codes.replace("00000005", "U").replace("00000009", "I")  # only the feature differs
    with pytest.raises(ValueError, match="item embedding"):
        render_candidate_suffix(CandidateItem(title="x", code=9), STYLE, with_codes=True)
    assert render_user_prefix(UserContext(), STYLE, with_codes=False) == render_user_prefix(
        UserContext(), STYLE.model_copy(update={"encoding": "codes"}), with_codes=False
    )


def test_the_embedding_keeps_token_ids_and_projects_table_rows():
    torch.manual_seed(0)
    base = torch.nn.Embedding(10, 6)
    projector = Projector(4, 6)
    embedding = SoftTokenEmbedding(base, projector)
    embedding.table = torch.randn(3, 4)
    ids = torch.tensor([[1, soft_token(2), 4, soft_token(0)]])
    out = embedding(ids)
    torch.testing.assert_close(out[0, [0, 2]], base(torch.tensor([1, 4])))
    torch.testing.assert_close(out[0, 1], projector(embedding.table[2]))
    torch.testing.assert_close(out[0, 3], projector(embedding.table[0]))
    with pytest.raises(IndexError, match="row 5"):
        embedding(torch.tensor([[soft_token(5)]]))


def _soft_prompts(n_users: int = 3, per_user: int = 4, first_item: float = 0.0) -> PromptSet:
    rng = np.random.default_rng(4)
    items = [rng.uniform(-1, 1, 4).tolist() for _ in range(per_user)]
    items[0][0] = first_item
    prompts, prefixes, labels, uids = [], [], [], []
    for u in range(n_users):
        user = UserContext(
            history_titles=(f"Film {u}", "Heat (1995)"), code=1, embedding=packed(*rng.uniform(-1, 1, 4))
        )
        prefix = render_user_prefix(user, STYLE, with_codes=True)
        for k in range(per_user):
            item = CandidateItem(title=f"Movie {k} ({1990 + k})", code=1, embedding=pack_embedding(items[k]))
            prompts.append(prefix + render_candidate_suffix(item, STYLE, with_codes=True))
            prefixes.append(prefix)
            labels.append(k % 2)
            uids.append(u)
    return PromptSet(prompts=prompts, prefixes=prefixes, labels=labels, uids=uids, iids=[0] * len(uids))


def _margins(model, tokenizer, data: PromptSet, *, share: bool = True) -> np.ndarray:
    grouped = grouped_prompts(tokenizer, data, share_prefixes=share)
    with embedding_table(model, grouped.table):
        return score_groups(
            model, grouped.groups, len(data), find_answer_tokens(tokenizer), pad_token_id(tokenizer),
            batch_size=5, precision="fp32",
        )  # fmt: skip


def test_shared_prefixes_give_the_margins_of_whole_prompts_with_soft_tokens(tiny_llama):
    model, tokenizer = tiny_llama
    torch.manual_seed(1)
    install_projector(model, Projector(4, model.config.hidden_size))
    data = _soft_prompts()
    shared, whole = _margins(model, tokenizer, data), _margins(model, tokenizer, data, share=False)
    np.testing.assert_allclose(shared, whole, rtol=0, atol=1e-4)
    moved = _margins(model, tokenizer, _soft_prompts(first_item=0.9))  # the first candidate's embedding
    changed = np.abs(moved - shared) > 1e-6
    assert changed.tolist() == [k == 0 for _ in range(3) for k in range(4)]  # only the rows that read it


def test_gradients_reach_the_projector_and_removing_it_restores_the_embedding(tiny_llama):
    model, tokenizer = tiny_llama
    plain = model.get_input_embeddings()
    wrapper = install_projector(model, Projector(4, model.config.hidden_size))
    grouped = grouped_prompts(tokenizer, _soft_prompts(n_users=1, per_user=2))
    with embedding_table(model, grouped.table):
        margins, _ = ordered_margins(
            model, grouped.groups, find_answer_tokens(tokenizer), pad_token_id(tokenizer)
        )
    margins.sum().backward()
    grads = [p.grad for p in wrapper.projector.parameters()]
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)
    remove_projector(model)
    assert model.get_input_embeddings() is plain


def test_projector_round_trips_through_its_file(tmp_path):
    torch.manual_seed(2)
    projector = Projector(4, 8)
    projector.save(tmp_path)
    again = Projector.from_dir(tmp_path)
    x = torch.randn(3, 4)
    torch.testing.assert_close(again(x), projector(x))
    assert (again.d_in, again.d_model, again.hidden) == (4, 8, 40)
