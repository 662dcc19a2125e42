/**
 * A throw-away self-signed certificate for STARTTLS tests (openssl), removed after
 * the file's tests. `undefined` when openssl is missing, so tests can skip.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

export function selfSignedCert(cn = 'relay.test'): { key: string; cert: string } | undefined {
  const dir = mkdtempSync(join(tmpdir(), 'drucof-tls-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const key = join(dir, 'key.pem');
  const cert = join(dir, 'cert.pem');
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${cn}`], { stdio: 'ignore' });
    return { key, cert };
  } catch {
    return undefined;
  }
}
