import fp from 'fastify-plugin'
import { type Config, loadConfig } from '../src/config.js'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
  }
}

export interface ConfigPluginOptions {
  /** The environment to read; the process's own when omitted. */
  env?: NodeJS.ProcessEnv
}

/**
 * Validates the environment once and decorates it as `fastify.config`.
 * A bad value stops the boot with a ConfigError naming the variable.
 */
export default fp<ConfigPluginOptions>(async function config (fastify, opts) {
  fastify.decorate('config', loadConfig(opts.env ?? process.env))
}, { name: 'config' })
