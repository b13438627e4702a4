import type { Notification } from '../../types/Notification'
import type { NotificationType } from '../../types/NotificationType'

export const TYPE_ICON: Record<NotificationType, string> = {
  signal_generated: 'pi pi-chart-line',
  risk_warning: 'pi pi-exclamation-triangle',
  emergency_exit: 'pi pi-sign-out',
  system_error: 'pi pi-times-circle',
}

export const TYPE_LABEL: Record<NotificationType, string> = {
  signal_generated: 'Signal',
  risk_warning: 'Risk warning',
  emergency_exit: 'Emergency exit',
  system_error: 'System error',
}

/** Whether `n` is the test toast a trader sent themselves (stored as an info system error). */
export function isTest(n: Notification): boolean {
  const m = n.metadata
  return typeof m === 'object' && m !== null && !Array.isArray(m) && m.test === true
}

/** What `n` is, in words: a trader's own test is not shown as a system error. */
export function typeLabel(n: Notification): string {
  return isTest(n) ? 'Test' : TYPE_LABEL[n.notification_type]
}

/** The icon of `n`'s kind (see `typeLabel`). */
export function typeIcon(n: Notification): string {
  return isTest(n) ? 'pi pi-check-circle' : TYPE_ICON[n.notification_type]
}

/** "just now", "5 min ago", "3 h ago", "2 d ago". */
export function relativeTime(iso: string, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000))
  if (s < 45) return 'just now'
  if (s < 3600) return `${Math.round(s / 60)} min ago`
  if (s < 86_400) return `${Math.round(s / 3600)} h ago`
  return `${Math.round(s / 86_400)} d ago`
}

/** Where a notification leads. */
export function linkFor(n: Notification): string {
  return `/notifications/${n.id}`
}
