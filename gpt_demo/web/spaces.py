"""Export a folder that runs as a Hugging Face Space (``sdk: gradio``), with the package inside it.

    >>> from gpt_demo.web.spaces import export_space
    >>> [p.name for p in export_space(tmp_path / "space")]     # doctest: +SKIP
    ['README.md', 'app.py', 'requirements.txt', 'gpt_demo']

gpt-demo is on no package index, so the Space carries it: ``gpt_demo/`` (this package's source,
copied from wherever it is installed) sits beside ``app.py``, and ``python app.py`` imports it
from there. ``requirements.txt`` lists what the package needs (its base dependencies and the
``web`` and ``embed`` extras, read from ``pyproject.toml`` or the installed metadata). It cannot
name a local wheel or path: the Spaces builder installs ``requirements.txt`` mounted alone in
``/tmp`` before it copies the repository in.

README.md and app.py are the repository's ``spaces/`` files (shipped in the package as
``gpt_demo/web/space_template/``). On a Space the GGUF package is usually absent, so the default
model resolves to its hub id, ``HuggingFaceTB/SmolLM2-135M-Instruct``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

TEMPLATE = Path(__file__).with_name("space_template")
PACKAGE = Path(__file__).resolve().parents[1]  # the gpt_demo package directory
FILES = ("README.md", "app.py", "requirements.txt")
EXTRAS = ("web", "embed")
PACKAGE_DIR = "gpt_demo"
REQUIREMENTS_HEADER = """\
# Written by `gpt-demo spaces export`: gpt-demo's own dependencies with the web and embed extras.
# The package itself is the gpt_demo/ folder beside app.py (it is on no package index).
# A CPU Space: torch's CPU wheels are enough for the 135M default model.
--extra-index-url https://download.pytorch.org/whl/cpu
"""


def front_matter(readme: str) -> dict:
    """The YAML front matter of a Space README as a dict (flat ``key: value`` lines, as Spaces use)."""
    lines = readme.splitlines()
    if not lines or lines[0].strip() != "---":
        raise ValueError("README.md has no front matter; it must start with a '---' line")
    try:
        end = lines.index("---", 1)
    except ValueError:
        raise ValueError("README.md front matter is not closed by a '---' line") from None
    meta = {}
    for number, line in enumerate(lines[1:end], start=2):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise ValueError(f"README.md line {number}: {line!r} is not 'key: value'")
        value = value.strip().strip('"').strip("'")
        meta[key.strip()] = {"true": True, "false": False}.get(value, value)
    return meta


def _declared_requirements() -> tuple[list[str], dict[str, list[str]]]:
    """(base dependencies, {extra: its dependencies}) from the checkout's pyproject.toml, else the metadata."""
    pyproject = PACKAGE.parent / "pyproject.toml"
    if pyproject.is_file():
        try:
            import tomllib
        except ImportError:  # Python 3.10: read the installed metadata instead
            tomllib = None
        if tomllib is not None:
            project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
            if project.get("name") == "gpt-demo":
                return list(project.get("dependencies", [])), dict(project.get("optional-dependencies", {}))
    from importlib import metadata

    try:
        declared = metadata.requires("gpt-demo") or []
    except metadata.PackageNotFoundError:
        raise ValueError("cannot find gpt-demo's dependencies: no pyproject.toml beside the package and no "
                         "installed metadata; install it (pip install -e .) and export again") from None
    base, extras = [], {}
    for item in declared:
        spec, _, marker = item.partition(";")
        found = re.search(r"""extra\s*==\s*["']([^"']+)["']""", marker)
        if found:
            extras.setdefault(found.group(1), []).append(spec.strip())
        elif not marker.strip():
            base.append(spec.strip())
    return base, extras


def requirements(extras=EXTRAS) -> str:
    """The Space's requirements.txt: the package's dependencies plus ``extras``' (self-references expanded)."""
    base, declared = _declared_requirements()
    wanted, seen, queue = [], set(), list(extras)
    while queue:  # "gpt-demo[web]" inside an extra is expanded, not listed: it is on no index
        extra = queue.pop(0)
        if extra in seen:
            continue
        if extra not in declared:
            raise ValueError(f"extra={extra!r} is not allowed; gpt-demo declares {', '.join(sorted(declared))}")
        seen.add(extra)
        for spec in declared[extra]:
            inner = re.fullmatch(r"gpt-demo\[([^\]]+)\]", spec.replace(" ", ""))
            if inner:
                queue += inner.group(1).split(",")
            else:
                wanted.append(spec)
    lines, names = [], set()
    for spec in base + wanted:
        name = re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].lower()
        if name not in names:
            names.add(name)
            lines.append(spec)
    return REQUIREMENTS_HEADER + "".join(line + "\n" for line in lines)


def _copy_package(target: Path) -> None:
    """This package's source (Python files and package data, no caches) into ``target``."""
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "*.egg-info"))


def export_space(directory, *, force: bool = False) -> list[Path]:
    """Write a self-contained Space to ``directory``; refuses to overwrite unless ``force``."""
    out = Path(directory)
    if out.resolve() == PACKAGE or PACKAGE in out.resolve().parents:
        raise ValueError(f"directory={str(out)!r} is not allowed; it is inside the package it would copy")
    out.mkdir(parents=True, exist_ok=True)
    targets = [out / name for name in (*FILES, PACKAGE_DIR)]
    existing = [p.name for p in targets if p.exists()]
    if existing and not force:
        raise ValueError(f"directory={str(out)!r} already has {', '.join(existing)}; use --force to overwrite")
    contents = {"README.md": (TEMPLATE / "README.md").read_text(encoding="utf-8"),
                "app.py": (TEMPLATE / "app.py").read_text(encoding="utf-8"),
                "requirements.txt": requirements()}
    for name, text in contents.items():
        (out / name).write_text(text, encoding="utf-8")
    package = out / PACKAGE_DIR
    if package.exists():
        shutil.rmtree(package)
    _copy_package(package)
    return targets
