"""Every Python block of the README and docs/ runs as written, and the
README's quickstart gives the sizes it states."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks():
    for path in DOCUMENTS:
        text = path.read_text()
        for match in BLOCK.finditer(text):
            line = text[:match.start()].count("\n") + 1
            yield pytest.param(match.group(1), id=f"{path.relative_to(ROOT)}:{line}")


def run_block(code, name):
    namespace = {"__name__": "__readme__"}
    exec(compile(code, name, "exec"), namespace)
    return namespace


def test_the_documents_hold_python_blocks():
    assert len(list(python_blocks())) >= 7


@pytest.mark.parametrize("code", python_blocks())
def test_every_python_block_runs_as_written(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the files a block writes land here
    run_block(code, "document block")


def test_readme_quickstart_runs():
    readme = (ROOT / "README.md").read_text()
    quickstart = re.search(r"## Quickstart\s+```python\n(.*?)```", readme, re.S).group(1)
    namespace = run_block(quickstart, "README quickstart")
    assert tuple(namespace["y"].shape) == (2, 28, 28, 64)
    assert round(namespace["model"].count_params() / 1e6, 1) == 23.5
