"""switchy against a real FreeSWITCH, side by side with the raw baseline.

    python3 benches/freeswitch.py RATE SECS HOLD [--only switchy|baseline]

Runs, in one invocation and against the same FreeSWITCH, with the same rate,
duration and hold:
  1. ../shared/tools/freeswitch/fs_baseline.py (the project's raw-socket
     client; run unchanged through runpy so that its originate latencies can
     be read for a p99, which it does not print);
  2. switchy-controller run --esl ... (embedded agent, SQLite CDRs).
Before each client: no other ESL client for 3 s (the baseline's own rule)
and no channel left; FreeSWITCH's sps and max_sessions raised to 10000 for
both (the baseline does it itself) and restored after.

For each it prints the achieved rate (answered calls per second between
3 s after the first launch and the end of launching: the baseline's
rate_ok_steady), setup latency p50/p95/p99/max (originate sent -> job
received, each client's own clock: the baseline's Python clock, switchy's
agent clock), failures, channels left over, and FreeSWITCH CPU-seconds per
answered call (utime+stime of the freeswitch process from /proc, over the
client's whole run). Then the ratios. Env: FS_ESL (127.0.0.1:8021),
FS_DEST (doggy@127.0.0.1:5080), BASELINE_EVENTS (the baseline's default),
SWITCHY_ARGS (extra `run` flags), SWITCHY_BIN.

--restart-fs restarts FreeSWITCH before each client (FS_PREFIX, default
/opt/freeswitch, the build script's PREFIX; FS_FLAGS as for the build
script's `start`), so that neither client inherits the other's drift: the
CPU FreeSWITCH spends per call grows over a session of runs.
"""
import argparse, io, json, os, runpy, socket, sqlite3, subprocess, sys, time, contextlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOOLS = os.path.join(ROOT, '..', 'shared', 'tools', 'freeswitch')
sys.path.insert(0, TOOLS)
import cpumon  # noqa: E402  (the shared /proc sampler)

ap = argparse.ArgumentParser()
ap.add_argument('rate', type=float)
ap.add_argument('secs', type=float)
ap.add_argument('hold', type=float)
ap.add_argument('--only', choices=['switchy', 'baseline'])
ap.add_argument('--out', help='append the JSON result here')
ap.add_argument('--switchy-first', action='store_true',
                help='run switchy before the baseline (the second client of an invocation measured '
                     'worse whichever it was: see docs/benchmarks.md)')
ap.add_argument('--restart-fs', action='store_true',
                help='restart FreeSWITCH before each client (FS_PREFIX, default /opt/freeswitch)')
a = ap.parse_args()
esl = os.environ.get('FS_ESL', '127.0.0.1:8021')
host, port = esl.rsplit(':', 1)
port = int(port)
dest = os.environ.get('FS_DEST', 'doggy@127.0.0.1:5080')
switchy_bin = os.environ.get('SWITCHY_BIN', os.path.join(ROOT, 'target', 'release', 'switchy-controller'))


def api(*cmds):
    """api commands on a fresh ESL connection; their replies."""
    s = socket.create_connection((host, port), timeout=30)
    f = s.makefile('rb')

    def rd():
        h = {}
        while True:
            line = f.readline().decode().rstrip('\n')
            if not line:
                break
            k, _, v = line.partition(': ')
            h[k] = v
        n = int(h.get('Content-Length', 0))
        return f.read(n).decode() if n else h.get('Reply-Text', '')
    rd()
    s.sendall(b'auth ClueCon\n\n')
    rd()
    out = []
    for c in cmds:
        s.sendall(('api %s\n\n' % c).encode())
        out.append(rd())
    s.sendall(b'exit\n\n')
    s.close()
    return out


def fs_pid():
    p = subprocess.run(['pgrep', '-x', 'freeswitch'], capture_output=True, text=True).stdout.split()
    if not p:
        sys.exit('no freeswitch process on this host: build and start it with '
                 '../shared/tools/freeswitch/build.sh (see its README)')
    return int(p[0])


def restart_fs():
    """Stop FreeSWITCH, start it again as the build script does, and wait
    until its external profile runs; the new pid."""
    prefix = os.environ.get('FS_PREFIX', '/opt/freeswitch')
    fs = os.path.join(prefix, 'bin', 'freeswitch')
    old = fs_pid()
    subprocess.run([fs, '-stop'], capture_output=True)
    for _ in range(300):
        if not os.path.exists('/proc/%d' % old):
            break
        time.sleep(0.1)
    else:
        sys.exit('FreeSWITCH %d did not stop within 30 s' % old)
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, hard), hard))
    subprocess.run([fs] + os.environ.get('FS_FLAGS', '-nc -nonat').split(), capture_output=True, check=True)
    for _ in range(600):
        try:
            if any('external' in l and 'RUNNING' in l for l in api('sofia status')[0].splitlines()):
                break
        except OSError:
            pass
        time.sleep(0.1)
    else:
        sys.exit('FreeSWITCH did not come back with its external profile within 60 s')
    time.sleep(2)
    return fs_pid()


def settle():
    """No ESL client for 3 s, then no channel left (up to 60 s)."""
    cpumon.wait_quiet(port, 120)
    for _ in range(600):
        n = api('show channels count')[0]
        if n.strip().startswith('0 total'):
            return
        time.sleep(0.1)
    print('WARNING: channels still up before the run:', n.strip())


def channels_left():
    """Channels still up 5 s after the client finished (its last hangups
    need a moment to complete)."""
    n = -1
    for _ in range(50):
        txt = api('show channels count')[0].strip()
        try:
            n = int(txt.split()[0])
        except (ValueError, IndexError):
            n = -1
        if n == 0:
            return 0
        time.sleep(0.1)
    return n


def pct(v, p):
    if not v:
        return None
    v = sorted(v)
    return round(v[min(len(v) - 1, int(round((len(v) - 1) * p)))], 2)


def lat_summary(ms):
    return dict(n=len(ms), p50=pct(ms, .5), p95=pct(ms, .95), p99=pct(ms, .99), max=pct(ms, 1.0))


def run_baseline(pid):
    argv = ['fs_baseline.py', '--rate', str(a.rate), '--secs', str(a.secs), '--hold', str(a.hold),
            '--dest', dest, '--fs-pid', str(pid), '--port', str(port), '--host', host]
    if os.environ.get('BASELINE_EVENTS'):
        argv += ['--events', os.environ['BASELINE_EVENTS']]
    old = sys.argv
    sys.argv = argv
    buf = io.StringIO()
    c0 = cpumon.cpu_s(pid)
    try:
        with contextlib.redirect_stdout(buf):
            g = runpy.run_path(os.path.join(TOOLS, 'fs_baseline.py'), run_name='__main__')
    finally:
        sys.argv = old
    c1 = cpumon.cpu_s(pid)
    res = json.loads(buf.getvalue()[buf.getvalue().index('{'):])
    ok = res['jobs_ok']
    return dict(
        client='baseline (fs_baseline.py)',
        rate=res['rate_ok_steady'], answered=ok, failed=res['jobs_fail'],
        aborted_overload_at_s=res['aborted_overload_at_s'],
        left_over=max(res['leftover_at_end'], channels_left()),
        setup_ms=lat_summary([x * 1000 for x in g['lat']]),
        setup_clock='the script\'s Python clock (send -> BACKGROUND_JOB)',
        fs_cpu_s=round(c1 - c0, 2),
        fs_cpu_ms_per_call=round(1000 * (c1 - c0) / ok, 3) if ok else None,
        fs_cpu_pct_steady=res['cpu_fs_steady'], client_cpu_pct=res['cpu_script'],
        hangup_causes=res['hangup_causes'])


def run_switchy(pid):
    db = '/tmp/switchy-fs-bench-%d.db' % os.getpid()
    for suffix in ('', '-wal', '-shm'):
        with contextlib.suppress(FileNotFoundError):
            os.remove(db + suffix)
    limit = int(max(100, a.rate * (a.hold + 1) * 2))
    cmd = [switchy_bin, 'run', '--esl', esl, '--dest-url', dest, '--rate', str(a.rate),
           '--limit', str(limit), '--max-offered', str(int(round(a.rate * a.secs))),
           '--duration', str(a.hold), '--http', '127.0.0.1:0', '--db', 'sqlite://' + db,
           '--metrics-file', db + '.json'] + os.environ.get('SWITCHY_ARGS', '').split()
    import resource
    c0 = cpumon.cpu_s(pid)
    me0 = time.time()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, RUST_LOG='warn'))
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.time() - me0
    c1 = cpumon.cpu_s(pid)
    client_cpu_s = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if p.returncode != 0:
        sys.exit('switchy run failed (%d):\n%s\n%s' % (p.returncode, p.stdout, p.stderr[-4000:]))
    m = json.load(open(db + '.json'))
    con = sqlite3.connect(db)
    rows = con.execute('SELECT caller_req_originate, failed, originate_sent_agent, originate_done_agent, '
                       'caller_answer, caller_hangup, hangup_cause FROM cdr').fetchall()
    con.close()
    t0 = min(r[0] for r in rows if r[0])
    done = [r[3] for r in rows if not r[1] and r[3]]
    steady = [d for d in done if t0 + 3e6 <= d <= t0 + a.secs * 1e6]
    setup = [(r[3] - r[2]) / 1000 for r in rows if not r[1] and r[2] and r[3]]
    dur = [(r[5] - r[4]) / 1e6 for r in rows if r[4] and r[5]]
    causes = {}
    for r in rows:
        causes[r[6]] = causes.get(r[6], 0) + 1
    ok = sum(1 for r in rows if not r[1])
    summary = p.stdout[p.stdout.find('== switchy run summary'):]
    bottleneck = [line.strip() for line in summary.splitlines() if 'BOTTLENECK' in line]
    for suffix in ('', '-wal', '-shm', '.json'):
        with contextlib.suppress(FileNotFoundError):
            os.remove(db + suffix)
    return dict(
        client='switchy-controller run --esl',
        rate=round(len(steady) / (a.secs - 3), 1) if a.secs > 4 else None,
        answered=ok, failed=len(rows) - ok, cdrs=len(rows),
        left_over=channels_left(),
        setup_ms=lat_summary(setup), setup_clock="the agent's clock (bgapi written -> BACKGROUND_JOB)",
        call_duration_s=dict(p50=pct(dur, .5), p99=pct(dur, .99), max=pct(dur, 1.0)),
        fs_cpu_s=round(c1 - c0, 2),
        fs_cpu_ms_per_call=round(1000 * (c1 - c0) / ok, 3) if ok else None,
        wall_s=round(wall, 1), hangup_causes=causes, bottleneck=bottleneck,
        client_cpu_pct=round(100 * client_cpu_s / wall, 1),
        originator=dict((k, m['originator'][k]) for k in ('offered', 'answered', 'failed', 'average_cps')))


def main():
    pid = fs_pid()
    prev = api('fsctl sps', 'fsctl max_sessions')
    results = {}
    try:
        order = ('switchy', 'baseline') if a.switchy_first else ('baseline', 'switchy')
        for which in order:
            if a.only and a.only != which:
                continue
            if a.restart_fs:
                pid = restart_fs()
            settle()
            api('fsctl sps 10000', 'fsctl max_sessions 10000')
            results[which] = (run_baseline if which == 'baseline' else run_switchy)(pid)
            print(json.dumps(results[which]), file=sys.stderr)
    finally:
        import re
        sps = re.search(r'(\d+)', prev[0])
        mx = re.search(r'(\d+)', prev[1])
        if sps and mx and not a.restart_fs:
            api('fsctl sps ' + sps.group(1), 'fsctl max_sessions ' + mx.group(1))
    out = dict(rate_req=a.rate, secs=a.secs, hold=a.hold, at=time.strftime('%Y-%m-%d %H:%M:%S'),
               order=list(results), **results)
    b, s = results.get('baseline'), results.get('switchy')
    print('\n== FreeSWITCH bench: %g calls/s requested for %g s, calls held %g s ==' % (a.rate, a.secs, a.hold))
    fmt = '  %-32s %12s %12s'
    print(fmt % ('', 'baseline', 'switchy'))

    def g(r, *k):
        v = r
        for x in k:
            v = None if v is None else v.get(x)
        return '-' if v is None else v
    for label, key in [('calls/s achieved (steady)', ('rate',)), ('answered', ('answered',)),
                       ('failed', ('failed',)), ('channels left over', ('left_over',)),
                       ('setup p50 ms', ('setup_ms', 'p50')), ('setup p95 ms', ('setup_ms', 'p95')),
                       ('setup p99 ms', ('setup_ms', 'p99')), ('setup max ms', ('setup_ms', 'max')),
                       ('call duration p99 s', ('call_duration_s', 'p99')),
                       ('FreeSWITCH CPU-s', ('fs_cpu_s',)),
                       ('FreeSWITCH CPU ms per call', ('fs_cpu_ms_per_call',)),
                       ('client CPU % of a core', ('client_cpu_pct',))]:
        print(fmt % (label, g(b, *key), g(s, *key)))
    if b and s and b.get('rate') and s.get('rate'):
        out['rate_ratio'] = round(s['rate'] / b['rate'], 4)
        print('  switchy / baseline rate:         %.4f' % out['rate_ratio'])
    if b and s and b.get('fs_cpu_ms_per_call') and s.get('fs_cpu_ms_per_call'):
        out['fs_cpu_per_call_ratio'] = round(s['fs_cpu_ms_per_call'] / b['fs_cpu_ms_per_call'], 4)
        print('  switchy / baseline FS CPU per call: %.4f' % out['fs_cpu_per_call_ratio'])
    if s:
        for line in s['bottleneck']:
            print('  switchy ' + line)
    if a.out:
        with open(a.out, 'a') as f:
            f.write(json.dumps(out) + '\n')


main()
