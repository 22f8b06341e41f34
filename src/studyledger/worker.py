"""A second process that prepares what this one stores next: both cores on one job.

Reading a file into a ledger is two halves of about the same cost: turning lines into
events (parse, adapt, encode canonically, hash) and storing them (chain, insert, fold,
commit); so is rebuilding the projections (read, decompress and check stored bodies;
fold and write them). :class:`Worker` runs the first half in a forked child, one batch
ahead, while this process stores the batch before: the child sends each batch whole, in
order, through a pipe, and this process stores them one by one as before, so what is
committed is exactly what one process would have committed. The child writes nothing
anywhere but the pipe: killed at any moment, it takes only batches nothing was stored
of, and :meth:`Worker.__iter__` says so by raising :class:`WorkerLost`; the caller goes
on from its last batch by itself.

A child is forked, never spawned (a fork costs milliseconds, a fresh interpreter a
tenth of a second and every import again), and only from a process with one thread:
a fork copies the memory of one thread only, and a lock another thread held at that
moment would stay held in the child for ever.
"""

from __future__ import annotations

import fcntl
import gc
import multiprocessing
import os
import pickle
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_BATCH, _DONE, _FAILED = 0, 1, 2
_END = object()


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for one batch of lines.

    A batch builds tens of thousands of objects that live until it is committed, and
    none of them in a cycle; the collections their allocation sets off walk every live
    object of the process again and again (3-6 us of a trace line's 50 in one process).
    The collector runs again after each batch, so a cycle made meanwhile is still freed.
    A collector already paused by the program stays so.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class WorkerLost(Exception):
    """The worker ended without saying it was done (killed, out of memory), or never started."""


def can_fork() -> bool:
    """Whether this process may fork a worker: Linux, two processors it may run on, no
    thread but this one, and not itself a daemonic multiprocessing worker (which may not
    have children).

    A program with threads (the watcher's observer, the dashboard) converts in process.
    """
    return (sys.platform == "linux" and len(os.sched_getaffinity(0)) >= 2 and threading.active_count() == 1
            and not multiprocessing.current_process().daemon)


class Worker(Generic[T]):
    """Runs ``produce`` in a forked child; iterating gives what it yields, in order.

    Args:
        produce: Makes the items (in the child, over the parent's memory as it was at the fork).
        encode: Turns an item into plain values that pickle quickly (tuples, lists, text, in
            the child).
        decode: Turns those back into an item (in this process).
        finish: Called in the child after the last item; what it returns (plain values) is
            :attr:`result` once iteration ends.
        role: What the child does, in its process name and in :class:`WorkerLost`'s words.
        pipe_bytes: What the pipe should hold, when more than Linux's 64 KiB (up to 1 MiB
            without privileges): a child of small items that take a varying time then gets
            several ahead instead of waiting for this process to take each one.

    Use as a context manager: leaving it stops the child whatever happened.
    """

    def __init__(self, produce: Callable[[], Iterator[T]], encode: Callable[[T], Any],
                 decode: Callable[[Any], T], finish: Callable[[], Any], role: str = "ingest",
                 pipe_bytes: int | None = None) -> None:
        self.decode = decode
        self.role = role
        self.result: Any = None
        context = multiprocessing.get_context("fork")
        self._receive, send = context.Pipe(duplex=False)
        if pipe_bytes is not None:
            _widen(send, pipe_bytes)
        self._process = context.Process(target=_run, args=(produce, encode, finish, send, self._receive),
                                        name=f"studyledger-{role}-worker", daemon=True)
        try:
            self._process.start()
        except OSError as exc:  # no process to be had (EAGAIN, ENOMEM): the caller reads alone
            self._receive.close()
            raise WorkerLost(f"no {role} worker could be started ({exc})") from None
        finally:
            send.close()  # only the child writes: its end closing is how a lost child shows

    @property
    def pid(self) -> int | None:
        """The child's process id."""
        return self._process.pid

    def __iter__(self) -> Iterator[T]:
        """The items, as the child sends them.

        Raises:
            WorkerLost: the child ended without finishing (its last items never came).
            Exception: what ``produce`` raised in the child (an OSError reading the file),
                raised again here.
        """
        while True:
            try:
                tag, value = pickle.loads(self._receive.recv_bytes())
            except (EOFError, OSError):
                raise WorkerLost(f"the {self.role} worker ended before its last item") from None
            if tag == _BATCH:
                item = self.decode(value)
                del value  # a batch of big lines is held once, not twice, while it is stored
                yield item
                del item
            elif tag == _DONE:
                self.result = value
                return
            else:
                raise value

    def __enter__(self) -> Worker[T]:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop the child (if it still runs) and reap it."""
        self._receive.close()
        if self._process.is_alive():
            self._process.kill()
        self._process.join()
        self._process.close()


def _widen(end: Connection, size: int) -> None:
    """Let the pipe under ``end`` hold ``size`` bytes, where the system allows it."""
    try:
        fcntl.fcntl(end.fileno(), fcntl.F_SETPIPE_SZ, size)
    except (AttributeError, OSError):  # not Linux, or a lower limit: the default size serves
        pass


def _run(produce: Callable[[], Iterator[Any]], encode: Callable[[Any], Any], finish: Callable[[], Any],
         send: Connection, parents_end: Connection) -> None:
    """The child: send every item, then the result, or the exception that stopped it."""
    parents_end.close()
    # What the parent built stays as it is: the collector need not walk it again and again.
    gc.freeze()
    try:
        items = produce()
        while True:
            with collector_paused():
                item = next(items, _END)
                if item is _END:
                    break
                payload = pickle.dumps((_BATCH, encode(item)), protocol=pickle.HIGHEST_PROTOCOL)
                del item  # held once, as the bytes sent, while the next one is made
            send.send_bytes(payload)
            del payload
        send.send_bytes(pickle.dumps((_DONE, finish()), protocol=pickle.HIGHEST_PROTOCOL))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the parent stopped listening: it has gone, or it ended this pass
    except BaseException as exc:  # every failure goes to the parent, which raises it
        try:
            failure = pickle.dumps((_FAILED, exc), protocol=pickle.HIGHEST_PROTOCOL)
            pickle.loads(failure)  # an exception whose arguments do not rebuild it is sent in words
        except Exception:
            failure = pickle.dumps((_FAILED, RuntimeError(f"{type(exc).__name__}: {exc}")))
        try:
            send.send_bytes(failure)
        except OSError:
            pass
    finally:
        send.close()
