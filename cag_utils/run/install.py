"""`make install`: the pinned dependencies into the venv with uv, from the package sources pip is set up with.

uv (a pinned release, itself installed with pip) resolves and installs the same pins as ``pip install -e .``
in a fraction of pip's time (`make install`: about 1 minute instead of 2-3 on 2 cores; docs/testing.md). It
does not read pip's configuration, so the sources pip would use (``pip config list``: index, extra indexes,
find-links, no-index, constraints, trusted hosts, proxy, certificate, timeout; environment variables over the
``install`` section over ``global``, as pip ranks them) are passed to it, with pip's rule that every index counts
the same (``--index-strategy unsafe-best-match``). Modules are byte-compiled at install time, as pip does.
When uv cannot be installed or fails, the install falls back to pip with its own configuration and says so.

Runs with the venv's interpreter before cag_utils is installed: standard library only.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time

UV_VERSION = "0.13.8"
# pip option -> uv option (multi-valued pip options hold whitespace-separated lists)
OPTIONS = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links",
           "constraint": "--constraint", "trusted-host": "--allow-insecure-host"}
MULTI = {"extra-index-url", "find-links", "constraint", "trusted-host"}
TRUE = {"1", "true", "yes", "on"}
RANK = {"global": 0, "install": 1, ":env:": 2}   # pip: environment over the install section over global


def pip_settings(config_list: str) -> dict[str, str]:
    """Effective pip settings from ``pip config list`` output (``section.key='value'`` lines)."""
    best: dict[str, tuple[int, str]] = {}
    for line in config_list.splitlines():
        name, sep, value = line.partition("=")
        section, _, key = name.rpartition(".")
        if not sep or section not in RANK:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if key not in best or RANK[section] >= best[key][0]:
            best[key] = (RANK[section], value)
    return {k: v for k, (_, v) in best.items()}


def uv_arguments(settings: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """uv pip install options and environment variables that give uv pip's package sources."""
    args = ["--index-strategy", "unsafe-best-match", "--compile-bytecode"]
    for key, option in OPTIONS.items():
        values = settings.get(key, "").split() if key in MULTI else [settings.get(key, "")]
        args += [x for v in values if v for x in (option, v)]
    if settings.get("no-index", "").lower() in TRUE:
        args.append("--no-index")
    env = {}
    if settings.get("proxy"):
        env["HTTP_PROXY"] = env["HTTPS_PROXY"] = settings["proxy"]
    if settings.get("cert"):
        env["SSL_CERT_FILE"] = settings["cert"]
    if settings.get("default-timeout") or settings.get("timeout"):
        env["UV_HTTP_TIMEOUT"] = settings.get("timeout") or settings["default-timeout"]
    return args, env


def _run(cmd: list[str], env: dict[str, str] | None = None) -> int:
    print("+ " + shlex.join(cmd), flush=True)
    return subprocess.run(cmd, env={**os.environ, **(env or {})}).returncode


def install(python: str, target: str = ".") -> int:
    """Install `target` (editable) into the environment of `python`; uv first, pip if uv fails."""
    t0 = time.perf_counter()
    pip = [python, "-m", "pip"]
    if _run(pip + ["install", "--quiet", f"uv=={UV_VERSION}"]) == 0:
        listed = subprocess.run(pip + ["config", "list"], capture_output=True, text=True).stdout
        args, env = uv_arguments(pip_settings(listed))
        uv = os.path.join(os.path.dirname(python), "uv")
        if _run([uv, "pip", "install", "--quiet", "--python", python, *args, "-e", target], env) == 0:
            print(f"installed with uv {UV_VERSION} in {time.perf_counter() - t0:.0f} s", flush=True)
            return 0
    print("uv could not install the environment: installing with pip instead (slower)", file=sys.stderr, flush=True)
    if _run(pip + ["install", "--quiet", "--upgrade", "pip"]) != 0:
        return 1
    return _run(pip + ["install", "--quiet", "-e", target])


if __name__ == "__main__":
    sys.exit(install(sys.executable, *sys.argv[1:2]))
