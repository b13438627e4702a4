// Browser push: permission only from a click, subscribe with the hub's VAPID key
// (re-subscribing when the key changed), send the subscription, remember it.
import { ref } from 'vue'
import { api } from '../services/api'
import { currentSession } from '../services/auth'

const SERVER_KEY = 'notifyhub.push.serverKey'

/** Where this browser remembers the endpoint it registered for the signed-in user: per
 * user, so that a second trader signing in here registers the subscription for
 * themselves instead of being told it is done. */
export function endpointKey(): string {
  return `notifyhub.push.endpoint.${currentSession()?.userId ?? 'anonymous'}`
}

export type PushError = 'unsupported' | 'denied' | 'failed'

export function urlBase64ToUint8Array(base64: string): Uint8Array<ArrayBuffer> {
  const padded = (base64 + '='.repeat((4 - (base64.length % 4)) % 4)).replace(/-/g, '+').replace(/_/g, '/')
  const raw = atob(padded)
  const out = new Uint8Array(new ArrayBuffer(raw.length))
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i)
  return out
}

export function usePushNotifications() {
  const isSupported = typeof window !== 'undefined' && 'serviceWorker' in navigator && 'PushManager' in window && 'Notification' in window
  const permission = ref<NotificationPermission>(isSupported ? Notification.permission : 'denied')
  const subscribed = ref(!!localStorage.getItem(endpointKey()))
  const error = ref<string | null>(null)
  const busy = ref(false)

  async function requestPermission(): Promise<NotificationPermission> {
    if (!isSupported) {
      error.value = 'This browser cannot show push notifications.'
      return 'denied'
    }
    permission.value = await Notification.requestPermission()
    if (permission.value === 'denied') {
      error.value = 'Notifications are blocked for this site. Allow them in the browser’s site settings to get alerts.'
    }
    return permission.value
  }

  async function subscribeToPush(): Promise<boolean> {
    error.value = null
    if (!isSupported) {
      error.value = 'This browser cannot show push notifications.'
      return false
    }
    busy.value = true
    try {
      if (permission.value !== 'granted' && (await requestPermission()) !== 'granted') return false
      const registration = await navigator.serviceWorker.ready
      const { public_key } = await api.vapidKey()
      let sub = await registration.pushManager.getSubscription()
      if (sub && localStorage.getItem(SERVER_KEY) !== public_key) {
        // The hub's key changed: an old subscription would be refused by the push service.
        await sub.unsubscribe()
        sub = null
      }
      sub ??= await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: urlBase64ToUint8Array(public_key) })
      await api.subscribePush(sub.toJSON())
      localStorage.setItem(endpointKey(), sub.endpoint)
      localStorage.setItem(SERVER_KEY, public_key)
      subscribed.value = true
      return true
    } catch (e) {
      const name = e instanceof DOMException ? e.name : ''
      error.value =
        name === 'NotAllowedError'
          ? 'Notifications are blocked for this site. Allow them in the browser’s site settings.'
          : `Could not enable push: ${e instanceof Error ? e.message : String(e)}`
      return false
    } finally {
      busy.value = false
    }
  }

  async function unsubscribeFromPush(): Promise<void> {
    const endpoint = localStorage.getItem(endpointKey())
    if (isSupported) {
      const registration = await navigator.serviceWorker.ready
      await (await registration.pushManager.getSubscription())?.unsubscribe()
    }
    if (endpoint) await api.unsubscribePush(endpoint)
    localStorage.removeItem(endpointKey())
    subscribed.value = false
  }

  /** On opening the dashboard: a browser holds one subscription, and the hub gives it to
   * whoever registered it last (another trader on this browser may have since). If the
   * signed-in trader turned push on here, register it for them again; if the browser lost
   * it, say so. */
  async function syncSubscription(): Promise<void> {
    const endpoint = localStorage.getItem(endpointKey())
    if (!isSupported || !endpoint || permission.value !== 'granted') return
    try {
      const registration = await navigator.serviceWorker.ready
      const sub = await registration.pushManager.getSubscription()
      if (!sub) {
        localStorage.removeItem(endpointKey())
        subscribed.value = false
        return
      }
      await api.subscribePush(sub.toJSON())
      localStorage.setItem(endpointKey(), sub.endpoint)
    } catch (e) {
      console.warn('could not re-register the push subscription', e)
    }
  }

  return { isSupported, permission, subscribed, error, busy, requestPermission, subscribeToPush, unsubscribeFromPush, syncSubscription }
}
