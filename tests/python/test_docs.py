"""The operator's docs stay true: the three documents exist, every test the threat model cites
exists where it says, and every path the docs name is in the repository."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
TEST_DIRS = [ROOT / "crates" / "wid" / "tests" / "e2e", ROOT / "tests" / "python"]


def test_the_operators_documents_exist():
    for name in ("install.md", "operations.md", "threat-model.md"):
        assert (DOCS / name).is_file(), name


def test_every_test_the_threat_model_cites_exists():
    text = (DOCS / "threat-model.md").read_text()
    cited = re.findall(r"`(\w+\.(?:rs|py))::(\w+)`", text)
    assert len(cited) >= 10, cited
    for file, name in cited:
        paths = [d / file for d in TEST_DIRS if (d / file).is_file()]
        assert paths, f"{file} is not a test file"
        source = paths[0].read_text()
        assert re.search(rf"^(async )?(fn|def) {name}\(", source, re.M), f"{file} has no test {name}"


def test_every_repository_path_the_docs_name_exists():
    for doc in DOCS.glob("*.md"):
        for path in re.findall(r"`((?:deploy|scripts|crates|tests)/[\w./-]+)`", doc.read_text()):
            assert (ROOT / path).exists(), f"{doc.name} names {path}, which does not exist"
