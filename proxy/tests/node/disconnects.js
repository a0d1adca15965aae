#!/usr/bin/env node
// node-postgres as a client: every way it says goodbye must be silent.
//
//   PGVEIL_TEST_URL=postgres://app@127.0.0.1:6432/postgres node disconnects.js
//
// Prints one JSON summary on stdout; exits 1 if any client, pool, cursor or
// stream emitted an error event or a step failed. Run it against PostgreSQL
// directly and through pgveil: both must pass.
'use strict'

const { Client, Pool } = require('pg')
const Cursor = require('pg-cursor')
const QueryStream = require('pg-query-stream')

const url = process.env.PGVEIL_TEST_URL
const CYCLES = Number(process.env.PGVEIL_TEST_CYCLES || 1000)
const WORKERS = 8
const TERMINATE = Buffer.from([0x58, 0, 0, 0, 4])

const summary = {
  cycles: 0,
  late_closes: 0,
  cycle_error_events: 0,
  error_events: 0,
  errors: [],
  terminate_before_startup: 0,
  pool: null,
  cursor: null,
  query_stream: null,
  failures: [],
}

function onError(where) {
  return (err) => {
    summary.error_events += 1
    if (where.startsWith('cycle ')) summary.cycle_error_events += 1
    if (summary.errors.length < 10) {
      summary.errors.push(`${where}: ${err && err.code ? err.code + ' ' : ''}${err && err.message}`)
    }
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function closed(client) {
  return new Promise((resolve) => client.connection.once('end', resolve))
}

// Send Terminate like client.end() does, but keep the socket open for `ms`
// so the server's close arrives first (what makes the race deterministic).
async function endLate(client, ms) {
  const done = closed(client)
  client._ending = true
  client.connection._ending = true
  client.connection.stream.write(TERMINATE)
  await sleep(ms)
  client.connection.stream.end()
  await done
}

async function cycle(i) {
  const client = new Client({ connectionString: url })
  client.on('error', onError(`cycle ${i}`))
  await client.connect()
  const res = await client.query('select $1::int as n', [i])
  if (res.rows[0].n !== i) throw new Error(`cycle ${i}: wrong answer ${JSON.stringify(res.rows)}`)
  if (i % 2 === 1) {
    summary.late_closes += 1
    await endLate(client, 2 + (i % 7) * 3)
  } else {
    await client.end()
  }
  summary.cycles += 1
}

async function cycles() {
  let next = 0
  const worker = async () => {
    while (next < CYCLES) {
      const i = next++
      await cycle(i)
    }
  }
  await Promise.all(Array.from({ length: WORKERS }, worker))
}

// end() right after connect(): node-postgres writes Terminate before the
// StartupMessage. PostgreSQL closes without a word.
async function terminateBeforeStartup() {
  for (let i = 0; i < 20; i++) {
    const client = new Client({ connectionString: url })
    client.on('error', onError(`early end ${i}`))
    const connecting = client.connect().then(
      () => 'connected',
      (err) => `rejected: ${err.message}`
    )
    await client.end()
    // Against PostgreSQL the connect() promise of a client ended this early
    // never settles; a server ErrorResponse would reject it.
    const outcome = await Promise.race([connecting, sleep(100).then(() => 'pending')])
    if (outcome !== 'pending' && outcome !== 'connected' && !/Connection terminated/.test(outcome)) {
      summary.failures.push(`early end ${i}: ${outcome}`)
    }
    summary.terminate_before_startup += 1
  }
}

async function pool() {
  const p = new Pool({ connectionString: url, max: 5, idleTimeoutMillis: 50 })
  p.on('error', onError('pool'))
  p.on('connect', (c) => c.on('error', onError('pool client')))
  const results = await Promise.all(
    Array.from({ length: 40 }, (_, i) => p.query('select $1::int as n', [i]))
  )
  const sum = results.reduce((acc, r) => acc + r.rows[0].n, 0)
  await sleep(150) // idle clients time out and are ended by the pool
  const afterIdle = p.totalCount
  await p.query('select 1')
  await p.end()
  summary.pool = { queries: results.length, sum, total_after_idle: afterIdle }
  if (sum !== (39 * 40) / 2) summary.failures.push(`pool: wrong sum ${sum}`)
}

async function withClient(where, fn) {
  const client = new Client({ connectionString: url })
  client.on('error', onError(where))
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end()
  }
}

function readCursor(cursor, n) {
  return new Promise((resolve, reject) => {
    cursor.read(n, (err, rows) => (err ? reject(err) : resolve(rows)))
  })
}

function closeCursor(cursor) {
  return new Promise((resolve, reject) => cursor.close((err) => (err ? reject(err) : resolve())))
}

async function cursors() {
  const sql = 'select g from generate_series(1, 1000) g'
  const full = await withClient('cursor', async (client) => {
    const cursor = client.query(new Cursor(sql))
    let total = 0
    for (;;) {
      const rows = await readCursor(cursor, 100)
      if (rows.length === 0) break
      total += rows.length
    }
    await closeCursor(cursor)
    return total
  })
  const early = await withClient('cursor early', async (client) => {
    const cursor = client.query(new Cursor(sql))
    const rows = await readCursor(cursor, 10)
    await closeCursor(cursor)
    const after = await client.query('select 1 as one')
    return rows.length + after.rows[0].one
  })
  summary.cursor = { full, early }
  if (full !== 1000) summary.failures.push(`cursor read ${full} rows`)
  if (early !== 11) summary.failures.push(`early-closed cursor: ${early}`)
}

function drain(stream, limit) {
  return new Promise((resolve, reject) => {
    let n = 0
    stream.on('error', reject)
    stream.on('data', () => {
      n += 1
      if (limit && n === limit) {
        stream.destroy()
        resolve(n)
      }
    })
    stream.on('end', () => resolve(n))
  })
}

async function streams() {
  const sql = 'select g from generate_series(1, 5000) g'
  const full = await withClient('stream', (client) =>
    drain(client.query(new QueryStream(sql, [], { batchSize: 100 })))
  )
  const early = await withClient('stream early', async (client) => {
    const n = await drain(client.query(new QueryStream(sql, [], { batchSize: 100 })), 50)
    await sleep(20)
    const after = await client.query('select 2 as two')
    return n + after.rows[0].two
  })
  summary.query_stream = { full, early }
  if (full !== 5000) summary.failures.push(`stream read ${full} rows`)
  if (early !== 52) summary.failures.push(`early-closed stream: ${early}`)
}

async function main() {
  if (!url) throw new Error('set PGVEIL_TEST_URL to a postgres:// connection string')
  const started = Date.now()
  for (const [name, step] of [
    ['cycles', cycles],
    ['terminate before startup', terminateBeforeStartup],
    ['pool', pool],
    ['cursor', cursors],
    ['query stream', streams],
  ]) {
    try {
      await step()
    } catch (err) {
      summary.failures.push(`${name}: ${err && err.stack ? err.stack.split('\n')[0] : err}`)
    }
  }
  await sleep(200) // late error events would arrive here
  summary.seconds = (Date.now() - started) / 1000
  const ok = summary.error_events === 0 && summary.failures.length === 0
  summary.ok = ok
  process.stdout.write(JSON.stringify(summary) + '\n')
  process.exit(ok ? 0 : 1)
}

main().catch((e) => { console.error("main failed", e); process.exit(2) })
