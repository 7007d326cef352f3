"""iabulk: bulk, resumable, concurrent downloads from archive.org.

Every job is recorded in an append-only JSONL job log, read back in one pass
by a Rust core, so an interrupted run resumes where it stopped.

    from iabulk import JobLog
    JobLog("nasa.jsonl").status()
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("iabulk")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

from iabulk._native import Bitmap, IdSet
from iabulk.disk import DiskPool
from iabulk.engine import BulkEngine, RunSummary
from iabulk.joblog import JobLog
from iabulk.workers.base import BaseWorker, StopRun, WorkerResult
from iabulk.workers.download import DownloadOptions, DownloadWorker

__all__ = [
    "__version__",
    "JobLog",
    "Bitmap",
    "IdSet",
    "BulkEngine",
    "RunSummary",
    "DiskPool",
    "BaseWorker",
    "WorkerResult",
    "StopRun",
    "DownloadWorker",
    "DownloadOptions",
]
