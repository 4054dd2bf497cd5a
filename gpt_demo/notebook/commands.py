"""``gpt-demo jupyter install | uninstall | status``: load the magics in every IPython kernel.

    gpt-demo jupyter install                 # ~/.ipython/profile_default/ipython_config.py
    gpt-demo jupyter status
    gpt-demo jupyter uninstall
    gpt-demo jupyter install --profile work --ipython-dir /path/to/.ipython

``install`` appends a marked block (the one in ``extensions/ipython_config.py``) to the
profile's ``ipython_config.py``, which terminal IPython and every Jupyter kernel read;
the rest of the file is left alone, and installing twice changes nothing. ``uninstall``
removes exactly that block. Imports nothing heavy: ``gpt-demo --help`` stays instant.
"""

from __future__ import annotations

import argparse
from pathlib import Path

BEGIN = "# >>> gpt-demo: load the Jupyter magics (%%gpt, %gpt_chat, ...) in every kernel >>>"
END = "# <<< gpt-demo <<<"
BLOCK = f'{BEGIN}\nc.InteractiveShellApp.extensions.append("gpt_demo")\n{END}\n'


def config_path(profile: str = "default", ipython_dir: str | None = None) -> Path:
    """The profile's ``ipython_config.py`` (``$IPYTHONDIR`` or ~/.ipython unless ``ipython_dir``)."""
    if ipython_dir is None:
        from IPython.paths import get_ipython_dir

        ipython_dir = get_ipython_dir()
    return Path(ipython_dir).expanduser() / f"profile_{profile}" / "ipython_config.py"


def is_installed(path: Path) -> bool:
    return path.exists() and BEGIN in path.read_text(encoding="utf-8")


def install(path: Path) -> bool:
    """Append the block to ``path`` (created if missing); False when it was already there."""
    if is_installed(path):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text(encoding="utf-8") if path.exists() else "c = get_config()  # noqa: F821\n"
    if text and not text.endswith("\n"):
        text += "\n"
    path.write_text(text + ("\n" if text.strip() else "") + BLOCK, encoding="utf-8")
    return True


def uninstall(path: Path) -> bool:
    """Remove the block from ``path``; False when it was not there. A file left with nothing else is removed."""
    if not is_installed(path):
        return False
    lines, kept, inside = path.read_text(encoding="utf-8").splitlines(keepends=True), [], False
    for line in lines:
        if line.rstrip("\n") == BEGIN:
            inside = True
        elif inside and line.rstrip("\n") == END:
            inside = False
        elif not inside:
            kept.append(line)
    rest = "".join(kept).rstrip("\n") + "\n"
    if rest.strip() in ("", "c = get_config()  # noqa: F821"):
        path.unlink()
    else:
        path.write_text(rest, encoding="utf-8")
    return True


def cmd_jupyter(args: argparse.Namespace) -> int:
    path = config_path(args.profile, args.ipython_dir)
    if args.jupyter_command == "install":
        changed = install(path)
        print(f"{'Installed in' if changed else 'Already installed in'} {path}: every new IPython kernel loads gpt_demo.")
    elif args.jupyter_command == "uninstall":
        changed = uninstall(path)
        print(f"{'Removed from' if changed else 'Not installed in'} {path}.")
    else:
        print(f"{'installed' if is_installed(path) else 'not installed'}: {path}")
    return 0


def register(add) -> None:
    jp = add("jupyter", cmd_jupyter, "Make every IPython/Jupyter kernel load the gpt-demo magics (install | uninstall | status).")
    jp.set_defaults(func=lambda args, _p=jp: _p.print_help() or 0)
    sub = jp.add_subparsers(dest="jupyter_command", metavar="SUBCOMMAND")
    texts = {
        "install": "Add the autoload block to the profile's ipython_config.py (idempotent).",
        "uninstall": "Remove the autoload block (the rest of the file is kept).",
        "status": "Say whether the autoload block is installed.",
    }
    for name, text in texts.items():
        p = sub.add_parser(name, help=text, description=text)
        p.set_defaults(func=cmd_jupyter)
        p.add_argument("--profile", default="default", help="IPython profile (default: default)")
        p.add_argument("--ipython-dir", help="IPython directory (default: $IPYTHONDIR or ~/.ipython)")
