"""The README's code is the code the tests run."""

from __future__ import annotations

import re
from pathlib import Path

from authserver.resource import mcp_sdk
from tests.test_resource_kit import _docstring_example

README = Path(__file__).resolve().parent.parent / "README.md"


def test_ten_line_example_is_the_tested_sdk_example() -> None:
    """tests/test_resource_kit.py executes mcp_sdk's docstring example end to end; the README shows that code."""
    text = README.read_text()
    section = text.split("### Protect your MCP server in 10 lines", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    assert block.group(1).strip() == _docstring_example(mcp_sdk.__doc__).strip()


def test_quick_start_shows_the_two_commands_first() -> None:
    text = README.read_text()
    quick = text.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = [line.split("#")[0].strip() for line in quick.splitlines() if line.startswith("make ")]
    assert commands == ["make run", "make test"]
