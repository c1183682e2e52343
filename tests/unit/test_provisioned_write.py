"""benchmarks.provisioned writes its sections with benchmarks.cost.write_section, which keeps
the dated ``###`` subsections under the section it replaces (up to the next ``##``)."""

from __future__ import annotations

import pathlib

from benchmarks.common import Section
from benchmarks.cost import write_section

OLD = """# Results

## Provisioned cost: A

```
old command
```

old table

### 2026-11-26: a dated re-run

its rows

## Provisioned cost: B

b's table
"""


def test_a_new_table_keeps_the_dated_subsections_and_the_next_section(
        tmp_path: pathlib.Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text(OLD)
    write_section(Section("Provisioned cost: A", "new command", "new table", []),
                              path)
    text = path.read_text()
    assert "old table" not in text and "new table" in text
    assert text.index("new table") < text.index("### 2026-11-26: a dated re-run") < text.index(
        "## Provisioned cost: B")
    assert "its rows" in text and "b's table" in text
    assert text.count("## Provisioned cost: A") == 1


def test_a_section_without_subsections_is_written_as_before(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text(OLD)
    write_section(Section("Provisioned cost: B", "cmd", "b's new table", []), path)
    text = path.read_text()
    assert "b's new table" in text and "b's table\n" not in text
    assert "### 2026-11-26: a dated re-run" in text
