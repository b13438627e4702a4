// The same checks the hub makes, so mistakes show before Save (the hub still decides).

export function phoneError(value: string): string | null {
  const v = value.trim()
  if (!v) return null
  if (!/^\+[1-9]\d{7,14}$/.test(v)) return 'Use E.164 format: + and 8 to 15 digits, e.g. +12345678901'
  return null
}

export function emailError(value: string): string | null {
  const v = value.trim()
  if (!v) return null
  if (v.length > 254 || !/^[^\s@]+@[^\s@.]+(\.[^\s@.]+)+$/.test(v)) return 'Enter an address like name@example.com'
  // The hub sends without SMTPUTF8: international characters only after the @.
  if (!/^[\x21-\x7e]+@/.test(v)) return 'Use only ASCII characters before the @ (international characters are fine after it)'
  return null
}

export function thresholdError(value: number): string | null {
  return Number.isInteger(value) && value >= 70 && value <= 95 ? null : 'Choose a threshold from 70 to 95'
}

/** The current wall-clock time in an IANA timezone, e.g. "22:41". */
export function nowIn(timezone: string, at: Date = new Date()): string {
  try {
    return new Intl.DateTimeFormat('en-GB', { timeZone: timezone, hour: '2-digit', minute: '2-digit', hour12: false }).format(at)
  } catch {
    return '—'
  }
}
