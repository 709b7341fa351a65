import { test } from 'tap'
import { authMode, loadConfig } from '../src/config.js'
import { ConfigError } from '../src/errors.js'

test('defaults suit one laptop', async t => {
  const config = loadConfig({})
  t.equal(config.PORT, 1453)
  t.equal(config.HOST, '127.0.0.1')
  t.equal(config.USE_REDIS, false)
  t.equal(config.SESSION_TTL_SECONDS, 1800)
  t.equal(config.HISTORY_LIMIT, 1000)
  t.match(config.NODE_ID, /-\d+$/)
})

test('strings from the environment are converted', async t => {
  const config = loadConfig({ PORT: '8080', USE_REDIS: 'true', SESSION_CACHE_MAX: '5' })
  t.equal(config.PORT, 8080)
  t.equal(config.USE_REDIS, true)
  t.equal(config.SESSION_CACHE_MAX, 5)
})

test('a bad value stops the boot with one line naming the variable', async t => {
  t.throws(() => loadConfig({ PORT: 'eighty' }), new ConfigError('Invalid PORT="eighty": expected TCP port to listen on from 1 to 65535'))
  t.throws(() => loadConfig({ SESSION_TTL_SECONDS: '0' }), /^Invalid SESSION_TTL_SECONDS="0"/)
  t.throws(() => loadConfig({ USE_REDIS: 'maybe' }), /^Invalid USE_REDIS="maybe"/)
  t.throws(() => loadConfig({ REDIS_URL: 'http://x' }), /^Invalid REDIS_URL="http:\/\/x": expected a redis:\/\/ or rediss:\/\/ URL/)
  t.throws(() => loadConfig({ LOG_LEVEL: 'loud' }), /^Invalid LOG_LEVEL="loud": expected one of fatal/)
  t.throws(() => loadConfig({ SAMPLE_TOOL_NAME: 'has space' }), /^Invalid SAMPLE_TOOL_NAME/)
})

test('authorization: required beyond loopback unless disabled, PUBLIC_URL with an issuer', async t => {
  t.equal(authMode(loadConfig({})), 'open', 'loopback without an issuer runs open')
  t.equal(authMode(loadConfig({ HOST: '::1' })), 'open')
  t.throws(() => loadConfig({ HOST: '0.0.0.0' }), /^Refusing to serve HOST=0\.0\.0\.0 without authorization: set AUTH_ISSUER and PUBLIC_URL, or AUTH_DISABLED=true/)
  t.throws(() => loadConfig({ HOST: '10.0.0.5' }), /AUTH_DISABLED=true/)
  t.equal(authMode(loadConfig({ HOST: '0.0.0.0', AUTH_DISABLED: 'true' })), 'disabled')
  t.throws(() => loadConfig({ AUTH_ISSUER: 'https://as.example.com' }), /^PUBLIC_URL is required with AUTH_ISSUER/)
  t.throws(() => loadConfig({ AUTH_ISSUER: 'https://as.example.com', PUBLIC_URL: 'https://mcp.example.com/mcp', AUTH_DISABLED: 'true' }), /contradict/)
  t.throws(() => loadConfig({ AUTH_ISSUER: 'not a url' }), /^Invalid AUTH_ISSUER/)
  t.throws(() => loadConfig({ AUTH_ALGORITHMS: 'HS256' }), /^Invalid AUTH_ALGORITHMS/, 'no symmetric algorithm')
  t.throws(() => loadConfig({ AUTH_ALGORITHMS: 'none' }), /^Invalid AUTH_ALGORITHMS/)
  const config = loadConfig({ HOST: '0.0.0.0', AUTH_ISSUER: 'https://as.example.com', PUBLIC_URL: 'https://mcp.example.com/mcp' })
  t.equal(authMode(config), 'jwt')
  t.equal(config.AUTH_AUDIENCE, 'https://mcp.example.com/mcp', 'the audience defaults to PUBLIC_URL')
})
