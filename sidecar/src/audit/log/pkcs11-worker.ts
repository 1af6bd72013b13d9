/**
 * The thread that owns a PKCS#11 library for Pkcs11ThreadSigner: every call into the token
 * (C_Initialize, login, key lookup, C_SignInit, the signature, a session reopen) runs here,
 * so a token that is slow or hangs holds this thread, never the event loop. One key per
 * thread (Pkcs11Module and Pkcs11Signer do the work, as in-process).
 *
 * Messages: { id, op: 'open', modulePath, key } -> { keyId, spki, attributes };
 * { id, op: 'sign', message } -> { signature }; { id, op: 'close' } -> {}. A failure answers
 * { error: { code, message, details } }, the PavilionError's own fields. Once loaded, the
 * thread says { ready: true }.
 */
import { parentPort, threadId, workerData } from 'node:worker_threads';
import { ErrorCodes, PavilionError, describeThrown } from '../../lib/errors.ts';
import { Pkcs11Module, isPinRefusal, type Pkcs11KeyOptions, type Pkcs11Signer } from './pkcs11-signer.ts';

export type Pkcs11Request =
  | { readonly id: number; readonly op: 'open'; readonly modulePath: string; readonly key: Pkcs11KeyOptions; readonly finalize: boolean }
  | { readonly id: number; readonly op: 'sign'; readonly message: Uint8Array; readonly stallMs?: number }
  /** `finalize`: no other thread of the process uses the library (only then is C_Finalize safe). */
  | { readonly id: number; readonly op: 'close'; readonly finalize: boolean };

export interface Pkcs11Reply {
  readonly id: number;
  readonly threadId: number;
  readonly keyId?: string;
  readonly spki?: Uint8Array;
  readonly attributes?: Pkcs11Signer['attributes'];
  readonly signature?: Uint8Array;
  readonly error?: {
    readonly code: string;
    readonly message: string;
    readonly details?: Readonly<Record<string, unknown>>;
    /** Trying again cannot help and may harm: the token refused the PIN (tries count toward locking it), or the key under the label is another. */
    readonly final?: boolean;
  };
}

/** Tests may stall a signature here, as a token that does not answer would. */
const allowStall = (workerData as { allowStall?: boolean } | undefined)?.allowStall === true;

let module: Pkcs11Module | undefined;
let signer: Pkcs11Signer | undefined;

async function handle(request: Pkcs11Request): Promise<Omit<Pkcs11Reply, 'id' | 'threadId'>> {
  switch (request.op) {
    case 'open': {
      if (module !== undefined) throw new PavilionError(ErrorCodes.AUDIT_SIGNER_CONFIG, 'PKCS#11: this thread holds a key already');
      // a thread that stopped before this one (or was left inside a call that never returned)
      // may have left the library initialised
      module = Pkcs11Module.open(request.modulePath, { acceptInitialized: true });
      try {
        signer = await module.signer(request.key);
      } catch (error) {
        module.close({ finalize: request.finalize });
        module = undefined;
        throw error;
      }
      return { keyId: signer.keyId, spki: signer.publicKeySpki, attributes: signer.attributes };
    }
    case 'sign': {
      if (signer === undefined) throw new PavilionError(ErrorCodes.AUDIT_SIGNER_FAILED, 'PKCS#11: no key is open on this thread');
      if (allowStall && request.stallMs !== undefined) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, request.stallMs);
      return { signature: await signer.sign(request.message) };
    }
    case 'close': {
      await signer?.close();
      module?.close({ finalize: request.finalize });
      signer = undefined;
      module = undefined;
      return {};
    }
  }
}

parentPort?.on('message', (request: Pkcs11Request) => {
  handle(request).then(
    (reply) => parentPort?.postMessage({ id: request.id, threadId, ...reply } satisfies Pkcs11Reply),
    (error: unknown) => {
      const typed = error instanceof PavilionError ? error : new PavilionError(ErrorCodes.AUDIT_SIGNER_FAILED, `PKCS#11: ${describeThrown(error)}`);
      const final = typed.code === ErrorCodes.AUDIT_SIGNER_KEY_CHANGED || isPinRefusal(error);
      parentPort?.postMessage({ id: request.id, threadId, error: { ...typed.toJSON(), ...(final ? { final } : {}) } } satisfies Pkcs11Reply);
    },
  );
});

// Loaded and listening: the caller's deadlines measure the token from here, not this thread's start.
parentPort?.postMessage({ ready: true });
