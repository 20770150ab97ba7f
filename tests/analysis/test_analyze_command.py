"""`tokenmix analyze`: figures and a Markdown summary with numbers; user errors as one line and exit 2."""

import re

import pytest
from typer.testing import CliRunner

from tokenmix.cli import app

runner = CliRunner()


def _numbers(text: str) -> list[float]:
    return [float(n) for n in re.findall(r"(?<![\w.])\d+\.\d+(?:e[-+]\d+)?", text)]


def test_analyze_erf_writes_a_heat_map_and_a_summary_with_numbers(tmp_path):
    result = runner.invoke(app, ["analyze", "erf", "--mixer", "depthwise_conv", "--out", str(tmp_path),
                                 "--dim", "4", "--size", "15", "--samples", "1", "-o", "kernel_size=5"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "erf_depthwise_conv.png").stat().st_size > 1000
    summary = (tmp_path / "erf.md").read_text()
    row = next(line for line in summary.splitlines() if line.startswith("| depthwise_conv"))
    assert "| 225 | 11.1% |" in row            # a 5×5 kernel reaches 25 of the 15×15 positions
    # radii: within the 5×5 footprint, at most √8 from the centre (printed with two decimals: 2.83)
    assert len(_numbers(row)) == 3 and all(0 < value <= 2.83 for value in _numbers(row)[1:])


@pytest.mark.parametrize("tool", ["lipschitz", "linearize", "energy"])
def test_analyze_other_tools_write_their_files(tmp_path, tool):
    result = runner.invoke(app, ["analyze", tool, "--mixer", "depthwise_conv", "--out", str(tmp_path),
                                 "--size", "16", "--dim", "8"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / f"{tool}.png").stat().st_size > 1000
    assert len(_numbers((tmp_path / f"{tool}.md").read_text())) >= 3


@pytest.mark.parametrize("arguments, fragment", [
    (["analyze", "bogus"], "unknown analysis 'bogus'"),
    (["analyze", "erf", "--mixer", "depthwise_cnv"], "Did you mean 'depthwise_conv'"),
    (["analyze", "lipschitz", "--mixer", "gla,attention"], "takes one mixer"),
    (["analyze", "erf", "--checkpoint", "/nonexistent.pt"], "no checkpoint"),
])
def test_user_errors_are_one_line(tmp_path, arguments, fragment):
    result = runner.invoke(app, [*arguments, "--out", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0]


def test_analyze_erf_loads_a_checkpoint(tmp_path):
    import torch

    import tokenmix

    mixer = tokenmix.create("depthwise_conv", 4, kernel_size=5)
    with torch.no_grad():
        mixer.weight.zero_()
        mixer.weight[:, :, 2, 3] = 1.0          # one tap, one column right of the centre
    torch.save(mixer.state_dict(), tmp_path / "mixer.pt")
    result = runner.invoke(app, ["analyze", "erf", "--mixer", "depthwise_conv", "--dim", "4", "--size", "9",
                                 "--samples", "1", "-o", "kernel_size=5", "--checkpoint", str(tmp_path / "mixer.pt"),
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    row = next(line for line in (tmp_path / "erf.md").read_text().splitlines() if line.startswith("| depthwise"))
    assert "| 81 | 1.2% | 1.00 | 1.00 |" in row    # 1 of 81 positions, at distance 1 from the centre
