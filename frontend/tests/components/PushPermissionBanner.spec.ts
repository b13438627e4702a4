import { fireEvent, render, screen } from '@testing-library/vue'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import PushPermissionBanner from '../../src/components/notifications/PushPermissionBanner.vue'

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
    render(PushPermissionBanner)
    expect(screen.getByText(/Enable notifications to get instant alerts/)).toBeTruthy()
    expect(ask).not.toHaveBeenCalled()
    await fireEvent.click(screen.getByRole('button', { name: 'Enable' }))
    expect(ask).toHaveBeenCalledTimes(1)
  })

  it('remembers "Not now"', async () => {
    browserWithPush('default')
    const { unmount } = render(PushPermissionBanner)
    await fireEvent.click(screen.getByRole('button', { name: 'Not now' }))
    expect(screen.queryByText(/Enable notifications/)).toBeNull()
    unmount()
    render(PushPermissionBanner)
    expect(screen.queryByText(/Enable notifications/)).toBeNull()
    expect(localStorage.getItem('notifyhub.pushBanner.dismissed')).toBe('1')
  })

  it('explains a denial clearly', async () => {
    browserWithPush('default', 'denied')
    render(PushPermissionBanner)
    await fireEvent.click(screen.getByRole('button', { name: 'Enable' }))
    expect(await screen.findByText(/Notifications are blocked for this site/)).toBeTruthy()
  })

  it('stays hidden once permission was decided', () => {
    browserWithPush('granted')
    render(PushPermissionBanner)
    expect(screen.queryByText(/Enable notifications/)).toBeNull()
  })
})
