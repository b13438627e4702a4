// Story Task 20 in a real browser (Debian's Chromium driven by playwright-core) against
// the real hub. Screenshots of each screen go to ../test-output/screens/.
import assert from 'node:assert/strict'
import { mkdirSync } from 'node:fs'
import { after, before, describe, test } from 'node:test'
import { Hub, exit, freePort, info, launchChromium, newUser, signal, token } from './hub.mjs'

const SHOTS = '../test-output/screens'
mkdirSync(SHOTS, { recursive: true })

let hub
let browser

before(async () => {
  hub = new Hub({ port: await freePort() })
  await hub.start()
  browser = await launchChromium()
})

after(async () => {
  await browser?.close()
  await hub?.stop()
})

async function openAs(user, viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport })
  await context.grantPermissions(['notifications'], { origin: hub.url })
  const page = await context.newPage()
  await page.goto(`${hub.url}/#token=${token(user)}`)
  await page.getByTestId('connection').filter({ hasText: 'Live' }).waitFor()
  return page
}

describe('notification system', () => {
  test('a signal becomes a toast, is listed, and reading it drops the badge', async () => {
    const user = newUser()
    const page = await openAs(user)
    await page.screenshot({ path: `${SHOTS}/01-inbox-empty.png` })
    const res = await hub.event(signal(user, 92))
    assert.equal(res.status, 202)
    const toast = page.getByTestId('toast-critical')
    await toast.waitFor()
    assert.match(await toast.innerText(), /New Signal: AAPL Spring/)
    assert.ok(await toast.getByRole('button', { name: 'View signal' }).isVisible())
    await page.screenshot({ path: `${SHOTS}/02-toast.png` })
    await page.getByTestId('unread-badge').filter({ hasText: '1' }).waitFor()

    await page.getByTestId('bell').click()
    const item = page.locator('.ncenter-body').getByTestId('notification-1')
    await item.waitFor()
    assert.match(await item.innerText(), /New Signal: AAPL Spring/)
    await page.screenshot({ path: `${SHOTS}/03-notification-center.png` })
    await item.click()
    await page.waitForURL(/\/notifications\//)
    await page.getByTestId('deliveries').getByText('toast').waitFor()
    await page.getByTestId('unread-badge').waitFor({ state: 'detached' })
    await page.screenshot({ path: `${SHOTS}/04-notification-detail.png` })
    await page.context().close()
  })

  test('preferences save, and test email and SMS land in the sandbox outbox', async () => {
    const user = newUser()
    const page = await openAs(user)
    await page.getByRole('link', { name: 'Preferences' }).click()
    await page.getByLabel('Email address').fill('trader@example.com')
    await page.getByLabel('Phone number for SMS').fill('12345')
    await page.getByText('Use E.164 format').waitFor()
    await page.getByLabel('Phone number for SMS').fill('+12345678901')
    await page.locator('label[for="sms-enabled"]').click()
    await page.getByRole('button', { name: 'Save' }).click()
    await page.getByText('Preferences saved').waitFor()
    await page.screenshot({ path: `${SHOTS}/05-preferences.png`, fullPage: true })
    const saved = await hub.api('GET', '/notifications/preferences', token(user))
    assert.equal(saved.body.email_address, 'trader@example.com')
    assert.equal(saved.body.sms_phone_number, '+12345678901')
    assert.equal(saved.body.sms_enabled, true)

    await page.getByRole('button', { name: 'Send test email' }).click()
    await page.getByText('Test email sent to tra***@example.com').waitFor()
    await page.getByRole('button', { name: 'Send test SMS' }).click()
    await page.getByText('Test sms sent to +1234***8901').waitFor()
    await page.getByRole('link', { name: 'Sandbox outbox' }).click()
    await page.getByTestId('outbox-email').waitFor()
    await page.getByTestId('outbox-sms').waitFor()
    assert.match(await page.getByTestId('outbox-email').innerText(), /notifyhub test email/)
    await page.screenshot({ path: `${SHOTS}/06-sandbox-outbox.png` })
    await page.context().close()
  })

  test('the confidence filter drops weak signals', async () => {
    const user = newUser()
    const page = await openAs(user)
    const weak = await hub.event(signal(user, 80))
    assert.equal(weak.body.status, 'filtered')
    await hub.event(info(user, 'after the weak signal'))
    await page.getByTestId('toast-info').waitFor()
    assert.equal(await page.getByText('New Signal: AAPL Spring').count(), 0)
    assert.equal(await page.getByTestId('notification-1').innerText().then((t) => t.includes('after the weak signal')), true)
    await page.context().close()
  })

  test('quiet hours hold info toasts but a critical exit comes through', async () => {
    const user = newUser()
    const page = await openAs(user)
    const now = new Date()
    const hhmm = (d) => d.toISOString().slice(11, 16)
    await hub.api('POST', '/notifications/preferences', token(user), {
      quiet_hours: { enabled: true, start_time: hhmm(new Date(now - 3600e3)), end_time: hhmm(new Date(+now + 3600e3)), timezone: 'UTC' },
    })
    await hub.event(info(user, 'quiet info'))
    await page.getByTestId('unread-badge').filter({ hasText: '1' }).waitFor()
    await hub.event(exit(user))
    await page.getByTestId('toast-critical').waitFor()
    assert.equal(await page.getByTestId('toast-info').count(), 0, 'no toast for the info during quiet hours')
    await page.getByTestId('unread-badge').filter({ hasText: '2' }).waitFor()
    await page.screenshot({ path: `${SHOTS}/07-quiet-hours-critical.png` })
    await page.context().close()
  })

  test('after the hub restarts, the dashboard replays the toasts it missed', async () => {
    const user = newUser()
    const page = await openAs(user)
    await hub.event(info(user, 'before restart'))
    await page.getByTestId('notification-1').waitFor()
    await hub.stop()
    await page.getByTestId('connection').filter({ hasText: 'Offline' }).waitFor()
    await hub.start()
    await hub.event(info(user, 'missed while offline'))
    await page.getByTestId('connection').filter({ hasText: 'Live' }).waitFor({ timeout: 40_000 })
    const missed = page.getByTestId('notification-2')
    await missed.waitFor()
    assert.match(await missed.innerText(), /missed while offline/)
    assert.equal(await page.getByTestId('notification-3').count(), 0, 'nothing twice')
    await page.screenshot({ path: `${SHOTS}/08-replayed-after-restart.png` })
    await page.context().close()
  })

  test("on a phone's width nothing scrolls sideways and a critical toast fits", async () => {
    const user = newUser()
    const page = await openAs(user, { width: 375, height: 720 })
    await hub.event(exit(user))
    const toast = page.getByTestId('toast-critical')
    await toast.waitFor()
    const width = await page.evaluate(() => document.documentElement.scrollWidth)
    assert.ok(width <= 375, `the page is ${width} px wide`)
    const box = await toast.boundingBox()
    assert.ok(box.x >= 0 && box.x + box.width <= 375, JSON.stringify(box))
    for (const link of ['Inbox', 'Preferences', 'Sandbox outbox']) {
      const b = await page.getByRole('link', { name: link }).boundingBox()
      assert.ok(b.x >= 0 && b.x + b.width <= 375, `${link}: ${JSON.stringify(b)}`)
    }
    await page.screenshot({ path: `${SHOTS}/11-phone.png` })
    await page.context().close()
  })

  test("a login link for another trader asks before it replaces the session", async () => {
    const [me, other] = [newUser(), newUser()]
    const page = await openAs(me)
    const signedInAs = () => page.evaluate(() => JSON.parse(atob(localStorage.getItem('notifyhub.token').split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))).sub)
    await page.goto(`${hub.url}/#token=${token(other)}`)
    await page.getByRole('heading', { name: 'Switch to another account?' }).waitFor()
    assert.equal(await signedInAs(), me)
    assert.ok(!page.url().includes('token='), `the token stays out of the address bar: ${page.url()}`)
    await page.screenshot({ path: `${SHOTS}/12-switch-account.png` })
    await page.getByRole('button', { name: 'Stay signed in' }).click()
    await page.getByTestId('connection').filter({ hasText: 'Live' }).waitFor()
    assert.equal(await signedInAs(), me)
    await page.goto(`${hub.url}/#token=${token(other)}`)
    await page.getByRole('button', { name: 'Switch to this account' }).click()
    await page.getByTestId('connection').filter({ hasText: 'Live' }).waitFor()
    assert.equal(await signedInAs(), other)
    assert.ok(!page.url().includes('token='), page.url())
    await page.context().close()
  })

  test('an expired session gets a clear screen, not a blank page', async () => {
    const context = await browser.newContext()
    const page = await context.newPage()
    await page.goto(`${hub.url}/#token=${token(newUser(), 'user', -60)}`)
    await page.getByRole('heading', { name: 'Your session has expired' }).waitFor()
    await page.screenshot({ path: `${SHOTS}/09-session-expired.png` })
    await context.close()
  })
})
