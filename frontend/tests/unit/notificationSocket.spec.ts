import { describe, expect, it } from 'vitest'
import { NotificationSocket, backoffDelay } from '../../src/composables/notificationSocket'
import type { ServerMessage } from '../../src/types/ServerMessage'
import { notification } from '../fixtures'

class FakeSocket {
  onmessage: ((ev: MessageEvent) => void) | null = null
  onclose: (() => void) | null = null
  constructor(public url: string) {}
  send(msg: ServerMessage) {
    this.onmessage?.({ data: JSON.stringify(msg) } as MessageEvent)
  }
  close() {
    this.onclose?.()
  }
}

function toast(seq: number): ServerMessage {
  return { type: 'notification_toast', sequence_number: seq, notification: notification({ sequence_number: seq }), unread_count: seq, timestamp: '' }
}

describe('the live channel', () => {
  it('backs off exponentially up to 30 s', () => {
    const none = () => 0
    expect([0, 1, 2, 3, 4, 5, 10].map((a) => backoffDelay(a, none))).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000])
    expect(backoffDelay(0, () => 1)).toBe(1200)
  })

  it('reconnects with since = the last sequence seen and drops repeats', () => {
    const sockets: FakeSocket[] = []
    const delays: number[] = []
    const pending: (() => void)[] = []
    const got: number[] = []
    const s = new NotificationSocket({
      url: (since) => `ws://hub/ws?token=t${since === null ? '' : `&since=${since}`}`,
      onMessage: (m) => m.type === 'notification_toast' && got.push(m.sequence_number),
      createSocket: (url) => {
        const f = new FakeSocket(url)
        sockets.push(f)
        return f as unknown as WebSocket
      },
      schedule: (fn, ms) => {
        delays.push(ms)
        pending.push(fn)
      },
      random: () => 0,
    })
    s.start()
    expect(sockets[0].url).toBe('ws://hub/ws?token=t')
    sockets[0].send({ type: 'ready', last_sequence_number: 4 })
    sockets[0].send(toast(5))
    sockets[0].send(toast(6))
    sockets[0].close()
    expect(delays).toEqual([1000])
    pending.shift()!()
    expect(sockets[1].url).toBe('ws://hub/ws?token=t&since=6')
    sockets[1].close()
    expect(delays).toEqual([1000, 2000])
    pending.shift()!()
    sockets[2].send(toast(6))
    sockets[2].send(toast(7))
    sockets[2].send({ type: 'ready', last_sequence_number: 7 })
    expect(got).toEqual([5, 6, 7])
    sockets[2].close()
    expect(delays).toEqual([1000, 2000, 1000])
  })

  it('stops retrying when the session cannot reconnect', () => {
    const pending: (() => void)[] = []
    let created = 0
    const s = new NotificationSocket({
      url: () => 'ws://hub/ws',
      onMessage: () => {},
      canReconnect: () => false,
      createSocket: (url) => {
        created++
        return new FakeSocket(url) as unknown as WebSocket
      },
      schedule: (fn) => pending.push(fn),
    })
    s.start()
    ;(s as unknown as { socket: FakeSocket }).socket.close()
    expect(pending).toHaveLength(0)
    expect(created).toBe(1)
  })
})
