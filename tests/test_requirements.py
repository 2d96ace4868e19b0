"""Every declared dependency has a job: our code imports it, or a named feature loads it.

A requirement nobody imports is either dead weight (remove it) or loaded by a library on our
behalf (transformers imports bitsandbytes for 4-bit loading): then it is listed below with the
feature, and the code that turns the feature on is checked to still be there, so the reason
cannot quietly stop being true. The other way round, a third-party package our code imports
must be declared, or listed with why it is present without being declared.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_CODE = ("src", "run", "orpo", "ensemble", "eda", "benchmarks")

# Distribution name -> the name it is imported by, where the two differ beyond "-" vs "_".
IMPORT_NAMES = {
    "python-mecab-ko": "mecab",
    "scikit-learn": "sklearn",
    "python-docx": "docx",
    "pyyaml": "yaml",
    "mkdocs-material": "material",
}

# Declared but not imported by our code: the feature that needs it, and where our code (or
# tooling) turns that feature on -- (file, text that must be in it).
LOADED_BY = {
    "bitsandbytes": (
        "4-bit QLoRA loading (method qlora, --load_in_4bit): transformers' BitsAndBytesConfig "
        "quantizer imports it",
        ("src/malpyeong/models/backbones.py", "BitsAndBytesConfig("),
    ),
    "tensorboard": (
        "training logs: the recipes' default report_to makes transformers' TensorBoardCallback "
        "write them with it",
        ("src/malpyeong/training/recipe.py", '"report_to": "tensorboard"'),
    ),
    # The dev extra (pyproject.toml); the others in it are imported by the tests or benchmarks.
    "ruff": ("lint and format check in CI", (".ci/run", "python -m ruff check")),
    "mkdocs": ("the documentation site, built in CI", (".ci/run", "python -m mkdocs build --strict")),
    "mkdocs-material": ("the documentation site's theme", ("mkdocs.yml", "name: material")),
    "tiktoken": (
        "transformers' TikTokenConverter reads the real Llama-3 / Qwen2 ranks with it "
        "(tiny_model --tokenizer real)",
        ("src/malpyeong/models/tiny.py", "TikTokenConverter"),
    ),
}

# Imported by our code but not declared: why that is right. ``comes_with`` names the declared
# distribution that requires it (checked against the installed metadata).
UNDECLARED = {
    "huggingface_hub": {"why": "the hub cache lookup of model sources", "comes_with": "transformers"},
    "starlette": {"why": "the server's route errors (FastAPI is built on it)", "comes_with": "fastapi"},
    "vllm": {"why": "the optional GPU engine (run/test.py --engine vllm); the user installs it"},
}


def _names(text: str) -> list[str]:
    """The distribution names in requirement lines (comments and markers dropped)."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(re.match(r"[A-Za-z0-9_.\-]+", line).group(0).lower().replace("_", "-"))
    return out


def runtime_requirements() -> list[str]:
    return _names((ROOT / "requirements.txt").read_text(encoding="utf-8"))


def dev_requirements() -> list[str]:
    """The dev extra, with the extras it names (``malpyeong[serve]``) spelled out."""
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    lines = []
    for line in extras["dev"]:
        own = re.fullmatch(r"malpyeong\[([a-z0-9_,-]+)\]", line.strip())
        lines += [x for extra in own.group(1).split(",") for x in extras[extra]] if own else [line]
    return _names("\n".join(lines))


def import_name(dist: str) -> str:
    return IMPORT_NAMES.get(dist, dist.replace("-", "_"))


def imported_modules(folders: tuple[str, ...]) -> dict[str, set[str]]:
    """Top-level module -> the files that import it (absolute imports, anywhere in the file)."""
    found: dict[str, set[str]] = {}
    for folder in folders:
        for name, files in _imports_in(folder).items():
            found.setdefault(name, set()).update(files)
    return found


@functools.cache
def _imports_in(folder: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def check_has_a_job(dists: list[str], imported: dict[str, set[str]]) -> None:
    unused = [d for d in dists if import_name(d) not in imported and d not in LOADED_BY]
    assert not unused, f"declared, imported nowhere and not in LOADED_BY: {unused}"
    stale = [d for d in dists if d in LOADED_BY and import_name(d) in imported]
    assert not stale, f"imported after all, drop them from LOADED_BY: {stale}"
    for dist in dists:
        if dist in LOADED_BY:
            _, (file, text) = LOADED_BY[dist]
            assert text in (ROOT / file).read_text(encoding="utf-8"), (
                f"{dist}: the feature it is kept for is gone ({text!r} not in {file})"
            )


def test_every_runtime_requirement_is_imported_or_loaded_by_a_named_feature():
    dists = runtime_requirements()
    assert "scikit-learn" in dists and len(dists) == len(set(dists))
    check_has_a_job(dists, imported_modules(RUNTIME_CODE))


def test_every_dev_requirement_is_used_by_the_tests_tools_or_benchmarks():
    check_has_a_job(dev_requirements(), imported_modules((*RUNTIME_CODE, "tests")))


def test_every_requirement_line_says_what_it_is_for():
    lines = [
        line
        for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    bare = [line for line in lines if "#" not in line]
    assert not bare, f"say what these are for (a comment on the line): {bare}"
    for line in lines:
        dist = _names(line)[0]
        if dist in LOADED_BY:
            assert "not imported" in line, f"{dist}: say that it is not imported ({LOADED_BY[dist][0]})"


def test_every_third_party_import_is_declared_or_explained():
    declared = {import_name(d) for d in runtime_requirements() + dev_requirements()}
    undeclared = {
        name: sorted(files)
        for name, files in imported_modules(RUNTIME_CODE).items()
        if name not in sys.stdlib_module_names and name != "malpyeong" and name not in declared
    }
    assert set(undeclared) == set(UNDECLARED), undeclared
    for name, entry in UNDECLARED.items():
        if "comes_with" not in entry:
            continue
        try:
            requires = importlib.metadata.requires(entry["comes_with"]) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        unconditional = [r for r in requires if "extra ==" not in r]
        assert any(_names(r) == [name.replace("_", "-")] for r in unconditional), (
            f"{name}: {entry['comes_with']} does not require it"
        )


def test_import_names_are_the_distributions_own():
    """Where a distribution is installed, the import name we map it to is one it provides."""
    provided: dict[str, set[str]] = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        for d in dists:
            provided.setdefault(d.lower().replace("_", "-"), set()).add(module)
    checked = 0
    for dist in runtime_requirements() + dev_requirements():
        if dist in provided:
            assert import_name(dist) in provided[dist], (dist, sorted(provided[dist]))
            checked += 1
    assert checked or not provided
