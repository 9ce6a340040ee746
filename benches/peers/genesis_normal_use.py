#!/usr/bin/env python3
"""genesis (PyPI, unmodified) in its normal use against one ESL server:
Inbound connect and authenticate, Channel.create (events plain ALL,
create_uuid, filter, a blocking `api originate`), a second connection
answers the self-call's inbound leg, then uuid_dump, uuid_exists and the
hangup. Prints what it saw as one JSON line; real FreeSWITCH and mock-relay
should print the same.

    python3 -m venv /tmp/gv && /tmp/gv/bin/pip install -r benches/peers/requirements-genesis.txt
    /tmp/gv/bin/python benches/peers/genesis_normal_use.py HOST PORT [SELF_SIP]
"""
import asyncio, json, sys
from genesis import Inbound, Channel

host, port = sys.argv[1], int(sys.argv[2])
self_sip = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1:5080"


async def main():
    out = {}
    async with Inbound(host, port, "ClueCon") as answerer:
        parked = asyncio.get_running_loop().create_future()

        async def on_park(e):
            if e.get("Call-Direction") == "inbound" and not parked.done():
                parked.set_result(e.get("Unique-ID"))

        answerer.on("CHANNEL_PARK", on_park)
        await answerer.send("events plain CHANNEL_PARK")

        async def answer():
            b = await asyncio.wait_for(parked, 10)
            r = await answerer.send(f"api uuid_answer {b}")
            out["uuid_answer"] = (r.body or "").strip()

        async with Inbound(host, port, "ClueCon") as client:
            task = asyncio.create_task(answer())
            ch = await asyncio.wait_for(Channel.create(client, f"sofia/external/doggy@{self_sip}"), 15)
            await task
            dump = await client.send(f"api uuid_dump {ch.uuid}")
            body = dump.body or ""
            out["uuid_dump_has_unique_id"] = f"Unique-ID: {ch.uuid}" in body
            out["uuid_exists"] = ((await client.send(f"api uuid_exists {ch.uuid}")).body or "").strip()
            await ch.hangup()
            await asyncio.sleep(0.5)
            out["after_hangup_exists"] = ((await client.send(f"api uuid_exists {ch.uuid}")).body or "").strip()
    print(json.dumps(out, sort_keys=True))


asyncio.run(main())
