"""The one place that turns user-given paths into paths the code can use.

A workdir, an `init_from` run, a `data_dir` or a tool's `--out` may be
relative, absolute, `~`-prefixed or a URL such as `gs://bucket/run`. Local
paths become absolute (orbax and tensorstore reject relative ones, and a
relative path would silently change meaning if the process changed its
working directory); URLs are kept as they are. Reads and writes of small
files in a workdir go through `etils.epath`, which handles local paths and
cloud buckets alike, so what training writes to `gs://` the tools can read.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

from etils import epath


def is_url(path: str) -> bool:
    """True for `scheme://...` paths (gs://, s3://, ...), which are never made absolute."""
    return "://" in path


def resolve(path: str) -> str:
    """`path` as an absolute local path or an unchanged URL; an empty path is an error."""
    path = os.fspath(path).strip()
    if not path:
        raise ValueError("empty path")
    if is_url(path):
        return path.rstrip("/")
    return os.path.abspath(os.path.expanduser(path))


def resolve_optional(path: str | None) -> str | None:
    """`resolve(path)`, passing None and '' through (an unset config field)."""
    return resolve(path) if path else path


def join(directory: str, *parts: str) -> str:
    """`directory/part/...` for local paths and URLs alike."""
    return os.fspath(epath.Path(directory).joinpath(*parts))


def exists(path: str) -> bool:
    return epath.Path(path).exists()


def glob(directory: str, pattern: str) -> list[str]:
    """The paths under `directory` that match `pattern` (e.g. '*/seed*.json'), sorted; [] without it."""
    folder = epath.Path(directory)
    return sorted(os.fspath(path) for path in folder.glob(pattern)) if folder.exists() else []


def rename(source: str, target: str) -> None:
    """Moves a file or folder (on object stores a copy and delete, so not atomic there)."""
    epath.Path(source).rename(epath.Path(target))


def read_text(path: str) -> str:
    return epath.Path(path).read_text(encoding="utf-8")


def write_text(path: str, text: str) -> None:
    """Writes `text` to `path`, creating its folder; replaces the file in one step where it can."""
    target = epath.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if is_url(path):
        target.write_text(text, encoding="utf-8")
        return
    tmp = target.parent / f".{target.name}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)


def append_text(path: str, text: str) -> None:
    """Appends `text` to the local file `path` (object stores cannot append; rewrite those)."""
    with epath.Path(path).open("a", encoding="utf-8") as f:
        f.write(text)


def write_bytes(path: str, data: bytes) -> None:
    target = epath.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def save_figure(fig: Any, path: str, *, dpi: int = 100) -> str:
    """Saves a matplotlib figure as PNG at `path` (local or URL); returns `path`."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    write_bytes(path, buffer.getvalue())
    return path


def write_json(path: str, payload: Any) -> None:
    write_text(path, json.dumps(payload, indent=2) + "\n")


def read_json(path: str) -> Any:
    return json.loads(read_text(path))
