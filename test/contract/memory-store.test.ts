/** The LineStore contract against the embedded MemoryStore. */
import { createMemoryStore } from '../../services/linestate/src/store/memory-store.ts';
import { runStoreContract } from './store.contract.ts';

runStoreContract('MemoryStore', async () => {
  const store = createMemoryStore();
  return { store, cleanup: () => store.close() };
});
