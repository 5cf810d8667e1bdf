"""CoLLM for vLLM: every CF embedding of a codes directory written into the model as one vocabulary token.

vLLM's `/classify` (the pooling runner that turns the Yes/No logits into P(Yes)) takes text or token ids,
never input embeddings: `prompt_embeds` exists only on `/v1/completions` (vllm 0.32,
`entrypoints/pooling/base/protocol.py`). So the soft tokens go into the vocabulary instead. Each marker text
`<|emb:PACKED|>` (`contract.prompts.embedding_marker`) of a known user, a known item and the two unknown
embeddings becomes an added token whose input-embedding row is the projector's output for those values,
exactly what `soft_tokens.SoftTokenEmbedding` computes in-process. The prompts stay the same text on both
paths; vLLM's tokenizer maps each marker to its token, and prefix caching works as with codes (a user's
marker is one cached token like any other).

Cost: one row per user and item (ML-1M's codes: 740 users + 3,087 items + 2 unknowns = 3,829 rows x 576
values, 8.8 MB in fp32) and
the marker strings in `tokenizer.json`. A user or item the codes directory never saw is cold and gets the
unknown embedding's token, so a snapshot published with the same codes (the publish job checks the code
version) never sends vLLM a marker outside its vocabulary. New codes mean a new export, as they mean a new
tuning. At hundreds of millions of users the vocabulary would not fit: that scale needs input embeddings
served per request, which vLLM's classifier does not take today.

    binllm llm export --adapter runs/collm/adapter --codes model_store/models/ml1m/codes --out runs/collm/merged
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from transformers import AddedToken, PreTrainedModel, PreTrainedTokenizerBase

from model_store.codes.features import CollabFeatures
from model_store.contract.prompts import embedding_marker, unpack_embedding
from model_store.llm.soft_tokens import Projector


def packed_embeddings(features: CollabFeatures) -> list[str]:
    """Every distinct packed embedding a snapshot of these codes can carry (known users and items, the unknowns)."""
    return list(dict.fromkeys(features.every_embedding()))


@torch.no_grad()
def add_embedding_tokens(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, projector: Projector, packed: Iterable[str]
) -> int:
    """Add one token per packed embedding, its input row = projector(values); returns how many were added.

    The tokens are plain added tokens (not special, not normalised, no stripping): the tokenizer cuts them
    out of the text before BPE, as `soft_tokens.encode_prompts` cuts the markers, so the pieces between them
    tokenise alike on both paths.
    """
    markers = [embedding_marker(p) for p in packed]
    values = torch.tensor([unpack_embedding(p) for p in packed], dtype=torch.float32)  # [S, d]
    added = tokenizer.add_tokens(
        [AddedToken(m, single_word=False, lstrip=False, rstrip=False, normalized=False) for m in markers]
    )
    if added != len(markers):
        raise ValueError(f"{len(markers) - added} embedding markers were already in the vocabulary")
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    embedding = model.get_input_embeddings()
    assert isinstance(embedding, torch.nn.Embedding)
    weight = embedding.weight  # [V + S, E], the output head's too if tied
    rows = projector.to(weight.device)(values.to(weight.device))  # [S, E]
    ids = tokenizer.convert_tokens_to_ids(markers)
    weight[torch.tensor(ids)] = rows.to(weight.dtype)
    return added
