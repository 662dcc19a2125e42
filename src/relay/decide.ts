/**
 * decide() — section 4 of the DRUCOF outline as a pure, total function
 * (protocols.md A8). For a recipient that asked for DRUCOF, given the next hop's
 * EHLO keywords, what is known of the recipient's capabilities, and whether the
 * relay can make the message usable (the planner's verdict), choose: convert and
 * relay plainly, pass the request on, or fail with a precise code.
 *
 * Section 5 is kept by construction: no conversion without the sender's request
 * (`no-drucof` relays unchanged), none without specific information about the
 * recipient (only `known` capabilities lead to `convert-and-relay`), none on a
 * prohibited part and always the least lossy chain (the planner's job; a plan
 * that needs a prohibited part arrives here as impossible with 5.6.2).
 * Capabilities from our own registry count as specific information (A8): a relay
 * authoritative for the recipient decides without asking the hop.
 */
import type { CapabilityAnswer } from '../model/capability.ts';
import type { Decision } from '../model/decision.ts';
import { reply, type Reply } from '../model/reply.ts';

/** The planner's verdict for the known capabilities (absent when none are known). */
export type PlanVerdict<P> = { readonly possible: true; readonly plan: P } | { readonly possible: false; readonly reply: Reply };

export interface DecideInput<P> {
  readonly drucof: boolean;
  /** The next hop's EHLO keywords, upper-case. */
  readonly hopEhlo: ReadonlySet<string>;
  readonly capability: CapabilityAnswer;
  readonly plan?: PlanVerdict<P>;
}

/** 5.3.3: the hop cannot carry the selected feature (RFC 3463), the finer reading A8 keeps. */
export const capabilitiesUnavailable = (): Reply =>
  reply(550, 3, 3, 'recipient capabilities unavailable and the next hop cannot carry the DRUCOF request');
export const noWayToCarry = (): Reply => reply(550, 3, 3, 'the next hop supports neither CONNEG nor DRUCOF: no way to carry the DRUCOF request');
export const noPlan = (): Reply => reply(554, 6, 3, 'conversion required but not supported');

export function decide<P>(input: DecideInput<P>): Decision<P> {
  if (!input.drucof) return { branch: 'no-drucof', action: 'relay' };
  const hopConneg = input.hopEhlo.has('CONNEG');
  const hopDrucof = input.hopEhlo.has('DRUCOF');

  if (input.capability.kind === 'known') {
    const plan = input.plan ?? { possible: false as const, reply: noPlan() };
    if (plan.possible) return { branch: 'conneg-ok/usable', action: 'convert-and-relay', plan: plan.plan };
    if (hopDrucof) return { branch: 'conneg-ok/pass-on', action: 'relay-with-drucof' };
    return { branch: 'conneg-ok/no-way', action: 'fail', reply: plan.reply };
  }
  if (hopConneg) {
    // The query failed (or could not be made): only a hop that can carry DRUCOF is left.
    if (hopDrucof) return { branch: 'conneg-failed/pass-on', action: 'relay-with-drucof' };
    return { branch: 'conneg-failed/no-way', action: 'fail', reply: capabilitiesUnavailable() };
  }
  if (hopDrucof) return { branch: 'drucof-only', action: 'relay-with-drucof' };
  return { branch: 'neither', action: 'fail', reply: noWayToCarry() };
}
