"""Internal links of a built static site (the book): every href and src of every HTML page must name a file
of the site and, with a #fragment, an element id of that page; and a page must load nothing from the network.

    python -m cag_utils.run.sitelinks build/book  # prints what is broken; exit status 1 when anything is
"""
from __future__ import annotations

import argparse
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

EXTERNAL = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")   # https:, mailto:, data:, javascript:, //host
# What a browser fetches when the page opens (an <a href> is only followed when clicked).
LOADS = {("script", "src"), ("link", "href"), ("img", "src"), ("iframe", "src"), ("source", "src"),
         ("video", "src"), ("audio", "src"), ("embed", "src"), ("object", "data")}


class _Page(HTMLParser):
    """Collects (tag, attribute, value) of every href/src/data and the ids a fragment can point to."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs: list[tuple[str, str, str]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name == "id" or (tag == "a" and name == "name"):
                self.ids.add(value)
            elif name in ("href", "src") or (tag, name) == ("object", "data"):
                if not (tag == "link" and name == "href" and dict(attrs).get("rel") in ("canonical", "alternate")):
                    self.refs.append((tag, name, value))


def _pages(site: Path) -> dict[Path, _Page]:
    """Every HTML page of the site, parsed."""
    pages = {}
    for path in sorted(site.rglob("*.html")):
        pages[path] = _Page()
        pages[path].feed(path.read_text(encoding="utf-8", errors="replace"))
    return pages


def _target(site: Path, page: Path, ref: str) -> tuple[Path, str]:
    """The file `ref` points to from `page` (a folder means its index.html) and its fragment."""
    parts = urlsplit(ref)
    path = unquote(parts.path)
    dest = page if not path else (site / path.lstrip("/") if path.startswith("/") else page.parent / path)
    dest = Path(dest).resolve()
    return (dest / "index.html" if dest.is_dir() else dest), unquote(parts.fragment)


def broken_links(site: Path) -> list[str]:
    """'page: ref (why)' for every internal link of the site's HTML pages whose file or fragment is missing."""
    site = Path(site).resolve()
    pages = _pages(site)
    broken = []
    for page, parsed in pages.items():
        for _tag, _attr, ref in parsed.refs:
            if EXTERNAL.match(ref) or ref in ("", "#"):
                continue
            dest, fragment = _target(site, page, ref)
            where = f"{page.relative_to(site)}: {ref}"
            if site not in dest.parents:
                broken.append(f"{where} (outside the site)")
            elif not dest.is_file():
                broken.append(f"{where} (no such file)")
            elif fragment and dest.suffix == ".html" and fragment not in pages[dest].ids:
                broken.append(f"{where} (no element #{fragment})")
    return broken


def network_loads(site: Path) -> list[str]:
    """'page: <tag attr=url>' for everything a page of the site would fetch from another host when opened."""
    site = Path(site).resolve()
    return [f"{page.relative_to(site)}: <{tag} {attr}={ref}>"
            for page, parsed in _pages(site).items() for tag, attr, ref in parsed.refs
            if (tag, attr) in LOADS and EXTERNAL.match(ref) and not ref.startswith("data:")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("site", type=Path)
    args = ap.parse_args(argv)
    problems = broken_links(args.site) + network_loads(args.site)
    for line in problems:
        print(line)
    print(f"{len(list(args.site.rglob('*.html')))} pages, {len(problems)} broken links or network loads")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
