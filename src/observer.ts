/**
 * What the serving core reports for metrics. Every callback is optional, so the core runs the same
 * with or without a metrics system behind it.
 */
export interface ServerObserver {
  toolCalled? (tool: string, outcome: ToolOutcome, seconds: number): void
  calculated? (operation: string): void
  sessionsExpired? (count: number): void
  streamOpened? (): void
  streamClosed? (): void
  eventStored? (): void
  eventsReplayed? (count: number): void
  busMessage? (direction: 'published' | 'received', kind: string): void
  storageError? (operation: string): void
}

export type ToolOutcome = 'success' | 'error' | 'invalid_arguments' | 'internal_error'
