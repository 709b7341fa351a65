import { test } from 'tap'
import { Type } from '@sinclair/typebox'
import { bearerChallenge, metadataUrls } from '../src/auth/access-tokens.js'
import { FeatureRegistry } from '../src/mcp/features.js'

test('an issuer\'s metadata URLs: RFC 8414 before the path, OpenID discovery after it', async t => {
  t.same(metadataUrls('https://as.example.com').map(String), ['https://as.example.com/.well-known/oauth-authorization-server', 'https://as.example.com/.well-known/openid-configuration'])
  t.same(metadataUrls('https://as.example.com/tenant/1/').map(String), ['https://as.example.com/.well-known/oauth-authorization-server/tenant/1', 'https://as.example.com/tenant/1/.well-known/openid-configuration'])
})

test('a Bearer challenge names the metadata, the scopes and the error, and cannot be broken out of', async t => {
  t.equal(bearerChallenge('https://m/.well-known/oauth-protected-resource/mcp', ['a:use']), 'Bearer resource_metadata="https://m/.well-known/oauth-protected-resource/mcp", scope="a:use"')
  t.equal(bearerChallenge('https://m/x', ['a', 'b'], { code: 'insufficient_scope', description: 'needs "a" \\ b' }), 'Bearer resource_metadata="https://m/x", scope="a b", error="insufficient_scope", error_description="needs a  b"')
  t.equal(bearerChallenge('https://m/x', []), 'Bearer resource_metadata="https://m/x"')
})

test('scopes: every request needs those all scoped items share; an item adds its own', async t => {
  const registry = new FeatureRegistry()
  const feature = registry.feature('f')
  const run = async () => ({ content: [] })
  const tool = (name: string, scopes?: string[]) => feature.addTool({ name, title: name, description: name, inputSchema: Type.Object({}), annotations: {}, ...(scopes !== undefined && { scopes }), run })
  t.same(registry.scopes, { base: [], all: [] }, 'nothing declared, nothing needed')
  tool('use', ['x:use'])
  tool('admin', ['x:use', 'x:admin'])
  tool('free')
  feature.addPrompt({ name: 'p', title: 'p', description: 'p', arguments: [], scopes: ['x:use'], get: () => ({ messages: [] }) })
  t.same(registry.scopes, { base: ['x:use'], all: ['x:use', 'x:admin'] })
  t.same(registry.scopesFor('tools/call', { name: 'admin' }), ['x:use', 'x:admin'])
  t.same(registry.scopesFor('tools/call', { name: 'use' }), ['x:use'])
  t.same(registry.scopesFor('tools/call', { name: 'missing' }), ['x:use'], 'an unknown tool needs the base scopes')
  t.same(registry.scopesFor('tools/list', undefined), ['x:use'])
  t.same(registry.scopesFor('prompts/get', { name: 'p' }), ['x:use'])
})
