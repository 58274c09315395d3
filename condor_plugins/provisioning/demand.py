"""Which idle jobs a cloud node would really serve (issue 15): pure functions
of ClassAds, used by observe.py.

* A job whose Requirements demand a cloud node (mode ``cloud``) counts at
  once.  A job the site's own nodes could run as well (mode ``any``: it
  matches the entry's template with ``IsCloudNode`` false) counts only once it
  has been idle for CLOUD_PLUGINS_BURST_DELAY and the negotiator rejected its
  autocluster for lack of a match (``LastRejMatchReason``).  Mode ``local``
  never matches a template.
* Jobs the negotiator holds back for the submitter's priority, a group quota
  or a limit would not start on a new node either: they do not count.
* Once a node of an entry has joined, the entry's jobs are matched against
  that node's real slot ad (whole-node resources), not only the template; a
  job the template matched but the node does not is reported with the
  machine attributes that fail (and feeds the churn brake in the policy).
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

from .explain import first_failure, unmatched_key
from .state import Demand

__all__ = ["held_back", "site_twin", "whole_node", "transparent", "group_jobs", "NO_MATCH"]

#: The negotiator's LastRejMatchReason when no machine matched.
NO_MATCH = "no match found"
#: Words of a LastRejMatchReason that mean "held back", not "nothing matched".
_HELD = ("priority", "quota", "limit")


def held_back(reason: Optional[str]) -> bool:
    return bool(reason) and any(w in reason.lower() for w in _HELD)


def site_twin(template):
    """The template as a site node would look (not a cloud node)."""
    twin = _copy(template)
    twin["IsCloudNode"] = False
    return twin


def whole_node(slot_ad):
    """A joined node's partitionable slot ad with its whole resources, so a job
    is matched against the node, not against what its running jobs left."""
    ad = _copy(slot_ad)
    for attr in ("Cpus", "Memory", "Disk", "GPUs"):
        total = slot_ad.get(f"TotalSlot{attr}")
        if isinstance(total, (int, float)) and not isinstance(total, bool):
            ad[attr] = total
    return ad


def _copy(ad):
    import classad2
    out = classad2.ClassAd()
    out.update(ad)  # expressions stay expressions
    return out


def transparent(job, templates: Iterable, twins: Iterable) -> bool:
    """True if a cloud node would run ``job`` but a site node could too (mode ``any``)."""
    return any(t.matches(job) for t in templates) and any(t.matches(job) for t in twins)


def _attrs_named(clause: str, machine) -> str:
    """The machine's values of the attributes ``clause`` names."""
    words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", clause)}
    shown = []
    for key in sorted(machine.keys()):
        if key.lower() in words or f"target.{key.lower()}" in words:
            value = machine.get(key)
            shown.append(f"{key} = {value!r}" if isinstance(value, str) else f"{key} = {value}")
    return ", ".join(shown[:4]) or "(the node does not define them)"


def group_jobs(rows: Iterable[Tuple[object, int]], templates: Mapping[str, object],
               real: Mapping[str, object]) -> Tuple[Tuple[Demand, ...], Dict[str, str],
                                                   List[Tuple[object, int]]]:
    """Idle jobs (ad, count) as Demand groups: each shape with every entry
    whose node would run it (``real[entry]``, a joined node's whole-node ad,
    else the entry's template).  Also: entry -> why jobs its template matched
    do not match its joined node (one line), and the rows no entry matched."""
    groups: Dict[Tuple[int, int, Tuple[str, ...]], int] = {}
    mismatch: Dict[str, Dict[str, int]] = {}
    unmatched: List[Tuple[object, int]] = []
    for row, count in rows:
        if not count:
            continue
        entries, hit = [], False
        for entry, template in templates.items():
            if not row.matches(template):
                continue  # the entry's own Requirements (a pilot's walltime) refuse it
            node = real.get(entry)
            if node is None:
                if template.matches(row):
                    entries.append(entry)
            elif node.matches(row):
                entries.append(entry)
            elif template.matches(row):
                hit = True
                clause = first_failure(row, node)
                why = (f"{unmatched_key(row)}: needs {clause}; the node has "
                       f"{_attrs_named(clause, node)}")
                mismatch.setdefault(entry, {})
                mismatch[entry][why] = mismatch[entry].get(why, 0) + count
        if entries:
            key = (_int(row, "RequestCpus", 1), _int(row, "RequestMemory", 0), tuple(entries),
                   max(runtime(row, templates[e]) for e in entries))
            groups[key] = groups.get(key, 0) + count
        elif not hit:
            unmatched.append((row, count))
    jobs = tuple(Demand(n, c, m, e, r) for (c, m, e, r), n in sorted(groups.items()))
    said = {entry: "; ".join(f"{n} idle job(s) ({why})" for why, n in sorted(by.items()))[:300]
            for entry, by in sorted(mismatch.items())}
    return jobs, said, unmatched


def runtime(row, template) -> int:
    """Seconds ``row``'s job runs as the entry's nodes reckon it (their
    ``CloudJobRuntime``, a pilot's, against the job), else 0: no limit."""
    expr = template.lookup("CloudJobRuntime") if "CloudJobRuntime" in template else None
    if expr is None:
        return 0
    try:
        value = expr.eval(template, row)
        return max(0, int(value)) if _number(value) else 0
    except (TypeError, ValueError, RuntimeError):
        return 0


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(row, attr: str, default: int) -> int:
    try:
        return max(default if attr == "RequestCpus" else 0, int(row.eval(attr)))
    except (TypeError, ValueError):
        return default
