/**
 * The PavilionAnchor artifact the build ships is what solc-js (the version package.json pins)
 * makes of the committed source with the committed settings, byte for byte; and the
 * contract enforces what the anchor relies on.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ANCHOR_ARTIFACT_PATH, ANCHOR_SOURCE_PATH, compileAnchorArtifact } from '../scripts/build-contract.ts';
import { PAVILION_ANCHOR_ARTIFACT } from '../sidecar/src/audit/anchor/index.ts';

describe('PavilionAnchor contract artifact', () => {
  it('recompiles to the committed artifact, byte for byte, with the pinned compiler', () => {
    assert.equal(compileAnchorArtifact(), readFileSync(ANCHOR_ARTIFACT_PATH, 'utf8'));
    const pinned = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { devDependencies: Record<string, string> }).devDependencies['solc'];
    assert.ok(PAVILION_ANCHOR_ARTIFACT.compiler.version.startsWith(`${pinned}+commit.`), PAVILION_ANCHOR_ARTIFACT.compiler.version);
    assert.equal(PAVILION_ANCHOR_ARTIFACT.sourceSha256, createHash('sha256').update(readFileSync(ANCHOR_SOURCE_PATH)).digest('hex'));
  });

  it('exposes the functions, event and errors the anchor adapter uses', () => {
    const names = PAVILION_ANCHOR_ARTIFACT.abi.map((entry) => `${entry.type}:${'name' in entry ? entry.name : ''}`);
    for (const expected of ['function:anchor', 'function:anchorOf', 'function:setSubmitter', 'function:latestTreeSize', 'event:Anchored', 'error:TreeSizeNotGrowing', 'error:NotAuthorised']) {
      assert.ok(names.includes(expected), `${expected} in ${names.join(', ')}`);
    }
    assert.match(PAVILION_ANCHOR_ARTIFACT.bytecode, /^0x[0-9a-f]+$/);
  });
});
