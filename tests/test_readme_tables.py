"""edge_sdk/readme_tables.py: the README's generated target and supported-ops tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_sdk.errors import UsageError
from edge_sdk.lower.lower import supported_ops
from edge_sdk.readme_tables import builtin_targets, main, render
from edge_sdk.targets import data_dir

README = Path(__file__).parents[1] / "README.md"
BLOCKS = (
    "<!-- generated:targets -->\n<!-- /generated:targets -->\n\n<!-- generated:ops -->\nold\n<!-- /generated:ops -->\n"
)


def test_readme_tables_are_generated_from_the_registries():
    committed = README.read_text(encoding="utf-8")
    assert committed == render(committed, builtin_targets()), "run: python -m edge_sdk.readme_tables"


def test_every_shipped_target_and_every_lowered_op_is_in_the_tables():
    text = render(BLOCKS, builtin_targets())
    ids = sorted(p.stem for p in data_dir("targets").glob("*.toml"))
    assert [t.id for t in builtin_targets()] == ids
    for target_id in ids:
        assert text.count(f"| `{target_id}` |") == 2  # a row in the targets table and in the op counts
    ops_table = text.split("| ONNX ops | TFLite ops and limits |\n|---|---|\n")[1].split("\n\n")[0]
    listed = sorted(op for row in ops_table.splitlines() for op in row.split(" | ")[0].removeprefix("| ").split(", "))
    assert listed == supported_ops()
    assert "| `rpi5` | Raspberry Pi 5 | cpu | 4x Cortex-A76 (XNNPACK) | 614.4 GOPS | 307.2 GOPS | 153.6 GOPS |" in text
    assert "| `host` | Host CPU | cpu | host CPU (XNNPACK / ONNX Runtime) | - | - | - | read at run time |" in text


def test_render_rewrites_only_the_blocks_and_is_stable():
    readme = "# title\n\nkept text\n\n" + BLOCKS + "\ntrailing text\n"
    once = render(readme, builtin_targets())
    assert once.startswith("# title\n\nkept text\n\n<!-- generated:targets -->\n")
    assert once.endswith("<!-- /generated:ops -->\n\ntrailing text\n") and "\nold\n" not in once
    assert render(once, builtin_targets()) == once


def test_user_targets_and_this_machine_do_not_change_the_tables(tmp_path, monkeypatch):
    before = render(BLOCKS, builtin_targets())
    rpi5 = (data_dir("targets") / "rpi5.toml").read_text().replace('name = "Raspberry Pi 5"', 'name = "Mine"')
    (tmp_path / "rpi5.toml").write_text(rpi5)
    monkeypatch.setenv("EDGE_SDK_TARGETS", str(tmp_path))
    assert render(BLOCKS, builtin_targets()) == before


def test_a_missing_block_is_an_error_naming_the_marker():
    with pytest.raises(UsageError, match="generated:ops"):
        render("<!-- generated:targets -->\n<!-- /generated:targets -->\n", builtin_targets())


def test_check_reports_a_stale_readme_and_the_rewrite_fixes_it(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n" + BLOCKS)
    assert main(["--check", "--readme", str(readme)]) == 1
    assert "out of date: run python -m edge_sdk.readme_tables" in capsys.readouterr().err
    assert main(["--readme", str(readme)]) == 0
    assert main(["--check", "--readme", str(readme)]) == 0
    readme.write_text("no markers\n")
    assert main(["--readme", str(readme)]) == 2
    assert "README needs exactly one '<!-- generated:targets -->'" in capsys.readouterr().err
