import { describe, expect, it, vi } from 'vitest'
import { notification } from '../fixtures'

const add = vi.fn()
vi.mock('primevue/usetoast', () => ({ useToast: () => ({ add }) }))

const { toastStyle, useToast } = await import('../../src/composables/useToast')

describe('toasts by priority', () => {
  it('shows info blue for 5 s, warnings orange for 10 s, critical red until dismissed', () => {
    expect(toastStyle('info')).toEqual({ severity: 'info', life: 5_000 })
    expect(toastStyle('warning')).toEqual({ severity: 'warn', life: 10_000 })
    expect(toastStyle('critical')).toEqual({ severity: 'error', life: undefined })
  })

  it('puts a notification in the notifications group with its title, message and style', () => {
    const n = notification({ priority: 'critical', title: 'Emergency exit: TSLA', message: 'Campaign C-7 force-closed' })
    useToast().showNotification(n)
    expect(add).toHaveBeenCalledWith(
      expect.objectContaining({ severity: 'error', life: undefined, group: 'notifications', summary: 'Emergency exit: TSLA', detail: 'Campaign C-7 force-closed', notification: n }),
    )
    add.mockClear()
    useToast().showNotification(notification({ priority: 'info' }))
    expect(add).toHaveBeenCalledWith(expect.objectContaining({ severity: 'info', life: 5_000 }))
  })
})
