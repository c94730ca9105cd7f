"""The README's prose quotes results only from its rendered tables.

Every decimal number written in the README's prose (outside code blocks and
outside the regions `saol_jax.studies.report` and `benchmarks.tables`
render from result files) must appear in one of those rendered regions, so
that a result file that changes and is re-rendered leaves no stale figure
in the text. The few decimals that are not results of this project are
listed with where they come from.
"""

from __future__ import annotations

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RENDERED = re.compile(r"<!-- (results|bench): [^>]*-->\n(.*?)<!-- /\1 -->", re.S)
CODE = re.compile(r"```.*?```", re.S)
DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?:e[−-]?\d+)?")

# Decimals in the prose that are not this project's study results, and their source.
NOT_RESULTS = {
    "2004.07570": "the paper's arXiv id",
    "14.23": "the CutMix paper's PyramidNet-200 error (recipe table)",
    "13.81": "the CutMix paper's PyramidNet-200 + ShakeDrop error (recipe table)",
    "21.40": "the CutMix paper's ResNet-50 top-1 error (recipe table)",
    "20.17": "the CutMix paper's ResNet-101 top-1 error (recipe table)",
    "0.485": "ImageNet's channel means and stds, the normalisation constants",
    "0.456": "ImageNet's channel means and stds",
    "0.229": "ImageNet's channel means and stds",
    "0.224": "ImageNet's channel means and stds",
    "0.225": "ImageNet's channel means and stds",
    "0.99": "the range of the CAM thresholds (0.00-0.99)",
    "1.10": "a reading threshold on the step-time table's ratios",
    # Head FLOPs: XLA cost analysis, bounded (<= 3%) by tests/test_heads.py and tests/test_head_cost_backbones.py.
    # (The ResNet-50 and ConvNeXt-T head costs, 2.74% and 1.36%, also occur in rendered tables.)
    "7.947": "ResNet-50 GAP-FC GFLOPs", "8.165": "ResNet-50 SAOL GFLOPs",
    "35.68": "ViT-B/16 class-token GFLOPs", "36.29": "ViT-B/16 SAOL GFLOPs",
    "9.485": "ConvNeXt-T GAP-FC GFLOPs", "9.615": "ConvNeXt-T SAOL GFLOPs",
}


def _normal(number: str) -> str:
    return number.replace("−", "-")


def unrendered_numbers(text: str) -> list[str]:
    """The decimals of `text`'s prose that no rendered region of `text` holds."""
    rendered = _normal("\n".join(match.group(2) for match in RENDERED.finditer(text)))
    prose = CODE.sub("", RENDERED.sub("", text))
    return [number for number in DECIMAL.findall(prose) if _normal(number) not in rendered]


def test_a_stale_figure_in_the_prose_is_found():
    doc = "Text says 12.5 and 3.1e-04.\n<!-- results: x -->\n| a | 12.5 |\n<!-- /results -->\n```\n9.9\n```\n"
    assert unrendered_numbers(doc) == ["3.1e-04"]


def test_the_readme_prose_quotes_only_its_rendered_tables():
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    stray = sorted(set(unrendered_numbers(text)) - set(NOT_RESULTS))
    assert not stray, f"README prose numbers in no rendered table (re-render, or quote the table): {stray}"
    assert set(NOT_RESULTS) <= set(unrendered_numbers(text)), "NOT_RESULTS lists numbers the README no longer holds"
