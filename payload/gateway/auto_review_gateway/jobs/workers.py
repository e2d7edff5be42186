"""The bounded pool of workers that run the queue's jobs (the queue is :mod:`queue`).

A job that fails for a cause that may pass (the forge or the LLM server down, a network
error: see :mod:`retry_policy`) goes back to the queue, due after a jittered exponential
backoff (never shorter than a rate limit's wait: :func:`retry_policy.server_wait`),
until it has had ``max_attempts`` tries; then it is failed. Every retry is
counted in ``auto_review_job_retries_total{cause}`` and logged with its error.

With a store that leases its claims (PostgreSQL, shared by replicas), a heartbeat
thread renews the leases of the jobs running here every third of a lease, and fails
the jobs whose replicas died ``max_attempts`` times (:meth:`Store.reap`).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from auto_review_gateway.core.metrics import Metrics
from auto_review_gateway.jobs.base import MAX_ATTEMPTS, POLL_INTERVAL
from auto_review_gateway.jobs.retry_policy import (
    backoff,
    error_text,
    failure_cause,
    retryable,
    server_wait,
)
from auto_review_gateway.jobs.spec import Job
from auto_review_gateway.jobs.store import Store


def _log(message: str) -> None:
    print(f"auto-review: {message}", file=sys.stderr, flush=True)


class Workers:
    """A bounded pool of threads that claim jobs from a queue and run ``run_job`` on them."""

    def __init__(
        self,
        queue: Store,
        run_job: Callable[[Job], None],
        *,
        concurrency: int,
        metrics: Metrics,
        on_abandoned: Callable[[Job], None] | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        poll_interval: float = POLL_INTERVAL,
        retry_delay: Callable[[int], float] = backoff,
        retry_if: Callable[[BaseException], bool] = retryable,
    ) -> None:
        """Prepare ``concurrency`` workers (nothing runs before :meth:`start`).

        ``on_abandoned`` is called (best effort, in a background thread) with each job
        that :meth:`start` fails for having been interrupted ``max_attempts`` times, e.g.
        to set an ``error`` commit status.
        """
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.queue = queue
        self.run_job = run_job
        self.concurrency = concurrency
        self.metrics = metrics
        self.on_abandoned = on_abandoned
        self.max_attempts = max_attempts
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self.retry_if = retry_if
        self._stopping = threading.Event()
        self._claiming = threading.Lock()  # no claim can start once stop() has begun
        self._guard = threading.Lock()
        self._alive = 0
        self._most_attempts = 0
        self._threads: list[threading.Thread] = []
        self._processor_lock: Any = None
        self._started = False
        self._running_ids: set[int] = set()  # jobs running here, whose leases we renew

    def start(self) -> None:
        """Take the queue's processor lock, put interrupted jobs back in the queue (or fail
        them after ``max_attempts``), then start the workers; they run the oldest jobs
        first. RuntimeError if another process holds the lock."""
        if self._started:
            raise RuntimeError("workers already started")
        self._processor_lock = self.queue.processor_lock()
        try:
            resumed, abandoned = self.queue.recover(self.max_attempts)
        except BaseException:
            self._release_lock()
            raise
        self._started = True
        if resumed:
            _log(f"resuming {len(resumed)} interrupted job(s): {', '.join(map(str, resumed))}")
        for job in abandoned:
            self.metrics.inc("reviews_failed_total", {"cause": "interrupted"})
            _log(f"job {job.id} {job.request.pr} failed: interrupted {job.attempts} times")
        if abandoned and self.on_abandoned is not None:
            threading.Thread(
                target=self._abandon, args=(abandoned,), name="jobs-abandoned", daemon=True
            ).start()
        self.queue.changes.listeners.append(self._refresh_depth)
        self._refresh_depth()
        if self.queue.lease:
            threading.Thread(target=self._heartbeat, name="jobs-heartbeat", daemon=True).start()
        self._alive = self.concurrency
        for i in range(self.concurrency):
            thread = threading.Thread(target=self._loop, name=f"jobs-worker-{i}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, grace: float) -> None:
        """Stop claiming jobs and wait up to ``grace`` s for the running ones to finish.

        Pending jobs stay pending. A job still running after ``grace`` stays "running" in
        the database and is resumed by the next start (its thread is a daemon: it does
        not keep the process alive; if it finishes before the process exits it is still
        marked done).
        """
        with self._claiming:
            self._stopping.set()
        self.queue.changes.bump()
        deadline = time.monotonic() + max(grace, 0.0)
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        still = [t.name for t in self._threads if t.is_alive()]
        if still:
            _log(f"stopped with {len(still)} job(s) still running: they resume at next start")
        else:
            self._release_lock()  # nothing of ours is running any more
        try:
            self.queue.changes.listeners.remove(self._refresh_depth)
        except ValueError:
            pass
        self._refresh_depth()

    def running(self) -> int:
        """Worker threads still alive (after :meth:`stop`: the jobs still running)."""
        return sum(t.is_alive() for t in self._threads)

    # ------------------------------------------------------------------ internals

    def _refresh_depth(self) -> None:
        try:
            self.metrics.set("queue_depth", self.queue.depth())
        except (*self.queue.errors, self.queue.closed_error):
            pass  # closed or unreachable: the last value stays

    def _heartbeat(self) -> None:
        """Renew the leases of the jobs running here; fail those whose replicas died too
        often. Until the pool has stopped and its last job ended."""
        assert self.queue.lease
        every = self.queue.lease / 3
        while not (self._stopping.is_set() and self.running() == 0):
            with self._guard:
                ids = sorted(self._running_ids)
            try:
                if ids:
                    self.queue.renew(ids)
                abandoned = self.queue.reap(self.max_attempts)
            except self.queue.closed_error:
                return
            except self.queue.errors as exc:
                _log(f"cannot renew the leases of {len(ids)} job(s): {exc}")
                abandoned = []
            for job in abandoned:
                self.metrics.inc("reviews_failed_total", {"cause": "interrupted"})
                _log(f"job {job.id} {job.request.pr} failed: interrupted {job.attempts} times")
            if abandoned and self.on_abandoned is not None:
                self._abandon(abandoned)
            time.sleep(every)  # not _stopping.wait: jobs still running after stop() renew too

    def _abandon(self, jobs: list[Job]) -> None:
        assert self.on_abandoned is not None
        for job in jobs:
            try:
                self.on_abandoned(job)
            except Exception as exc:
                _log(f"job {job.id}: could not report its abandonment: {error_text(exc)}")

    def _loop(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    if not self._step():
                        return
                except Exception as exc:  # a bug here must not shrink the pool
                    _log(f"job worker error: {type(exc).__name__}: {exc}")
                    self._stopping.wait(self.poll_interval)
        finally:
            with self._guard:
                self._alive -= 1
                last = self._alive == 0
            if last and self._stopping.is_set():
                self._release_lock()  # the last job of a stopped pool has ended

    def _step(self) -> bool:
        """Claim and run one job, or wait for one; False once stopping."""
        seq = self.queue.changes.current()
        try:
            with self._claiming:
                if self._stopping.is_set():
                    return False
                job = self.queue.claim()
                if job is not None:
                    with self._guard:
                        self._running_ids.add(job.id)
        except self.queue.closed_error:
            return False  # the queue was closed: nothing more to claim
        except self.queue.errors as exc:
            if self._stopping.is_set():
                return False
            _log(f"cannot claim a job: {exc}")
            self._stopping.wait(self.poll_interval)
            return True
        if job is None:
            wait = self.poll_interval
            due = self.queue.next_due()
            if due is not None:
                wait = min(wait, max(due - time.time(), 0.0) + 0.001)
            self.queue.changes.wait(seq, wait)
        else:
            try:
                self._run(job)
            finally:
                with self._guard:
                    self._running_ids.discard(job.id)
        return True

    def _retry(self, job: Job, error: BaseException, what: str, elapsed: float) -> None:
        delay = max(0.0, self.retry_delay(job.attempts), server_wait(error))
        cause = failure_cause(error)
        # Counted before the job is pending again: whoever sees it pending sees the count.
        self.metrics.inc("job_retries_total", {"cause": cause})
        self.metrics.set("last_job_error_timestamp_seconds", time.time(), {"cause": cause})
        self.metrics.observe("review_duration_seconds", elapsed)
        try:
            recorded = self.queue.retry(job.id, error_text(error), delay)
        except (*self.queue.errors, self.queue.closed_error) as exc:
            _log(f"{what}: cannot record its retry ({exc}): it will run again at next start")
            return
        if recorded:
            _log(f"{what} failed, retrying in {delay:.0f} s: {error_text(error)}")
        else:
            _log(f"{what}: was no longer running in the database; result not recorded")

    def _release_lock(self) -> None:
        with self._guard:
            lock, self._processor_lock = self._processor_lock, None
        if lock is not None:
            lock.release()

    def _run(self, job: Job) -> None:
        req = job.request
        self.metrics.inc("reviews_started_total")
        with self._guard:
            self._most_attempts = max(self._most_attempts, job.attempts)
            self.metrics.set("job_attempts_max", self._most_attempts)
        started = time.monotonic()
        error: BaseException | None = None
        try:
            self.run_job(job)
        except BaseException as exc:  # one job's failure never stops the workers
            error = exc
        elapsed = time.monotonic() - started
        what = f"job {job.id} {req.pr} @{req.head_sha[:12] or 'head'} (attempt {job.attempts})"
        again = error is not None and job.attempts < self.max_attempts and self.retry_if(error)
        if again:
            assert error is not None
            self._retry(job, error, what, elapsed)
            return
        # Counted before the job leaves "running", so that whoever sees the queue drained
        # sees its metrics (a crash in between runs the job again and counts it again).
        self.metrics.observe("review_duration_seconds", elapsed)
        if error is None:
            self.metrics.inc("reviews_succeeded_total")
        else:
            cause = failure_cause(error)
            self.metrics.inc("reviews_failed_total", {"cause": cause})
            self.metrics.set("last_job_error_timestamp_seconds", time.time(), {"cause": cause})
        try:
            recorded = self.queue.finish(job.id, None if error is None else error_text(error))
        except (*self.queue.errors, self.queue.closed_error) as exc:
            _log(f"{what}: cannot record its end ({exc}): it will run again at next start")
            return
        if not recorded:
            _log(f"{what}: was no longer running in the database; result not recorded")
        elif error is None:
            _log(f"{what} done in {elapsed:.1f} s")
        else:
            _log(f"{what} failed after {elapsed:.1f} s: {error_text(error)}")
