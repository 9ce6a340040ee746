#!/usr/bin/env python3
"""switchio's Originator (0.1.0a1, mechanically fixed for Python 3.11)
against one ESL server: N calls at RATE cps held HOLD s; prints the rate
achieved and each outbound leg's life (create -> hangup, FreeSWITCH clock).
Usage: see switchio_fix.py."""
import sys, time, threading

from switchio import get_originator
from switchio.apps.players import TonePlay
import switchio.apps.call_gen as cg

host, port, rate, limit, total, hold = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
o = get_originator([(host, port)], auto_duration=False)
o.load_app(TonePlay, app_id='default')
o.pool.evals("client.set_orig_cmd('doggy@127.0.0.1:5080', app_name='park')")
o.rate = rate; o.limit = limit; o.max_offered = total; o.duration = hold
import socket, urllib.parse
holds = []
def watch():
    s = socket.create_connection((host, int(port))); f = s.makefile('rb')
    def frame():
        h = {}
        while True:
            l = f.readline()
            if not l: return None, b''
            l = l.decode().rstrip('\n')
            if l == '':
                if h: break
                continue
            k, _, v = l.partition(': '); h[k] = v
        body = f.read(int(h['Content-Length'])) if 'Content-Length' in h else b''
        return h, body
    frame(); s.sendall(b"auth ClueCon\n\n"); frame()
    s.sendall(b"event plain CHANNEL_HANGUP_COMPLETE\n\n"); frame()
    while True:
        h, body = frame()
        if h is None: return
        if h.get('Content-Type') != 'text/event-plain': continue
        e = dict(l.split(': ', 1) for l in body.decode().split('\n') if ': ' in l)
        if e.get('Call-Direction') == 'outbound':
            c0 = int(e.get('Caller-Channel-Created-Time', '0')); z = int(e.get('Caller-Channel-Hangup-Time', '0'))
            holds.append(((z - c0) / 1e6 if c0 else None, urllib.parse.unquote(e.get('Hangup-Cause', ''))))
threading.Thread(target=watch, daemon=True).start()
time.sleep(0.5)
t0 = time.time()
o.start()
deadline = t0 + total / rate + hold + 20
while time.time() < deadline:
    time.sleep(0.5)
    if o.count_calls() == 0 and o.total_originated_sessions >= total and o.stopped():
        break
elapsed = time.time() - t0
time.sleep(1.0)
ok = sorted(h for h, _ in holds if h is not None)
causes = {}
for _, c in holds: causes[c] = causes.get(c, 0) + 1
p = lambda q: ok[min(len(ok) - 1, int(q * len(ok)))] if ok else None
print("offered", o.total_originated_sessions, "ended", len(holds), "in", round(elapsed, 1), "s; still up", o.count_calls(),
      "; create->hangup s p50", p(0.5), "p99", p(0.99), "max", ok[-1] if ok else None, "; causes", causes)
o.shutdown()
