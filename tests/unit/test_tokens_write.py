"""``benchmarks.tokens`` and ``benchmarks.tokens_diag`` write their RESULTS sections with
``benchmarks.cost.write_section`` (they had each copied its splitter, without the fix that
keeps a section's dated ``###`` subsections): the diagnosis goes after the section it
diagnoses the first time, replaces itself by title after that."""

from __future__ import annotations

import pathlib

from benchmarks import tokens_diag
from benchmarks.common import Section
from benchmarks.cost import write_section


def test_the_diagnosis_goes_after_its_section_then_replaces_itself_keeping_records(
        tmp_path: pathlib.Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text(f"# Head\n\n## {tokens_diag.AFTER}\n\nstreams\n\n## Failover\n\nkeep\n")
    diag = Section(title=tokens_diag.TITLE, command="cmd", table="first")
    write_section(diag, path, after=tokens_diag.AFTER)
    text = path.read_text()
    assert text.index("streams") < text.index("first") < text.index("## Failover")
    path.write_text(text.replace("first\n", "first\n\n### 2026-11-27: a scratch run\n\nrows\n"))
    write_section(Section(title=tokens_diag.TITLE, command="cmd", table="second"), path,
                  after=tokens_diag.AFTER)
    text = path.read_text()
    assert "first" not in text and text.count(f"## {tokens_diag.TITLE}") == 1
    assert (text.index("second") < text.index("### 2026-11-27: a scratch run")
            < text.index("## Failover"))
    assert "keep" in text and "streams" in text


def test_a_section_without_its_after_goes_at_the_end(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text("# Head\n\n## Failover\n\nkeep\n")
    write_section(Section(title="Tokens: x", command="cmd", table="t"), path,
                  after="Tokens: absent")
    assert path.read_text().rstrip().endswith("t")
