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
