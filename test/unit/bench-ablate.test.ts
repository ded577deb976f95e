import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

// bench/ablate.mjs switches parts of the built server off by editing a copy of dist/ at anchor texts. When app.ts
// changed a layer's arguments (storageGate(health) became storageGate(health, provider)), every ablation run stopped
// at its first edit, and nothing said so until someone ran it. `npm test` builds dist/ first, so this checks the
// anchors against the code as it is.
describe('bench/ablate.mjs', () => {
  test('every edit it makes to dist/ finds its anchor exactly once', () => {
    const root = fileURLToPath(new URL('../..', import.meta.url));
    const run = spawnSync(process.execPath, ['bench/ablate.mjs', '--check'], { cwd: root, encoding: 'utf8' });
    expect({ status: run.status, stderr: run.stderr }).toEqual({ status: 0, stderr: '' });
    expect(run.stdout).toMatch(/^bench\/ablate\.mjs: all \d+ edits apply to dist\/ once\n$/);
  });
});
