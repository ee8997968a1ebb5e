"""The README's quickstart runs as written."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_quickstart_runs():
    readme = (ROOT / "README.md").read_text()
    quickstart = re.search(r"## Quickstart\s+```python\n(.*?)```", readme, re.S).group(1)
    namespace = {}
    exec(compile(quickstart, "README quickstart", "exec"), namespace)
    assert tuple(namespace["y"].shape) == (2, 28, 28, 64)
    assert round(namespace["model"].count_params() / 1e6, 1) == 23.5
