"""Export a folder that runs as a Hugging Face Space (``sdk: gradio``).

    >>> from gpt_demo.web.spaces import export_space
    >>> [p.name for p in export_space(tmp_path / "space")]     # doctest: +SKIP
    ['README.md', 'app.py', 'requirements.txt']

The files are the ones in the repository's ``spaces/`` folder (shipped inside the package
as ``gpt_demo/web/space_template/``). On a Space the GGUF package is usually absent, so the
default model resolves to its hub id, ``HuggingFaceTB/SmolLM2-135M-Instruct``.
"""

from __future__ import annotations

from pathlib import Path

TEMPLATE = Path(__file__).with_name("space_template")
FILES = ("README.md", "app.py", "requirements.txt")


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


def export_space(directory, *, force: bool = False) -> list[Path]:
    """Copy the Space files to ``directory``; refuses to overwrite unless ``force``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    targets = [out / name for name in FILES]
    existing = [p.name for p in targets if p.exists()]
    if existing and not force:
        raise ValueError(f"directory={str(out)!r} already has {', '.join(existing)}; use --force to overwrite")
    for name, target in zip(FILES, targets):
        target.write_text((TEMPLATE / name).read_text())
    return targets
