"""`python -m mock_relay --host H --ws-port P --http-port Q [--log-level L]`
as SignalWire's package takes it: runs switchy's mock-relay --relay."""

import os
import sys


def main() -> None:
    args = sys.argv[1:]
    out = [os.environ.get("MOCK_RELAY_BIN", "mock-relay"), "--relay"]
    i = 0
    while i < len(args):
        a, v = args[i], args[i + 1] if i + 1 < len(args) else None
        if a == "--host" and v is not None:
            out += ["--bind", v]
            i += 2
        elif a == "--log-level" and v is not None:
            os.environ["RUST_LOG"] = v
            i += 2
        else:
            out.append(a)
            i += 1
    os.execvp(out[0], out)


main()
