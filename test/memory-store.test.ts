import { test } from 'tap'
import { MemorySessionStore } from '../src/stores/memory-session-store.js'
import { storeContract } from './helpers/store-contract.js'

test('MemorySessionStore keeps the store contract', async t => {
  storeContract(t, async options => new MemorySessionStore(options))
})
