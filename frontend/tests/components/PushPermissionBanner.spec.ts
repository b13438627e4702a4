import { createPinia, setActivePinia } from 'pinia'
import { fireEvent, render, screen, waitFor } from '@testing-library/vue'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import PushPermissionBanner from '../../src/components/notifications/PushPermissionBanner.vue'
import { endpointKey } from '../../src/composables/usePushNotifications'
import { mockFetch, preferences } from '../fixtures'

function renderBanner() {
  const pinia = createPinia()
  setActivePinia(pinia)
  return render(PushPermissionBanner, { global: { plugins: [pinia] } })
}

/** A browser whose push service hands out a subscription once asked. */
function browserThatSubscribes() {
  vi.stubGlobal('Notification', Object.assign(function () {}, { permission: 'default', requestPermission: vi.fn(async () => 'granted') }))
  vi.stubGlobal('PushManager', function () {})
  const subscription = {
    endpoint: 'https://fcm.googleapis.com/fcm/send/abc',
    toJSON: () => ({ endpoint: 'https://fcm.googleapis.com/fcm/send/abc', keys: { p256dh: 'BAA', auth: 'AAA' } }),
    unsubscribe: vi.fn(async () => true),
  }
  const pushManager = { getSubscription: vi.fn(async () => null), subscribe: vi.fn(async () => subscription) }
  Object.defineProperty(navigator, 'serviceWorker', { configurable: true, value: { ready: Promise.resolve({ pushManager }) } })
}

function browserWithPush(permission: NotificationPermission, request: NotificationPermission = 'granted') {
  const requestPermission = vi.fn(async () => request)
  vi.stubGlobal('Notification', Object.assign(function () {}, { permission, requestPermission }))
  vi.stubGlobal('PushManager', function () {})
  Object.defineProperty(navigator, 'serviceWorker', { configurable: true, value: { ready: new Promise(() => {}) } })
  return requestPermission
}

describe('PushPermissionBanner', () => {
  beforeEach(() => localStorage.clear())
  afterEach(() => vi.unstubAllGlobals())

  it('offers notifications on a first visit and asks only on click', async () => {
    const ask = browserWithPush('default')
    renderBanner()
    expect(screen.getByText(/Enable notifications to get instant alerts/)).toBeTruthy()
    expect(ask).not.toHaveBeenCalled()
    await fireEvent.click(screen.getByRole('button', { name: 'Enable' }))
    expect(ask).toHaveBeenCalledTimes(1)
  })

  it('switches push on once the browser is subscribed, so that pushes are sent', async () => {
    browserThatSubscribes()
    const calls = mockFetch({
      'GET /api/v1/push/vapid-public-key': () => ({ json: { public_key: 'BPublicKey' } }),
      'POST /api/v1/push/subscriptions': () => ({ status: 201, json: { success: true } }),
      'POST /api/v1/notifications/preferences': (body) => ({ json: { success: true, preferences: preferences(body as object) } }),
    })
    renderBanner()
    await fireEvent.click(screen.getByRole('button', { name: 'Enable' }))
    await waitFor(() => expect(calls.map((c) => `${c.method} ${c.path}`)).toContain('POST /api/v1/notifications/preferences'))
    const order = calls.map((c) => `${c.method} ${c.path}`)
    expect(order.indexOf('POST /api/v1/push/subscriptions')).toBeLessThan(order.indexOf('POST /api/v1/notifications/preferences'))
    expect(calls.find((c) => c.path === '/api/v1/notifications/preferences')!.body).toEqual({ push_enabled: true })
    await waitFor(() => expect(screen.queryByText(/Enable notifications/)).toBeNull())
    expect(screen.queryByRole('alert')).toBeNull()
  })

  it('says so when the subscription worked but push could not be switched on', async () => {
    browserThatSubscribes()
    mockFetch({
      'GET /api/v1/push/vapid-public-key': () => ({ json: { public_key: 'BPublicKey' } }),
      'POST /api/v1/push/subscriptions': () => ({ status: 201, json: { success: true } }),
      'POST /api/v1/notifications/preferences': () => ({ status: 503, json: { error: { code: 'UNAVAILABLE', message: 'database unavailable', details: {} } } }),
    })
    renderBanner()
    await fireEvent.click(screen.getByRole('button', { name: 'Enable' }))
    expect((await screen.findByRole('alert')).textContent).toMatch(/turn on Browser push in the preferences/)
  })

  it('remembers a subscription for the trader who made it, not for the next one on this browser', () => {
    const signIn = (sub: string) =>
      localStorage.setItem('notifyhub.token', `x.${btoa(JSON.stringify({ sub, role: 'user', exp: 4102444800 }))}.y`)
    browserWithPush('default')
    signIn('00000000-0000-4000-8000-00000000000a')
    localStorage.setItem(endpointKey(), 'https://fcm.googleapis.com/fcm/send/abc')
    const first = renderBanner()
    expect(screen.queryByText(/Enable notifications/)).toBeNull()
    first.unmount()
    signIn('00000000-0000-4000-8000-00000000000b')
    renderBanner()
    expect(screen.getByText(/Enable notifications/)).toBeTruthy()
  })

  it("registers this browser's subscription again for a trader who turned push on here", async () => {
    const signIn = (sub: string) =>
      localStorage.setItem('notifyhub.token', `x.${btoa(JSON.stringify({ sub, role: 'user', exp: 4102444800 }))}.y`)
    vi.stubGlobal('Notification', Object.assign(function () {}, { permission: 'granted', requestPermission: vi.fn() }))
    vi.stubGlobal('PushManager', function () {})
    const subscription = { endpoint: 'https://fcm.googleapis.com/fcm/send/abc', toJSON: () => ({ endpoint: 'https://fcm.googleapis.com/fcm/send/abc', keys: { p256dh: 'BAA', auth: 'AAA' } }) }
    let current: typeof subscription | null = subscription
    const pushManager = { getSubscription: vi.fn(async () => current) }
    Object.defineProperty(navigator, 'serviceWorker', { configurable: true, value: { ready: Promise.resolve({ pushManager }) } })
    const calls = mockFetch({ 'POST /api/v1/push/subscriptions': () => ({ status: 201, json: { success: true } }) })
    signIn('00000000-0000-4000-8000-00000000000a')
    localStorage.setItem(endpointKey(), subscription.endpoint)
    const first = renderBanner()
    await waitFor(() => expect(calls.filter((c) => c.path === '/api/v1/push/subscriptions')).toHaveLength(1))
    expect(calls[0].body).toEqual(subscription.toJSON())
    first.unmount()
    // A trader who never turned push on here does not take the subscription.
    signIn('00000000-0000-4000-8000-00000000000b')
    renderBanner().unmount()
    // The browser dropped the subscription: forgotten, nothing sent.
    signIn('00000000-0000-4000-8000-00000000000a')
    current = null
    renderBanner()
    await waitFor(() => expect(localStorage.getItem(endpointKey())).toBeNull())
    expect(calls.filter((c) => c.path === '/api/v1/push/subscriptions')).toHaveLength(1)
  })

  it('remembers "Not now"', async () => {
    browserWithPush('default')
    const { unmount } = renderBanner()
    await fireEvent.click(screen.getByRole('button', { name: 'Not now' }))
    expect(screen.queryByText(/Enable notifications/)).toBeNull()
    unmount()
    renderBanner()
    expect(screen.queryByText(/Enable notifications/)).toBeNull()
    expect(localStorage.getItem('notifyhub.pushBanner.dismissed')).toBe('1')
  })

  it('explains a denial clearly', async () => {
    browserWithPush('default', 'denied')
    renderBanner()
    await fireEvent.click(screen.getByRole('button', { name: 'Enable' }))
    expect(await screen.findByText(/Notifications are blocked for this site/)).toBeTruthy()
  })

  it('stays hidden once permission was decided', () => {
    browserWithPush('granted')
    renderBanner()
    expect(screen.queryByText(/Enable notifications/)).toBeNull()
  })
})
