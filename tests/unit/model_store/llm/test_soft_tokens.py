"""CoLLM's soft tokens: slot markers become one id each, the embedding projects the table row, prefix sharing
and batching give the same margins as whole prompts, gradients reach the projector, and the CF table is the
BinMF encoder's pre-sign embeddings in codebook order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model_store.codes.codebook import write_codes
from model_store.codes.model import BinMF, BinMFConfig
from model_store.codes.train import build_codebook
from model_store.contract.prompts import (
    CandidateItem,
    PromptStyle,
    UserContext,
    render_candidate_suffix,
    render_prompt,
    render_user_prefix,
    slot_marker,
)
from model_store.llm.answer import find_answer_tokens
from model_store.llm.dataset import PromptSet
from model_store.llm.grouped import ordered_margins
from model_store.llm.soft_tokens import (
    CollabFeatures,
    Projector,
    SoftTokenEmbedding,
    embedding_table,
    encode_prompts,
    install_projector,
    remove_projector,
    slot_token,
)
from model_store.llm.trainer import pad_token_id, prefix_groups, score_groups

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STYLE = PromptStyle(layout="serving", encoding="embeddings", code_mode="hex")


def test_text_without_markers_tokenises_exactly_as_the_tokenizer_does(tiny_llama):
    _, tokenizer = tiny_llama
    texts = ['#Question: A user liked "Heat (1995)".', "plain"]
    assert encode_prompts(tokenizer, texts) == [list(ids) for ids in tokenizer(texts)["input_ids"]]


def test_each_marker_is_one_negative_id_between_its_pieces(tiny_llama):
    _, tokenizer = tiny_llama
    text = f"feature {slot_marker(0)}. Film {slot_marker(7)}\n#Answer:"
    ids = encode_prompts(tokenizer, [text])[0]
    head = list(tokenizer("feature ")["input_ids"])
    middle = list(tokenizer(". Film ", add_special_tokens=False)["input_ids"])
    tail = list(tokenizer("\n#Answer:", add_special_tokens=False)["input_ids"])
    assert ids == [*head, slot_token(0), *middle, slot_token(7), *tail]
    assert [i for i in ids if i < 0] == [-1, -8]


def test_the_prompt_contract_writes_a_slot_where_the_code_would_be():
    user = UserContext(history_titles=("Heat (1995)",), code=5, slot=0)
    item = CandidateItem(title="Ran (1985)", code=9, slot=3)
    prompt = render_prompt(user, item, STYLE)
    assert slot_marker(0) in prompt and slot_marker(3) in prompt
    codes = render_prompt(user, item, STYLE.model_copy(update={"encoding": "codes"}))
    assert "<|emb" not in codes
    assert prompt.replace(slot_marker(0), "U").replace(slot_marker(3), "I") == codes.replace(
        "00000005", "U"
    ).replace("00000009", "I")  # same wording, only the feature differs
    with pytest.raises(ValueError, match="item slot"):
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
    ids = torch.tensor([[1, slot_token(2), 4, slot_token(0)]])
    out = embedding(ids)
    torch.testing.assert_close(out[0, [0, 2]], base(torch.tensor([1, 4])))
    torch.testing.assert_close(out[0, 1], projector(embedding.table[2]))
    torch.testing.assert_close(out[0, 3], projector(embedding.table[0]))
    with pytest.raises(IndexError, match="row 5"):
        embedding(torch.tensor([[slot_token(5)]]))


def _soft_prompts(n_users: int = 3, per_user: int = 4) -> PromptSet:
    prompts, prefixes, labels, uids = [], [], [], []
    for u in range(n_users):
        user = UserContext(history_titles=(f"Film {u}", "Heat (1995)"), code=1, slot=u)
        prefix = render_user_prefix(user, STYLE, with_codes=True)
        for k in range(per_user):
            item = CandidateItem(title=f"Movie {k} ({1990 + k})", code=1, slot=n_users + k)
            prompts.append(prefix + render_candidate_suffix(item, STYLE, with_codes=True))
            prefixes.append(prefix)
            labels.append(k % 2)
            uids.append(u)
    return PromptSet(prompts=prompts, prefixes=prefixes, labels=labels, uids=uids, iids=[0] * len(uids))


def test_shared_prefixes_give_the_margins_of_whole_prompts_with_soft_tokens(tiny_llama):
    model, tokenizer = tiny_llama
    torch.manual_seed(1)
    width = model.config.hidden_size
    install_projector(model, Projector(4, width))
    data = _soft_prompts()
    answer = find_answer_tokens(tokenizer)
    table = torch.randn(3 + 4, 4)
    with embedding_table(model, table):
        shared, whole = (
            score_groups(
                model, prefix_groups(tokenizer, data, share_prefixes=share), len(data), answer,
                pad_token_id(tokenizer), batch_size=5, precision="fp32",
            )
            for share in (True, False)
        )  # fmt: skip
        other = table.clone()
        other[3] += 1.0  # item slot 3 = the first candidate of every user
        with embedding_table(model, other):
            moved = score_groups(
                model, prefix_groups(tokenizer, data), len(data), answer, pad_token_id(tokenizer), 5,
                precision="fp32",
            )  # fmt: skip
    np.testing.assert_allclose(shared, whole, rtol=0, atol=1e-4)
    changed = np.abs(moved - shared) > 1e-6
    assert changed.tolist() == [k == 0 for _ in range(3) for k in range(4)]  # only the rows that read row 3


def test_gradients_reach_the_projector_and_removing_it_restores_the_embedding(tiny_llama):
    model, tokenizer = tiny_llama
    plain = model.get_input_embeddings()
    wrapper = install_projector(model, Projector(4, model.config.hidden_size))
    wrapper.table = torch.randn(7, 4)
    data = _soft_prompts(n_users=1, per_user=2)
    groups = prefix_groups(tokenizer, data)
    margins, _ = ordered_margins(model, groups, find_answer_tokens(tokenizer), pad_token_id(tokenizer))
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


def test_collab_features_are_the_encoders_pre_sign_values_in_codebook_order(tmp_path):
    torch.manual_seed(3)
    encoder = BinMF(BinMFConfig(n_users=4, n_items=3, dim=8, bits=16))
    user_ids, item_ids = np.array([10, 20, 30]), np.array([5, 7])
    encoder.save(tmp_path)
    write_codes(build_codebook(encoder, user_ids, item_ids), tmp_path)
    features = CollabFeatures.from_codes_dir(tmp_path)
    assert features.table.shape == (4 + 3, 16) and features.width == 16
    assert (features.user_slot(20), features.user_slot(99), features.unknown_user_slot) == (2, None, 0)
    assert (features.item_slot(7), features.item_slot(6), features.unknown_item_slot) == (6, None, 4)
    with torch.no_grad():
        expected = torch.tanh(encoder.item_proj(encoder.item_embedding.weight[2]))
    torch.testing.assert_close(features.table[features.item_slot(7)], expected)
    signs = torch.where(features.table[1:4] >= 0, 1.0, -1.0)  # the codes are the signs of these values
    torch.testing.assert_close(signs, encoder.user_codes()[1:])
