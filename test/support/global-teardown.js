export default async function globalTeardown() {
  await globalThis.__agentauthFerretdb?.stop();
}
