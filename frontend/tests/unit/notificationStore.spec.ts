import { createPinia, setActivePinia } from 'pinia'
import { beforeEach, describe, expect, it } from 'vitest'
import { useNotificationStore } from '../../src/stores/notificationStore'
import { mockFetch, notification } from '../fixtures'

describe('useNotificationStore', () => {
  beforeEach(() => setActivePinia(createPinia()))

  it('fetches pages and maps filters to the API', async () => {
    const calls = mockFetch({
      'GET /api/v1/notifications': () => ({ json: { data: [notification()], pagination: { returned_count: 1, total_count: 3, limit: 20, offset: 0, has_more: true } } }),
    })
    const store = useNotificationStore()
    await store.fetchNotifications({ reset: true })
    expect(store.notifications).toHaveLength(1)
    expect(store.hasMore).toBe(true)
    await store.setFilter('warnings')
    expect(calls.at(-1)!.path).toBe('/api/v1/notifications?notification_type=risk_warning&limit=20&offset=0')
    await store.setFilter('exits')
    expect(calls.at(-1)!.path).toBe('/api/v1/notifications?notification_type=emergency_exit&limit=20&offset=0')
    await store.setFilter('unread')
    expect(calls.at(-1)!.path).toContain('unread_only=true')
    await store.fetchNotifications()
    expect(calls.at(-1)!.path).toContain('offset=1')
  })

  it('marks one read and all read in one request each', async () => {
    const a = notification({ sequence_number: 1 })
    const b = notification({ sequence_number: 2 })
    const calls = mockFetch({
      'GET /api/v1/notifications': () => ({ json: { data: [b, a], pagination: { returned_count: 2, total_count: 2, limit: 20, offset: 0, has_more: false } } }),
      'PATCH /api/v1/notifications/': () => ({ json: { success: true } }),
      'POST /api/v1/notifications/read-all': () => ({ json: { success: true, updated_count: 1 } }),
    })
    const store = useNotificationStore()
    await store.fetchNotifications({ reset: true })
    store.unreadCount = 2
    await store.markAsRead(a.id)
    expect(store.unreadCount).toBe(1)
    expect(store.unreadNotifications.map((n) => n.id)).toEqual([b.id])
    await store.markAllAsRead()
    expect(store.unreadCount).toBe(0)
    expect(calls.filter((c) => c.method === 'POST')).toHaveLength(1)
  })

  it('takes live toasts and unread counts from the socket', () => {
    const store = useNotificationStore()
    const shown: string[] = []
    const n = notification({ sequence_number: 9, notification_type: 'risk_warning' })
    store.receive({ type: 'notification_toast', sequence_number: 9, notification: n, unread_count: 4, timestamp: '' }, (x) => shown.push(x.id))
    expect(store.unreadCount).toBe(4)
    expect(store.notifications[0].id).toBe(n.id)
    expect(store.notificationsByType.risk_warning).toHaveLength(1)
    expect(shown).toEqual([n.id])
    store.receive({ type: 'unread_count', count: 1 })
    expect(store.unreadCount).toBe(1)
  })

  it('surfaces server errors', async () => {
    mockFetch({ 'GET /api/v1/notifications': () => ({ status: 503, json: { error: { code: 'SERVICE_UNAVAILABLE', message: 'the database is unreachable', details: {} } } }) })
    const store = useNotificationStore()
    await store.fetchNotifications({ reset: true })
    expect(store.error).toBe('the database is unreachable')
  })
})
