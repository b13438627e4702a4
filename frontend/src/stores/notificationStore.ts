// The notification state of the dashboard: inbox pages, unread badge, preferences,
// and the live channel feeding them.
import { defineStore } from 'pinia'
import { computed, ref, shallowRef } from 'vue'
import type { Notification } from '../types/Notification'
import type { NotificationPreferences } from '../types/NotificationPreferences'
import type { NotificationType } from '../types/NotificationType'
import type { PreferencesPatch } from '../types/PreferencesPatch'
import type { ServerMessage } from '../types/ServerMessage'
import { ApiError, api } from '../services/api'
import { currentSession, isExpired } from '../services/auth'
import { NotificationSocket, type SocketState } from '../composables/notificationSocket'

// The story's five filters, and emergency exits, which none of them would show.
export type Filter = 'all' | 'unread' | 'signals' | 'warnings' | 'exits' | 'errors'

const FILTER_QUERY: Record<Filter, { unread_only?: boolean; notification_type?: NotificationType }> = {
  all: {},
  unread: { unread_only: true },
  signals: { notification_type: 'signal_generated' },
  warnings: { notification_type: 'risk_warning' },
  exits: { notification_type: 'emergency_exit' },
  errors: { notification_type: 'system_error' },
}

const PAGE = 20

function matches(filter: Filter, n: Notification): boolean {
  const q = FILTER_QUERY[filter]
  return (!q.unread_only || !n.read) && (!q.notification_type || n.notification_type === q.notification_type)
}

export const useNotificationStore = defineStore('notifications', () => {
  // shallowRef: JSON metadata makes deep reactive types explode; arrays are replaced, not mutated.
  const notifications = shallowRef<Notification[]>([])
  const unreadCount = ref(0)
  const preferences = shallowRef<NotificationPreferences | null>(null)
  const isLoading = ref(false)
  const error = ref<string | null>(null)
  const filter = ref<Filter>('all')
  const total = ref(0)
  const connection = ref<SocketState>('offline')
  let socket: NotificationSocket | null = null

  const unreadNotifications = computed(() => notifications.value.filter((n) => !n.read))
  const notificationsByType = computed(() => {
    const out: Partial<Record<NotificationType, Notification[]>> = {}
    for (const n of notifications.value) (out[n.notification_type] ??= []).push(n)
    return out
  })
  const hasMore = computed(() => notifications.value.length < total.value)

  async function fetchNotifications(opts: { reset?: boolean } = {}): Promise<void> {
    isLoading.value = true
    error.value = null
    try {
      const offset = opts.reset ? 0 : notifications.value.length
      const page = await api.list({ ...FILTER_QUERY[filter.value], limit: PAGE, offset })
      notifications.value = opts.reset ? page.data : [...notifications.value, ...page.data]
      total.value = page.pagination.total_count
    } catch (e) {
      error.value = e instanceof Error ? e.message : String(e)
    } finally {
      isLoading.value = false
    }
  }

  async function refreshUnreadCount(): Promise<void> {
    const page = await api.list({ unread_only: true, limit: 1 })
    unreadCount.value = page.pagination.total_count
  }

  async function setFilter(next: Filter): Promise<void> {
    filter.value = next
    await fetchNotifications({ reset: true })
  }

  async function markAsRead(id: string): Promise<void> {
    const n = notifications.value.find((x) => x.id === id)
    if (n?.read) return
    await api.markRead(id)
    notifications.value = notifications.value.map((x) => (x.id === id ? { ...x, read: true } : x))
    if (filter.value === 'unread') notifications.value = notifications.value.filter((x) => x.id !== id)
    unreadCount.value = Math.max(0, unreadCount.value - 1)
  }

  async function markAllAsRead(): Promise<void> {
    await api.markAllRead()
    notifications.value = filter.value === 'unread' ? [] : notifications.value.map((x) => ({ ...x, read: true }))
    unreadCount.value = 0
  }

  async function fetchPreferences(): Promise<NotificationPreferences> {
    preferences.value = await api.getPreferences()
    return preferences.value
  }

  async function updatePreferences(patch: PreferencesPatch): Promise<NotificationPreferences> {
    const res = await api.updatePreferences(patch)
    preferences.value = res.preferences
    return res.preferences
  }

  function receive(msg: ServerMessage, onToast?: (n: Notification) => void): void {
    if (msg.type === 'notification_toast') {
      unreadCount.value = msg.unread_count
      const n = msg.notification
      if (!notifications.value.some((x) => x.id === n.id)) {
        if (matches(filter.value, n)) {
          notifications.value = [n, ...notifications.value]
          total.value += 1
        }
      }
      onToast?.(n)
    } else if (msg.type === 'unread_count') {
      unreadCount.value = msg.count
    }
  }

  /** Opens the live channel; `onToast` shows each new notification. */
  function subscribeToToasts(onToast: (n: Notification) => void, createSocket?: (url: string) => WebSocket): void {
    socket?.stop()
    socket = new NotificationSocket({
      url: (since) => {
        const proto = location.protocol === 'https:' ? 'wss:' : 'ws:'
        const token = encodeURIComponent(currentSession()?.token ?? '')
        return `${proto}//${location.host}/ws?token=${token}${since !== null ? `&since=${since}` : ''}`
      },
      onMessage: (msg) => receive(msg, onToast),
      onState: (s) => (connection.value = s),
      canReconnect: () => !isExpired(currentSession()),
      createSocket,
    })
    socket.start(null)
  }

  function unsubscribe(): void {
    socket?.stop()
    socket = null
  }

  return {
    notifications, unreadCount, preferences, isLoading, error, filter, total, connection,
    unreadNotifications, notificationsByType, hasMore,
    fetchNotifications, refreshUnreadCount, setFilter, markAsRead, markAllAsRead, fetchPreferences,
    updatePreferences, subscribeToToasts, unsubscribe, receive,
  }
})

export { ApiError }
