import { setTimeout as sleep } from 'node:timers/promises'
import { Type } from '@sinclair/typebox'
import { CreateMessageResultSchema, ElicitResultSchema } from '@modelcontextprotocol/sdk/types.js'
import { type FeatureRegistry, ToolInputError, toolError } from './features.js'

/** A valid 1x1 PNG and a two-sample WAV, for the image, audio and blob fixtures. */
const PNG = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII='
const WAV = 'UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQIAAACAgA=='
const JSON_SCHEMA_2020_12 = 'https://json-schema.org/draft/2020-12/schema'

const NO_ARGUMENTS = Type.Object({})
const READ_ONLY = { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false }
const ASKS_CLIENT = { readOnlyHint: true, destructiveHint: false, idempotentHint: false, openWorldHint: true }
const text = (value: string) => ({ content: [{ type: 'text' as const, text: value }] })

/**
 * The fixtures the official MCP conformance suite calls by name (`test_*` tools, `test://`
 * resources, `test_*` prompts), registered only with CONFORMANCE_FIXTURES=true. They use the same
 * registry and session machinery as the calculator.
 */
export function registerConformanceFixtures (registry: FeatureRegistry): void {
  const tool = (name: string, description: string, run: Parameters<FeatureRegistry['addTool']>[0]['run'], inputSchema = NO_ARGUMENTS, annotations = READ_ONLY) =>
    registry.addTool({ name, title: name, description, inputSchema, annotations, run })

  tool('test_simple_text', 'Returns one text block', async () => text('This is a simple text response for testing.'))
  tool('test_image_content', 'Returns one PNG image', async () => ({ content: [{ type: 'image', data: PNG, mimeType: 'image/png' }] }))
  tool('test_audio_content', 'Returns one WAV clip', async () => ({ content: [{ type: 'audio', data: WAV, mimeType: 'audio/wav' }] }))
  tool('test_embedded_resource', 'Returns an embedded text resource', async () => ({
    content: [{ type: 'resource', resource: { uri: 'test://embedded-resource', mimeType: 'text/plain', text: 'This is an embedded resource content.' } }]
  }))
  tool('test_multiple_content_types', 'Returns text, an image and a resource', async () => ({
    content: [
      { type: 'text', text: 'Multiple content types test:' },
      { type: 'image', data: PNG, mimeType: 'image/png' },
      { type: 'resource', resource: { uri: 'test://mixed-content-resource', mimeType: 'application/json', text: '{"test":"data","value":123}' } }
    ]
  }))
  tool('test_error_handling', 'Always fails', async () => toolError('This tool intentionally returns an error for testing'))
  tool('test_tool_with_logging', 'Logs three messages on its request\'s stream', async (_args, context) => {
    await context.logToRequest('info', 'Tool execution started')
    await sleep(50)
    await context.logToRequest('info', 'Tool processing data')
    await sleep(50)
    await context.logToRequest('info', 'Tool execution completed')
    return text('Logging tool completed')
  })
  tool('test_tool_with_progress', 'Reports progress 0, 50 and 100 of 100', async (_args, context) => {
    for (const step of [0, 50, 100]) {
      await context.progress(step, 100)
      if (step < 100) await sleep(50)
    }
    return text('Progress tool completed')
  })
  tool('test_reconnection', 'Ends its SSE stream mid-call; the answer arrives after the client reconnects', async (_args, context) => {
    context.closeStream()
    await sleep(200)
    return text('Reconnection test completed')
  })
  tool('test_sampling', 'Asks the client\'s model to answer a prompt', async (args: { prompt: string }, context) => {
    const result = await context.request({
      method: 'sampling/createMessage',
      params: { messages: [{ role: 'user', content: { type: 'text', text: args.prompt } }], maxTokens: 100 }
    }, CreateMessageResultSchema)
    const answer = !Array.isArray(result.content) && result.content.type === 'text' ? result.content.text : JSON.stringify(result.content)
    return text(`LLM response: ${answer}`)
  }, Type.Object({ prompt: Type.String({ description: 'The prompt to send to the LLM' }) }), ASKS_CLIENT)

  const elicit = async (context: Parameters<Parameters<FeatureRegistry['addTool']>[0]['run']>[1], message: string, requestedSchema: Record<string, unknown>) => {
    if (context.clientCapabilities.elicitation === undefined) throw new ToolInputError('The client does not support elicitation')
    return context.request({ method: 'elicitation/create', params: { message, requestedSchema } } as never, ElicitResultSchema)
  }
  tool('test_elicitation', 'Asks the user for a username and an email', async (args: { message: string }, context) => {
    const result = await elicit(context, args.message, {
      type: 'object',
      properties: {
        username: { type: 'string', description: 'User\'s response' },
        email: { type: 'string', description: 'User\'s email address' }
      },
      required: ['username', 'email']
    })
    return text(`User response: action=${result.action}, content=${JSON.stringify(result.content ?? {})}`)
  }, Type.Object({ message: Type.String({ description: 'The message to show the user' }) }), ASKS_CLIENT)
  tool('test_elicitation_sep1034_defaults', 'Asks with a default for every primitive type', async (_args, context) => {
    const result = await elicit(context, 'Please review the defaults', {
      type: 'object',
      properties: {
        name: { type: 'string', default: 'John Doe' },
        age: { type: 'integer', default: 30 },
        score: { type: 'number', default: 95.5 },
        status: { type: 'string', enum: ['active', 'inactive', 'pending'], default: 'active' },
        verified: { type: 'boolean', default: true }
      }
    })
    return text(`Elicitation completed: action=${result.action}, content=${JSON.stringify(result.content ?? {})}`)
  }, NO_ARGUMENTS, ASKS_CLIENT)
  tool('test_elicitation_sep1330_enums', 'Asks with every kind of enum', async (_args, context) => {
    const result = await elicit(context, 'Please choose', {
      type: 'object',
      properties: {
        untitledSingle: { type: 'string', enum: ['option1', 'option2', 'option3'] },
        titledSingle: { type: 'string', oneOf: [{ const: 'value1', title: 'First Option' }, { const: 'value2', title: 'Second Option' }, { const: 'value3', title: 'Third Option' }] },
        legacyEnum: { type: 'string', enum: ['opt1', 'opt2', 'opt3'], enumNames: ['Option One', 'Option Two', 'Option Three'] },
        untitledMulti: { type: 'array', items: { type: 'string', enum: ['option1', 'option2', 'option3'] } },
        titledMulti: { type: 'array', items: { anyOf: [{ const: 'value1', title: 'First Choice' }, { const: 'value2', title: 'Second Choice' }, { const: 'value3', title: 'Third Choice' }] } }
      }
    })
    return text(`Elicitation completed: action=${result.action}, content=${JSON.stringify(result.content ?? {})}`)
  }, NO_ARGUMENTS, ASKS_CLIENT)
  registry.addTool({
    name: 'json_schema_2020_12_tool',
    title: 'JSON Schema 2020-12',
    description: 'Tool with JSON Schema 2020-12 features',
    inputSchema: {
      $schema: JSON_SCHEMA_2020_12,
      type: 'object',
      $defs: { address: { type: 'object', properties: { street: { type: 'string' }, city: { type: 'string' } } } },
      properties: { name: { type: 'string' }, address: { $ref: '#/$defs/address' } },
      additionalProperties: false
    },
    argumentsSchema: Type.Object({
      name: Type.Optional(Type.String()),
      address: Type.Optional(Type.Object({ street: Type.Optional(Type.String()), city: Type.Optional(Type.String()) }))
    }, { additionalProperties: false }),
    annotations: READ_ONLY,
    run: async args => text(`Received: ${JSON.stringify(args)}`)
  })

  registry.addResource({ uri: 'test://static-text', name: 'static-text', title: 'Static text', description: 'A fixed text resource', mimeType: 'text/plain', read: async () => 'This is the content of the static text resource.' })
  registry.addResource({ uri: 'test://static-binary', name: 'static-binary', title: 'Static binary', description: 'A fixed PNG', mimeType: 'image/png', read: async () => Buffer.from(PNG, 'base64') })
  registry.addResource({ uri: 'test://watched-resource', name: 'watched-resource', title: 'Watched resource', description: 'A resource to subscribe to', mimeType: 'text/plain', read: async () => 'Watched resource content.' })
  registry.addResourceTemplate({
    uriTemplate: 'test://template/{id}/data',
    name: 'template-data',
    title: 'Template data',
    description: 'Data for any id',
    mimeType: 'application/json',
    read: async (_context, { id }) => JSON.stringify({ id, templateTest: true, data: `Data for ID: ${id}` })
  })

  registry.addPrompt({ name: 'test_simple_prompt', title: 'Simple prompt', description: 'A prompt without arguments', arguments: [], get: () => ({ messages: [{ role: 'user', content: { type: 'text', text: 'This is a simple prompt for testing.' } }] }) })
  registry.addPrompt({
    name: 'test_prompt_with_arguments',
    title: 'Prompt with arguments',
    description: 'A prompt with two required arguments',
    arguments: [
      { name: 'arg1', description: 'First test argument', required: true, values: ['test', 'testing', 'tested'] },
      { name: 'arg2', description: 'Second test argument', required: true }
    ],
    get: ({ arg1, arg2 }) => ({ messages: [{ role: 'user', content: { type: 'text', text: `Prompt with arguments: arg1='${arg1}', arg2='${arg2}'` } }] })
  })
  registry.addPrompt({
    name: 'test_prompt_with_embedded_resource',
    title: 'Prompt with a resource',
    description: 'A prompt embedding the resource it is given',
    arguments: [{ name: 'resourceUri', description: 'URI of the resource to embed', required: true }],
    get: ({ resourceUri = '' }) => ({
      messages: [
        { role: 'user', content: { type: 'resource', resource: { uri: resourceUri, mimeType: 'text/plain', text: 'Embedded resource content for testing.' } } },
        { role: 'user', content: { type: 'text', text: 'Please process the embedded resource above.' } }
      ]
    })
  })
  registry.addPrompt({
    name: 'test_prompt_with_image',
    title: 'Prompt with an image',
    description: 'A prompt with an image',
    arguments: [],
    get: () => ({
      messages: [
        { role: 'user', content: { type: 'image', data: PNG, mimeType: 'image/png' } },
        { role: 'user', content: { type: 'text', text: 'Please analyze the image above.' } }
      ]
    })
  })
}
