"""Where the repository is, for tests that read its examples, docs and deploy files."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
