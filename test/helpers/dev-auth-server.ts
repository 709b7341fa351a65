import { startAuthServer } from './auth-server.js'

/**
 * A development authorization server for a container: configured by AUTH_PORT, AUTH_HOST,
 * AUTH_ISSUER (the public issuer URL), AUTH_RESOURCES and AUTH_SCOPES (comma-separated) and
 * AUTH_CLIENTS ('id:secret:scope scope,...' client_credentials clients). Prints one JSON line with
 * the issuer once it listens, and stops on SIGTERM or SIGINT.
 */
const env = process.env
const list = (value: string) => value.split(',').map(item => item.trim()).filter(item => item !== '')

const clients = list(env.AUTH_CLIENTS ?? '').map(entry => {
  const [clientId = '', clientSecret = '', ...scope] = entry.split(':')
  if (clientId === '' || clientSecret === '') throw new Error(`AUTH_CLIENTS entry '${entry}' is not id:secret:scope`)
  // A scope may itself contain ':' (calculator:use), so everything after the secret is the scope.
  return { clientId, clientSecret, scope: scope.join(':') }
})

const server = await startAuthServer({
  port: Number(env.AUTH_PORT ?? 9000),
  host: env.AUTH_HOST ?? '0.0.0.0',
  issuer: env.AUTH_ISSUER ?? 'http://localhost:9000',
  resources: list(env.AUTH_RESOURCES ?? 'http://localhost:8080/mcp'),
  scopes: list(env.AUTH_SCOPES ?? 'calculator:use,calculator:admin'),
  clients
})
process.stdout.write(`${JSON.stringify({ issuer: server.issuer })}\n`)

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    server.stop().then(() => process.exit(0), () => process.exit(1))
  })
}
