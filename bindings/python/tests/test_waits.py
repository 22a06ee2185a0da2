"""Interruptible waits: Ctrl+C in a child process, and asyncio."""

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import coord
from conftest import child_env, waiters, wait_until

CHILD = textwrap.dedent("""
    import sys, time, coord
    try:
        coord.write(sys.argv[1], timeout=60)
        print("granted", flush=True)
    except KeyboardInterrupt:
        print("interrupted", time.monotonic(), flush=True)
    sys.stdin.read()   # stays alive until the test has looked at the queue
""")


def test_ctrl_c_during_a_wait_raises_at_once_and_leaves_no_waiter(broker, key):
    holder = coord.Client()
    lease = holder.write(key)
    child = subprocess.Popen([sys.executable, "-c", CHILD, key], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        wait_until(lambda: waiters(holder, child.pid), what="the child to queue")
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        line = child.stdout.readline().split()
        assert line and line[0] == "interrupted", f"the child should say interrupted: {line}"
        latency = float(line[1]) - sent
        print(f"Ctrl+C to KeyboardInterrupt: {latency * 1000:.1f} ms")
        assert latency < 0.5, f"KeyboardInterrupt took {latency * 1000:.0f} ms (bound 100 ms, "\
                              "asserted generously)"
        assert child.poll() is None, "the child must still be alive for the next check"
        assert not waiters(holder, child.pid), "the interrupted request must leave the queue"
        out = broker.coordctl("list")
        assert f"{child.pid}" not in out.stdout, f"coordctl list still shows it:\n{out.stdout}"
    finally:
        child.stdin.close()
        child.wait(30)
        child.stdout.close()
        lease.release()
        holder.close()


def test_asyncio_loop_runs_while_a_coroutine_waits(broker, key):
    holder = coord.Client()

    async def main():
        lease = holder.write(key)
        ticks = 0
        order = []

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        async def waiter(name):
            async with coord.write_async(key, timeout=30) as l:
                order.append(name)
                assert l.valid
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        a = asyncio.create_task(waiter("a"))
        while not waiters(holder):
            await asyncio.sleep(0.005)
        b = asyncio.create_task(waiter("b"))
        while len(waiters(holder)) < 2:
            await asyncio.sleep(0.005)
        before = ticks
        while ticks < before + 5:  # the loop is not blocked by the waits
            await asyncio.sleep(0.005)
        assert not a.done() and not b.done(), "both must still wait"
        lease.release()
        await asyncio.wait_for(asyncio.gather(a, b), 30)
        t.cancel()
        return order

    assert asyncio.run(main()) == ["a", "b"], "waiters must be served in FIFO order"
    holder.close()


def test_cancelling_an_async_wait_leaves_no_waiter(broker, key):
    holder = coord.Client()

    async def main():
        lease = holder.write(key)
        task = asyncio.create_task(coord.read_async(key).__aenter__())
        while not waiters(holder):
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not waiters(holder), "a cancelled wait must leave the broker's queue"
        lease.release()
        async with coord.read_async(key, timeout=0):
            pass

    asyncio.run(main())
    holder.close()


def test_async_timeout_raises_timeout(broker, key):
    holder = coord.Client()
    lease = holder.write(key)

    async def main():
        with pytest.raises(coord.Timeout):
            await coord.write_async(key, timeout=0.05)

    asyncio.run(main())
    lease.release()
    holder.close()


def test_recalled_helper_returns_when_someone_waits(broker, key):
    other = coord.Client()

    async def main():
        lease = await coord.read_async(key)
        waiting = asyncio.create_task(asyncio.to_thread(other.write, key, 10))
        await asyncio.wait_for(coord.recalled(lease), 10)
        assert lease.recalled
        lease.release()
        (await waiting).release()

    asyncio.run(main())
    other.close()
