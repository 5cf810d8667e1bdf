"""The residual (code-skip) objective: tune the LLM to add to its codes, not to replace them.

The served score of a model with a fusion is sigmoid(w_llm * margin + w_code * code_logit + b)
(`model_store.contract.fusion.ScoreFusion`), one triple for warm rows (the prompt carries both rows' own codes)
and one for cold rows. Fitting that triple after tuning (`binllm llm blend`) finds that the margin of a model
trained alone carries little the codes lack. `FusionHead` makes the triple trainable and trains it jointly
with the LoRA (`binllm llm tune --objective residual`): it starts at the codes' own score (w_code = 1, b = 0,
w_llm = 0 by default), so the loss at step 0 is the codes' loss, and the gradient through w_llm * margin asks the LLM
only for what the codes miss. FLIP (Wang et al., 2024) adds BCE on the LM branch alone (`--objective flip`),
so the margin stays a usable score by itself.

    binllm llm tune --stages 2 --objective residual --codes model_store/models/ml1m/codes ...
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from model_store.contract.fusion import CodeScore, ScoreFusion

HEAD_FILENAME = "fusion_head.safetensors"
COLD, WARM = 0, 1


class FusionHead(torch.nn.Module):
    """Trainable (w_llm, w_code, b) per row kind: `weights[COLD]` and `weights[WARM]`, fp32."""

    def __init__(self, llm_weight_init: float = 0.0) -> None:
        super().__init__()
        start = torch.tensor([llm_weight_init, 1.0, 0.0], dtype=torch.float32)
        self.weights = torch.nn.Parameter(start.repeat(2, 1))  # [2, 3]: rows COLD, WARM

    def forward(self, margins: torch.Tensor, code_logits: torch.Tensor, warm: torch.Tensor) -> torch.Tensor:
        """Fused logits [N] from margins [N], code logits [N] and warm flags [N] (bool)."""
        w = self.weights[warm.long()]  # [N, 3]
        return w[:, 0] * margins.float() + w[:, 1] * code_logits + w[:, 2]  # [N]

    def to_fusion(self, codes: CodeScore, fitted_on: str) -> ScoreFusion:
        """The trained weights as the contract's `ScoreFusion`, which eval and the service apply."""
        cold, warm = (tuple(float(v) for v in row) for row in self.weights.detach().cpu())
        return ScoreFusion(codes=codes, warm=warm, cold=cold, fitted_on=fitted_on)  # type: ignore[arg-type]

    def save(self, directory: Path) -> None:
        """Write the weights beside an adapter (checkpoint, stage best)."""
        directory.mkdir(parents=True, exist_ok=True)
        save_file({"weights": self.weights.detach().cpu().contiguous()}, str(directory / HEAD_FILENAME))

    def load(self, directory: Path) -> bool:
        """Read weights saved by `save`, in place; False (weights untouched) when there are none."""
        path = directory / HEAD_FILENAME
        if not path.is_file():
            return False
        with torch.no_grad():
            self.weights.copy_(load_file(str(path))["weights"])
        return True


def residual_loss(
    head: FusionHead,
    margins: torch.Tensor,
    code_logits: torch.Tensor,
    warm: torch.Tensor,
    labels: torch.Tensor,
    *,
    flip: bool,
) -> torch.Tensor:
    """Summed BCE of the fused logits [N] (plus, for FLIP, of the margins alone) against labels [N]."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    loss = bce(head(margins, code_logits, warm), labels, reduction="sum")
    if flip:
        loss = loss + bce(margins.float(), labels, reduction="sum")
    return loss
