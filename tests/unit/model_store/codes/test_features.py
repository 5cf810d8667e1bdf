"""The codes directory's CF embeddings (CoLLM's soft tokens): the BinMF encoder's pre-sign values, in
codebook order, packed as prompts and snapshots carry them."""

from __future__ import annotations

import numpy as np
import torch

from model_store.codes.codebook import write_codes
from model_store.codes.features import CollabFeatures
from model_store.codes.model import BinMF, BinMFConfig
from model_store.codes.train import build_codebook
from model_store.contract.prompts import unpack_embedding


def test_collab_features_are_the_encoders_pre_sign_values_in_codebook_order(tmp_path):
    torch.manual_seed(3)
    encoder = BinMF(BinMFConfig(n_users=4, n_items=3, dim=8, bits=16))
    user_ids, item_ids = np.array([10, 20, 30]), np.array([5, 7])
    encoder.save(tmp_path)
    write_codes(build_codebook(encoder, user_ids, item_ids), tmp_path)
    features = CollabFeatures.from_codes_dir(tmp_path)
    assert features.width == 16 and features.users.shape == (4, 16) and features.items.shape == (3, 16)
    assert features.user_embedding(99) is None and features.item_embedding(6) is None
    with torch.no_grad():
        item = torch.tanh(encoder.item_proj(encoder.item_embedding.weight[2])).tolist()
        unknown = torch.tanh(encoder.user_proj(encoder.user_embedding.weight[0])).tolist()
    np.testing.assert_allclose(unpack_embedding(features.item_embedding(7) or ""), item, atol=1e-3)
    np.testing.assert_allclose(unpack_embedding(features.unknown_user_embedding), unknown, atol=1e-3)
    signs = np.where(features.users[1:] >= 0, 1.0, -1.0)  # the codes are the signs of these values
    np.testing.assert_array_equal(signs, encoder.user_codes()[1:].numpy())
