"""A bidirectional stream's answers, one per message, whatever the protocol: shared by the
gateway.v1 ``PredictStream`` and the Open Inference Protocol's ``ModelStreamInfer``.

Messages are read as they come and each is answered by a task of its own, at most
``max_pending`` unanswered at once (reading waits for room). A message that does not parse
gets ``bad(count, error)``'s answer; every other gets ``answer(msg)``'s (which makes its own
error answers), or ``cancelled(msg)``'s when its task is cancelled other than by the stream
closing. Answers are yielded as they are ready; once the client has sent everything, the
stream ends after the last answer. On close (the client gone) nothing is left pending.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ..api import GatewayError


async def answer_each(request_iterator: AsyncIterator[bytes], *, max_pending: int,
                      parse: Callable[[bytes], Any], answer: Callable[[Any], Awaitable[bytes]],
                      cancelled: Callable[[Any], bytes],
                      bad: Callable[[int, GatewayError], bytes]) -> AsyncIterator[bytes]:
    answers: asyncio.Queue[bytes] = asyncio.Queue()  # serialized answers
    tasks: set[asyncio.Task] = set()
    room = asyncio.Semaphore(max_pending)
    closing = False

    async def one(msg) -> None:
        try:
            out = await answer(msg)
        except asyncio.CancelledError:
            if closing:
                raise
            out = cancelled(msg)  # not the stream's doing (it cancels only when closing): still answered
        answers.put_nowait(out)

    async def read() -> int:
        count = 0
        async for raw in request_iterator:
            count += 1
            await room.acquire()
            try:
                msg = parse(raw)
            except GatewayError as exc:
                answers.put_nowait(bad(count, exc))
                continue
            task = asyncio.create_task(one(msg))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return count

    reader = asyncio.create_task(read())
    getter: asyncio.Future | None = None
    sent = 0
    try:
        while not reader.done():
            getter = asyncio.ensure_future(answers.get())
            done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield getter.result()
                sent += 1
                room.release()
            else:
                getter.cancel()
        total = reader.result()  # re-raises a read error
        while sent < total:
            yield await answers.get()
            sent += 1
    finally:  # the client may have gone: leave nothing pending behind
        closing = True
        if getter is not None:
            getter.cancel()
        reader.cancel()
        for task in list(tasks):
            task.cancel()
