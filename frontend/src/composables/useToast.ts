// Toasts for notifications: info blue 5 s, warning orange 10 s, critical red and
// sticky until dismissed. Signal toasts carry a "View signal" action (see App.vue).
import { useToast as usePrimeToast } from 'primevue/usetoast'
import type { Notification } from '../types/Notification'
import type { Priority } from '../types/Priority'

export interface ToastStyle {
  severity: 'info' | 'warn' | 'error'
  life: number | undefined
}

export function toastStyle(priority: Priority): ToastStyle {
  switch (priority) {
    case 'critical':
      return { severity: 'error', life: undefined }
    case 'warning':
      return { severity: 'warn', life: 10_000 }
    default:
      return { severity: 'info', life: 5_000 }
  }
}

export function useToast() {
  const toast = usePrimeToast()
  return {
    showNotification(n: Notification) {
      const { severity, life } = toastStyle(n.priority)
      toast.add({ severity, summary: n.title, detail: n.message, life, group: 'notifications', ...{ notification: n } })
    },
    success(summary: string, detail?: string) {
      toast.add({ severity: 'success', summary, detail, life: 4000 })
    },
    failure(summary: string, detail?: string) {
      toast.add({ severity: 'error', summary, detail, life: 8000 })
    },
  }
}
