/**
 * Builds the test for allowed origins from a comma-separated list. `*` allows any origin; an entry
 * without a port allows every port of that scheme and host (local tools pick ports freely).
 */
export function originMatcher (list: string): (origin: string) => boolean {
  const entries = list.split(',').map(s => s.trim()).filter(s => s !== '')
  if (entries.includes('*')) return () => true
  const exact = new Set<string>()
  const anyPort = new Set<string>()
  for (const entry of entries) {
    let url: URL
    try { url = new URL(entry) } catch { continue }
    if (url.port === '' && !/:\d+\/?$/.test(entry)) anyPort.add(`${url.protocol}//${url.hostname}`)
    else exact.add(url.origin)
  }
  return origin => {
    if (exact.has(origin)) return true
    let url: URL
    try { url = new URL(origin) } catch { return false }
    return anyPort.has(`${url.protocol}//${url.hostname}`)
  }
}
