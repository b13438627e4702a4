import { beforeEach, describe, expect, it } from 'vitest'
import { acceptPendingLogin, captureTokenFromUrl, currentSession, decideLogin, dismissPendingLogin, pendingLogin } from '../../src/services/auth'

const A = '00000000-0000-4000-8000-00000000000a'
const B = '00000000-0000-4000-8000-00000000000b'
const NOW = 1_900_000_000_000
const jwt = (sub: string, exp = NOW / 1000 + 3600) => `x.${btoa(JSON.stringify({ sub, role: 'user', exp }))}.y`
const linkTo = (token: string) => ({ hash: `#token=${token}`, pathname: '/', search: '' }) as Location

describe('login links', () => {
  beforeEach(() => {
    localStorage.clear()
    dismissPendingLogin()
  })

  it('asks before a link signs a trader in as someone else', () => {
    const a = { token: jwt(A), userId: A, role: 'user', expiresAt: NOW + 3_600_000 }
    expect(decideLogin(null, { userId: B, role: 'user', expiresAt: NOW + 1 }, NOW)).toBe('take')
    expect(decideLogin(a, { userId: A, role: 'user', expiresAt: NOW + 1 }, NOW)).toBe('take')
    expect(decideLogin(a, { userId: B, role: 'user', expiresAt: NOW + 1 }, NOW)).toBe('ask')
    expect(decideLogin({ ...a, expiresAt: NOW - 1 }, { userId: B, role: 'user', expiresAt: NOW + 1 }, NOW)).toBe('take')
  })

  it("keeps the session here until the trader says yes to another's link", () => {
    captureTokenFromUrl(linkTo(jwt(A)), NOW)
    expect(currentSession()?.userId).toBe(A)
    expect(pendingLogin()).toBeNull()
    captureTokenFromUrl(linkTo(jwt(B)), NOW)
    expect(currentSession()?.userId).toBe(A)
    expect(pendingLogin()?.userId).toBe(B)
    dismissPendingLogin()
    expect(currentSession()?.userId).toBe(A)
    captureTokenFromUrl(linkTo(jwt(B)), NOW)
    acceptPendingLogin()
    expect(currentSession()?.userId).toBe(B)
    expect(pendingLogin()).toBeNull()
  })
})
