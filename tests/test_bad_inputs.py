"""Every row of README's bad-input table, run for real (the table and the tests share one list)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest
from bad_input_cases import CASES, REPO, Case, readme_section, render_table


def _script_main(script: str):
    spec = importlib.util.spec_from_file_location(Path(script).stem, REPO / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_bad_input_gives_clear_message_and_exit_code(case: Case, tmp_path, monkeypatch, capsys, caplog):
    if case.skip_reason and (why := case.skip_reason()):
        pytest.skip(why)
    monkeypatch.chdir(tmp_path)
    if case.setup:
        case.setup(tmp_path)
    caplog.set_level(logging.INFO)
    try:
        code = _script_main(case.script)(
            [*case.argv, "--max_epochs", "1", "--no_plots"]
            if case.script.startswith("train")
            else list(case.argv)
        )
    except SystemExit as exc:  # argparse rejects before main's body runs
        code = exc.code
    captured = capsys.readouterr()
    seen = captured.err + captured.out + caplog.text
    assert code == case.exit_code, seen[-2000:]
    assert case.message in seen, seen[-2000:]
    assert "Traceback" not in captured.err
    assert not (tmp_path / "PWNED").exists()


def test_readme_table_matches_the_cases():
    assert len(CASES) >= 15
    assert readme_section() == render_table(), "run: python tests/bad_input_cases.py --write"
