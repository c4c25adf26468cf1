"""`make install` (cag_utils/run/install.py): uv with pip's package sources, pip when uv fails."""
from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest

from cag_utils.run import install

ROOT = Path(__file__).resolve().parent.parent

LISTED = """\
:env:.default-timeout='180'
:env:.find-links='/opt/env-wheels'
global.cert='/etc/ssl/certs/ca-certificates.crt'
global.constraint='/etc/pip/constraints.txt'
global.extra-index-url='file:///opt/a/simple file:///opt/b/simple'
global.find-links='/opt/wheels'
global.index-url='https://mirror.example/simple'
install.index-url="https://install.example/simple"
"""


def test_pip_settings_rank_environment_over_install_over_global():
    s = install.pip_settings(LISTED)
    assert s["find-links"] == "/opt/env-wheels"                       # :env: beats global
    assert s["index-url"] == "https://install.example/simple"         # install beats global, quotes removed
    assert s["extra-index-url"] == "file:///opt/a/simple file:///opt/b/simple"
    assert install.pip_settings("") == {} and install.pip_settings("no config here\n") == {}


def test_uv_gets_every_source_pip_would_use():
    args, env = install.uv_arguments(install.pip_settings(LISTED))
    pairs = [(a, b) for a, b in zip(args, args[1:]) if a.startswith("--") and not b.startswith("--")]
    assert ("--index-strategy", "unsafe-best-match") in pairs   # pip ranks all indexes alike
    assert "--compile-bytecode" in args                           # as pip: no compiling on first import
    assert ("--index-url", "https://install.example/simple") in pairs
    assert [v for k, v in pairs if k == "--extra-index-url"] == ["file:///opt/a/simple", "file:///opt/b/simple"]
    assert [v for k, v in pairs if k == "--find-links"] == ["/opt/env-wheels"]
    assert ("--constraint", "/etc/pip/constraints.txt") in pairs
    assert env == {"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt", "UV_HTTP_TIMEOUT": "180"}
    offline, proxy_env = install.uv_arguments({"no-index": "yes", "find-links": "/w", "proxy": "http://p:3128",
                                                "trusted-host": "a.example b.example"})
    assert offline[-1] == "--no-index" and [v for k, v in zip(offline, offline[1:]) if k == "--allow-insecure-host"] \
        == ["a.example", "b.example"]
    assert proxy_env == {"HTTP_PROXY": "http://p:3128", "HTTPS_PROXY": "http://p:3128"}
    bare, bare_env = install.uv_arguments({})
    assert bare == ["--index-strategy", "unsafe-best-match", "--compile-bytecode"] and bare_env == {}


@pytest.mark.parametrize("fail_at, expect_pip", [(None, False), ("uv==", True), ("--python", True)])
def test_pip_installs_when_uv_cannot(monkeypatch, capsys, fail_at, expect_pip):
    calls = []

    def fake_run(cmd, env=None):
        calls.append(cmd)
        return 1 if fail_at and any(fail_at in c for c in cmd) else 0

    monkeypatch.setattr(install, "_run", fake_run)
    monkeypatch.setattr(install.subprocess, "run", lambda *a, **k: type("P", (), {"stdout": LISTED})())
    assert install.install("/venv/bin/python") == 0
    pip_install_e = ["/venv/bin/python", "-m", "pip", "install", "--quiet", "-e", "."]
    assert (pip_install_e in calls) is expect_pip
    uv_calls = [c for c in calls if c[0] == "/venv/bin/uv"]
    assert len(uv_calls) == (0 if fail_at == "uv==" else 1)
    assert ("installing with pip instead" in capsys.readouterr().err) is expect_pip


def test_the_venv_holds_every_pinned_dependency_at_its_pin():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {name.split("[")[0]: pin for name, pin in (d.split("==", 1) for d in deps)}   # sacrebleu[ja] -> sacrebleu
    wrong = {name: (pin, importlib.metadata.version(name)) for name, pin in pins.items()
             if importlib.metadata.version(name) != pin}
    assert not wrong, wrong
