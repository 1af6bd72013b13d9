/**
 * Locating external tools: an explicit variable, .tools/bin, then PATH. The path handed back is
 * absolute, because callers run the tool from other working directories (opa build runs in its
 * staging directory, so a relative PAVILION_OPA would resolve against that).
 */
import assert from 'node:assert/strict';
import { chmod, writeFile } from 'node:fs/promises';
import { isAbsolute, join, relative } from 'node:path';
import { describe, it } from 'node:test';
import { findTool } from '../sidecar/src/lib/tools.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { tempDir } from './harness/temp-dir.ts';

describe('findTool', () => {
  it('a relative path in the variable comes back absolute (the same file), and a missing one is ERR_TOOL_MISSING', async () => {
    const dir = await tempDir('pavilion-tool-');
    const tool = join(dir, 'fake-tool');
    await writeFile(tool, '#!/bin/sh\nexit 0\n');
    await chmod(tool, 0o755);
    const saved = process.env['PAVILION_FAKE_TOOL'];
    try {
      process.env['PAVILION_FAKE_TOOL'] = relative(process.cwd(), tool);
      const found = findTool('fake-tool', 'PAVILION_FAKE_TOOL');
      assert.ok(isAbsolute(found), found);
      assert.equal(found, tool);
      process.env['PAVILION_FAKE_TOOL'] = join(dir, 'missing');
      assert.throws(() => findTool('fake-tool', 'PAVILION_FAKE_TOOL'), (e: unknown) => isPavilionError(e, ErrorCodes.TOOL_MISSING));
    } finally {
      if (saved === undefined) delete process.env['PAVILION_FAKE_TOOL'];
      else process.env['PAVILION_FAKE_TOOL'] = saved;
    }
  });

  it('a tool found nowhere is ERR_TOOL_MISSING naming the command that installs it', () => {
    const saved = process.env['PATH'];
    try {
      process.env['PATH'] = '';
      assert.throws(
        () => findTool('pavilion-no-such-tool', 'PAVILION_NO_SUCH_TOOL', 'bash scripts/install-nats.sh'),
        (e: unknown) => isPavilionError(e, ErrorCodes.TOOL_MISSING) && e.message.includes("run 'bash scripts/install-nats.sh' to install it"),
      );
      assert.throws(
        () => findTool('pavilion-no-such-tool', 'PAVILION_NO_SUCH_TOOL'),
        (e: unknown) => isPavilionError(e, ErrorCodes.TOOL_MISSING) && e.message.includes("run 'npm run bootstrap' to install it"),
      );
    } finally {
      if (saved === undefined) delete process.env['PATH'];
      else process.env['PATH'] = saved;
    }
  });
});
