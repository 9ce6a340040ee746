"""How fast the cluster heals: real processes on loopback.

    python3 benches/reconnect.py [ROUNDS]     (after cargo build --release)

mock-relay (2 nodes), `switchy-controller serve`, two `switchy-agent`s.
Each round:
  1. kill -9 the controller, start it again at once, and time until both
     agents show `connected` in GET /api/v1/nodes (polled every 20 ms);
  2. kill -9 one agent and time until the controller shows it
     `disconnected` (QUIC idle timeout), then start it again.
Then a load: inbound calls at 50/s (held 0.5-3 s, answered by `--app Park`)
for 8 s, the controller killed with -9 at 3 s and restarted at once; once
every call has ended the controller is stopped (SIGTERM) and the CDR table
checked: one row per call, none lost, none twice.
"""
import json, os, signal, sqlite3, subprocess, sys, tempfile, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, 'target', 'release')
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
ESL, HTTP_MOCK, QUIC, REST = 18221, 19221, 14533, 19380
D = tempfile.mkdtemp(prefix='switchy-reconnect-')
TOKEN = 'bench'
procs = []


def start(args, **kw):
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env=dict(os.environ, RUST_LOG='warn', SWITCHY_API_TOKEN=TOKEN), **kw)
    procs.append(p)
    return p


def nodes():
    req = urllib.request.Request('http://127.0.0.1:%d/api/v1/nodes' % REST,
                                 headers={'Authorization': 'Bearer ' + TOKEN})
    try:
        with urllib.request.urlopen(req, timeout=1) as r:
            v = json.load(r)
            return {n['id']: n['agent'] for n in (v if isinstance(v, list) else v.get('nodes', []))}
    except OSError:
        return {}


def wait(pred, limit=30.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


def controller():
    return start([os.path.join(BIN, 'switchy-controller'), 'serve', '--tls-dir', D,
                  '--listen', '127.0.0.1:%d' % QUIC, '--http', '127.0.0.1:%d' % REST,
                  '--db', 'sqlite://%s/cdr.db' % D, '--app', 'Park'])


def agent(n):
    return start([os.path.join(BIN, 'switchy-agent'), '--node-id', 'fs%d' % n,
                  '--controller', '127.0.0.1:%d' % QUIC, '--tls-ca', D + '/ca.pem',
                  '--tls-cert', '%s/fs%d.pem' % (D, n), '--tls-key', '%s/fs%d.key' % (D, n),
                  '--esl-port', str(ESL + n - 1)])


def main():
    ctl = os.path.join(BIN, 'switchy-controller')
    subprocess.run([ctl, 'ca', 'init', '--dir', D], check=True, capture_output=True)
    for name in ('controller', 'fs1', 'fs2'):
        subprocess.run([ctl, 'ca', 'issue', '--name', name, '--dir', D], check=True, capture_output=True)
    start([os.path.join(BIN, 'mock-relay'), '--nodes', '2', '--esl-port', str(ESL),
           '--http-port', str(HTTP_MOCK)])
    time.sleep(0.5)
    c = controller()
    agents = {1: agent(1), 2: agent(2)}
    both = lambda: nodes() == {'fs1': 'connected', 'fs2': 'connected'}
    if wait(both) is None:
        sys.exit('the cluster did not come up: %s' % nodes())
    time.sleep(2)
    for r in range(ROUNDS):
        c.send_signal(signal.SIGKILL)
        c.wait()
        t0 = time.monotonic()
        c = controller()
        back = wait(both)
        print('round %d: controller kill -9 and restart -> both agents connected %.2f s after the restart'
              % (r + 1, back if back is not None else float('nan')) if back is not None
              else 'round %d: agents did not reconnect within 30 s' % (r + 1))
        time.sleep(2)
        agents[1].send_signal(signal.SIGKILL)
        agents[1].wait()
        gone = wait(lambda: nodes().get('fs1') == 'disconnected')
        print('round %d: agent kill -9 -> controller shows it disconnected after %.2f s'
              % (r + 1, gone if gone is not None else float('nan')))
        agents[1] = agent(1)
        wait(both)
        time.sleep(2)
        del t0
    c = load_with_a_kill(c)
    c.send_signal(signal.SIGTERM)
    c.wait(timeout=30)
    db = sqlite3.connect('%s/cdr.db' % D)
    rows, calls, answered = db.execute(
        'SELECT COUNT(*), COUNT(DISTINCT call_id), SUM(failed = 0) FROM cdr').fetchone()
    print('load: %d calls offered, controller kill -9 at 3 s: %d CDRs, %d distinct calls, %d answered: %s'
          % (len(CALLS), rows, calls, answered or 0,
             'one CDR per call' if rows == calls == len(CALLS) else 'MISMATCH'))
    if rows != len(CALLS) or calls != rows:
        sys.exit(1)


CALLS = []


def mock_post(path, body):
    req = urllib.request.Request('http://127.0.0.1:%d%s' % (HTTP_MOCK, path), data=json.dumps(body).encode(),
                                 headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def live_channels():
    with urllib.request.urlopen('http://127.0.0.1:%d/__mock__/channels' % HTTP_MOCK, timeout=5) as r:
        return sum(len(n.get('channels') or []) for n in json.load(r)['nodes'])


def load_with_a_kill(c):
    def offer():
        t0 = time.monotonic()
        for i in range(400):
            delay = t0 + i / 50.0 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            r = mock_post('/__mock__/inbound_call', {'node': i % 2, 'from': str(1000 + i), 'to': 'load',
                                                     'hangup_after_ms': 500 + (i * 37) % 2500})
            CALLS.append(r['call_id'])
    t = threading.Thread(target=offer)
    t.start()
    time.sleep(3)
    c.send_signal(signal.SIGKILL)
    c.wait()
    c = controller()
    t.join()
    if wait(lambda: live_channels() == 0, 60) is None:
        sys.exit('calls still up after 60 s')
    time.sleep(1)
    return c


try:
    main()
finally:
    for p in procs:
        if p.poll() is None:
            p.kill()
