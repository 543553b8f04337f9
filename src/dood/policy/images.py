"""Image references and the patterns of them in `policy.allowed_images`, in Docker's parts."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

ANY_IMAGE = "*"  # as a whole pattern: every image (the default)
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class ImageReference:
    """An image reference (or a pattern of one) in Docker's parts: name (registry and path), tag, digest."""

    name: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, text: str) -> ImageReference | None:
        """Split as Docker does: the digest after '@', the tag after a ':' past the last '/'; None if unreadable."""
        name, at, digest = text.partition("@")
        colon = name.rfind(":")
        tag = None
        if colon > name.rfind("/"):
            name, tag = name[:colon], name[colon + 1 :]
        if not name or "@" in digest or (at and not digest) or tag == "":
            return None
        return cls(name, tag, digest if at else None)

    @property
    def registry(self) -> str | None:
        """The registry host[:port] when the name starts with one (a '.', a ':' or 'localhost', as Docker reads)."""
        first, slash, _ = self.name.partition("/")
        return first if slash and ("." in first or ":" in first or first == "localhost") else None

    def matches(self, pattern: ImageReference) -> bool:
        """Whether this reference is one the pattern allows; each part is globbed on its own.

        No tag and no digest means ':latest' on either side. A pattern with a digest allows that digest (the
        engine ignores a tag given with one). A reference by digest may be any image of its repository, so only
        a pattern allowing every tag (':*') covers it.
        """
        names, wanted = self.name.split("/"), pattern.name.split("/")
        if len(names) != len(wanted) or not all(map(fnmatch.fnmatchcase, names, wanted)):
            return False
        if pattern.digest is not None:
            return self.digest is not None and fnmatch.fnmatchcase(self.digest, pattern.digest)
        if self.digest is not None:
            return pattern.tag == "*"
        return fnmatch.fnmatchcase(self.tag or "latest", pattern.tag or "latest")


def is_pattern(text: str) -> bool:
    """Whether `text` holds a glob wildcard ('*', '?' or '[')."""
    return bool(_GLOB.search(text))
