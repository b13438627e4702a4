// REST calls to the hub. Errors arrive in the hub's format and are raised as ApiError,
// so components can show the server's message and highlight the offending field.
import type { Notification } from '../types/Notification'
import type { NotificationPreferences } from '../types/NotificationPreferences'
import type { PreferencesPatch } from '../types/PreferencesPatch'
import { currentSession } from './auth'

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
    public details: Record<string, unknown> = {},
  ) {
    super(message)
  }

  get field(): string | undefined {
    return typeof this.details.field === 'string' ? this.details.field : undefined
  }
}

export interface Page {
  data: Notification[]
  pagination: { returned_count: number; total_count: number; limit: number; offset: number; has_more: boolean }
}

export interface Delivery {
  channel: string
  status: string
  reason: string | null
  attempts: number
  last_error: string | null
  updated_at: string
}

export interface SandboxMessage {
  id: string
  channel: 'email' | 'sms'
  user_id: string
  to: string
  subject: string
  body: string
  notification_id: string | null
  sent_at: string
}

async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  const session = currentSession()
  const headers: Record<string, string> = {}
  if (session) headers.Authorization = `Bearer ${session.token}`
  if (body !== undefined) headers['Content-Type'] = 'application/json'
  const res = await fetch(`/api/v1${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  const text = await res.text()
  const json = text ? JSON.parse(text) : {}
  if (!res.ok) {
    const e = json.error ?? {}
    throw new ApiError(res.status, e.code ?? 'HTTP_ERROR', e.message ?? `HTTP ${res.status}`, e.details ?? {})
  }
  return json as T
}

export interface ListQuery {
  unread_only?: boolean
  notification_type?: string
  limit?: number
  offset?: number
}

export const api = {
  list(q: ListQuery): Promise<Page> {
    const p = new URLSearchParams()
    if (q.unread_only) p.set('unread_only', 'true')
    if (q.notification_type) p.set('notification_type', q.notification_type)
    p.set('limit', String(q.limit ?? 20))
    p.set('offset', String(q.offset ?? 0))
    return request('GET', `/notifications?${p}`)
  },
  markRead: (id: string) => request<{ success: boolean }>('PATCH', `/notifications/${id}/read`),
  markAllRead: () => request<{ success: boolean; updated_count: number }>('POST', '/notifications/read-all'),
  deliveries: (id: string) => request<{ data: Delivery[] }>('GET', `/notifications/${id}/deliveries`),
  getPreferences: () => request<NotificationPreferences>('GET', '/notifications/preferences'),
  updatePreferences: (patch: PreferencesPatch) =>
    request<{ success: boolean; preferences: NotificationPreferences }>('POST', '/notifications/preferences', patch),
  sendTest: (channel: string) => request<{ success: boolean; message: string }>('POST', `/notifications/test/${channel}`),
  vapidKey: () => request<{ public_key: string }>('GET', '/push/vapid-public-key'),
  subscribePush: (sub: PushSubscriptionJSON) => request<{ success: boolean }>('POST', '/push/subscriptions', sub),
  unsubscribePush: (endpoint: string) => request<{ success: boolean }>('DELETE', '/push/subscriptions', { endpoint }),
  sandbox: () => request<{ email_mode: string; sms_mode: string; data: SandboxMessage[] }>('GET', '/sandbox/outbox'),
}
