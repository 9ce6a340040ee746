"""A RELAY app as users write one: RelayClient.run() answers every call."""

import logging
import os

from signalwire.relay.client import RelayClient

logging.basicConfig(level=logging.INFO)
client = RelayClient(project="test_proj", token="test_tok",
                     host=os.environ["RELAY_HOST"], contexts=["default"])


@client.on_call
async def answer(call):
    await call.answer()


client.run()
