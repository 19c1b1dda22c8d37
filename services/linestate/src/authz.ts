/**
 * Role-based authorization of line-state RPCs (docs/security.md): a pure decision over
 * the caller's Principal (from its client certificate), the RPC and its request. Used by
 * server.ts only when the server requires client certificates.
 *
 *   agent <chip>      RegisterChip / RenewLease / ReleaseChip / LineOp / OpStream (each
 *                     batch names its chip) of its chips;
 *                     GetNames, GetLine, ListLines and WatchEvents / WatchEventBatches of
 *                     its chips only
 *   operator <name>   everything
 *   watcher <name>    read-only: ListChips, ListLines, ListNets, GetLine, GetNames, WatchEvents,
 *                     WatchEventBatches
 */
import { FabricError, ErrorCode } from '../../common/src/errors.ts';
import { agentMayServe, type Principal } from '../../common/src/tls.ts';
import type { RpcMethod } from './metrics.ts';

/** RPCs of each class. */
export const AGENT_RPCS: ReadonlySet<RpcMethod> = new Set(['RegisterChip', 'RenewLease', 'ReleaseChip', 'LineOp', 'OpStream']);
export const READ_RPCS: ReadonlySet<RpcMethod> = new Set(['ListChips', 'ListLines', 'ListNets', 'GetLine', 'GetNames', 'WatchEvents', 'WatchEventBatches']);
export const OPERATOR_RPCS: ReadonlySet<RpcMethod> = new Set(['Wire', 'Unwire', 'Drive', 'SetBias', 'ApplyTopology']);

/** The chips a request names (for the agent checks); undefined = "every chip". */
function chipsOf(rpc: RpcMethod, req: unknown): readonly string[] | undefined {
  const r = (req ?? {}) as { chip?: unknown; chips?: unknown; line?: { chip?: unknown } };
  switch (rpc) {
    case 'WatchEvents':
    case 'WatchEventBatches': {
      const cs = Array.isArray(r.chips) ? r.chips.map(String) : [];
      return cs.length === 0 ? undefined : cs;
    }
    case 'ListLines':
      return typeof r.chip === 'string' && r.chip !== '' ? [r.chip] : undefined;
    case 'GetLine':
      return [String(r.line?.chip ?? '')];
    case 'ListChips':
    case 'ListNets':
      return undefined;
    default:
      return [String(r.chip ?? '')];
  }
}

/** Why `p` may not call `rpc` with `req`, or undefined when it may. */
export function denial(p: Principal, rpc: RpcMethod, req: unknown): string | undefined {
  if (p.operators.length > 0) return undefined;
  const isRead = READ_RPCS.has(rpc);
  if (isRead && p.watchers.length > 0) return undefined;
  if (p.agentChips.length > 0 && (AGENT_RPCS.has(rpc) || isRead)) {
    const chips = chipsOf(rpc, req);
    if (chips === undefined) return `${p.display} may not call ${rpc} on every chip: name its own chip(s) (or use an operator or watcher identity)`;
    const other = chips.find((c) => !agentMayServe(p, c));
    if (other === undefined) return undefined;
    return `${p.display} may not ${AGENT_RPCS.has(rpc) ? 'operate' : 'read'} chip "${other}" (${rpc} needs the identity gpiofabric:agent:${other}${isRead ? ', a watcher or an operator' : ''})`;
  }
  const needs = OPERATOR_RPCS.has(rpc) ? 'the operator role (gpiofabric:operator:NAME)'
    : AGENT_RPCS.has(rpc) ? 'the agent role for the chip (gpiofabric:agent:CHIP)'
      : 'a watcher, operator or agent role';
  return `${p.display} may not call ${rpc}: it needs ${needs}`;
}

/** `denial` as an error to throw (PERMISSION_DENIED). */
export function authorize(p: Principal, rpc: RpcMethod, req: unknown): void {
  const d = denial(p, rpc, req);
  if (d !== undefined) throw new FabricError(ErrorCode.PERMISSION_DENIED, d);
}
