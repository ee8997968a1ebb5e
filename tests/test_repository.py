"""The repository is self-contained: what its code and docs cite is in it."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
FOLDERS = ("keras_relnet", "tests", "custom_ops", "docs", "examples", "benchmarks")
SUFFIXES = {".py", ".md", ".h", ".cc", ".cu", ".sh", ".bzl"}
OUTSIDE = re.compile("|".join([r"\.\./" + "shared", "shared/" + "specs"]))
DOCS_PATH = re.compile(r"\bdocs/[\w./-]+?\.md\b")


def text_files():
    yield ROOT / "README.md"
    yield ROOT / "Makefile"
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in SUFFIXES and path.is_file():
                yield path


def test_nothing_cites_a_file_outside_the_repository():
    offenders = [f"{path.relative_to(ROOT)}:{number}"
                 for path in text_files()
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if OUTSIDE.search(line)]
    assert not offenders


def test_every_cited_doc_exists():
    cited = {(path.relative_to(ROOT), match)
             for path in text_files() for match in DOCS_PATH.findall(path.read_text())}
    assert len(cited) > 20  # the code cites the math it implements
    missing = sorted(f"{path}: {doc}" for path, doc in cited if not (ROOT / doc).is_file())
    assert not missing
