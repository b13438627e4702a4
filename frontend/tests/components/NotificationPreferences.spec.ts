import { createPinia, setActivePinia } from 'pinia'
import { fireEvent, render, screen } from '@testing-library/vue'
import { describe, expect, it } from 'vitest'
import Toast from 'primevue/toast'
import { defineComponent, h } from 'vue'
import NotificationPreferences from '../../src/components/notifications/NotificationPreferences.vue'
import { emailError, nowIn, phoneError, thresholdError } from '../../src/components/notifications/validation'
import { mockFetch, preferences } from '../fixtures'

async function setup(routes: Parameters<typeof mockFetch>[0] = {}) {
  const calls = mockFetch({ 'GET /api/v1/notifications/preferences': () => ({ json: preferences({ email_address: 'a@example.com' }) }), ...routes })
  const pinia = createPinia()
  setActivePinia(pinia)
  // The page as the app shows it: the form and the toast outlet.
  const Page = defineComponent({ render: () => h('div', [h(Toast), h(NotificationPreferences)]) })
  render(Page, { global: { plugins: [pinia] } })
  await screen.findByDisplayValue('a@example.com')
  return calls
}

describe('validation like the server', () => {
  it('checks phones, emails, thresholds and shows local time', () => {
    expect(phoneError('+12345678901')).toBeNull()
    expect(phoneError('12345')).toMatch(/E.164/)
    expect(phoneError('')).toBeNull()
    expect(emailError('me@example.com')).toBeNull()
    expect(emailError('me@localhost')).toMatch(/name@example.com/)
    expect(emailError('jörg@example.com')).toMatch(/only ASCII characters before the @/)
    expect(emailError('trader@bücher.example')).toBeNull()
    expect(thresholdError(70)).toBeNull()
    expect(thresholdError(96)).not.toBeNull()
    expect(nowIn('UTC', new Date('2026-01-01T21:05:00Z'))).toBe('21:05')
    expect(nowIn('Asia/Tokyo', new Date('2026-01-01T21:05:00Z'))).toBe('06:05')
  })
})

describe('NotificationPreferences', () => {
  it('loads the preferences and saves the whole form in one request', async () => {
    const calls = await setup({
      'POST /api/v1/notifications/preferences': (body) => ({ json: { success: true, preferences: { ...preferences(), ...(body as object), email_address: 'b@example.com' } } }),
    })
    expect(screen.getByText(/Now in America\/New_York:/)).toBeTruthy()
    const email = screen.getByLabelText('Email address')
    await fireEvent.update(email, 'b@example.com')
    await fireEvent.click(screen.getByRole('button', { name: 'Save' }))
    await screen.findByText('Preferences saved')
    const post = calls.find((c) => c.method === 'POST')!
    expect(post.body).toMatchObject({ email_address: 'b@example.com', min_confidence_threshold: 85, quiet_hours: { timezone: 'America/New_York', start_time: '22:00' } })
  })

  it('keeps the form disabled until the saved preferences are in, so nothing typed is overwritten', async () => {
    let answer!: () => void
    const answered = new Promise<void>((resolve) => (answer = resolve))
    mockFetch({
      'GET /api/v1/notifications/preferences': async () => {
        await answered
        return { json: preferences({ email_address: 'a@example.com' }) }
      },
    })
    const pinia = createPinia()
    setActivePinia(pinia)
    render(NotificationPreferences, { global: { plugins: [pinia] } })
    const fieldsets = () => [...document.querySelectorAll('fieldset')]
    expect(fieldsets().length).toBeGreaterThan(0)
    expect(screen.getByLabelText('Email address').closest('fieldset')!.disabled).toBe(true)
    expect(fieldsets().every((f) => f.disabled)).toBe(true)
    answer()
    await screen.findByDisplayValue('a@example.com')
    expect(fieldsets().some((f) => f.disabled)).toBe(false)
  })

  it('blocks Save on an invalid phone and shows why', async () => {
    await setup()
    await fireEvent.update(screen.getByLabelText('Phone number for SMS'), '555-1234')
    expect(await screen.findByText(/Use E.164 format/)).toBeTruthy()
    expect((screen.getByRole('button', { name: 'Save' }) as HTMLButtonElement).disabled).toBe(true)
  })

  it("shows the server's validation message", async () => {
    await setup({
      'POST /api/v1/notifications/preferences': () => ({
        status: 422,
        json: { error: { code: 'VALIDATION_FAILED', message: 'quiet_hours.timezone: unknown IANA timezone', details: { field: 'quiet_hours.timezone' } } },
      }),
    })
    await fireEvent.click(screen.getByRole('button', { name: 'Save' }))
    expect(await screen.findAllByText(/unknown IANA timezone/)).not.toHaveLength(0)
    expect(screen.getByText('Preferences not saved')).toBeTruthy()
  })

  it('sends a test SMS and shows the result', async () => {
    await setup({
      'POST /api/v1/notifications/test/sms': () => ({ status: 400, json: { error: { code: 'CHANNEL_DISABLED', message: 'sms is disabled in your preferences', details: {} } } }),
      'POST /api/v1/notifications/test/email': () => ({ status: 202, json: { success: true, message: 'Test email sent to a***@example.com' } }),
    })
    await fireEvent.click(screen.getByRole('button', { name: 'Send test SMS' }))
    expect(await screen.findByText('sms is disabled in your preferences')).toBeTruthy()
    await fireEvent.click(screen.getByRole('button', { name: 'Send test email' }))
    expect(await screen.findByText('Test email sent to a***@example.com')).toBeTruthy()
  })
})
