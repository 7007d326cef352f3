"""A local archive.org for iabulk's integration tests, demo and benchmarks.

No machine here reaches archive.org, so this package stands in for it over
real sockets: the real ``internetarchive`` library and the real ``iabulk``
command talk to it through the standard proxy variables, unchanged.

- :class:`Corpus` - deterministic items and file bodies (:mod:`.corpus`);
- :class:`ArchiveStandin` - the proxy server (:mod:`.server`, :mod:`.api`);
- :class:`FaultPlan` - seeded and targeted fault injection (:mod:`.faults`).

Run it in its own process with ``python -m tests.standin --preset NAME``.
"""

from .corpus import PRESETS, Corpus
from .faults import FaultPlan
from .server import ArchiveStandin

__all__ = ["PRESETS", "ArchiveStandin", "Corpus", "FaultPlan"]
