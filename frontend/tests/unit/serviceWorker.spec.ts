// The service worker (public/sw.js) run against a stand-in of its global scope: what a
// push shows, and where a click on it leads.
import { beforeEach, describe, expect, it, vi } from 'vitest'
import code from '../../public/sw.js?raw'

type Listener = (event: Record<string, unknown>) => void
const ORIGIN = 'https://hub.example.com'

function loadWorker(windows: { url: string; navigate: ReturnType<typeof vi.fn>; focus: ReturnType<typeof vi.fn> }[] = []) {
  const listeners: Record<string, Listener> = {}
  const scope = {
    location: { origin: ORIGIN },
    addEventListener: (type: string, fn: Listener) => (listeners[type] = fn),
    skipWaiting: vi.fn(),
    registration: { showNotification: vi.fn(async () => undefined) },
    clients: { claim: vi.fn(), matchAll: vi.fn(async () => windows), openWindow: vi.fn(async () => null) },
  }
  new Function('self', code)(scope)
  const fire = async (type: string, event: Record<string, unknown>) => {
    let done: Promise<unknown> = Promise.resolve()
    listeners[type]({ ...event, waitUntil: (p: Promise<unknown>) => (done = p) })
    await done
  }
  return { scope, fire }
}

const pushOf = (data: unknown) => ({ data: { json: () => data, text: () => String(data) } })

describe('service worker', () => {
  beforeEach(() => vi.restoreAllMocks())

  it('shows a critical push until the trader acts, and an info push normally', async () => {
    const { scope, fire } = loadWorker()
    await fire('push', pushOf({ title: 'Emergency exit: TSLA', body: 'Campaign C-7 closed', notification_id: 'n1', priority: 'critical', url: '/?notification=n1' }))
    expect(scope.registration.showNotification).toHaveBeenCalledWith('Emergency exit: TSLA', {
      body: 'Campaign C-7 closed', tag: 'n1', requireInteraction: true, data: { url: '/?notification=n1', notificationId: 'n1' },
    })
    await fire('push', pushOf({ title: 'Signal', body: 'AAPL', notification_id: 'n2', priority: 'info' }))
    expect(scope.registration.showNotification).toHaveBeenLastCalledWith('Signal', expect.objectContaining({ requireInteraction: false }))
  })

  it('shows a push that is not JSON as text under the app name', async () => {
    const { scope, fire } = loadWorker()
    await fire('push', { data: { json: () => JSON.parse('not json'), text: () => 'plain words' } })
    expect(scope.registration.showNotification).toHaveBeenCalledWith('notifyhub', expect.objectContaining({ body: 'plain words' }))
  })

  it("opens the notification's page in an open tab, or in a new window", async () => {
    const tab = { url: `${ORIGIN}/`, navigate: vi.fn(), focus: vi.fn(async () => tab) }
    const withTab = loadWorker([tab])
    const close = vi.fn()
    await withTab.fire('notificationclick', { notification: { close, data: { url: '/?notification=n1', notificationId: 'n1' } } })
    expect(close).toHaveBeenCalled()
    expect(tab.navigate).toHaveBeenCalledWith('/notifications/n1')
    expect(tab.focus).toHaveBeenCalled()
    expect(withTab.scope.clients.openWindow).not.toHaveBeenCalled()

    const alone = loadWorker([{ url: 'https://elsewhere.example.com/', navigate: vi.fn(), focus: vi.fn() }])
    await alone.fire('notificationclick', { notification: { close: vi.fn(), data: { url: '/?notification=n1', notificationId: 'n1' } } })
    expect(alone.scope.clients.openWindow).toHaveBeenCalledWith('/notifications/n1')
  })

  it('opens the dashboard for a test push, which has no stored notification', async () => {
    const { scope, fire } = loadWorker()
    await fire('push', pushOf({ title: 'Test push from notifyhub', body: 'It works', notification_id: 't1', priority: 'info', url: '/', test: true }))
    const [, options] = scope.registration.showNotification.mock.calls[0] as unknown as [string, { data: unknown }]
    await fire('notificationclick', { notification: { close: vi.fn(), data: options.data } })
    expect(scope.clients.openWindow).toHaveBeenCalledWith('/')
  })
})
