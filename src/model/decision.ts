/**
 * Decision — the outcome of the DRUCOF outline's section 4 for one recipient
 * (protocols.md A8). Branch names mirror the outline so the code and the draft can
 * be read side by side; `P` is the conversion plan type, which this file does not
 * need to know.
 */
import type { Reply } from './reply.ts';

export type Decision<P = unknown> =
  | { readonly branch: 'no-drucof'; readonly action: 'relay' }
  | { readonly branch: 'conneg-ok/usable'; readonly action: 'convert-and-relay'; readonly plan: P }
  | { readonly branch: 'conneg-ok/pass-on'; readonly action: 'relay-with-drucof' }
  | { readonly branch: 'conneg-ok/no-way'; readonly action: 'fail'; readonly reply: Reply }
  | { readonly branch: 'conneg-failed/pass-on'; readonly action: 'relay-with-drucof' }
  | { readonly branch: 'conneg-failed/no-way'; readonly action: 'fail'; readonly reply: Reply }
  | { readonly branch: 'drucof-only'; readonly action: 'relay-with-drucof' }
  | { readonly branch: 'neither'; readonly action: 'fail'; readonly reply: Reply };

export type DecisionBranch = Decision['branch'];
