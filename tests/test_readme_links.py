"""Every link in the README that points into the repository names a file a fresh clone has."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# [text](target): a target with no scheme and no leading '#' is a path in the repository.
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_readme_links_only_files_the_repository_has() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    local = [t.split("#", 1)[0] for t in LINK.findall(readme) if not re.match(r"[a-z]+:|#", t)]
    assert local, "the README links no file of the repository: the pattern is broken"
    missing = [t for t in local if not (ROOT / t).exists() or not (ROOT / t).resolve().is_relative_to(ROOT)]
    assert not missing, f"README links files a clone does not have: {missing}"
