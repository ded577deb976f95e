/** The Node options this process started with, from its command line and NODE_OPTIONS, as one string to search. */
export function nodeOptionsText(execArgv: readonly string[], env: NodeJS.ProcessEnv): string {
  return `${execArgv.join(' ')} ${env.NODE_OPTIONS ?? ''}`;
}
