// The session: a JWT from the login link (`#token=…`), kept in localStorage.

const KEY = 'notifyhub.token'

export interface Session {
  token: string
  userId: string
  role: string
  expiresAt: number
}

function decode(token: string): Omit<Session, 'token'> | null {
  try {
    const part = token.split('.')[1]
    const json = atob(part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '='))
    const claims = JSON.parse(json) as { sub?: string; role?: string; exp?: number }
    if (!claims.sub || !claims.exp) return null
    return { userId: claims.sub, role: claims.role ?? 'user', expiresAt: claims.exp * 1000 }
  } catch {
    return null
  }
}

/** What to do with a login link's token, given the session already here: take it, or
 * ask first when it would sign a trader who is signed in as someone else out (a link
 * from someone else must not silently make them enter their phone number into another
 * account). */
export function decideLogin(existing: Session | null, incoming: Omit<Session, 'token'> | null, now = Date.now()): 'take' | 'ask' {
  if (!existing || isExpired(existing, now) || !incoming) return 'take'
  return existing.userId === incoming.userId ? 'take' : 'ask'
}

let pending: Session | null = null

/** Takes a token from the URL hash (the login link), then clears it from the address bar.
 * A link for another trader than the one signed in here waits for [[acceptPendingLogin]]. */
export function captureTokenFromUrl(location: Location = window.location, now = Date.now()): void {
  const params = new URLSearchParams(location.hash.slice(1))
  const token = params.get('token')
  if (!token) return
  history.replaceState(null, '', location.pathname + location.search)
  const claims = decode(token)
  if (decideLogin(currentSession(), claims, now) === 'ask' && claims) {
    pending = { token, ...claims }
    return
  }
  localStorage.setItem(KEY, token)
}

/** A login link for another trader, waiting for a yes or no. */
export function pendingLogin(): Session | null {
  return pending
}

/** Signs in with the waiting link's token (the caller reloads the app). */
export function acceptPendingLogin(): void {
  if (pending) localStorage.setItem(KEY, pending.token)
  pending = null
}

/** Keeps the session here and forgets the waiting link. */
export function dismissPendingLogin(): void {
  pending = null
}

export function currentSession(): Session | null {
  const token = localStorage.getItem(KEY)
  if (!token) return null
  const claims = decode(token)
  return claims ? { token, ...claims } : null
}

export function isExpired(session: Session | null, now = Date.now()): boolean {
  return !session || session.expiresAt <= now
}

export function signOut(): void {
  localStorage.removeItem(KEY)
}
