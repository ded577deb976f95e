import type { AdapterPayload, ModelStore } from './types.js';

/**
 * ModelStore.rotate for stores whose writes cannot share one transaction (MongoDB, the in-memory store): the consume
 * decides (it is atomic on its own), and only its winner stores the successor and records it.
 */
export async function rotateInOrder(
  store: Pick<ModelStore, 'consume' | 'upsert' | 'setSuccessor'>,
  consumedId: string,
  id: string,
  payload: AdapterPayload,
  expiresIn: number | undefined,
  recordSuccessor: boolean,
): Promise<boolean> {
  if (!(await store.consume(consumedId))) return false;
  await store.upsert(id, payload, expiresIn);
  if (recordSuccessor) await store.setSuccessor(consumedId, id);
  return true;
}
