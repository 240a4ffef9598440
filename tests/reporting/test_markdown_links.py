"""The model card's Markdown as the report renders it: hostile links lose their address, their text stays."""

import html.parser
import urllib.parse

import pytest

from reporting.markdown_links import render_untrusted_markdown, safe_link


def _addresses(rendered: str) -> list[str]:
    """Every href and src of the HTML's elements as a browser reads them (an attribute's entities decoded)."""
    found = []

    class Parser(html.parser.HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.extend(value for name, value in attrs if name in ("href", "src"))

    Parser().feed(str(rendered))
    return found


def _harmless(address: str) -> bool:
    scheme = urllib.parse.urlsplit(address.replace("\t", "").replace("\n", "").replace("\r", "")).scheme
    return scheme.lower() in ("", "http", "https")


@pytest.mark.parametrize("url", [
    "javascript:alert(1)", "JaVaScRiPt:alert(1)", "JAVASCRIPT:alert(1)",  # any case
    "data:text/html,<script>alert(1)</script>", "data:image/png;base64,AAAA", "vbscript:msgbox(1)",
    "file:///etc/passwd", "ftp://example.com/f", "mailto:someone@example.com",  # only http(s) schemes
    "java\tscript:alert(1)", "java\nscript:alert(1)", " javascript:alert(1)", "javascript:alert(1) ",
    "java\x00script:alert(1)", "java\x7fscript:alert(1)", "java\u00a0script:alert(1)",  # dropped by browsers
    "http:///no-host", "https:relative", "//evil.example/x",  # http(s) needs a host; no host without a scheme
    "/etc/passwd", "\\\\evil\\share", "figures\\..\\..\\x",  # absolute, or backslashes read as slashes
    "9:x", "../../../etc/passwd", "figures/../../x", "..",  # a colon read as a scheme; climbing out
    "%2e%2e/%2e%2e/etc/passwd", ".%2e/secret", "a/%2e%2e/%2E%2E/x", "%252e%252e/x",  # climbing out, as a browser
    "%2fetc/passwd", "%5c%5cevil%5cshare", "9%3ax",  # decodes it first; absolute, backslashes, a scheme, encoded
    "http://[::1", "[::1]:80/x", "http://[not-an-address]/x",  # addresses no parser agrees on: never a link
])
def test_a_hostile_or_outside_address_is_refused(url):
    assert not safe_link(url)


@pytest.mark.parametrize("url", ["https://example.com/cats", "HTTP://EXAMPLE.COM/x", "figures/curves.png",
                                 "figures/../curves.png", "./index.html", "?q=1", "#top", ""])
def test_http_links_and_paths_inside_the_report_are_kept(url):
    assert safe_link(url)


@pytest.mark.parametrize("text,kept", [
    ("[x](javascript:alert(1))", "x"), ("[x](<javascript:alert(1)>)", "x"), ("[x]( JAVASCRIPT:alert(1))", "x"),
    ("![alt text](javascript:alert(2))", "alt text"), ("![pixel](data:image/png;base64,AAAA)", "pixel"),
    ("[by reference][r]\n\n[r]: vbscript:msgbox(1)", "by reference"),
    ("[a [b](https://ok.example)](javascript:x)", "a [b](https://ok.example)"),  # nested: the outer link goes
])
def test_a_refused_link_or_image_keeps_its_text_and_loses_its_address(text, kept):
    rendered = render_untrusted_markdown(text)
    assert _addresses(rendered) == [] and kept in rendered, rendered


@pytest.mark.parametrize("text", [
    "[x](javascript&#58;alert(1))", "[x](&#106;avascript:alert(1))", "[x](java&#x09;script:alert(1))",
    "[x](&#x6A;&#x61;vascript:alert(1))", "[x](%6Aavascript:alert(1))",  # entities and escapes
    "[a [b](javascript:x)](https://ok.example)",  # nested the other way: the inner one is only text
    '<a href="javascript:x">y</a>', "<javascript:alert(1)>", '<img src="x" onerror="alert(1)">',  # raw HTML
])
def test_no_tricked_address_reaches_the_page_as_anything_but_http_or_relative(text):
    rendered = render_untrusted_markdown(text)
    assert all(_harmless(address) for address in _addresses(rendered)), rendered
    assert "<img" not in rendered and "<a href=\"javascript:" not in rendered  # raw HTML stays text


def test_an_address_no_parser_reads_leaves_the_page_whole_with_its_text():
    rendered = render_untrusted_markdown("source: folder:gs://b/[y](http://[::1)/photos")
    assert _addresses(rendered) == [] and "y" in rendered


def test_code_spans_show_what_the_card_holds_escaped_once():
    rendered = render_untrusted_markdown("model: `/data/cats&dogs/<v1>/model` and cats&dogs <b>")
    assert "<code>/data/cats&amp;dogs/&lt;v1&gt;/model</code>" in rendered, rendered
    assert "cats&amp;dogs &lt;b&gt;" in rendered and "&amp;amp;" not in rendered


def test_the_cards_own_html_is_text_and_safe_links_stay_links():
    rendered = render_untrusted_markdown("<b>bold</b> [kept](https://example.com/cats \"t\") "
                                         "[figure](figures/curves.png)\n\n| a |\n| --- |\n| <i>x</i> |\n")
    assert "<b>" not in rendered and "&lt;b&gt;bold&lt;/b&gt;" in rendered and "&lt;i&gt;x&lt;/i&gt;" in rendered
    assert _addresses(rendered) == ["https://example.com/cats", "figures/curves.png"]
    assert "<table>" in rendered
