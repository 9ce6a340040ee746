"""REST under abuse, on a real `switchy-controller serve` process.

    python3 benches/rest_abuse.py        (after cargo build --release)

The issue 13 cases: 5,000 unauthenticated half-sent requests with 60 KB of
headers, 2,000 idle connections, 3,000 wrong tokens in a burst. Prints the
controller's RSS (idle, under the flood, after), how many connections it
closed and when, and how the wrong tokens were answered.
"""
import json, os, socket, subprocess, sys, tempfile, time, urllib.error, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CTL = os.path.join(ROOT, 'target', 'release', 'switchy-controller')
REST, QUIC, TOKEN = 19480, 14633, 'bench-token'


def rss_mib(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return 0.0


def get(path, token=None):
    req = urllib.request.Request('http://127.0.0.1:%d%s' % (REST, path),
                                 headers={'Authorization': 'Bearer ' + token} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def closed(socks, within):
    """How many of `socks` the server closed within `within` s."""
    deadline = time.monotonic() + within
    n = 0
    for s in socks:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            while True:
                if not s.recv(4096):
                    n += 1
                    break
        except (socket.timeout, BlockingIOError):
            pass
        except OSError:
            n += 1
    return n


def main():
    d = tempfile.mkdtemp(prefix='switchy-rest-abuse-')
    subprocess.run([CTL, 'ca', 'init', '--dir', d], check=True, capture_output=True)
    subprocess.run([CTL, 'ca', 'issue', '--name', 'controller', '--dir', d], check=True, capture_output=True)
    p = subprocess.Popen([CTL, 'serve', '--tls-dir', d, '--listen', '127.0.0.1:%d' % QUIC,
                          '--http', '127.0.0.1:%d' % REST],
                         env=dict(os.environ, SWITCHY_API_TOKEN=TOKEN, RUST_LOG='warn'),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                if get('/health') == 200:
                    break
            except OSError:
                time.sleep(0.1)
        time.sleep(0.5)
        idle = rss_mib(p.pid)
        pad = b'a' * (60 << 10)
        half = []
        t0 = time.monotonic()
        for _ in range(5000):
            s = socket.create_connection(('127.0.0.1', REST))
            s.settimeout(0.2)
            try:
                s.sendall(b'GET /api/v1/nodes HTTP/1.1\r\nHost: x\r\nX-Pad: ' + pad)
            except OSError:
                pass
            half.append(s)
        peak = rss_mib(p.pid)
        opened = time.monotonic() - t0
        print('5,000 half-open requests with 60 KB headers (sent in %.1f s): controller RSS idle %.1f MiB, '
              'under the flood %.1f MiB (+%.1f)' % (opened, idle, peak, peak - idle))
        gone = closed(half, 15)
        after = rss_mib(p.pid)
        print('  closed by the controller within 15 s: %d of 5000; RSS after %.1f MiB; /health -> %d'
              % (gone, after, get('/health')))
        for s in half:
            s.close()
        idle_socks = [socket.create_connection(('127.0.0.1', REST)) for _ in range(2000)]
        t0 = time.monotonic()
        gone = closed(idle_socks, 15)
        print('2,000 idle connections: %d closed by the controller within %.1f s' % (gone, time.monotonic() - t0))
        for s in idle_socks:
            s.close()
        codes = {}
        t0 = time.monotonic()
        for _ in range(3000):
            c = get('/api/v1/nodes', 'wrong')
            codes[c] = codes.get(c, 0) + 1
        print('3,000 wrong tokens in %.2f s: %s; then the right token from the same address -> %d'
              % (time.monotonic() - t0, json.dumps(codes, sort_keys=True), get('/api/v1/nodes', TOKEN)))
    finally:
        p.kill()


main()
