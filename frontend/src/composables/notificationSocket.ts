// The live channel: connects with the token, reconnects with exponential backoff and
// `since=<last sequence seen>`, so toasts missed while offline arrive once, in order.
import type { ServerMessage } from '../types/ServerMessage'

export type SocketState = 'connecting' | 'live' | 'offline'

export interface SocketOptions {
  url: (since: number | null) => string
  onMessage: (msg: ServerMessage) => void
  onState?: (state: SocketState) => void
  /** Called before each reconnect: false stops retrying (e.g. the session expired). */
  canReconnect?: () => boolean
  createSocket?: (url: string) => WebSocket
  schedule?: (fn: () => void, ms: number) => unknown
  random?: () => number
}

/** 1 s, 2 s, 4 s … capped at 30 s, with up to 20 % jitter. */
export function backoffDelay(attempt: number, random: () => number = Math.random): number {
  const base = Math.min(30_000, 1000 * 2 ** Math.max(0, attempt))
  return Math.round(base * (1 + 0.2 * random()))
}

export class NotificationSocket {
  private socket: WebSocket | null = null
  private attempt = 0
  private stopped = false
  /** Highest sequence number received; the next connection replays after it. */
  lastSequence: number | null = null

  constructor(private opts: SocketOptions) {}

  start(since: number | null = null): void {
    this.stopped = false
    if (since !== null) this.lastSequence = since
    this.connect()
  }

  stop(): void {
    this.stopped = true
    this.socket?.close(1000, 'bye')
    this.socket = null
    this.opts.onState?.('offline')
  }

  private connect(): void {
    const create = this.opts.createSocket ?? ((url: string) => new WebSocket(url))
    this.opts.onState?.('connecting')
    const ws = create(this.opts.url(this.lastSequence))
    this.socket = ws
    ws.onmessage = (ev: MessageEvent) => {
      let msg: ServerMessage
      try {
        msg = JSON.parse(String(ev.data)) as ServerMessage
      } catch {
        return
      }
      if (msg.type === 'ready') {
        this.attempt = 0
        this.lastSequence = Math.max(this.lastSequence ?? 0, msg.last_sequence_number)
        this.opts.onState?.('live')
      } else if (msg.type === 'notification_toast') {
        // The server never repeats a number on one socket; a reconnect may overlap.
        if (this.lastSequence !== null && msg.sequence_number <= this.lastSequence) return
        this.lastSequence = msg.sequence_number
      }
      this.opts.onMessage(msg)
    }
    ws.onclose = () => {
      if (this.socket !== ws) return
      this.socket = null
      if (this.stopped) return
      this.opts.onState?.('offline')
      if (this.opts.canReconnect && !this.opts.canReconnect()) return
      const delay = backoffDelay(this.attempt++, this.opts.random)
      const schedule = this.opts.schedule ?? ((fn: () => void, ms: number) => setTimeout(fn, ms))
      schedule(() => {
        if (!this.stopped) this.connect()
      }, delay)
    }
  }
}
