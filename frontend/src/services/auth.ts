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

/** Takes a token from the URL hash (the login link), then clears it from the address bar. */
export function captureTokenFromUrl(location: Location = window.location): void {
  const params = new URLSearchParams(location.hash.slice(1))
  const token = params.get('token')
  if (token) {
    localStorage.setItem(KEY, token)
    history.replaceState(null, '', location.pathname + location.search)
  }
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
