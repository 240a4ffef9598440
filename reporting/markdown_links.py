"""Markdown from outside the project (the model card) as HTML that runs nothing and leads nowhere unsafe.

The card holds text that whoever submits a run chooses (the source and weights paths), so the report renders
it with its own HTML escaped and each link or image kept only when `safe_link` accepts its address; any other
keeps its text and loses its address.
"""

from __future__ import annotations

import html
import posixpath
import urllib.parse
import xml.etree.ElementTree as ElementTree

import markdown
import markupsafe


def safe_link(url: str) -> bool:
    """Whether the report may render `url` as a link: http(s) with a host, or a relative path that stays inside
    the report's folder. Not javascript:, data:, file:, an absolute path or one that climbs out with `..`."""
    if any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in url):
        return False  # browsers drop some of these before reading the scheme: "java\tscript:" is javascript:
    try:
        parsed = urllib.parse.urlsplit(url)
    except ValueError:  # an address no parser agrees on ("http://[::1"): never a link
        return False
    if parsed.scheme:
        return parsed.scheme.lower() in ("http", "https") and bool(parsed.netloc)
    if parsed.netloc or url.startswith("/") or "\\" in url:
        return False
    if ":" in parsed.path.split("/")[0]:
        return False  # read as a scheme by some parsers
    # A browser decodes %2e%2e to .. before it resolves a relative link; decoded until nothing changes, so that
    # %252e is caught too.
    path, decoded = parsed.path, urllib.parse.unquote(parsed.path)
    while decoded != path:
        path, decoded = decoded, urllib.parse.unquote(decoded)
    if "\\" in path or path.startswith("/") or ":" in path.split("/")[0]:
        return False
    return not posixpath.normpath(path or ".").startswith("..")


class _LinkGuard(markdown.treeprocessors.Treeprocessor):
    """Turns every link or image whose address safe_link refuses into its plain text: text in a card comes from
    whoever named the source or weights (a Kubeflow run's submitter, say)."""

    def run(self, root):
        for element in root.iter():
            for child in list(element):
                attribute = {"a": "href", "img": "src"}.get(child.tag)
                # An entity in an address is the character to a browser: "javascript&#58;x" is javascript:x.
                if attribute is None or safe_link(html.unescape(child.get(attribute, ""))):
                    continue
                text = ElementTree.Element("span")
                text.text = (child.get("alt", "") if child.tag == "img" else "".join(child.itertext()))
                text.tail = child.tail
                element.insert(list(element).index(child), text)
                element.remove(child)


class _LinkGuardExtension(markdown.Extension):
    def extendMarkdown(self, md):
        # The card's own HTML is text: without these two, Markdown passes blocks and inline tags through as
        # HTML; with them, the serializer escapes every < and & once (a code span too, which escaping the text
        # before Markdown would escape twice).
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")
        md.treeprocessors.register(_LinkGuard(md), "link_guard", 0)  # last, after every inline pattern


def render_untrusted_markdown(text: str) -> markupsafe.Markup:
    """Markdown from outside (the model card) as HTML: its own HTML shown as text, only safe links kept."""
    return markupsafe.Markup(markdown.markdown(text, extensions=["tables", _LinkGuardExtension()]))
