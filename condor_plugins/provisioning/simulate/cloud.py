"""How one entry's simulated cloud behaves (``--model ENTRY:KEY=V``): boot
time distribution, create failures, spot interruptions, retirement and
deletion delays, price."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Optional

__all__ = ["Dist", "CloudModel", "CreateFailed"]


class Dist:
    """A duration distribution: ``90`` (fixed), ``60-180`` (uniform),
    ``lognormal:MEDIAN:SIGMA``, ``normal:MEAN:SD`` or ``choice:A/B/C``."""

    def __init__(self, spec: str):
        self.spec = str(spec).strip()
        kind, _, rest = self.spec.partition(":")
        try:
            if not rest and "-" in kind[1:]:
                lo, hi = (float(x) for x in kind.split("-", 1))
                self._draw = lambda r: r.uniform(lo, hi)
            elif not rest:
                value = float(kind)
                self._draw = lambda r: value
            elif kind == "lognormal":
                median, sigma = (float(x) for x in rest.split(":"))
                self._draw = lambda r: r.lognormvariate(math.log(median), sigma)
            elif kind == "normal":
                mean, sd = (float(x) for x in rest.split(":"))
                self._draw = lambda r: r.gauss(mean, sd)
            elif kind == "choice":
                values = [float(x) for x in rest.split("/") if x]
                self._draw = lambda r: r.choice(values)
            else:
                raise ValueError
            self._draw(random.Random(0))
        except (ValueError, IndexError, TypeError):
            raise ValueError(f"{self.spec!r} is not a duration distribution (90, 60-180, "
                             "lognormal:MEDIAN:SIGMA, normal:MEAN:SD, choice:A/B/C)") from None

    def sample(self, rng: random.Random) -> float:
        return max(0.0, self._draw(rng))


@dataclass
class CloudModel:
    """How one entry's simulated cloud behaves."""
    boot: Dist = Dist("120")           # create -> joined the pool
    fail: float = 0.0                  # probability that a create fails
    interrupt: float = 0.0             # spot interruptions per node-hour
    shutdown: float = 30.0             # terminate -> deleted (still billed)
    retire: float = 30.0               # drain -> the node retires (pulls the request
                                       # within CONTROL_PERIOD, 60 s: 30 s on average)
    notice: float = 120.0              # interruption notice -> deleted
    price: Optional[float] = None      # per hour; None: the entry's COST_PER_HOUR


class CreateFailed(Exception):
    """A simulated create failure (capacity)."""
