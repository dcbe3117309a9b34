"""robots.txt as RFC 9309 reads it, matched by Protego: groups by user agent, ``*`` and ``$`` wildcards,
the longest match wins and ties go to ``Allow``.

The standard library's :mod:`urllib.robotparser` matches plain prefixes only, so ``Disallow: /*.pdf$``
or ``Disallow: /*?session=`` would be ignored. Protego (Scrapy's parser) understands them and matches
in time linear in the path. What is ours is the policy around it: fetching, one copy per site, and an
unreachable robots.txt read as "disallow everything" (see :mod:`tools.browser.fetch`).

>>> rules = RobotsRules.parse("User-agent: *\\nDisallow: /*.pdf$\\nAllow: /public/*.pdf$", "glm-agent")
>>> rules.allows("/docs/a.pdf"), rules.allows("/public/a.pdf"), rules.allows("/docs/a.pdf?x=1")
(False, True, True)
"""

from __future__ import annotations

from dataclasses import dataclass

from protego import Protego

# Protego reads URLs, and a bare path such as "//a" would read as the host "a": paths are given a
# placeholder origin (rules never look at the origin, only at the path and query).
_ORIGIN = "http://robots.invalid"


@dataclass(frozen=True)
class RobotsRules:
    """The rules that apply to one user agent on one site."""

    robots: Protego | None = None  # None: no robots.txt, everything allowed
    user_agent: str = ""
    disallow_all: bool = False  # robots.txt unreachable (5xx): RFC 9309 says assume complete disallow

    @classmethod
    def allow_everything(cls) -> RobotsRules:
        return cls()

    @classmethod
    def parse(cls, text: str, user_agent: str) -> RobotsRules:
        """The rules of the groups naming ``user_agent`` (case-insensitive), else those of ``*``."""
        return cls(Protego.parse(text), user_agent)

    def allows(self, path: str) -> bool:
        """Whether ``path`` (with its query string) may be fetched."""
        if self.disallow_all:
            return False
        return self.robots is None or self.robots.can_fetch(_ORIGIN + (path or "/"), self.user_agent)
