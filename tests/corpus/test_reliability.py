"""RELIABILITY.md is what ``scripts/reliability.py`` writes from the tests as they are today.

The file is rendered again from the corpus modules (cases, descriptions, expected exit codes,
sections) and the collected fault tests, with each case's line as the file states it; every
corpus case checks that line against what it got. So the corpus runs once, not twice.
"""

from __future__ import annotations

import difflib
import importlib.util

from tests.corpus.harness import RELIABILITY, REPO, documented_rows


def _script():
    path = REPO / "scripts" / "reliability.py"
    spec = importlib.util.spec_from_file_location("reliability", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reliability_md_is_up_to_date():
    script = _script()
    assert RELIABILITY.exists(), "RELIABILITY.md is missing: run scripts/reliability.py"
    text = RELIABILITY.read_text(encoding="utf-8")
    try:
        expected = script.render(documented_rows(text), script.fault_rows())
    except (KeyError, ValueError) as exc:
        raise AssertionError(f"RELIABILITY.md is out of date ({exc}): run "
                             ".venv/bin/python scripts/reliability.py") from None
    diff = "\n".join(difflib.unified_diff(text.splitlines(), expected.splitlines(),
                                          "RELIABILITY.md", "expected", lineterm="", n=1))
    assert text == expected, (
        "RELIABILITY.md is out of date: run .venv/bin/python scripts/reliability.py\n"
        + diff[:4000]
    )
