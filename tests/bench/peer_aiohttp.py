"""A plain Python exporter of the same data, for the CPU comparison in the
README (issue 11: msgext should cost at most a quarter of such a peer).

What a team would write without msgext: asyncio + aiohttp, a limiter that
hands out call slots at --rate, a fixed number of calls in flight, paging
with StartSeq = last Seq (dropping repeated keys), retries of 10002 and
quota codes, and one Parquet file written with pyarrow at the end. No WAL,
no resume, no error report: it does less than msgext.

    python -m venv /tmp/peer && /tmp/peer/bin/pip install aiohttp pyarrow
    cargo bench --bench throughput -- peer   # runs it with /tmp/peer/bin/python

Prints one JSON line: calls, rows, elapsed, and the CPU (user + system) of
the whole process and of what came after the imports and the input.
"""

import argparse
import asyncio
import base64
import csv
import hashlib
import hmac
import json
import os
import random
import resource
import time
import zlib

import aiohttp
import pyarrow as pa
import pyarrow.parquet as pq


def usersig(sdkappid, key, identifier, expire=86400):
    """TLSSigAPIv2, as ../shared/api/chat-rest-api.md describes it."""
    now = int(time.time())
    content = (
        f"TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\n"
        f"TLS.time:{now}\nTLS.expire:{expire}\n"
    )
    sig = base64.b64encode(
        hmac.new(key.encode(), content.encode(), hashlib.sha256).digest()
    ).decode()
    doc = {
        "TLS.ver": "2.0",
        "TLS.identifier": identifier,
        "TLS.sdkappid": int(sdkappid),
        "TLS.expire": expire,
        "TLS.time": now,
        "TLS.sig": sig,
    }
    packed = base64.b64encode(zlib.compress(json.dumps(doc).encode())).decode()
    return packed.replace("+", "*").replace("/", "-").replace("=", "_")


class Limiter:
    def __init__(self, rate):
        self.gap = 1.0 / rate if rate > 0 else 0.0
        self.next = 0.0

    async def acquire(self):
        if self.gap == 0.0:
            return
        now = time.monotonic()
        slot = max(self.next, now)
        self.next = slot + self.gap
        if slot > now:
            await asyncio.sleep(slot - now)


RETRY = {10002, 10006, 60007, 90994, 80002}


async def fetch_message(session, url, params, limiter, msg, rows):
    seen = set()
    start = None
    calls = 0
    while True:
        body = {"From_Account": msg[0], "To_Account": msg[1], "MsgKey": msg[2]}
        if start is not None:
            body["StartSeq"] = start
        for attempt in range(8):
            await limiter.acquire()
            calls += 1
            q = dict(params, random=str(random.getrandbits(32)))
            async with session.post(url, params=q, json=body) as resp:
                answer = await resp.json(content_type=None)
            code = answer.get("ErrorCode", -1)
            if code == 0:
                break
            if code not in RETRY:
                return calls
            await asyncio.sleep(0.05 * (attempt + 1))
        else:
            return calls
        clear = answer.get("ClearSeq", 0)
        last = None
        for p in answer.get("ExtensionList") or []:
            last = p["Seq"]
            if p["Seq"] <= clear or p["Key"] in seen:
                continue
            seen.add(p["Key"])
            rows.append((msg[0], msg[1], msg[2], p["Key"], p["Value"], p["Seq"]))
        if answer.get("CompleteFlag", 1) == 1 or last is None or last == start:
            return calls
        start = last


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sdkappid", default="1400000000")
    ap.add_argument("--identifier", default="administrator")
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--concurrency", type=int, default=64)
    a = ap.parse_args()
    key = os.environ["MSGEXT_SECRET_KEY"]
    with open(a.input, newline="") as f:
        msgs = [
            (r.get("From_Account") or "", r["To_Account"], r["MsgKey"])
            for r in csv.DictReader(f)
        ]
    url = a.endpoint.rstrip("/") + "/v4/openim_msg_ext_http_svc/get_key_values"
    params = {
        "sdkappid": a.sdkappid,
        "identifier": a.identifier,
        "usersig": usersig(a.sdkappid, key, a.identifier),
        "contenttype": "json",
    }
    limiter = Limiter(a.rate)
    rows = []
    todo = iter(msgs)
    calls = 0
    started = time.monotonic()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)

    async def worker(session):
        nonlocal calls
        for msg in todo:
            n = await fetch_message(session, url, params, limiter, msg, rows)
            calls += n

    conn = aiohttp.TCPConnector(limit=a.concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:
        await asyncio.gather(*(worker(session) for _ in range(a.concurrency)))
    cols = list(zip(*rows)) if rows else [[]] * 6
    names = ["from_account", "to_account", "msg_key", "key", "value", "seq"]
    table = pa.table({n: list(c) for n, c in zip(names, cols)})
    pq.write_table(table, a.out, compression="zstd")
    elapsed = time.monotonic() - started
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "calls": calls,
                "rows": len(rows),
                "elapsed_secs": elapsed,
                "cpu_secs": ru.ru_utime + ru.ru_stime,
                "cpu_after_start_secs": ru.ru_utime
                + ru.ru_stime
                - ru0.ru_utime
                - ru0.ru_stime,
            }
        )
    )


asyncio.run(main())
