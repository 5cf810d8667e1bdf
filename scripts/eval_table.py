"""Print the markdown table of the model card and README from the JSON lines `scripts/eval_ml1m.sh` wrote.

    python scripts/eval_table.py runs/ml1m/eval
    python scripts/eval_table.py --whole runs/ml1m-residual/eval/baseline.json runs/ml1m-residual/eval/residual.json
    python scripts/eval_table.py --runs "BinLLM=runs/a.json" "CoLLM, LoRA frozen=runs/b.json" ...

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


HEADER = [
    "| model | AUC | UAUC | logloss | warm AUC | cold AUC | rows | AUC - codes [95% CI] |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
]


def against(metrics: dict[str, Any]) -> str:
    """The AUC difference to the codes on the same rows, with its paired bootstrap 95% interval."""
    gap = metrics.get("vs_codes", {}).get("auc")
    return "" if gap is None else f"{gap['diff']:+.4f} [{gap['low']:+.4f}, {gap['high']:+.4f}]"


def row(name: str, metrics: dict[str, Any], gap: str = "") -> str:
    """One table row: the figures of all rows, then warm and cold AUC, then the gap to the codes."""
    return f"| {name} | {cells(metrics, metrics.get('warm'), metrics.get('cold'))} | {gap} |"


def whole_valid_table(baseline: dict[str, Any], residual: dict[str, Any]) -> list[str]:
    """The whole-valid rows of scripts/eval_ml1m_residual.sh: codes alone, baseline, residual score, each LLM
    row with its AUC difference to the codes and the paired bootstrap 95% interval of that difference."""
    lines = [
        *HEADER,
        row("codes alone", residual["codes_only"]),
        row(f"baseline adapter ({baseline.get('score')})", baseline, against(baseline)),
        row(f"residual objective ({residual.get('score')}), served", residual, against(residual)),
    ]
    if "p_yes" in residual:
        lines.append(row("residual model, its P(Yes) alone", residual["p_yes"]))
    return lines


def runs_table(runs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Codes alone (from the first run: every run scored the same rows), then each labelled run's served
    score with its gap to the codes, and its P(Yes) alone where a blend is served."""
    lines = [*HEADER, row("codes alone", runs[0][1]["codes_only"])]
    for label, metrics in runs:
        lines.append(row(f"{label} ({metrics.get('score')}), served", metrics, against(metrics)))
        if "p_yes" in metrics:
            lines.append(row(f"{label}: its P(Yes) alone", metrics["p_yes"]))
    return lines


def main() -> None:
    if sys.argv[1] == "--whole":
        print("\n".join(whole_valid_table(read(Path(sys.argv[2])), read(Path(sys.argv[3])))))
        return
    if sys.argv[1] == "--runs":  # LABEL=FILE ...
        labelled = [arg.rsplit("=", 1) for arg in sys.argv[2:]]
        print("\n".join(runs_table([(label, read(Path(path))) for label, path in labelled])))
        return
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
