#!/usr/bin/env python3
"""Vendor the web console's browser libraries from the npm registry, pinned, checked and recorded.

Why a script and not a build step: the console is plain ES modules with no Node at run time and nothing from a
CDN (it must work air-gapped), so the few libraries it needs are committed under ``parley/web/static/vendor/``.
This script is the only way they get there: each tarball is downloaded from registry.npmjs.org at the version
pinned below, its bytes are checked against the npm ``dist.integrity`` pinned below (so a changed registry copy is
refused), and only the files the console loads plus the licence are extracted. ``vendor/MANIFEST.json`` records
every file's sha256 with its package, version and licence; ``tests/test_console_vendor.py`` checks the committed
files against it offline.

    python scripts/vendor_console.py          # download, verify, extract, write MANIFEST.json
    python scripts/vendor_console.py --check  # offline: committed files match MANIFEST.json

To upgrade a library: change its version and integrity (``npm view <pkg>@<version> dist.integrity``), run the
script, look at the diff, run the console tests, commit.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "parley" / "web" / "static" / "vendor"
MANIFEST = VENDOR / "MANIFEST.json"
REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class Package:
    """One npm tarball: which files to take from it (paths inside ``package/``) and where they go."""

    name: str
    version: str
    integrity: str  # npm's dist.integrity: "sha512-<base64>"
    licence: str
    dest: str  # folder under vendor/
    files: tuple[str, ...]
    rename: dict[str, str] = field(default_factory=dict)  # package path -> path under dest

    @property
    def tarball(self) -> str:
        base = self.name.rsplit("/", 1)[-1]
        return f"{REGISTRY}/{self.name}/-/{base}-{self.version}.tgz"


PACKAGES: tuple[Package, ...] = (
    # Preact + hooks + htm in one ES module: components with JSX-like tagged templates and no build step.
    Package(
        name="htm",
        version="3.1.1",
        integrity="sha512-983Vyg8NwUE7JkZ6NmOqpCZ+sh1bKv2iYTlUkzlWmA5JD2acKoxd4KVxbMmxX/85mtfdnDmTFoNKcg5DGAvxNQ==",
        licence="Apache-2.0 (htm); bundles Preact (MIT)",
        dest="htm",
        files=("preact/standalone.module.js", "LICENSE"),
    ),
    # Only the licence text of the Preact that htm's standalone module bundles.
    Package(
        name="preact",
        version="10.7.1",
        integrity="sha512-MufnRFz39aIhs9AMFisonjzTud1PK1bY+jcJLo6m2T9Uh8AqjD77w11eAAawmjUogoGOnipECq7e/1RClIKsxg==",
        licence="MIT",
        dest="htm",
        files=("LICENSE",),
        rename={"LICENSE": "PREACT-LICENSE"},
    ),
    # YAML parsing in the agent editor (the API speaks JSON; people write YAML).
    Package(
        name="js-yaml",
        version="4.1.0",
        integrity="sha512-wpxZs9NoxZaJESJGIZTyDEaYpl0FKSA+FB9aJiyemKhMwkxQg63h4T1KJgUGHpTqPDNRcmmYLugrRjJlBtWvRA==",
        licence="MIT",
        dest="js-yaml",
        files=("dist/js-yaml.mjs", "LICENSE"),
    ),
    # The call recording's waveform, with regions (turns, speech) and a time ruler.
    Package(
        name="wavesurfer.js",
        version="7.12.12",
        integrity="sha512-fyKNuREQTliCl4b9w7pUzpFXQIkX5tcdYu1o6vBdH+NlUXvTxshvfbG2hj8OxDevzQNZlDTHzZGyAT3FhuutWw==",
        licence="BSD-3-Clause",
        dest="wavesurfer.js",
        files=(
            "dist/wavesurfer.esm.js",
            "dist/plugins/regions.esm.js",
            "dist/plugins/timeline.esm.js",
            "LICENSE",
        ),
    ),
    # Analytics charts: small, fast canvas time series.
    Package(
        name="uplot",
        version="1.6.32",
        integrity="sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==",
        licence="MIT",
        dest="uplot",
        files=("dist/uPlot.esm.js", "dist/uPlot.min.css", "LICENSE"),
    ),
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_integrity(data: bytes, integrity: str) -> None:
    """Refuse a tarball whose bytes are not the ones npm published for that version (SRI: algo-base64)."""
    algo, _, expected = integrity.partition("-")
    if algo not in ("sha512", "sha384", "sha256"):
        raise SystemExit(f"unsupported integrity algorithm {algo!r}")
    got = base64.b64encode(hashlib.new(algo, data).digest()).decode()
    if got != expected:
        raise SystemExit(f"integrity mismatch: expected {integrity}, got {algo}-{got}")


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:  # a fixed https registry URL
        data: bytes = response.read()
    return data


def extract(pkg: Package, data: bytes) -> dict[str, bytes]:
    """The wanted files of one tarball, by their path under vendor/; a missing one is an error."""
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            inner = member.name.removeprefix("package/")
            if inner in pkg.files and member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                out[f"{pkg.dest}/{pkg.rename.get(inner, inner)}"] = handle.read()
    missing = {f"{pkg.dest}/{pkg.rename.get(f, f)}" for f in pkg.files} - out.keys()
    if missing:
        raise SystemExit(f"{pkg.name}@{pkg.version}: missing {sorted(missing)}")
    return out


def vendor() -> dict[str, object]:
    files: dict[str, dict[str, str]] = {}
    packages: dict[str, dict[str, str]] = {}
    for pkg in PACKAGES:
        print(f"{pkg.name}@{pkg.version} <- {pkg.tarball}")
        data = download(pkg.tarball)
        check_integrity(data, pkg.integrity)
        packages[pkg.name] = {
            "version": pkg.version,
            "licence": pkg.licence,
            "integrity": pkg.integrity,
            "tarball": pkg.tarball,
        }
        for rel, content in extract(pkg, data).items():
            target = VENDOR / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            files[rel] = {
                "sha256": sha256(content),
                "package": pkg.name,
                "version": pkg.version,
                "licence": pkg.licence,
            }
    manifest: dict[str, object] = {"packages": packages, "files": dict(sorted(files.items()))}
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {MANIFEST.relative_to(ROOT)} ({len(files)} files)")
    return manifest


def check() -> list[str]:
    """Offline: every file in MANIFEST.json exists with its recorded sha256, and nothing unrecorded lies beside."""
    manifest = json.loads(MANIFEST.read_text())
    problems: list[str] = []
    recorded: dict[str, dict[str, str]] = manifest["files"]
    for rel, entry in recorded.items():
        path = VENDOR / rel
        if not path.is_file():
            problems.append(f"missing: {rel}")
        elif sha256(path.read_bytes()) != entry["sha256"]:
            problems.append(f"changed: {rel}")
    for path in VENDOR.rglob("*"):
        rel = path.relative_to(VENDOR).as_posix()
        if path.is_file() and path != MANIFEST and rel not in recorded:
            problems.append(f"unrecorded: {rel}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="verify committed files against MANIFEST.json")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for p in problems:
            print(p)
        print("ok" if not problems else f"{len(problems)} problem(s)")
        return 1 if problems else 0
    vendor()
    return 0


if __name__ == "__main__":
    sys.exit(main())
