import { createTestingPinia } from '@pinia/testing'
import { fireEvent, render, screen } from '@testing-library/vue'
import userEvent from '@testing-library/user-event'
import { describe, expect, it, vi } from 'vitest'
import { createMemoryHistory, createRouter } from 'vue-router'
import NotificationCenter from '../../src/components/notifications/NotificationCenter.vue'
import { useNotificationStore } from '../../src/stores/notificationStore'
import { notification } from '../fixtures'

function setup(state: Record<string, unknown>) {
  const router = createRouter({ history: createMemoryHistory(), routes: [{ path: '/:p(.*)*', component: { template: '<div/>' } }] })
  const pinia = createTestingPinia({ createSpy: vi.fn, initialState: { notifications: state } })
  render(NotificationCenter, { global: { plugins: [pinia, router] } })
  return { store: useNotificationStore(), router }
}

describe('NotificationCenter', () => {
  it('shows the unread count on the bell', () => {
    setup({ unreadCount: 3 })
    expect(screen.getByRole('button', { name: 'Notifications, 3 unread' })).toBeTruthy()
    expect(screen.getByText('3')).toBeTruthy()
  })

  it('caps the badge at 99+', () => {
    setup({ unreadCount: 250 })
    expect(screen.getByText('99+')).toBeTruthy()
  })

  it('opens a panel with the list, filters and an empty state', async () => {
    const { store } = setup({ unreadCount: 0, notifications: [] })
    await fireEvent.click(screen.getByRole('button', { name: 'Notifications, none unread' }))
    expect(await screen.findByText('No notifications')).toBeTruthy()
    expect(store.fetchNotifications).toHaveBeenCalledWith({ reset: true })
    for (const f of ['All', 'Unread', 'Signals', 'Warnings', 'Exits', 'Errors']) expect(screen.getByText(f)).toBeTruthy()
    await fireEvent.click(screen.getByText('Warnings'))
    expect(store.setFilter).toHaveBeenCalledWith('warnings')
  })

  it("labels a trader's own test toast as a test, not a system error", async () => {
    const test = notification({ title: 'Test notification', notification_type: 'system_error', priority: 'info', metadata: { test: true } })
    const error = notification({ title: 'Polygon API down', notification_type: 'system_error', sequence_number: 2, metadata: { test: 'no' } })
    setup({ unreadCount: 2, notifications: [error, test], total: 2 })
    await fireEvent.click(screen.getByRole('button', { name: 'Notifications, 2 unread' }))
    const testItem = await screen.findByRole('button', { name: 'Unread. Test: Test notification' })
    expect(testItem.querySelector('i')?.className).toBe('pi pi-check-circle')
    const errorItem = screen.getByRole('button', { name: 'Unread. System error: Polygon API down' })
    expect(errorItem.querySelector('i')?.className).toBe('pi pi-times-circle')
  })

  it('marks an item read and goes to its page on click; mark all in one call', async () => {
    const n = notification({ title: 'Risk warning: portfolio heat 8.6%', notification_type: 'risk_warning' })
    const { store, router } = setup({ unreadCount: 1, notifications: [n], total: 1 })
    await fireEvent.click(screen.getByRole('button', { name: 'Notifications, 1 unread' }))
    const item = await screen.findByRole('button', { name: `Unread. Risk warning: ${n.title}` })
    await userEvent.click(item)
    expect(store.markAsRead).toHaveBeenCalledWith(n.id)
    await vi.waitFor(() => expect(router.currentRoute.value.path).toBe(`/notifications/${n.id}`))
    await fireEvent.click(screen.getByRole('button', { name: 'Mark all as read' }))
    expect(store.markAllAsRead).toHaveBeenCalledTimes(1)
  })
})
