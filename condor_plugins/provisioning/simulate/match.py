"""Which nodes each job of a trace could run on, decided once per distinct
job (shape, mode, Requirements) before a run.

* Mode ``local`` runs on site nodes only, ``cloud`` on cloud nodes only,
  ``any`` on both (a job without ``CloudMode`` takes the default mode).
* A cloud entry serves a job whose shape fits one of its nodes and, if the
  job's ad has Requirements, that the entry's template ad (the one the real
  provisioner matches, observe.template_ad) matches.
* A site node serves any job of mode local or any that fits it: the
  history's Requirements were already satisfied there.

A job no node could ever run is left out with the reason.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple, Union

from .trace import Job

__all__ = ["classify"]

Key = Tuple[int, int, str, Tuple[str, ...], bool]


def classify(jobs: Sequence[Job], entries: Sequence, site: Sequence[Tuple[int, int]],
             templates: Mapping[str, object], default_mode: str = "any"
             ) -> List[Union[Key, str]]:
    """Per job: (cpus, memory, mode, entries, site ok), or why it is left out.
    ``templates``: entry name -> template ClassAd (only needed for jobs with
    Requirements)."""
    site_cpus = max((c for c, _ in site), default=0)
    cache: Dict[tuple, Union[Key, str]] = {}
    out: List[Union[Key, str]] = []
    for job in jobs:
        mode = job.mode or default_mode
        seen = (job.cpus, job.memory_mb, mode, job.requirements)
        key = cache.get(seen)
        if key is None:
            key = cache[seen] = _classify(job, mode, entries, site, site_cpus, templates)
        out.append(key)
    return out


def _classify(job: Job, mode: str, entries, site, site_cpus, templates) -> Union[Key, str]:
    cloud: List[str] = []
    if mode != "local":
        for e in entries:
            usable = max(0, e.memory_mb - e.memory_reserve)
            if job.cpus > e.cpus or job.memory_mb > usable:
                continue
            if job.ad is not None and e.name in templates and not _matches(templates[e.name],
                                                                           job.ad):
                continue
            cloud.append(e.name)
    site_ok = mode != "cloud" and site_cpus > 0 and any(
        job.cpus <= c and job.memory_mb <= m for c, m in site)
    if not cloud and not site_ok:
        if mode == "local":
            return "mode local, larger than every site node (or no site capacity)"
        if mode == "cloud":
            return "mode cloud, no entry's node fits or matches it"
        return "no site node fits it, and no entry's node fits or matches it"
    return (job.cpus, job.memory_mb, mode, tuple(cloud), site_ok)


def _matches(template, ad) -> bool:
    try:
        return bool(template.matches(ad))
    except Exception:  # an expression the bindings cannot evaluate: no match
        return False
