// Starts the real hub binary for the browser tests, and talks to it as a service would.
import { spawn } from 'node:child_process'
import { createHmac, randomUUID } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { chromium } from 'playwright-core'

export const JWT_SECRET = 'e2e-secret-0123456789abcdef'
export const SERVICE_TOKEN = 'e2e-service-token-000000001'

const b64url = (b) => Buffer.from(b).toString('base64url')

export function token(userId, role = 'user', ttlSeconds = 3600) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))
  const payload = b64url(JSON.stringify({ sub: userId, role, exp: Math.floor(Date.now() / 1000) + ttlSeconds }))
  const sig = createHmac('sha256', JWT_SECRET).update(`${header}.${payload}`).digest('base64url')
  return `${header}.${payload}.${sig}`
}

export function freePort() {
  return new Promise((res) => {
    const s = createServer()
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => res(port))
    })
  })
}

export function hubBinary() {
  if (process.env.NOTIFYHUB_BIN) return process.env.NOTIFYHUB_BIN
  const target = process.env.CARGO_TARGET_DIR || resolve('..', 'target')
  return join(target, 'debug', 'notifyhub')
}

export class Hub {
  constructor({ port, dataDir, extraEnv = {} }) {
    this.port = port
    this.dataDir = dataDir ?? mkdtempSync(join(tmpdir(), 'notifyhub-e2e-'))
    this.extraEnv = extraEnv
    this.url = `http://127.0.0.1:${port}`
  }

  start() {
    return new Promise((res, rej) => {
      this.proc = spawn(hubBinary(), ['serve'], {
        env: {
          PATH: process.env.PATH,
          NOTIFYHUB_BIND: `127.0.0.1:${this.port}`,
          NOTIFYHUB_DATA_DIR: this.dataDir,
          NOTIFYHUB_WORKERS: '2',
          NOTIFYHUB_UI_DIR: resolve('dist'),
          NOTIFYHUB_JWT_SECRET: JWT_SECRET,
          NOTIFYHUB_SERVICE_TOKENS: SERVICE_TOKEN,
          RUST_LOG: 'warn',
          ...this.extraEnv,
        },
        stdio: ['ignore', 'ignore', 'pipe'],
      })
      let err = ''
      this.proc.stderr.on('data', (d) => {
        err += d
        if (err.includes('listening on')) res()
      })
      this.proc.on('error', (e) => rej(new Error(`cannot start ${hubBinary()} (build it with cargo build, or set NOTIFYHUB_BIN): ${e.message}`)))
      this.proc.on('exit', (code) => rej(new Error(`hub exited ${code}: ${err}`)))
    })
  }

  stop() {
    return new Promise((res) => {
      if (!this.proc || this.proc.exitCode !== null) return res()
      this.proc.removeAllListeners('exit')
      this.proc.on('exit', () => res())
      this.proc.kill('SIGTERM')
    })
  }

  async event(body) {
    const res = await fetch(`${this.url}/api/v1/events`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${SERVICE_TOKEN}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    })
    return { status: res.status, body: await res.json() }
  }

  async api(method, path, userToken, body) {
    const res = await fetch(`${this.url}/api/v1${path}`, {
      method,
      headers: { Authorization: `Bearer ${userToken}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    })
    return { status: res.status, body: await res.json() }
  }
}

export const newUser = () => randomUUID()

export const signal = (userId, confidence) => ({
  type: 'signal_generated',
  user_id: userId,
  signal: { signal_id: randomUUID(), symbol: 'AAPL', pattern_type: 'SPRING', confidence, entry_price: '152.35', stop_loss: '148.10', r_multiple: 3.2 },
})

export const info = (userId, title) => ({
  type: 'notification', user_id: userId, notification_type: 'signal_generated', priority: 'info', title, message: `${title} message`, metadata: {},
})

export const exit = (userId) => ({
  type: 'emergency_exit', user_id: userId, exit: { campaign_id: 'C-7', symbol: 'TSLA', reason: 'creek breached', positions_closed: 2 },
})

/** Debian's Chromium, headless, with no network of its own (this machine has none). */
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  })
}
