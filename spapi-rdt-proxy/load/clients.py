#!/usr/bin/env python3
"""Idle and slow clients for the soak in compare.sh.

Holds IDLE connections open without sending a byte, and SLOW connections that trickle a request
head one byte a second; a connection the server closes is opened again, so the pressure stays the
same until SIGTERM. Writes "ready" to READY_FILE once every connection is open, and its counts as
one line on stdout when it stops.

    clients.py HOST PORT IDLE SLOW READY_FILE
"""

import asyncio
import signal
import sys

HEAD = (
    "GET /catalog/2022-04-01/items/B07N4M94KL?marketplaceIds=ATVPDKIKX0DER HTTP/1.1\r\n"
    "Host: 127.0.0.1\r\n\r\n"
).encode()

counts = {
    "idle_opened": 0,
    "idle_closed_by_server": 0,
    "slow_opened": 0,
    "slow_closed_by_server": 0,
    "slow_answered": 0,
    "connect_errors": 0,
}


async def idle(host, port, opened):
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            counts["connect_errors"] += 1
            await asyncio.sleep(1)
            continue
        counts["idle_opened"] += 1
        opened.release()
        try:
            await reader.read()  # returns b"" once the server closes
            counts["idle_closed_by_server"] += 1
        except OSError:
            counts["idle_closed_by_server"] += 1
        finally:
            writer.close()


async def slow(host, port, opened):
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            counts["connect_errors"] += 1
            await asyncio.sleep(1)
            continue
        counts["slow_opened"] += 1
        opened.release()
        try:
            for byte in HEAD:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(1)
            line = await reader.readline()
            if line:
                counts["slow_answered"] += 1
            else:
                counts["slow_closed_by_server"] += 1
        except OSError:
            counts["slow_closed_by_server"] += 1
        finally:
            writer.close()


async def main():
    host, port, n_idle, n_slow, ready_file = sys.argv[1:6]
    port, n_idle, n_slow = int(port), int(n_idle), int(n_slow)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    opened = asyncio.Semaphore(0)
    tasks = [asyncio.create_task(idle(host, port, opened)) for _ in range(n_idle)]
    tasks += [asyncio.create_task(slow(host, port, opened)) for _ in range(n_slow)]
    for _ in range(n_idle + n_slow):
        await opened.acquire()
    with open(ready_file, "w") as f:
        f.write("ready\n")
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(" ".join(f"{k}={v}" for k, v in counts.items()), flush=True)


asyncio.run(main())
