// notifyhub service worker: shows pushed notifications and opens the app on click.
self.addEventListener('install', () => self.skipWaiting())
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()))

self.addEventListener('push', (event) => {
  let data = {}
  try {
    data = event.data ? event.data.json() : {}
  } catch {
    data = { title: 'notifyhub', body: event.data ? event.data.text() : '' }
  }
  const title = data.title || 'notifyhub'
  event.waitUntil(
    self.registration.showNotification(title, {
      body: data.body || '',
      tag: data.tag || data.notification_id || undefined,
      // Critical alerts stay on screen until the trader acts on them.
      requireInteraction: data.priority === 'critical',
      // A test push has no stored notification to open.
      data: { url: data.url || '/', notificationId: data.test ? undefined : data.notification_id },
    }),
  )
})

self.addEventListener('notificationclick', (event) => {
  event.notification.close()
  const target = new URL((event.notification.data && event.notification.data.url) || '/', self.location.origin)
  const path = event.notification.data && event.notification.data.notificationId ? `/notifications/${event.notification.data.notificationId}` : target.pathname
  event.waitUntil(
    self.clients.matchAll({ type: 'window', includeUncontrolled: true }).then((windows) => {
      for (const w of windows) {
        if (new URL(w.url).origin === self.location.origin && 'focus' in w) {
          w.navigate(path)
          return w.focus()
        }
      }
      return self.clients.openWindow(path)
    }),
  )
})
