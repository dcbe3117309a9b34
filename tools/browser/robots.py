"""robots.txt as RFC 9309 reads it: groups by user agent, ``*`` and ``$`` wildcards, longest match wins.

The standard library's :mod:`urllib.robotparser` matches plain prefixes only, so ``Disallow: /*.pdf$``
or ``Disallow: /*?session=`` would be ignored; this parser understands them.

>>> rules = RobotsRules.parse("User-agent: *\\nDisallow: /*.pdf$\\nAllow: /public/*.pdf$", "glm-agent")
>>> rules.allows("/docs/a.pdf"), rules.allows("/public/a.pdf"), rules.allows("/docs/a.pdf?x=1")
(False, True, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote


@dataclass(frozen=True)
class Rule:
    """One ``Allow``/``Disallow`` line: literal parts between ``*`` wildcards, maybe anchored by ``$``."""

    allow: bool
    pattern: str
    parts: tuple[str, ...]
    anchored: bool

    @classmethod
    def of(cls, allow: bool, pattern: str) -> Rule:
        pattern = _normalize(pattern)
        anchored = pattern.endswith("$")
        body = pattern[:-1] if anchored else pattern
        return cls(allow, pattern, tuple(body.split("*")), anchored)

    def matches(self, path: str) -> bool:
        """Whether the rule covers ``path``, in time linear in its length (no backtracking).

        With only ``*`` wildcards, taking each literal part at its earliest place is never worse
        than a later one, so one left-to-right pass decides; an anchored last part must end the path.
        """
        first, *middle = self.parts
        if not path.startswith(first):
            return False
        if not middle:
            return not self.anchored or path == first
        *middle, last = middle
        position = len(first)
        for part in middle:
            found = path.find(part, position)
            if found < 0:
                return False
            position = found + len(part)
        if self.anchored:
            return path.endswith(last) and len(path) - len(last) >= position
        return path.find(last, position) >= 0


@dataclass
class RobotsRules:
    """The rules that apply to one user agent on one site."""

    rules: list[Rule] = field(default_factory=list)
    disallow_all: bool = False  # robots.txt unreachable (5xx): RFC 9309 says assume complete disallow

    @classmethod
    def allow_everything(cls) -> RobotsRules:
        return cls()

    @classmethod
    def parse(cls, text: str, user_agent: str) -> RobotsRules:
        """The rules of the groups naming ``user_agent`` (case-insensitive), else those of ``*``."""
        token = user_agent.lower()
        mine: list[Rule] = []
        anyone: list[Rule] = []
        agents: list[str] = []
        in_rules = False  # a user-agent line after rules starts a new group
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            key, sep, value = line.partition(":")
            if not sep:
                continue
            key, value = key.strip().lower(), value.strip()
            if key == "user-agent":
                if in_rules:
                    agents, in_rules = [], False
                agents.append(value.lower())
            elif key in ("allow", "disallow"):
                in_rules = True
                if not value or not agents:
                    continue  # an empty Disallow allows everything; rules before any group are ignored
                rule = Rule.of(key == "allow", value)
                if any(_is(agent, token) for agent in agents):
                    mine.append(rule)
                if "*" in agents:
                    anyone.append(rule)
        return cls(mine if mine or _names(text, token) else anyone)

    def allows(self, path: str) -> bool:
        """Whether ``path`` (with its query string) may be fetched."""
        if self.disallow_all:
            return False
        path = _normalize(path or "/")
        if path == "/robots.txt":
            return True
        best: Rule | None = None
        for rule in self.rules:
            if rule.matches(path) and (
                best is None
                or len(rule.pattern) > len(best.pattern)
                or (len(rule.pattern) == len(best.pattern) and rule.allow)  # ties go to Allow
            ):
                best = rule
        return best is None or best.allow


def _names(text: str, token: str) -> bool:
    """Whether some group names our agent (then ``*`` groups do not apply, even if ours is empty)."""
    for raw in text.splitlines():
        key, sep, value = raw.split("#", 1)[0].partition(":")
        if sep and key.strip().lower() == "user-agent" and _is(value.strip().lower(), token):
            return True
    return False


def _is(agent: str, token: str) -> bool:
    """Whether a ``User-agent`` value names our product token (``glm-agent`` or ``glm-agent/1.0``)."""
    return agent.split("/", 1)[0].strip() == token


def _normalize(path: str) -> str:
    # Compare decoded paths so /caf%C3%A9 and /café match the same rule; keep %2F distinct from /.
    return unquote(path.replace("%2F", "%252F").replace("%2f", "%252f"))
