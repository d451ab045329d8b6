"""The learners' example scripts run end to end on a tiny checkpoint and write what they promise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_explain_decoding_writes_plot_and_outputs(tiny_model, tmp_path):
    out = tmp_path / "decoding.png"
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "explain_decoding.py"), str(tiny_model), "--prompt", "the model",
         "--max-tokens", "4", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert out.read_bytes().startswith(b"\x89PNG")
    data = json.loads(out.with_suffix(".json").read_text())
    drawable = [stage["drawable_tokens"] for stage in data["stages"].values()]
    assert drawable[0] == drawable[1] > drawable[2] >= drawable[3] >= drawable[4] >= 1  # filters only remove
    assert drawable[2] == 10  # top-k 10
    assert "| greedy |" in result.stdout and "beam search, 5 beams" in data["outputs"]
