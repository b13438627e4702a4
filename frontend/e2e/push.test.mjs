// Browser push end to end: the page subscribes (its real composable, with the
// browser's PushManager standing in for a vendor's, which cannot be reached here),
// the hub signs and encrypts a test push to a local push-service stand-in on its
// allow-list, the stand-in decrypts it and hands it to the page's service worker over
// CDP, and the service worker shows the notification.
import assert from 'node:assert/strict'
import { createDecipheriv, createECDH, createHmac, randomBytes } from 'node:crypto'
import { createServer } from 'node:http'
import { after, before, test } from 'node:test'
import { Hub, exit, freePort, launchChromium, newUser, token } from './hub.mjs'

const hmac = (key, data) => createHmac('sha256', key).update(data).digest()

/** RFC 8291 aes128gcm decryption with the subscription's private key. */
function decrypt(body, ecdh, auth) {
  const salt = body.subarray(0, 16)
  const idlen = body[20]
  const senderPublic = body.subarray(21, 21 + idlen)
  const ciphertext = body.subarray(21 + idlen)
  const uaPublic = ecdh.getPublicKey()
  const secret = ecdh.computeSecret(senderPublic)
  const ikm = hmac(hmac(auth, secret), Buffer.concat([Buffer.from('WebPush: info\0'), uaPublic, senderPublic, Buffer.from([1])]))
  const prk = hmac(salt, ikm)
  const cek = hmac(prk, Buffer.from('Content-Encoding: aes128gcm\0\x01')).subarray(0, 16)
  const nonce = hmac(prk, Buffer.from('Content-Encoding: nonce\0\x01')).subarray(0, 12)
  const d = createDecipheriv('aes-128-gcm', cek, nonce)
  d.setAuthTag(ciphertext.subarray(ciphertext.length - 16))
  const padded = Buffer.concat([d.update(ciphertext.subarray(0, ciphertext.length - 16)), d.final()])
  let end = padded.length - 1
  while (end > 0 && padded[end] === 0) end--
  return padded.subarray(0, end).toString('utf8') // drop the 0x02 delimiter
}

let hub, browser, standIn, pushPort
const received = []
let deliverToWorker = async () => {}
let onPush = () => {}

const ecdh = createECDH('prime256v1')
ecdh.generateKeys()
const auth = randomBytes(16)

before(async () => {
  pushPort = await freePort()
  standIn = createServer((req, res) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', async () => {
      try {
        assert.match(req.headers.authorization ?? '', /^vapid t=.+, k=.+/)
        assert.equal(req.headers['content-encoding'], 'aes128gcm')
        const plain = decrypt(Buffer.concat(chunks), ecdh, auth)
        received.push(JSON.parse(plain))
        onPush()
        await deliverToWorker(plain)
        res.writeHead(201).end()
      } catch (e) {
        received.push({ error: String(e) })
        res.writeHead(400).end()
      }
    })
  })
  await new Promise((r) => standIn.listen(pushPort, '127.0.0.1', r))
  hub = new Hub({ port: await freePort(), extraEnv: { NOTIFYHUB_PUSH_ALLOWED_HOSTS: `127.0.0.1:${pushPort}` } })
  await hub.start()
  browser = await launchChromium()
})

after(async () => {
  await browser?.close()
  await hub?.stop()
  standIn?.close()
})

/** Opens the dashboard for `user` in a fresh browser context whose subscribe() answers
 * with a subscription at the local stand-in (the vendor's push service is unreachable
 * here). `firstVisit`: the browser has not been asked about notifications yet, and
 * grants when asked; otherwise permission is already granted. */
async function openDashboard(user, { firstVisit }) {
  const context = await browser.newContext()
  if (!firstVisit) await context.grantPermissions(['notifications'], { origin: hub.url })
  const endpoint = `http://127.0.0.1:${pushPort}/push/${user}`
  const keys = { p256dh: ecdh.getPublicKey().toString('base64url'), auth: auth.toString('base64url') }
  await context.addInitScript(({ endpoint, keys, firstVisit }) => {
    if (firstVisit) {
      let permission = 'default'
      Object.defineProperty(Notification, 'permission', { get: () => permission })
      Notification.requestPermission = async () => (permission = 'granted')
    }
    PushManager.prototype.subscribe = async function () {
      return { endpoint, expirationTime: null, toJSON: () => ({ endpoint, expirationTime: null, keys }), unsubscribe: async () => true }
    }
    PushManager.prototype.getSubscription = async () => null
  }, { endpoint, keys, firstVisit })
  const page = await context.newPage()
  await page.goto(`${hub.url}/#token=${token(user)}`)
  await page.getByTestId('connection').filter({ hasText: 'Live' }).waitFor()
  return { context, page }
}

test('a test push reaches the service worker and shows a notification', async () => {
  const user = newUser()
  const { context, page } = await openDashboard(user, { firstVisit: false })
  await page.evaluate(() => navigator.serviceWorker.ready)

  const cdp = await context.newCDPSession(page)
  const registrationId = new Promise((resolve) => {
    cdp.on('ServiceWorker.workerRegistrationUpdated', ({ registrations }) => {
      const r = registrations.find((x) => !x.isDeleted)
      if (r) resolve(r.registrationId)
    })
  })
  await cdp.send('ServiceWorker.enable')
  const regId = await registrationId
  deliverToWorker = (data) => cdp.send('ServiceWorker.deliverPushMessage', { origin: hub.url, registrationId: regId, data })

  // Permission is already granted, so the banner is gone: enable push in Preferences.
  await page.getByRole('link', { name: 'Preferences' }).click()
  await page.locator('label[for="push-enabled"]').click()
  await page.getByRole('button', { name: 'Save' }).click()
  await page.getByText('Preferences saved').waitFor()
  const prefs = await hub.api('GET', '/notifications/preferences', token(user))
  assert.equal(prefs.body.push_enabled, true)

  await page.getByRole('button', { name: 'Send test push' }).click()
  await page.getByText('Test push sent to 1 browser subscription(s)').waitFor()
  assert.equal(received.length, 1, JSON.stringify(received))
  assert.equal(received[0].test, true)
  const shown = await page.waitForFunction(async () => {
    const reg = await navigator.serviceWorker.ready
    const list = await reg.getNotifications()
    return list.length ? list.map((n) => ({ title: n.title, body: n.body })) : null
  })
  const notifications = await shown.jsonValue()
  assert.equal(notifications[0].title, 'Test push from notifyhub')
  await page.screenshot({ path: '../test-output/screens/10-push-enabled.png' })
  await context.close()
})

test("the banner's Enable subscribes and switches push on: a critical exit reaches the push service", async () => {
  deliverToWorker = async () => {} // the first test's page is gone
  const user = newUser()
  const { context, page } = await openDashboard(user, { firstVisit: true })
  const saved = page.waitForResponse((r) => r.url().endsWith('/api/v1/notifications/preferences') && r.request().method() === 'POST')
  await page.getByRole('button', { name: 'Enable' }).click()
  assert.equal((await saved).status(), 200)
  await page.getByText('Enable notifications to get instant alerts').waitFor({ state: 'detached' })
  const prefs = await hub.api('GET', '/notifications/preferences', token(user))
  assert.equal(prefs.body.push_enabled, true, 'Enable switched push on')

  const before = received.length
  const pushed = new Promise((resolve) => (onPush = resolve))
  const answer = await hub.event(exit(user))
  assert.equal(answer.status, 202)
  assert.deepEqual(answer.body.notifications[0].channels, ['toast', 'push'])
  await Promise.race([pushed, new Promise((_, reject) => setTimeout(() => reject(new Error('no push within 20 s')), 20_000).unref())])
  assert.equal(received.length, before + 1, JSON.stringify(received))
  assert.match(received[before].title, /Emergency exit/)
  await context.close()
})
