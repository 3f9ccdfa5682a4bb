"""Reading review reports in tests: metric cells, images and references of the HTML."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class ReportPage:
    """What a test needs from a review report page."""

    values: dict[tuple[str, str], str] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    scripts: int = 0
    ids: set[str] = field(default_factory=set)
    text: str = ""


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.page = ReportPage()
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.page.ids.add(attrs["id"])
        if "data-metric" in attrs:
            key = (attrs["data-metric"], attrs["data-role"])
            self.page.values[key] = attrs["data-value"]
        if tag == "img":
            self.page.images.append(attrs.get("src", ""))
        if tag == "script":
            self.page.scripts += 1
        for name in ("href", "src"):
            if name in attrs and not str(attrs[name]).startswith("data:"):
                self.page.references.append(attrs[name])

    def handle_data(self, data):
        self._text.append(data)


def read_report(text: str) -> ReportPage:
    """Parse a report page."""
    parser = _Parser()
    parser.feed(text)
    parser.page.text = " ".join(" ".join(parser._text).split())
    return parser.page


def decode_png(src: str):
    """Decode a ``data:image/png;base64`` URI into a loaded Pillow image (raises if not a PNG)."""
    from PIL import Image

    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:40]
    image = Image.open(io.BytesIO(base64.b64decode(src[len(prefix) :], validate=True)))
    assert image.format == "PNG"
    image.load()
    return image
