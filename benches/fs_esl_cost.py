"""What talking to a real FreeSWITCH over ESL costs it, piece by piece.

    python3 benches/fs_esl_cost.py subscribers RATE SECS HOLD [--listeners K] [--rounds N]
                                   [--variants none,plain,json,filtered] [--restart-fs] [--out F]
    python3 benches/fs_esl_cost.py commands [--n 2000]
    python3 benches/fs_esl_cost.py wakes [--secs 20]

A client's FreeSWITCH cost hides in the noise of the CPU per call of whole
calls (10 % from run to run here). These measure its parts one at a time,
each against FreeSWITCH's own thread or process CPU from /proc:

subscribers: FreeSWITCH serializes every event once per subscribed ESL
  connection, in that connection's thread (mod_event_socket). A fixed call
  load is driven with the shared raw baseline
  (../shared/tools/freeswitch/fs_baseline.py, its own 3-event subscription)
  while K extra ESL connections, which only read, subscribe the same three
  events (CHANNEL_PARK BACKGROUND_JOB CHANNEL_HANGUP_COMPLETE) in one way:
    none      no extra connection (the load's own cost)
    plain     `event plain` with the three events
    json      `event json` with the three events
    filtered  `event plain ALL`, then `filter Event-Name X` for each of the three
              (what a subscriber that filters instead of subscribing pays)
  Per run: FreeSWITCH CPU-seconds (utime+stime) per answered call, and the
  events and bytes each extra connection received per call;
  (variant - none) / K is what one subscriber costs per call. Variants run in
  a rotated order each round, FreeSWITCH restarted before each with
  --restart-fs (its CPU per call drifts up over a session of runs).

commands: FreeSWITCH reads a command one byte per recv(2). One connection
  sends `api eval x` (12 bytes on the wire) and `api eval` with 290
  characters (301 bytes), N times each, twice, and reports the CPU of that
  connection's FreeSWITCH thread per command and per byte.

wakes: a connection's thread wakes every 20 ms when idle, and whenever a
  byte arrives (switchy's agent writes a lone LF every 5 ms on its event
  connection so that queued events leave at once). Reports the thread's CPU
  per idle wake and per such poke.
"""
import argparse, json, os, subprocess, sys, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from fslib import TOOLS, Conn, ThreadCpu, cpumon, fs_pid, host, port, restart_fs, settle, api  # noqa: E402

EVENTS = 'CHANNEL_PARK BACKGROUND_JOB CHANNEL_HANGUP_COMPLETE'
SUBSCRIBE = {
    'plain': ['event plain ' + EVENTS],
    'json': ['event json ' + EVENTS],
    'filtered': ['event plain ALL'] + ['filter Event-Name ' + e for e in EVENTS.split()],
}

ap = argparse.ArgumentParser()
sub = ap.add_subparsers(dest='what', required=True)
sp = sub.add_parser('subscribers', help='one subscriber\'s cost per call, by event format')
sp.add_argument('rate', type=float)
sp.add_argument('secs', type=float)
sp.add_argument('hold', type=float)
sp.add_argument('--listeners', type=int, default=8, help='extra subscribed connections per variant (default 8)')
sp.add_argument('--rounds', type=int, default=2, help='rounds over all variants (default 2)')
sp.add_argument('--variants', default='none,plain,json,filtered', help='default none,plain,json,filtered')
sp.add_argument('--restart-fs', action='store_true', help='restart FreeSWITCH before each run')
sp.add_argument('--out', help='append each run as a JSON line here')
cp = sub.add_parser('commands', help='a command\'s cost, per command and per byte')
cp.add_argument('--n', type=int, default=2000, help='commands of each length per pass (default 2000)')
wp = sub.add_parser('wakes', help='an ESL thread\'s cost per idle wake and per poke')
wp.add_argument('--secs', type=float, default=20, help='seconds of each measurement (default 20)')
a = ap.parse_args()
variants = a.variants.split(',') if a.what == 'subscribers' else []
for v in variants:
    if v != 'none' and v not in SUBSCRIBE:
        sys.exit('unknown variant %r: use none, %s' % (v, ', '.join(SUBSCRIBE)))


class Listener(threading.Thread):
    """One ESL connection that subscribes and then only reads, counting the
    events and bytes FreeSWITCH sends it."""

    def __init__(self, cmds):
        super().__init__(daemon=True)
        self.c = Conn()
        self.events = 0
        self.bytes = 0
        self.stop = False
        for c in cmds:
            h, _, _ = self.c.send(c)
            if not h.get('Reply-Text', '').startswith('+OK'):
                sys.exit('%r refused: %r' % (c, h))

    def run(self):
        try:
            while not self.stop:
                h, _, n = self.c.frame()
                if h.get('Content-Type', '').startswith('text/event-'):
                    self.events += 1
                    self.bytes += n
        except (EOFError, OSError, ValueError):
            pass

    def close(self):
        self.stop = True
        self.c.close()


def one(variant, pid):
    listeners = [] if variant == 'none' else [Listener(SUBSCRIBE[variant]) for _ in range(a.listeners)]
    for li in listeners:
        li.start()
    out = '/tmp/fs-event-cost-%d.json' % os.getpid()
    if os.path.exists(out):
        os.remove(out)
    c0 = cpumon.cpu_s(pid)
    p = subprocess.run([sys.executable, os.path.join(TOOLS, 'fs_baseline.py'), '--rate', str(a.rate),
                        '--secs', str(a.secs), '--hold', str(a.hold), '--fs-pid', str(pid),
                        '--host', host, '--port', str(port), '--quiet-wait', '0', '--out', out],
                       capture_output=True, text=True)
    c1 = cpumon.cpu_s(pid)
    for li in listeners:
        li.close()
    if p.returncode != 0 or not os.path.exists(out):
        sys.exit('fs_baseline.py failed (%d):\n%s\n%s' % (p.returncode, p.stdout, p.stderr[-3000:]))
    res = json.loads(open(out).read().splitlines()[-1])
    os.remove(out)
    ok = res['jobs_ok']
    ev = sum(li.events for li in listeners) / max(1, len(listeners))
    by = sum(li.bytes for li in listeners) / max(1, len(listeners))
    return dict(variant=variant, listeners=len(listeners), rate=res['rate_ok_steady'], answered=ok,
                failed=res['jobs_fail'], left_over=res['leftover_at_end'],
                fs_cpu_ms_per_call=round(1000 * (c1 - c0) / ok, 3) if ok else None,
                events_per_call_per_listener=round(ev / ok, 2) if ok else None,
                bytes_per_call_per_listener=round(by / ok) if ok else None,
                at=time.strftime('%H:%M:%S'))


def subscribers():
    pid = fs_pid()
    runs = []
    for r in range(a.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for v in order:
            if a.restart_fs:
                pid = restart_fs()
            settle()
            api('fsctl sps 10000', 'fsctl max_sessions 10000')
            res = one(v, pid)
            res['round'] = r + 1
            runs.append(res)
            print(json.dumps(res), file=sys.stderr)
            if a.out:
                with open(a.out, 'a') as f:
                    f.write(json.dumps(dict(res, rate_req=a.rate, secs=a.secs, hold=a.hold)) + '\n')
    print('\n== one ESL subscriber\'s cost to FreeSWITCH: %g calls/s for %g s, held %g s, %d extra connections ==' %
          (a.rate, a.secs, a.hold, a.listeners))
    base = [x['fs_cpu_ms_per_call'] for x in runs if x['variant'] == 'none' and x['fs_cpu_ms_per_call']]
    b = sum(base) / len(base) if base else None
    print('  %-9s %28s %10s %14s %20s' % ('variant', 'FS CPU ms/call (each run)', 'mean', 'events, bytes', 'us/call/subscriber'))
    for v in variants:
        xs = [x for x in runs if x['variant'] == v]
        ms = [x['fs_cpu_ms_per_call'] for x in xs if x['fs_cpu_ms_per_call']]
        m = sum(ms) / len(ms) if ms else None
        per = ('%.0f' % (1000 * (m - b) / a.listeners)) if (m and b and v != 'none') else '-'
        evb = '-' if v == 'none' else '%.2f, %d' % (xs[-1]['events_per_call_per_listener'], xs[-1]['bytes_per_call_per_listener'])
        print('  %-9s %28s %10s %14s %20s' % (v, ' '.join('%.2f' % x for x in ms), '%.2f' % m if m else '-', evb, per))
    bad = [x for x in runs if x['failed'] or x['left_over']]
    if bad:
        print('  runs with failures or channels left over: %s' % bad)


def commands():
    settle()
    short, long_ = 'api eval x', 'api eval ' + 'x' * 290
    rows = []
    for _ in range(2):
        for c in (short, long_):
            th = ThreadCpu(fs_pid()).start()
            conn = Conn()
            time.sleep(0.6)
            t0 = time.time()
            for _ in range(a.n):
                conn.cmd(c)
            el = time.time() - t0
            time.sleep(0.6)
            cpu, _ = th.finish()
            conn.close()
            rows.append((len(c) + 2, 1e6 * cpu / a.n, a.n / el))
    print('\n== a command\'s cost to FreeSWITCH (its ESL thread\'s CPU), %d commands per pass ==' % a.n)
    for n, us, rate in rows:
        print('  %4d bytes: %7.1f us per command, %6.0f commands/s on one connection' % (n, us, rate))
    sh = [us for n, us, _ in rows if n == len(short) + 2]
    lo = [us for n, us, _ in rows if n == len(long_) + 2]
    per_byte = (sum(lo) / len(lo) - sum(sh) / len(sh)) / (len(long_) - len(short))
    print('  per byte: %.2f us (FreeSWITCH reads commands one byte per recv)' % per_byte)


def wakes():
    settle()
    out = []
    for interval in (0, 0.005):
        th = ThreadCpu(fs_pid()).start()
        conn = Conn()
        conn.send('event plain HEARTBEAT')
        t0 = time.time()
        n = 0
        while time.time() - t0 < a.secs:
            if interval:
                conn.s.sendall(b'\n')
                n += 1
                time.sleep(interval)
            else:
                time.sleep(0.1)
        time.sleep(0.6)
        cpu, _ = th.finish()
        conn.close()
        out.append((interval, n, cpu, time.time() - t0))
    (_, _, idle, t_idle), (_, n, poked, t_poked) = out
    wakes_idle = t_idle / 0.020
    print('\n== an ESL thread\'s wake-ups, %g s each ==' % a.secs)
    print('  idle: %.2f CPU-s in %.1f s, about %d wakes (every 20 ms): %.1f us per wake' %
          (idle, t_idle, wakes_idle, 1e6 * idle / wakes_idle))
    print('  poked every 5 ms: %.2f CPU-s, %d pokes: %.1f us per poke beyond idle' %
          (poked, n, 1e6 * (poked - idle * t_poked / t_idle) / n))


{'subscribers': subscribers, 'commands': commands, 'wakes': wakes}[a.what]()
