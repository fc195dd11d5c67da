#!/usr/bin/env python3
"""`uname -a` on every target with asyncssh and asyncio.gather, at a given concurrency: the
reference client of the SSH benchmarks (tests/perf/ssh.rs).

Usage: asyncssh_fanout.py TARGETS KNOWN_HOSTS KEY USER CONCURRENCY
TARGETS has one "address port" per line. Prints one JSON line: ok, failed, seconds, max_rss_kib.
"""
import asyncio
import json
import resource
import sys
import time

import asyncssh


async def main():
    targets = [line.split() for line in open(sys.argv[1]) if line.strip()]
    known_hosts, key, user, concurrency = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    gate = asyncio.Semaphore(concurrency)
    errors = []

    async def one(address, port):
        async with gate:
            try:
                async with asyncssh.connect(address, port=int(port), username=user, client_keys=[key],
                                            known_hosts=known_hosts, agent_path=None) as conn:
                    result = await conn.run("uname -a", check=False)
                    return result.exit_status == 0
            except (OSError, asyncssh.Error) as e:
                errors.append(str(e))
                return False

    started = time.monotonic()
    results = await asyncio.gather(*(one(a, p) for a, p in targets))
    seconds = time.monotonic() - started
    ok = sum(results)
    print(json.dumps({"ok": ok, "failed": len(results) - ok, "seconds": seconds,
                      "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "first_error": errors[0] if errors else None}))


asyncio.run(main())
