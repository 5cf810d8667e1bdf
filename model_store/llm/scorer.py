"""In-process click scoring: P(Yes) for many prompts, with one user's shared prefix computed only once.

All candidates of one user share a long prompt prefix (history titles, user code, fixed wording: see
`model_store.contract.prompts`), ~190 tokens against ~60 per-candidate tokens (a 32-bit code is 32 digit tokens). `score_with_prefix` runs that
prefix once, keeps its key/value cache, and runs every candidate's remaining tokens in one batch against the
cache, which is the same computation as scoring each full prompt (causal attention never looks ahead) at a
fraction of the cost. `score_prompts` is the plain batched path and the reference it is tested against.
The embedded (`local`) serving backend wraps this class.

    python bench/prefix_sharing.py      # times both paths on 100 candidates of one user
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from model_store.contract.snapshot import MANIFEST_FILENAME, ModelManifest
from model_store.llm.answer import AnswerTokens, find_answer_tokens, yes_no_margin
from model_store.llm.grouped import batches_of_groups, make_group, ordered_margins
from model_store.llm.int8 import is_int8
from model_store.llm.models import default_device, load_causal_lm, prepare_for_serving, serving_dtype
from model_store.llm.prefix_cache import CacheScope, PrefixKVCache
from model_store.llm.soft_tokens import (
    Projector,
    embedding_table,
    encode_prompts,
    has_projector,
    install_projector,
)

BATCH_SIZE = 16  # candidates per remainder pass: the embedded service's, and eval's
ROWS_PER_PREFIX_PASS = (
    512  # candidates whose users' prefixes run in one pass (their remainders run in chunks)
)
# recent users' prefix keys/values (`model_store.llm.prefix_cache`): ~60 users of SmolLM2 in bf16
PREFIX_CACHE_BYTES = 256 << 20


def weights_name(model: PreTrainedModel) -> str:
    """What the weights are: "int8" for the int8 engine, else their dtype ("float32", "bfloat16")."""
    if is_int8(model):
        return "int8"
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def engine_name(model: PreTrainedModel) -> str:
    """What runs the model, as /readyz names it: "torch-<weights>[-<device>]" ("torch-int8", "torch-bfloat16")."""
    device = next(model.parameters()).device.type
    return f"torch-{weights_name(model)}{'' if device == 'cpu' else f'-{device}'}"


class PromptScorer:
    """Scores prompts ending at the answer cue as P(Yes) = sigmoid(z_yes - z_no) at the last prompt token.

    Prompts are tokenised as the tokenizer does by default (special tokens included), as in tuning and as
    vLLM does for completions, so the three paths see identical token ids.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        answer_tokens: AnswerTokens | None = None,
        *,
        prefix_cache_bytes: int = PREFIX_CACHE_BYTES,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.answer_tokens = answer_tokens or find_answer_tokens(tokenizer)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad_id) if pad_id is not None else 0
        self.engine = engine_name(model)  # what runs it, as /readyz says
        # a user's next chunk of candidates reuses its prefix's keys/values (`model_store.llm.prefix_cache`)
        self.prefix_cache = PrefixKVCache(prefix_cache_bytes) if prefix_cache_bytes > 0 else None

    @classmethod
    def from_dir(
        cls,
        model_dir: str | Path,
        *,
        device: str | None = None,
        dtype: str | None = None,
        prefix_cache_bytes: int = PREFIX_CACHE_BYTES,
    ) -> PromptScorer:
        """A scorer over any HF causal-LM directory (e.g. a merged, exported BinLLM model), as the service loads it.

        `dtype` ("auto", "float32", "bfloat16", "int8": `serving_engine`) sets what runs the weights; None
        keeps `load_causal_lm`'s default. `prefix_cache_bytes` bounds the prefix cache (0: none). The Yes/No
        tokens are those `binllm.json` records, when the directory has one (the tokens the model was tuned
        with), else the tokenizer's.
        """
        device = device or default_device()
        weights = serving_dtype(dtype, device) if dtype is not None else None
        model, tokenizer = load_causal_lm(model_dir, dtype=weights, device=device)
        if dtype is not None:
            prepare_for_serving(model, dtype)
        manifest_path = Path(model_dir) / MANIFEST_FILENAME
        answer = None
        if manifest_path.is_file():
            manifest = ModelManifest.model_validate_json(manifest_path.read_bytes())
            answer = AnswerTokens(
                manifest.yes_token, manifest.no_token, manifest.yes_token_id, manifest.no_token_id
            )
        if has_projector(model_dir):  # a CoLLM model: its soft tokens read the embeddings in the prompts
            install_projector(model, Projector.from_dir(model_dir))
        return cls(model, tokenizer, answer, prefix_cache_bytes=prefix_cache_bytes)

    @property
    def device(self) -> torch.device:
        """Where the model's weights (and so its inputs) live."""
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def score_prompts(self, prompts: Sequence[str], batch_size: int = BATCH_SIZE) -> list[float]:
        """P(Yes) per prompt, batched; equals scoring each prompt alone (to float rounding).

        Rows are left-padded so every prompt ends at position -1, with an attention mask hiding the pads and
        position ids counting from each row's first real token (so RoPE sees the same positions as unpadded).
        Prompts are batched in length order to keep padding small; results come back in input order.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        encoded = encode_prompts(self.tokenizer, prompts)
        token_ids = encoded.ids
        order = sorted(range(len(token_ids)), key=lambda index: len(token_ids[index]))
        scores = [0.0] * len(token_ids)
        with embedding_table(self.model, encoded.table):
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                margins = self._last_token_margins([token_ids[index] for index in chunk])  # [B]
                for index, score in zip(chunk, torch.sigmoid(margins).tolist(), strict=True):
                    scores[index] = score
        return scores

    def _last_token_margins(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)  # [B, T]
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # [B, T]
        for row_index, row in enumerate(rows):
            input_ids[row_index, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            attention_mask[row_index, width - len(row) :] = 1
        position_ids = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)  # [B, T]
        device = self.device
        logits = self.model(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            position_ids=position_ids.to(device),
            use_cache=False,
            logits_to_keep=1,
        ).logits  # [B, 1, V]
        return yes_no_margin(logits[:, -1, :], self.answer_tokens).cpu()  # [B]

    @torch.inference_mode()
    def score_with_prefix(
        self, prefix: str, suffixes: Sequence[str], batch_size: int = BATCH_SIZE
    ) -> list[float]:
        """P(Yes) of `prefix + suffix` for each suffix, running the shared tokens once (one user's request)."""
        return self.score_groups([(prefix, suffixes)], batch_size=batch_size)[0]

    def _single_prompt_limits(self, texts: Sequence[str], members: Sequence[range]) -> list[int | None]:
        """Where a one-prompt group's shared part ends: at its prefix text's tokens (None for larger groups).

        A lone prompt's common token prefix is the whole prompt minus its last token, a prefix no other call
        shares; cut at the user's text instead, a one-candidate request finds the states an earlier request of
        that user left in the prefix cache (and, missing them, runs as many tokens either way).
        """
        if self.prefix_cache is None or not any(len(rows) == 1 for rows in members):
            return [None] * len(members)
        lone = [text for text, rows in zip(texts, members, strict=True) if len(rows) == 1]
        lengths = iter(len(ids) for ids in encode_prompts(self.tokenizer, lone).ids)
        return [next(lengths) if len(rows) == 1 else None for rows in members]

    @torch.inference_mode()
    def score_groups(
        self, groups: Sequence[tuple[str, Sequence[str]]], batch_size: int = BATCH_SIZE
    ) -> list[list[float]]:
        """P(Yes) of `prefix + suffix` for every (prefix, suffixes) group: many users in few forward passes.

        Each group's shared part is the longest common *token* prefix of its full prompts, not the tokens of
        `prefix`: BPE may merge across the text boundary, so the text split is only a hint; at least one token
        per prompt is left for the suffix pass, where the answer logit is read. The prefixes of the users of
        up to `ROWS_PER_PREFIX_PASS` candidates run once, in one left-padded pass; then their candidates run
        `batch_size` at a time, shortest first, rows of several users mixed (`grouped.shared_pass`). Small
        chunks keep the per-row cache copies in CPU cache (on 2 cores, 100 candidates ran 1.7x faster in
        chunks of 16 than in one padded batch of 100). A CoLLM model's soft tokens read the embeddings packed
        in the prompts (`soft_tokens.encode_prompts`). A prefix whose keys and values are in `prefix_cache`
        (scored by an earlier call: the service scores a request chunk by chunk) is not run again.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        prompts = [prefix + suffix for prefix, suffixes in groups for suffix in suffixes]
        if not prompts:
            return [[] for _ in groups]
        encoded = encode_prompts(self.tokenizer, prompts)
        token_ids = encoded.ids
        members, start = [], 0
        for _, suffixes in groups:
            members.append(range(start, start + len(suffixes)))
            start += len(suffixes)
        texts = [prefix for (prefix, _), rows in zip(groups, members, strict=True) if len(rows)]
        nonempty = [rows for rows in members if len(rows)]
        limits = self._single_prompt_limits(texts, nonempty)
        prefix_groups = [
            make_group(token_ids, rows, limit) for rows, limit in zip(nonempty, limits, strict=True)
        ]
        scores = torch.zeros(len(prompts))  # [N]
        scope = None
        if self.prefix_cache is not None:  # each user's states found by its prefix text
            keys = {group.prefix: text for group, text in zip(prefix_groups, texts, strict=True)}
            scope = CacheScope(self.prefix_cache, encoded.table, keys)
        with embedding_table(self.model, encoded.table):
            for batch in batches_of_groups(prefix_groups, ROWS_PER_PREFIX_PASS):
                margins, rows = ordered_margins(
                    self.model,
                    batch,
                    self.answer_tokens,
                    self.pad_id,
                    rest_chunk=batch_size,
                    prefix_cache=scope,
                )  # [B], [B]
                scores[rows] = torch.sigmoid(margins.float().cpu())
        flat = scores.tolist()
        return [[flat[row] for row in rows] for rows in members]
