// SignalWire's Node SDK (@signalwire/realtime-api, unmodified, public API
// only) against `mock-relay --relay`: connect, listen on context "default",
// answer and hang up an inbound call, check the mock's journal, then survive
// a server-initiated disconnect (signalwire.disconnect, close) by resuming
// the session with its protocol string and answer a second call.
//
//   MOCK_WS_URL=ws://127.0.0.1:28773 MOCK_HTTP_URL=http://127.0.0.1:29773 node answer.mjs
//
// For wss, trust the mock's CA with NODE_EXTRA_CA_CERTS=ca.pem. One line per
// step; exit 0 when every step passed, 1 with the reason otherwise, within
// 30 s in all cases. Run by crates/mock-relay/tests/relay_sdk.rs.

import { SignalWire } from '@signalwire/realtime-api'

const OVERALL_MS = 30_000
const CONTEXT = 'default'
const PROJECT = `node-sdk-${process.pid}`
const TOKEN = 'node-sdk-token'

const t0 = Date.now()
let current = 'starting'
let client = null
let finishing = false

const log = (line) => console.log(`[${((Date.now() - t0) / 1000).toFixed(2)}s] ${line}`)

function step(name) {
  current = name
  log(`.. ${name}`)
}

function ok(what) {
  log(`ok ${what}`)
}

class Failure extends Error {}

function check(cond, msg) {
  if (!cond) throw new Failure(msg)
}

const show = (v) => JSON.stringify(v)?.slice(0, 600)

function withTimeout(promise, ms, what) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Failure(`timed out after ${ms} ms: ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

async function finish(code, msg) {
  if (finishing) return
  finishing = true
  clearTimeout(overall)
  if (client) {
    try {
      await withTimeout(client.disconnect(), 3000, 'client.disconnect()')
      log('client disconnected')
    } catch (e) {
      log(`warning: ${e?.message ?? e}`)
    }
  }
  if (code === 0) {
    console.log(`PASS: ${msg}`)
  } else {
    console.error(`FAIL at step "${current}": ${msg}`)
  }
  process.exit(code)
}

const overall = setTimeout(
  () => finish(1, `the whole run took longer than ${OVERALL_MS / 1000} s`),
  OVERALL_MS,
)
process.on('unhandledRejection', (e) => finish(1, `unhandled rejection: ${e?.stack ?? show(e)}`))
process.on('uncaughtException', (e) => finish(1, `uncaught exception: ${e?.stack ?? e}`))

function env(name) {
  const v = process.env[name]
  if (!v) {
    console.error(`FAIL: ${name} is not set (MOCK_WS_URL=ws://127.0.0.1:PORT MOCK_HTTP_URL=http://127.0.0.1:PORT node answer.mjs)`)
    process.exit(2)
  }
  return v
}

const WS_URL = env('MOCK_WS_URL')
const HTTP_URL = env('MOCK_HTTP_URL').replace(/\/+$/, '')

// ---- the mock's control plane ------------------------------------------

async function http(method, path, body) {
  let res
  try {
    res = await fetch(HTTP_URL + path, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    })
  } catch (e) {
    throw new Failure(`${method} ${HTTP_URL}${path}: ${e?.cause?.message ?? e?.message ?? e}`)
  }
  const text = await res.text()
  if (!res.ok) throw new Failure(`${method} ${path}: HTTP ${res.status}: ${text.slice(0, 400)}`)
  try {
    return JSON.parse(text)
  } catch {
    throw new Failure(`${method} ${path}: not JSON: ${text.slice(0, 400)}`)
  }
}

const get = (path) => http('GET', path)
const post = (path, body) => http('POST', path, body)
const journal = () => get('/__mock__/journal')
const sessions = async () => (await get('/__mock__/sessions')).sessions

async function waitFor(what, probe, ms = 10_000) {
  const deadline = Date.now() + ms
  let last
  for (;;) {
    last = await probe()
    if (last.found !== undefined) return last.found
    if (Date.now() > deadline) {
      throw new Failure(`timed out after ${ms} ms waiting for ${what}; last seen: ${show(last.seen)}`)
    }
    await new Promise((r) => setTimeout(r, 50))
  }
}

// A call_state event as RELAY sends it for the call the armed method names
// (the mock fills in call_id from the request).
const state = (callState, nodeId, extra = {}) => ({
  event_type: 'calling.call.state',
  emit: { call_state: callState, direction: 'inbound', node_id: nodeId, ...extra },
  delay_ms: 10,
})

// Armed for our session only (?session_id=), so a mock shared with other
// clients stays usable.
async function armAnswerAndEnd(sessionId, nodeId) {
  const q = `?session_id=${encodeURIComponent(sessionId)}`
  const a = await post(`/__mock__/scenarios/calling.answer${q}`, [state('answered', nodeId)])
  check(a.events_queued === 1, `arming calling.answer: ${show(a)}`)
  const e = await post(`/__mock__/scenarios/calling.end${q}`, [
    state('ending', nodeId),
    state('ended', nodeId, { end_reason: 'hangup' }),
  ])
  check(e.events_queued === 2, `arming calling.end: ${show(e)}`)
}

// ---- inbound calls, answered in onCallReceived ---------------------------

const expected = new Map() // call_id -> {resolve, reject}

function expectCall(callId) {
  return new Promise((resolve, reject) => expected.set(callId, { resolve, reject }))
}

async function onCallReceived(call) {
  const waiter = expected.get(call.id)
  if (!waiter) {
    finish(1, `onCallReceived for an unexpected call ${show(call.id)}`)
    return
  }
  expected.delete(call.id)
  try {
    log(`   onCallReceived: call ${call.id} state=${call.state} direction=${call.direction} node=${call.nodeId}`)
    check(call.direction === 'inbound', `call.direction is ${show(call.direction)}, not "inbound"`)
    await withTimeout(call.answer(), 5000, `call.answer() of ${call.id} (it resolves on the answered state event)`)
    check(call.state === 'answered', `after answer() call.state is ${show(call.state)}`)
    log(`   answered ${call.id}`)
    await withTimeout(call.hangup(), 5000, `call.hangup() of ${call.id} (it resolves on the ended state event)`)
    check(call.state === 'ended', `after hangup() call.state is ${show(call.state)}`)
    log(`   hung up ${call.id}`)
    waiter.resolve(call)
  } catch (e) {
    waiter.reject(e)
  }
}

async function inboundCall(sessionId, callId, nodeId) {
  step(`arm calling.answer (answered) and calling.end (ending, ended); push inbound call ${callId}`)
  await armAnswerAndEnd(sessionId, nodeId)
  const answered = expectCall(callId)
  const r = await post('/__mock__/inbound_call', {
    call_id: callId,
    from_number: '+15551230000',
    to_number: '+15559870000',
    context: CONTEXT,
    session_id: sessionId,
  })
  check(r.count === 1 && r.sent_to?.[0] === sessionId, `inbound_call was not delivered to ${sessionId}: ${show(r)}`)
  ok(`inbound call ${callId} pushed to session ${sessionId}`)
  step(`the SDK answers and hangs up ${callId}`)
  await withTimeout(answered, 10_000, `onCallReceived to answer and hang up ${callId}`)
  ok(`${callId} answered and hung up through the SDK`)
}

// ---- the journal -------------------------------------------------------

const unackedEvents = (entries) => {
  const acks = new Set(entries.filter((e) => e.direction === 'recv' && e.method === '').map((e) => e.request_id))
  return entries.filter((e) => e.direction === 'send' && e.method === 'signalwire.event' && !acks.has(e.request_id))
}

// The journal of these sessions once every event sent to them has its
// acknowledgement (the SDK acks an event as it dispatches it, so the ack of
// the last one may land just after hangup() resolved).
const ackedJournal = (...sessionIds) =>
  waitFor(
    `every signalwire.event the mock sent to ${sessionIds.join(', ')} to be acknowledged`,
    async () => {
      const j = (await journal()).filter((e) => sessionIds.includes(e.session_id))
      const unacked = unackedEvents(j)
      return {
        found: unacked.length === 0 ? j : undefined,
        seen: unacked.map((e) => [e.request_id, e.frame?.params?.event_type, e.frame?.params?.params?.call_state]),
      }
    },
    3000,
  )

function checkJournal(entries, sessionId, callId) {
  const mine = entries.filter((e) => e.session_id === sessionId)
  const recv = (m) => mine.filter((e) => e.direction === 'recv' && e.method === m)
  check(recv('signalwire.connect').length === 1, `expected one signalwire.connect from ${sessionId}, got ${recv('signalwire.connect').length}`)
  const receive = recv('signalwire.receive')
  check(
    receive.some((e) => e.frame?.params?.contexts?.includes(CONTEXT)),
    `no signalwire.receive with contexts [${CONTEXT}] from ${sessionId}: ${show(receive.map((e) => e.frame))}`,
  )
  for (const m of ['calling.answer', 'calling.end']) {
    const got = recv(m)
    check(
      got.some((e) => e.frame?.params?.call_id === callId),
      `no ${m} with call_id ${callId} from ${sessionId}: ${show(got.map((e) => e.frame?.params))}`,
    )
  }
  const events = mine.filter((e) => e.direction === 'send' && e.method === 'signalwire.event')
  const unacked = unackedEvents(mine)
  check(events.length >= 4, `expected at least 4 events (receive, answered, ending, ended) sent to ${sessionId}, got ${events.length}`)
  check(
    unacked.length === 0,
    `events not acknowledged: ${show(unacked.map((e) => [e.request_id, e.frame?.params?.event_type]))}`,
  )
  const types = events.map((e) => `${e.frame.params.event_type}${e.frame.params.params?.call_state ? `/${e.frame.params.params.call_state}` : ''}`)
  return `${events.length} events acked (${types.join(', ')})`
}

// ---- the run -------------------------------------------------------------

async function main() {
  step(`mock control plane at ${HTTP_URL}`)
  const health = await get('/__mock__/health')
  check(health.status === 'ok', `health: ${show(health)}`)
  const scheme = new URL(WS_URL).protocol.replace(':', '')
  check(health.ws_scheme === scheme, `the mock serves ${health.ws_scheme}, MOCK_WS_URL is ${WS_URL}`)
  ok(`mock healthy (${health.ws_scheme} on port ${health.ws_port})`)

  step(`SignalWire({host: ${WS_URL}}) connects`)
  let reconnecting = 0
  client = await withTimeout(
    SignalWire({
      host: WS_URL,
      project: PROJECT,
      token: TOKEN,
      logLevel: 'warn',
      listen: {
        onReconnecting: () => {
          reconnecting += 1
          log('   session reconnecting')
        },
        onAuthError: (e) => finish(1, `the SDK reports an auth error: ${show(e)}`),
      },
    }),
    10_000,
    'SignalWire() to connect (the SDK retries failed connects forever)' +
      (scheme === 'wss'
        ? `; for wss, NODE_EXTRA_CA_CERTS (now ${process.env.NODE_EXTRA_CA_CERTS ?? 'unset'}) must hold the CA of the mock's certificate`
        : ''),
  )
  ok('connected')

  step(`voice.listen({topics: [${CONTEXT}]})`)
  await withTimeout(client.voice.listen({ topics: [CONTEXT], onCallReceived }), 5000, 'voice.listen()')
  ok('listening')

  step(`the session of project ${PROJECT} is listed with "${CONTEXT}" in its contexts`)
  const connect1 = await waitFor('our signalwire.connect in the journal', async () => {
    const j = await journal()
    const found = j.find(
      (e) => e.direction === 'recv' && e.method === 'signalwire.connect' &&
        e.frame?.params?.authentication?.project === PROJECT,
    )
    return { found, seen: j.length }
  })
  const sid1 = connect1.session_id
  check(!connect1.frame.params.protocol, `the first connect already carries a protocol: ${show(connect1.frame.params)}`)
  check(connect1.frame.params.version?.major === 3, `connect version: ${show(connect1.frame.params.version)}`)
  const session1 = await waitFor(`session ${sid1} with contexts [${CONTEXT}]`, async () => {
    const s = await sessions()
    return { found: s.find((x) => x.id === sid1 && x.contexts.includes(CONTEXT)), seen: s }
  })
  const protocol1 = session1.protocol_string
  check(typeof protocol1 === 'string' && protocol1.startsWith('signalwire_'), `protocol string: ${show(protocol1)}`)
  check(session1.session_restored === false, `a fresh session says session_restored ${session1.session_restored}`)
  const connected = (await journal()).find(
    (e) => e.direction === 'send' && e.session_id === sid1 && e.request_id === connect1.request_id,
  )
  const nodeId = connected?.frame?.result?.nodeid
  check(typeof nodeId === 'string' && nodeId, `no nodeid in the connect result: ${show(connected?.frame)}`)
  ok(`session ${sid1} (${session1.connection_id}) contexts ${show(session1.contexts)} protocol ${protocol1.slice(0, 24)}… node ${nodeId}`)

  await inboundCall(sid1, 'node-in-1', nodeId)

  step('journal: connect, receive, answer, end, and every event acked')
  ok(checkJournal(await ackedJournal(sid1), sid1, 'node-in-1'))

  step('server-initiated disconnect (signalwire.disconnect, then close)')
  const d = await post('/__mock__/disconnect', { restart: false, session_id: sid1 })
  check(d.count === 1 && d.closed?.[0]?.session_id === sid1, `disconnect: ${show(d)}`)
  check(d.closed[0].acked === true, `the SDK did not answer signalwire.disconnect: ${show(d)}`)
  ok('the SDK acknowledged signalwire.disconnect; the mock closed the socket')

  step('the SDK reconnects with its protocol string and the session is restored')
  const session2 = await waitFor(
    `a restored session with protocol ${protocol1}`,
    async () => {
      const s = await sessions()
      return { found: s.find((x) => x.id !== sid1 && x.protocol_string === protocol1 && x.session_restored), seen: s }
    },
    12_000,
  )
  const sid2 = session2.id
  const connects = (await journal()).filter((e) => e.direction === 'recv' && e.method === 'signalwire.connect')
  const connect2 = connects.find((e) => e.session_id === sid2)
  check(connect2, `no signalwire.connect journaled for ${sid2}`)
  check(connect2.frame.params.protocol === protocol1, `the reconnect carries protocol ${show(connect2.frame.params.protocol)}, not ${protocol1}`)
  check(!(await sessions()).some((x) => x.id === sid1), `the old session ${sid1} is still listed`)
  ok(`session ${sid2} restored (session_restored true, protocol ${protocol1.slice(0, 24)}…, contexts ${show(session2.contexts)}, reconnecting events seen: ${reconnecting})`)

  await inboundCall(sid2, 'node-in-2', nodeId)

  step('journal after the restore: answer and end on the new session, every event acked')
  const j = await ackedJournal(sid1, sid2)
  const mine = j.filter((e) => e.session_id === sid2)
  const answers = mine.filter((e) => e.direction === 'recv' && e.method === 'calling.answer')
  check(answers.some((e) => e.frame.params.call_id === 'node-in-2'), `no calling.answer for node-in-2 on ${sid2}`)
  const ends = mine.filter((e) => e.direction === 'recv' && e.method === 'calling.end')
  check(ends.some((e) => e.frame.params.call_id === 'node-in-2'), `no calling.end for node-in-2 on ${sid2}`)
  const events = j.filter((e) => e.direction === 'send' && e.method === 'signalwire.event')
  check(
    mine.filter((e) => e.direction === 'send' && e.method === 'signalwire.event').length >= 4,
    `expected at least 4 events on ${sid2}`,
  )
  ok(`${events.length} events over both sessions, all acked`)
}

main().then(
  () => finish(0, `the Node SDK answered, hung up and resumed against ${WS_URL}`),
  (e) => finish(1, e instanceof Failure ? e.message : (e?.stack ?? show(e))),
)
