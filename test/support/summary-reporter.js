// Prints one closing line in the plain form CI reads: "tests: N passed, N failed, N skipped".
// Written at process exit so it comes after Jest's own summary.
import { writeSync } from 'node:fs';

export default class SummaryReporter {
  onRunComplete(_contexts, results) {
    const { numPassedTests, numFailedTests, numPendingTests, numTodoTests, numRuntimeErrorTestSuites } = results;
    const line = `\ntests: ${numPassedTests} passed, ${numFailedTests + numRuntimeErrorTestSuites} failed, ${numPendingTests + numTodoTests} skipped\n`;
    process.once('exit', () => writeSync(1, line));
  }
}
