"""Golden tests: broken recipes and the exact messages, lines and columns `recipe validate` prints."""

from pathlib import Path

import pytest

from conftest import UPDATE_GOLDEN

GOLDEN = Path(__file__).parent / "golden" / "validate"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.suffix in (".yaml", ".toml"))


def test_there_are_golden_cases():
    assert len(CASES) >= 12
    assert any(c.endswith(".toml") for c in CASES) and any(c.endswith(".yaml") for c in CASES)


@pytest.mark.parametrize("name", CASES)
def test_golden(cli, name):
    code, out, err = cli("validate", "--quiet", name, cwd=GOLDEN)
    expected_file = GOLDEN / (name + ".expected")
    if UPDATE_GOLDEN:
        expected_file.write_text(out)
    assert code == 1, err
    assert out == expected_file.read_text()
    assert "Traceback" not in out + err
    for line in out.splitlines():
        file, lineno, col, rest = line.split(":", 3)
        assert file == name and int(lineno) >= 1 and int(col) >= 1 and rest.startswith(" ")
