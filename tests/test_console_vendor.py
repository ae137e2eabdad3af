"""The console's files as served: vendored libraries match their manifest, no inline script, the console's CSP.

All offline and without a server process: the vendored files are checked against ``vendor/MANIFEST.json`` (what
scripts/vendor_console.py wrote after checking each npm tarball's integrity), and the app's own middleware is
exercised in-process (no lifespan: static files need no database).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.testclient import TestClient

from parley.api.app import create_app
from parley.api.security import API_CSP, CONSOLE_CSP
from parley.config import Settings
from parley.web import RECEPTIONIST, STATIC

ROOT = Path(__file__).resolve().parent.parent


def _vendor_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vendor_console", ROOT / "scripts" / "vendor_console.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["vendor_console"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def vendor() -> ModuleType:
    return _vendor_script()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("console-vendor"))
    yield TestClient(create_app(settings))  # not entered: no lifespan, no database


def test_vendored_files_match_their_manifest(vendor: ModuleType) -> None:
    assert vendor.check() == []


def test_manifest_records_every_pinned_package_with_its_licence(vendor: ModuleType) -> None:
    manifest = json.loads((STATIC / "vendor" / "MANIFEST.json").read_text())
    for pkg in vendor.PACKAGES:
        recorded = manifest["packages"][pkg.name]
        assert (recorded["version"], recorded["integrity"]) == (pkg.version, pkg.integrity)
        assert recorded["tarball"].startswith("https://registry.npmjs.org/")
        licence_files = [f for f, e in manifest["files"].items() if e["package"] == pkg.name and "LICENSE" in f]
        assert licence_files, f"{pkg.name} has no licence file"
    assert {"htm", "js-yaml", "wavesurfer.js", "uplot"} <= manifest["packages"].keys()


def test_integrity_check_refuses_other_bytes(vendor: ModuleType) -> None:
    with pytest.raises(SystemExit, match="integrity mismatch"):
        vendor.check_integrity(b"not the tarball", vendor.PACKAGES[0].integrity)


class _Scripts(HTMLParser):
    """Every <script> (its attributes and whether it has a body) and every inline event handler."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.handlers: list[str] = []
        self.bodies: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handlers += [f"<{tag} {name}>" for name, _ in attrs if name.startswith("on")]
        if tag == "script":
            self.scripts.append(dict(attrs))
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.bodies.append(data)


@pytest.mark.parametrize("page", sorted(p.name for p in STATIC.glob("*.html")))
def test_pages_have_no_inline_script(page: str) -> None:
    parsed = _Scripts()
    parsed.feed((STATIC / page).read_text())
    assert parsed.scripts, "the console page loads its modules"
    assert all((s.get("src") or "").startswith("/console/") for s in parsed.scripts), parsed.scripts
    assert parsed.bodies == [] and parsed.handlers == []


# static imports and re-exports (statements at a line's start), side-effect imports, and dynamic import()
IMPORT = re.compile(
    r"""^\s*(?:import|export)\b[^;'"`]*?\bfrom\s*(['"])([^'"]+)\1|^\s*import\s*(['"])([^'"]+)\3"""
    r"""|\bimport\(\s*(['"`])([^'"`]+)\5""",
    re.M,
)


def test_console_modules_import_only_their_own_files() -> None:
    """Air-gapped: every import in the console's own modules is one of its own files (relative or under
    /console/), and that file exists."""
    for module in STATIC.rglob("*.js"):
        if "vendor" in module.relative_to(STATIC).parts:
            continue
        code = re.sub(r"^\s*//.*$", "", module.read_text(), flags=re.M)  # comments may show examples
        for target in (next(t for t in m[1::2] if t) for m in IMPORT.findall(code)):
            if "${" in target:  # the router's lazy views/${name}.js
                continue
            assert target.startswith(("./", "../", "/console/")), f"{module.name} imports {target!r}"
            file = STATIC / target.removeprefix("/console/") if target.startswith("/") else module.parent / target
            assert file.resolve().is_file(), f"{module.name} imports missing {target!r}"


@pytest.mark.parametrize(
    "path",
    ["/", "/console/", "/console/app.js", "/console/style.css", "/console/vendor/htm/preact/standalone.module.js"],
)
def test_console_pages_carry_the_console_csp(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert csp == CONSOLE_CSP
    script_src = next(d for d in csp.split(";") if d.strip().startswith("script-src"))
    assert "unsafe-inline" not in script_src and "unsafe-eval" not in script_src and "http" not in csp
    assert "microphone=(self)" in response.headers["permissions-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_modules_are_served_as_javascript(client: TestClient) -> None:
    for path in ("/console/app.js", "/console/vendor/js-yaml/dist/js-yaml.mjs"):
        assert client.get(path).headers["content-type"].startswith("text/javascript")


def test_the_api_keeps_its_own_csp_and_unknown_console_files_are_404(client: TestClient) -> None:
    assert client.get("/health").headers["content-security-policy"] == API_CSP
    missing = client.get("/console/views/nothing-here.js")
    assert missing.status_code == 404
    assert client.get("/console", follow_redirects=False).headers["location"].endswith("/console/")


def test_receptionist_template_is_the_packaged_file(client: TestClient) -> None:
    body = client.get("/console/templates/receptionist.json").json()
    assert body == {"name": "Receptionist", "yaml": RECEPTIONIST.read_text(encoding="utf-8")}
