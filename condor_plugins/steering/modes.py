"""Cloud steering modes and the Requirements clause that implements them.

A job carries ``CloudMode = "cloud" | "local" | "any"``.  The mode is enforced by
AND-ing a clause into the job's Requirements:

* ``cloud``: ``TARGET.IsCloudNode =?= True``  (only machines that say they are cloud nodes)
* ``local``: ``TARGET.IsCloudNode =!= True``  (never a cloud node; undefined counts as local)
* ``any``:   no clause

Once the clause is in Requirements the job also carries ``CloudModeApplied = "<mode>"``
so that later steps (the schedd transform) do not add it again.

All expressions are parsed with ``classad2``; text is only ever combined from
classad2's own unparse of already-validated trees, inside parentheses, and the
result is parsed again.  ``classad2`` is imported only when something must be
parsed, so the common wrapper path (no site clause) starts fast.
"""

from __future__ import annotations

import enum
# typing is not imported (start-up cost): annotations use builtin generics.


__all__ = [
    "CloudMode", "ModeError", "RequirementsError",
    "ATTR_CLOUD_MODE", "ATTR_CLOUD_MODE_APPLIED", "MACHINE_ATTR_IS_CLOUD_NODE",
    "KNOB_DEFAULT_MODE", "DEFAULT_MODE", "CLAUSES",
    "parse_mode", "clause_for", "parse_expr", "normalize", "conjuncts",
    "has_clause", "merge_requirements",
]

#: Job attribute: the mode the user asked for.
ATTR_CLOUD_MODE = "CloudMode"
#: Job attribute: set to the mode once its clause has been merged into Requirements.
ATTR_CLOUD_MODE_APPLIED = "CloudModeApplied"
#: Machine attribute that cloud VMs advertise as True.
MACHINE_ATTR_IS_CLOUD_NODE = "IsCloudNode"
#: HTCondor configuration knob holding the default mode.
KNOB_DEFAULT_MODE = "CLOUD_PLUGINS_DEFAULT_MODE"


class CloudMode(str, enum.Enum):
    CLOUD = "cloud"
    LOCAL = "local"
    ANY = "any"

    def __str__(self) -> str:  # "cloud", not "CloudMode.CLOUD"
        return self.value


DEFAULT_MODE = CloudMode.CLOUD

CLAUSES = {
    CloudMode.CLOUD: f"TARGET.{MACHINE_ATTR_IS_CLOUD_NODE} =?= True",
    CloudMode.LOCAL: f"TARGET.{MACHINE_ATTR_IS_CLOUD_NODE} =!= True",
    CloudMode.ANY: None,
}


class ModeError(ValueError):
    """A cloud mode value that is not cloud, local or any."""


class RequirementsError(ValueError):
    """An expression that is not a single valid ClassAd expression."""


def parse_mode(text: str | CloudMode | None, source: str = "mode") -> CloudMode:
    """Return the CloudMode for ``text`` (case-insensitive, surrounding blanks and
    double quotes ignored); ``source`` names where the value came from, for the error."""
    if isinstance(text, CloudMode):
        return text
    value = (text or "").strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].strip()
    try:
        return CloudMode(value.lower())
    except ValueError:
        choices = ", ".join(m.value for m in CloudMode)
        raise ModeError(
            f"invalid cloud mode {text!r} from {source}: expected one of {choices}"
        ) from None


def clause_for(mode: str | CloudMode) -> str | None:
    """The Requirements clause of ``mode`` (None for ``any``)."""
    return CLAUSES[parse_mode(mode)]


# --------------------------------------------------------------------------
# A small lexer.  classad2 gives no access to the parse tree, so the lexer is
# used (1) to reject text that would not be parsed as one whole expression
# (classad2 silently ignores anything after a stray ']' or ';'), and (2) to
# find the top-level '&&' conjuncts of classad2's own (canonical) unparse.
# --------------------------------------------------------------------------

_TOKEN_RE_CACHE = None


def _token_re():
    """The lexer's regular expression, compiled on first use (keeps imports cheap)."""
    global _TOKEN_RE_CACHE
    if _TOKEN_RE_CACHE is None:
        import re
        _TOKEN_RE_CACHE = re.compile(
            r"""
              (?P<ws>\s+)
            | (?P<comment>//[^\n]*|/\*.*?\*/)
            | (?P<string>"(?:[^"\\]|\\.)*")
            | (?P<qname>'(?:[^'\\]|\\.)*')
            | (?P<op>=\?=|=!=|&&|\|\||\?:|[()\[\]{};,?:])
            | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
            | (?P<other>.)
            """,
            re.VERBOSE | re.DOTALL,
        )
    return _TOKEN_RE_CACHE

_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {")", "]", "}"}


def _tokens(text: str):
    """Yield (kind, value, depth_before) for significant tokens."""
    depth = 0
    stack: list[str] = []
    pos = 0
    for m in _token_re().finditer(text):
        if m.start() != pos:  # cannot happen: 'other' matches anything
            raise RequirementsError(f"cannot tokenise expression: {text!r}")
        pos = m.end()
        kind = m.lastgroup
        val = m.group()
        if kind in ("ws", "comment"):
            continue
        if kind == "other" and val in "\"'":
            raise RequirementsError(f"unterminated string in expression: {text!r}")
        if kind == "other" and val == "/" and text.startswith("/*", m.start()):
            raise RequirementsError(f"unterminated comment in expression: {text!r}")
        if kind == "op" and val in _OPEN:
            yield kind, val, depth
            stack.append(_OPEN[val])
            depth += 1
            continue
        if kind == "op" and val in _CLOSE:
            if not stack or stack.pop() != val:
                raise RequirementsError(f"unbalanced {val!r} in expression: {text!r}")
            depth -= 1
            yield kind, val, depth
            continue
        yield kind, val, depth
    if stack:
        raise RequirementsError(f"unbalanced brackets in expression: {text!r}")


def _one_line(text: str) -> str:
    # classad2's unparse escapes newlines inside string literals, so raw
    # newlines (from nested ads/lists) are always between tokens.
    import re
    return re.sub(r"\s*\n\s*", " ", text).strip()


def parse_expr(text: str):  # -> classad2.ExprTree
    """Parse ``text`` as exactly one ClassAd expression or raise RequirementsError."""
    import classad2
    if not isinstance(text, str):
        raise RequirementsError(f"expression must be a string, not {type(text).__name__}: {text!r}")
    flat = " ".join(text.split("\n"))
    if not text.strip():
        raise RequirementsError("empty expression")
    for kind, val, depth in _tokens(text):
        if depth == 0 and kind == "op" and val in (";", ","):
            raise RequirementsError(f"unparsable expression (stray {val!r}): {flat}")
    try:
        # newline before ']' so that a trailing '//' comment cannot swallow it
        ad = classad2.ClassAd("[__cp_expr = " + text + "\n]")
    except Exception:
        raise RequirementsError(f"unparsable expression: {flat}") from None
    if len(ad) != 1 or "__cp_expr" not in ad:
        raise RequirementsError(f"unparsable expression: {flat}")
    expr = ad.lookup("__cp_expr")
    if not isinstance(expr, classad2.ExprTree):
        # a literal: lookup() gave its value; the text is known to be one
        # whole expression, so parse it as a tree
        expr = classad2.ExprTree(text + "\n")
    return expr


def normalize(text: str) -> str:
    """classad2's canonical one-line unparse of ``text`` (validated)."""
    return _one_line(str(parse_expr(text)))


def _key(text: str) -> tuple:
    """Comparison key: tokens, with names/keywords case-folded (ClassAd names and
    true/false/undefined are case-insensitive), string literals kept exact, and
    'is'/'isnt' the same as '=?='/'=!=' (classad2 unparses these as those)."""
    out = []
    for kind, val, _ in _tokens(text):
        if kind in ("word", "qname"):
            val = val.lower()
            val = {"is": "=?=", "isnt": "=!="}.get(val, val) if kind == "word" else val
        out.append(val)
    return tuple(out)


def _strip_parens(text: str) -> str:
    text = text.strip()
    while text.startswith("(") and text.endswith(")"):
        # do the outer parentheses enclose the whole text?
        toks = list(_tokens(text))
        closes_at_end = [i for i, (k, v, d) in enumerate(toks) if k == "op" and v == ")" and d == 0]
        if closes_at_end != [len(toks) - 1]:
            break
        text = text[1:-1].strip()
    return text


def conjuncts(text: str, canonical: bool = False) -> list[str]:
    """Top-level '&&' conjuncts of ``text`` (normalised, outer parentheses removed,
    parenthesised '&&' chains flattened).

    Uses ClassAd precedence: '?:'/'?' and '||' bind looser than '&&', so if either
    appears at the top level the whole expression is a single conjunct.
    ``canonical``: ``text`` is already an unparse by HTCondor (a job ad's own
    value), so only the lexer checks it and classad2 is not imported.
    """
    norm = _one_line(text) if canonical else normalize(text)
    toks = list(_tokens(norm))
    top = [v for k, v, d in toks if d == 0 and k == "op"]
    if "||" in top or "?" in top or "?:" in top:
        return [_strip_parens(norm)]
    parts: list[str] = []
    # split the normalised text at top-level '&&' positions
    depth = 0
    start = 0
    i = 0
    while i < len(norm):
        m = _token_re().match(norm, i)
        val = m.group()
        kind = m.lastgroup
        if kind == "op" and val in _OPEN:
            depth += 1
        elif kind == "op" and val in _CLOSE:
            depth -= 1
        elif kind == "op" and val == "&&" and depth == 0:
            parts.append(norm[start:m.start()])
            start = m.end()
        i = m.end()
    parts.append(norm[start:])
    out: list[str] = []
    for part in parts:
        inner = _strip_parens(part)
        # a parenthesised '&&' chain is itself a list of conjuncts: flatten
        out.extend(conjuncts(inner, canonical) if inner != part.strip() else [inner])
    return out


def has_clause(text: str | None, mode: str | CloudMode, canonical: bool = False) -> bool:
    """True if ``text`` already has ``mode``'s clause as a top-level conjunct
    (``canonical``: see conjuncts)."""
    clause = clause_for(mode)
    if clause is None or not text or not text.strip():
        return clause is None
    want = _key(clause)
    return any(_key(c) == want for c in conjuncts(text, canonical))


def merge_requirements(orig: str | None, mode: str | CloudMode) -> str | None:
    """Return ``(orig) && (clause)`` for ``mode``.

    * ``orig`` None/blank -> just the clause;
    * mode ``any`` -> ``orig`` unchanged (still validated if given);
    * clause already a top-level conjunct of ``orig`` -> ``orig`` unchanged (idempotent);
    * ``orig`` not a single valid expression -> RequirementsError.
    """
    mode = parse_mode(mode)
    clause = CLAUSES[mode]
    blank = orig is None or not str(orig).strip()
    if not blank:
        norm = normalize(orig)
    if clause is None:
        return orig
    if blank:
        return clause
    if has_clause(norm, mode):
        return orig
    merged = f"({norm}) && ({clause})"
    parse_expr(merged)  # the combination must itself be one valid expression
    return merged
