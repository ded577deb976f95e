/**
 * Where an authorization error for a client that registered itself goes (server/http/untrusted-redirects.ts): not a
 * redirect, but a page (400) whose link back the person may follow. Returns that link, after checking the answer is
 * that page; anything else (a 303 straight to the client, say) fails the test that expected the page.
 */
export async function sentBack(res: Response): Promise<URL> {
  const html = await res.text();
  if (res.status !== 400 || !html.includes('<h1>Request refused</h1>')) {
    throw new Error(`expected the refused-request page (400), got ${res.status} ${res.headers.get('location') ?? html.slice(0, 200)}`);
  }
  const link = /<a class="button" href="([^"]*)">/.exec(html)?.[1];
  if (link === undefined) throw new Error('the refused-request page has no way back');
  const unescaped = link.replace(/&(quot|#39|lt|gt|amp);/g, (_m, e: string) => ({ quot: '"', '#39': "'", lt: '<', gt: '>', amp: '&' })[e]!);
  return new URL(unescaped);
}
