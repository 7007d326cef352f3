"""Operations the engine can run: one worker class per operation."""

from iabulk.workers.base import BaseWorker, StopRun, WorkerResult

__all__ = ["BaseWorker", "StopRun", "WorkerResult"]
