"""Why no VM: the reasons a cycle held something back, and the idle jobs no
entry's template can run, with the first clause of the job's Requirements
that fails against it (like ``condor_q -better-analyze``, on our templates).

``Reasons`` logs each reason once when it appears and once when it clears
(while it holds, only at debug level), and keeps the current set for the
provisioner's ad and ``condor_cloud status``.
"""

from __future__ import annotations

import logging
import re
from typing import Dict, Iterable, List, Mapping, Tuple

__all__ = ["Reasons", "conjuncts", "first_failure", "unmatched_key", "MAX_SHOWN"]

#: At most this many reasons go in the provisioner's ad (the log has all).
MAX_SHOWN = 20


def conjuncts(expr: str) -> List[str]:
    """The top-level ``&&`` clauses of a ClassAd expression's text."""
    out, depth, quoted, start, i = [], 0, False, 0, 0
    while i < len(expr):
        c = expr[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and expr.startswith("&&", i):
            out.append(expr[start:i])
            start = i + 2
            i += 1
        i += 1
    out.append(expr[start:])
    flat = []
    for clause in (c.strip() for c in out if c.strip()):
        # A parenthesised conjunction: its own clauses (condor_submit nests them).
        inner = conjuncts(clause[1:-1]) if _wrapped(clause) else [clause]
        flat += inner if len(inner) > 1 else [clause]
    return flat


def _wrapped(clause: str) -> bool:
    """One pair of parentheses around the whole clause."""
    if not (clause.startswith("(") and clause.endswith(")")):
        return False
    depth, quoted = 0, False
    for i, c in enumerate(clause):
        if quoted:
            quoted = c != '"'
        elif c == '"':
            quoted = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0 and i < len(clause) - 1:
                return False
    return True


def first_failure(job, machine) -> str:
    """The first clause of the job's Requirements that is not true on
    ``machine`` (the text, shortened), or why else they do not match."""
    import classad2
    req = job.lookup("Requirements") if "Requirements" in job else None
    if req is None:
        return "the job has no Requirements"
    for clause in conjuncts(str(req)):
        try:
            value = classad2.ExprTree(clause).eval(job, machine)
        except Exception:  # a clause we cannot evaluate alone: not the culprit
            continue
        if value is not True:
            return clause if len(clause) <= 100 else clause[:97] + "..."
    mine = machine.lookup("Requirements") if "Requirements" in machine else None
    if mine is not None and str(mine) != "true":
        text = str(mine)
        for name in re.findall(r"MY\.(\w+)", text):  # show what the names stand for
            if name in machine and not str(machine.lookup(name)).startswith("ifThenElse"):
                text = text.replace(f"MY.{name}", f"{name} ({machine.lookup(name)})")
        return f"the node's Requirements: {text}"
    return "the machine's Requirements"


def unmatched_key(job) -> str:
    """The job shape an admin recognises (what it asks for)."""
    parts = []
    for attr in ("RequestCpus", "RequestMemory", "RequestDisk", "RequestGPUs"):
        try:
            value = job.eval(attr) if attr in job else None
        except Exception:
            value = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            parts.append(f"{attr}={int(value)}")
    return " ".join(parts) or "no resource requests"


def never_cloud(clauses: Iterable[str]) -> bool:
    """Every failing clause is about IsCloudNode: a job kept off cloud nodes
    on purpose (never-cloud mode), not one that a better entry could run."""
    clauses = list(clauses)
    return bool(clauses) and all("IsCloudNode" in c for c in clauses)


class Reasons:
    """The current reasons of one kind (holds, unmatched jobs), keyed so a
    reason whose numbers change (job counts, ages) is still the same one."""

    def __init__(self, log: logging.Logger, what: str, cleared: str):
        self.log, self.what, self.cleared = log, what, cleared
        self.current: Dict[Tuple[str, str], str] = {}

    def update(self, reasons: Mapping[Tuple[str, str], str]) -> None:
        """``reasons``: (entry, key) -> text for this cycle."""
        for key, text in reasons.items():
            level = logging.DEBUG if key in self.current else logging.INFO
            self.log.log(level, "%s%s: %s", self.what, f" ({key[0]})" if key[0] else "", text)
        for key in sorted(set(self.current) - set(reasons)):
            self.log.info("%s%s: %s", self.cleared, f" ({key[0]})" if key[0] else "",
                          self.current[key])
        self.current = dict(reasons)

    def shown(self) -> List[str]:
        """'entry: text' lines for the ad and status, at most MAX_SHOWN."""
        lines = [f"{entry}: {text}" if entry else text
                 for (entry, _), text in sorted(self.current.items())]
        return [line[:300] for line in lines[:MAX_SHOWN]]
