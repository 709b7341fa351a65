import { hostname } from 'node:os'
import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { ConfigError } from './errors.js'

const Integer = (options: { default: number, minimum: number, maximum: number, description: string }) =>
  Type.Integer(options)

/**
 * Every setting the server reads from its environment. Defaults suit one laptop; the README lists
 * what to change for production.
 */
export const ConfigSchema = Type.Object({
  PORT: Integer({ default: 1453, minimum: 1, maximum: 65535, description: 'TCP port to listen on' }),
  HOST: Type.String({ default: '127.0.0.1', minLength: 1, description: 'address to listen on' }),
  USE_REDIS: Type.Boolean({ default: false, description: 'keep sessions in Redis instead of memory' }),
  REDIS_URL: Type.String({ default: 'redis://127.0.0.1:6379', pattern: '^rediss?://', description: 'a redis:// or rediss:// URL' }),
  REDIS_CLUSTER_NODES: Type.String({ default: '', pattern: '^([^,\\s]+:\\d+(,[^,\\s]+:\\d+)*)?$', description: 'comma-separated host:port of Redis Cluster nodes (implies Redis mode)' }),
  LOG_LEVEL: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map(l => Type.Literal(l)), { default: 'info', description: 'one of fatal, error, warn, info, debug, trace, silent' }),
  CORS_ORIGIN: Type.String({ default: '', description: 'comma-separated origins for CORS; empty means the ALLOWED_ORIGINS rule' }),
  ALLOWED_ORIGINS: Type.String({ default: 'http://localhost,http://127.0.0.1,http://[::1]', minLength: 1, description: 'comma-separated origins (any port when none is given) or *' }),
  SESSION_TTL_SECONDS: Integer({ default: 1800, minimum: 1, maximum: 30 * 24 * 3600, description: 'idle seconds before a session expires' }),
  SESSION_CACHE_MAX: Integer({ default: 1000, minimum: 1, maximum: 1_000_000, description: 'live sessions kept in memory on this node' }),
  EVENTS_PER_SESSION: Integer({ default: 1000, minimum: 10, maximum: 100_000, description: 'SSE events kept per session for resumption' }),
  SSE_RETRY_MS: Integer({ default: 1000, minimum: 100, maximum: 60_000, description: 'reconnection delay sent to clients in SSE retry fields' }),
  HISTORY_LIMIT: Integer({ default: 1000, minimum: 1, maximum: 100_000, description: 'history entries kept per session' }),
  RATE_LIMIT_MAX: Integer({ default: 1000, minimum: 1, maximum: 100_000_000, description: 'requests per window per live session, or per client address for requests without one' }),
  INITIALIZE_RATE_LIMIT_MAX: Integer({ default: 60, minimum: 1, maximum: 100_000_000, description: 'sessions a client address may create per rate-limit window' }),
  TRUST_PROXY: Type.String({ default: '', pattern: '^(\\d{1,2}|[0-9A-Fa-f.:/]+(,[0-9A-Fa-f.:/]+)*)?$', description: 'proxies whose X-Forwarded-For is believed: a hop count, or comma-separated addresses or CIDRs (empty: none)' }),
  RATE_LIMIT_WINDOW_MS: Integer({ default: 60_000, minimum: 100, maximum: 86_400_000, description: 'rate limit window in milliseconds' }),
  RATE_LIMIT_HEADERS: Type.Union([Type.Literal('refused'), Type.Literal('always')], { default: 'refused', description: 'when responses carry RateLimit-Limit, -Remaining and -Reset: refused (429 only) or always' }),
  BODY_LIMIT_BYTES: Integer({ default: 1_048_576, minimum: 1024, maximum: 104_857_600, description: 'largest accepted request body in bytes' }),
  MAX_EVENT_LOOP_DELAY_MS: Integer({ default: 1000, minimum: 0, maximum: 60_000, description: 'event-loop delay in milliseconds above which requests are shed with 503; 0 turns shedding off' }),
  EVENT_LOG_MAX_BYTES: Integer({ default: 1_048_576, minimum: 65_536, maximum: 104_857_600, description: 'bytes of SSE events kept per session for resumption' }),
  EVENT_MAX_BYTES: Integer({ default: 262_144, minimum: 1024, maximum: 104_857_600, description: 'largest SSE event kept for resumption; larger ones are delivered but not kept' }),
  BATCH_ANSWER_MAX_BYTES: Integer({ default: 1_048_576, minimum: 1024, maximum: 104_857_600, description: 'bytes of answers to one JSON-RPC batch; answers past it become errors' }),
  SESSION_CACHE_MAX_BYTES: Integer({ default: 67_108_864, minimum: 1_048_576, maximum: 17_179_869_184, description: 'bytes of session records live on this node' }),
  MAX_STREAMS: Integer({ default: 10_000, minimum: 1, maximum: 1_000_000, description: 'SSE streams open at once on this node; 503 beyond' }),
  MAX_CONNECTIONS: Integer({ default: 20_000, minimum: 1, maximum: 1_000_000, description: 'TCP connections open at once on this node' }),
  REQUEST_TIMEOUT_MS: Integer({ default: 30_000, minimum: 1000, maximum: 600_000, description: 'milliseconds for a request (headers and body) to arrive; 408 beyond' }),
  HEADERS_TIMEOUT_MS: Integer({ default: 10_000, minimum: 1000, maximum: 600_000, description: 'milliseconds for request headers to arrive; 408 beyond' }),
  KEEPALIVE_MS: Integer({ default: 15_000, minimum: 1000, maximum: 600_000, description: 'milliseconds between SSE keepalive comments' }),
  SAMPLE_TOOL_NAME: Type.String({ default: '', pattern: '^([A-Za-z0-9_.-]{1,64})?$', description: 'name of an extra echo tool, 1-64 of A-Z a-z 0-9 _ . -' }),
  CONFORMANCE_FIXTURES: Type.Boolean({ default: false, description: 'true to add the fixtures of the official MCP conformance suite' }),
  AUTH_ISSUER: Type.String({ default: '', pattern: '^(https?://\\S+)?$', description: 'issuer URL of the OAuth 2.1 authorization server whose access tokens are required (empty: no authorization)' }),
  PUBLIC_URL: Type.String({ default: '', pattern: '^(https?://\\S+)?$', description: 'the MCP endpoint\'s URL as clients see it, e.g. https://mcp.example.com/mcp (required with AUTH_ISSUER)' }),
  AUTH_METADATA_URL: Type.String({ default: '', pattern: '^(https?://\\S+)?$', description: 'where to fetch AUTH_ISSUER\'s metadata when the issuer URL is not reachable from the server (a container network, say); it must still name AUTH_ISSUER' }),
  AUTH_AUDIENCE: Type.String({ default: '', description: 'audience access tokens must name (default PUBLIC_URL)' }),
  AUTH_ALGORITHMS: Type.String({ default: 'ES256,ES384,PS256,RS256,EdDSA', pattern: '^(ES256|ES384|ES512|PS256|PS384|PS512|RS256|RS384|RS512|EdDSA)(,(ES256|ES384|ES512|PS256|PS384|PS512|RS256|RS384|RS512|EdDSA))*$', description: 'comma-separated JWS algorithms accepted on access tokens (asymmetric only)' }),
  AUTH_TOKEN_TYPE: Type.String({ default: 'at+jwt', pattern: '^[\\x21-\\x7E]{0,64}$', description: 'JWT typ header access tokens must carry (RFC 9068 at+jwt); empty accepts any' }),
  AUTH_CLOCK_TOLERANCE_SECONDS: Integer({ default: 5, minimum: 0, maximum: 300, description: 'seconds of clock skew allowed on exp and nbf' }),
  AUTH_FAILURE_LIMIT: Integer({ default: 30, minimum: 1, maximum: 100_000_000, description: 'refused access tokens per rate-limit window per client address before it gets 429' }),
  AUTH_DISABLED: Type.Boolean({ default: false, description: 'true to serve without authorization on a non-loopback HOST' }),
  LISTEN_STREAMS_PER_CLIENT: Integer({ default: 10, minimum: 1, maximum: 100_000, description: 'subscriptions/listen streams one client (principal or address) may hold open on one node' }),
  REQUEST_STATE_KEY: Type.String({ default: '', pattern: '^(.{32,})?$', description: 'secret of at least 32 characters that signs 2026-07-28 requestState on every node (empty: one kept in Redis for all nodes, or made at boot in memory mode)' }),
  NODE_ID: Type.String({ default: '', pattern: '^[\\x21-\\x7E]{0,64}$', description: 'name of this node in X-Served-By and logs; defaults to hostname-pid' })
})

export type Config = Static<typeof ConfigSchema>

/**
 * Reads the configuration from an environment, applying defaults and converting strings.
 * @throws {ConfigError} naming the first variable that is invalid and what it accepts.
 */
export function loadConfig (env: NodeJS.ProcessEnv = process.env): Config {
  const raw: Record<string, unknown> = {}
  for (const key of Object.keys(ConfigSchema.properties)) {
    const value = env[key]
    if (value !== undefined && value !== '') raw[key] = value
  }
  const config = Value.Default(ConfigSchema, Value.Convert(ConfigSchema, raw)) as Record<string, unknown>
  const error = Value.Errors(ConfigSchema, config).First()
  if (error !== undefined) {
    const name = error.path.slice(1)
    const schema = (ConfigSchema.properties as Record<string, TSchema>)[name]
    const range = schema?.minimum !== undefined ? ` from ${schema.minimum} to ${schema.maximum}` : ''
    throw new ConfigError(`Invalid ${name}=${JSON.stringify(env[name])}: expected ${schema?.description ?? error.message}${range}`)
  }
  const result = config as Config
  if (result.HEADERS_TIMEOUT_MS > result.REQUEST_TIMEOUT_MS) throw new ConfigError(`Invalid HEADERS_TIMEOUT_MS=${result.HEADERS_TIMEOUT_MS}: expected at most REQUEST_TIMEOUT_MS (${result.REQUEST_TIMEOUT_MS})`)
  if (result.AUTH_ISSUER !== '') {
    if (result.PUBLIC_URL === '') throw new ConfigError('PUBLIC_URL is required with AUTH_ISSUER: the MCP endpoint\'s URL as clients see it, e.g. https://mcp.example.com/mcp')
    if (result.AUTH_DISABLED) throw new ConfigError('AUTH_DISABLED=true and AUTH_ISSUER contradict each other: set one')
    if (result.AUTH_AUDIENCE === '') result.AUTH_AUDIENCE = result.PUBLIC_URL
  } else if (!isLoopback(result.HOST) && !result.AUTH_DISABLED) {
    throw new ConfigError(`Refusing to serve HOST=${result.HOST} without authorization: set AUTH_ISSUER and PUBLIC_URL, or AUTH_DISABLED=true to serve it open`)
  }
  if (result.NODE_ID === '') result.NODE_ID = `${hostname()}-${process.pid}`
  if (result.REDIS_CLUSTER_NODES !== '') result.USE_REDIS = true
  return result
}

/** Whether an address to listen on is reachable from this machine only. */
export function isLoopback (host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host)
}

/** How requests are authorized: `jwt` (AUTH_ISSUER's access tokens), `open` (loopback only) or `disabled` (open by choice). */
export function authMode (config: Config): 'jwt' | 'open' | 'disabled' {
  return config.AUTH_ISSUER !== '' ? 'jwt' : config.AUTH_DISABLED ? 'disabled' : 'open'
}
