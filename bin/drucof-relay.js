#!/usr/bin/env node
// The published entry point. The relay runs its TypeScript sources through tsx's
// loader, so `npm ci` is the whole build: no compile step can go stale.
import { register } from 'tsx/esm/api';
register();
await import('../src/main.ts');
