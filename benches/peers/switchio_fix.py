#!/usr/bin/env python3
"""Makes switchio 0.1.0a1 (PyPI) run on Python 3.11: the mechanical fixes the
issue names (asyncio.coroutine, loop= keywords, inspect.getargspec, and
asyncio.Task.current_task/all_tasks). Usage:

    pip download --no-deps switchio==0.1.0a1 && tar xzf switchio-0.1.0a1.tar.gz
    python3 benches/peers/switchio_fix.py switchio-0.1.0a1
    pip install click colorlog
    PYTHONPATH=switchio-0.1.0a1 python3 benches/peers/switchio_originator.py HOST PORT RATE LIMIT CALLS HOLD
"""
import pathlib, re, sys

root = pathlib.Path(sys.argv[1]) / "switchio"
fixes = {
    "protocol.py": [("asyncio.Queue(loop=loop)", "asyncio.Queue()")],
    "connection.py": [("asyncio.wait_for(awaitable, timeout=timeout, loop=loop)",
                       "asyncio.wait_for(awaitable, timeout=timeout)")],
    "loop.py": [("@asyncio.coroutine\ndef just_yield():", "async def just_yield():"),
                ("    yield\n\n\ndef new_event_loop():", "    await asyncio.sleep(0)\n\n\ndef new_event_loop():"),
                ("asyncio.wait(pending, loop=self.loop)", "asyncio.wait(pending)")],
    "models.py": [("fut, timeout, loop=loop)", "fut, timeout)")],
    "apps/players.py": [("inspect.getargspec(callback)[0]", "inspect.getfullargspec(callback)[0]")],
    "utils.py": [("args, varargs, varkw, defaults = inspect.getargspec(func)",
                  "args, varargs, varkw, defaults = inspect.getfullargspec(func)[:4]")],
}
for name, subs in fixes.items():
    p = root / name
    s = p.read_text()
    for a, b in subs:
        if a in s:
            s = s.replace(a, b)
        elif b not in s:
            sys.exit(f"{p}: neither the original nor the fix of {a!r}: another switchio version?")
    p.write_text(s)
for p in root.rglob("*.py"):
    s = p.read_text()
    t = re.sub(r"asyncio\.Task\.(current_task|all_tasks)\(", r"asyncio.\1(", s)
    if t != s:
        p.write_text(t)
print("switchio patched for Python 3.11")
