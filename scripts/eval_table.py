"""Print the markdown table of the model card and README from the JSON lines `scripts/eval_ml1m.sh` wrote.

    python scripts/eval_table.py runs/ml1m/eval

Rows: codes alone (on the same rows as the LLMs, and on the whole of valid), the untuned model, the text-only
model (stage 1), BinLLM (stage 2, the LLM's own P(Yes)) and its blend with the code score; columns: AUC / UAUC / logloss on
all rows, then AUC on warm and cold rows (the split's not_cold column).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def read(path: Path) -> dict[str, Any]:
    """The last JSON line of a file (the commands print exactly one)."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def cells(metrics: dict[str, Any], warm: dict[str, Any] | None, cold: dict[str, Any] | None) -> str:
    def fmt(value: Any) -> str:
        return "n/a" if value is None else f"{float(value):.4f}"

    warm_auc = fmt(warm.get("auc")) if warm else "n/a"
    cold_auc = fmt(cold.get("auc")) if cold else "n/a"
    return (
        f"{fmt(metrics.get('auc'))} | {fmt(metrics.get('uauc'))} | {fmt(metrics.get('logloss'))} | "
        f"{warm_auc} | {cold_auc} | {metrics.get('n')}"
    )


def main() -> None:
    eval_dir = Path(sys.argv[1])
    blend = read(eval_dir / "binllm_blend.json")
    rows = [
        (
            "codes alone (same rows)",
            blend["codes_only"],
            blend["codes_only"].get("warm"),
            blend["codes_only"].get("cold"),
        ),
        ("untuned SmolLM2 (with codes)", *_split(read(eval_dir / "untuned.json"))),
        ("text-only, stage 1", *_split(read(eval_dir / "text_only.json"))),
        ("BinLLM, stage 2: P(Yes), served", *_split(blend["p_yes"])),
        ("blend of P(Yes) and codes (not served)", blend, blend.get("warm"), blend.get("cold")),
    ]
    print("| model | AUC | UAUC | logloss | warm AUC | cold AUC | rows |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, metrics, warm, cold in rows:
        print(f"| {name} | {cells(metrics, warm, cold)} |")
    full = eval_dir / "codes_full.json"
    if full.is_file():
        print(f"| codes alone, whole valid | {cells(read(full), None, None)} |")


def _split(metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]:
    return metrics, metrics.get("warm"), metrics.get("cold")


if __name__ == "__main__":
    main()
