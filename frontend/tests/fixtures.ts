import type { Notification } from '../src/types/Notification'
import type { NotificationPreferences } from '../src/types/NotificationPreferences'

export function notification(over: Partial<Notification> = {}): Notification {
  return {
    id: crypto.randomUUID(),
    user_id: '00000000-0000-4000-8000-000000000001',
    sequence_number: 1,
    notification_type: 'signal_generated',
    priority: 'warning',
    title: 'New Signal: AAPL Spring',
    message: 'Spring pattern detected on AAPL with 87% confidence',
    metadata: { symbol: 'AAPL' },
    read: false,
    created_at: new Date().toISOString(),
    ...over,
  }
}

export function preferences(over: Partial<NotificationPreferences> = {}): NotificationPreferences {
  return {
    user_id: '00000000-0000-4000-8000-000000000001',
    email_enabled: true,
    email_address: null,
    sms_enabled: false,
    sms_phone_number: null,
    push_enabled: false,
    min_confidence_threshold: 85,
    quiet_hours: { enabled: false, start_time: '22:00:00', end_time: '08:00:00', timezone: 'America/New_York' },
    channel_preferences: { info_channels: ['toast'], warning_channels: ['toast', 'email'], critical_channels: ['toast', 'email', 'sms', 'push'] },
    updated_at: null,
    ...over,
  }
}

type Answer = { status?: number; json: unknown }

/** A fetch stand-in answering by method and path ("METHOD /path-prefix"), recording every
 * call; a route may answer later by returning a promise. */
export function mockFetch(routes: Record<string, (body: unknown) => Answer | Promise<Answer>>) {
  const calls: { method: string; path: string; body: unknown }[] = []
  const fn = async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = new URL(String(input), 'http://localhost')
    const method = init?.method ?? 'GET'
    const body = init?.body ? JSON.parse(String(init.body)) : undefined
    calls.push({ method, path: url.pathname + url.search, body })
    const key = Object.keys(routes).find((k) => {
      const [m, p] = k.split(' ')
      return m === method && (url.pathname + url.search).startsWith(p)
    })
    if (!key) return new Response(JSON.stringify({ error: { code: 'NOT_FOUND', message: 'no route', details: {} } }), { status: 404 })
    const r = await routes[key](body)
    return new Response(JSON.stringify(r.json), { status: r.status ?? 200 })
  }
  globalThis.fetch = fn as typeof fetch
  return calls
}
