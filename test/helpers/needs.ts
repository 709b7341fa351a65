import { spawnSync } from 'node:child_process'
import { NEEDS_NODE22 } from './node22.js'

/** The Debian package of each system program a test may need. */
const PACKAGES = {
  'redis-server': 'redis-server',
  'redis-cli': 'redis-tools',
  nginx: 'nginx',
  'docker-compose': 'docker-compose',
  promtool: 'prometheus'
} as const

const found = new Map<string, boolean>()
const installed = (program: string) => {
  if (!found.has(program)) found.set(program, spawnSync('sh', ['-c', `command -v ${program}`]).status === 0)
  return found.get(program)!
}

/**
 * The `skip` option of a test that needs system programs (and Node >= 22 with 'node22'): a reason
 * naming what to install when one is missing. With CI=true nothing is skipped: a test whose program
 * is missing runs and fails, so a CI machine without it cannot pass by skipping.
 */
export function needs (...programs: Array<keyof typeof PACKAGES | 'node22'>): string | false {
  if (process.env.CI === 'true') return false
  const missing = programs.filter(p => p === 'node22' ? NEEDS_NODE22 !== false : !installed(p))
  if (missing.length === 0) return false
  const packages = missing.filter(p => p !== 'node22').map(p => PACKAGES[p as keyof typeof PACKAGES])
  return [
    packages.length > 0 ? `needs ${missing.filter(p => p !== 'node22').join(', ')}: apt-get install -y ${packages.join(' ')}` : '',
    missing.includes('node22') ? 'needs Node >= 22: set CONFORMANCE_NODE to its binary (.ci/run shows how)' : ''
  ].filter(Boolean).join('; ')
}
