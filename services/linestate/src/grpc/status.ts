/**
 * FabricError code <-> gRPC status, both directions, exhaustive: adding an ErrorCode or
 * meeting a new gRPC status is a compile error until it is mapped here.
 */
import { status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';
import { ErrorCode, FabricError, isFabricError } from '../../../common/src/errors.ts';

/** gRPC status of each fabric error code. */
export const grpcStatusOf: Readonly<Record<ErrorCode, GrpcStatus>> = {
  INVALID_ARGUMENT: GrpcStatus.INVALID_ARGUMENT,
  NOT_FOUND: GrpcStatus.NOT_FOUND,
  ALREADY_EXISTS: GrpcStatus.ALREADY_EXISTS,
  FAILED_PRECONDITION: GrpcStatus.FAILED_PRECONDITION,
  OUT_OF_RANGE: GrpcStatus.OUT_OF_RANGE,
  PERMISSION_DENIED: GrpcStatus.PERMISSION_DENIED,
  UNAVAILABLE: GrpcStatus.UNAVAILABLE,
  DEADLINE_EXCEEDED: GrpcStatus.DEADLINE_EXCEEDED,
  INTERNAL: GrpcStatus.INTERNAL,
};

/**
 * Fabric error code of each gRPC status (for the client). Statuses the service never
 * sends map onto the nearest code: transport-level failures (CANCELLED, ABORTED) are
 * UNAVAILABLE (retryable), RESOURCE_EXHAUSTED (a message over the size limit) is
 * INVALID_ARGUMENT, the rest INTERNAL / PERMISSION_DENIED.
 */
export const errorCodeOf: Readonly<Record<GrpcStatus, ErrorCode>> = {
  [GrpcStatus.OK]: ErrorCode.INTERNAL, // an error with status OK is itself a bug
  [GrpcStatus.CANCELLED]: ErrorCode.UNAVAILABLE,
  [GrpcStatus.UNKNOWN]: ErrorCode.INTERNAL,
  [GrpcStatus.INVALID_ARGUMENT]: ErrorCode.INVALID_ARGUMENT,
  [GrpcStatus.DEADLINE_EXCEEDED]: ErrorCode.DEADLINE_EXCEEDED,
  [GrpcStatus.NOT_FOUND]: ErrorCode.NOT_FOUND,
  [GrpcStatus.ALREADY_EXISTS]: ErrorCode.ALREADY_EXISTS,
  [GrpcStatus.PERMISSION_DENIED]: ErrorCode.PERMISSION_DENIED,
  [GrpcStatus.RESOURCE_EXHAUSTED]: ErrorCode.INVALID_ARGUMENT,
  [GrpcStatus.FAILED_PRECONDITION]: ErrorCode.FAILED_PRECONDITION,
  [GrpcStatus.ABORTED]: ErrorCode.UNAVAILABLE,
  [GrpcStatus.OUT_OF_RANGE]: ErrorCode.OUT_OF_RANGE,
  [GrpcStatus.UNIMPLEMENTED]: ErrorCode.INTERNAL,
  [GrpcStatus.INTERNAL]: ErrorCode.INTERNAL,
  [GrpcStatus.UNAVAILABLE]: ErrorCode.UNAVAILABLE,
  [GrpcStatus.DATA_LOSS]: ErrorCode.INTERNAL,
  [GrpcStatus.UNAUTHENTICATED]: ErrorCode.PERMISSION_DENIED,
};

/** The status object a handler returns for an error. Unexpected errors become INTERNAL without detail. */
export function toStatusObject(e: unknown): { code: GrpcStatus; details: string; unexpected: boolean } {
  if (isFabricError(e)) return { code: grpcStatusOf[e.code], details: e.message, unexpected: false };
  return { code: GrpcStatus.INTERNAL, details: 'internal error in the line-state service (see its log)', unexpected: true };
}

function isServiceError(e: unknown): e is ServiceError {
  return e instanceof Error && typeof (e as Partial<ServiceError>).code === 'number' && typeof (e as Partial<ServiceError>).details === 'string';
}

/** Client side: a per-operation status (OpStream results) as a FabricError. */
export function fromStatusCode(code: number, details: string): FabricError {
  return new FabricError(errorCodeOf[code as GrpcStatus] ?? ErrorCode.INTERNAL, details);
}

/** Client side: a gRPC ServiceError as a FabricError (message from details, cause = the ServiceError). */
export function fromServiceError(e: unknown): FabricError {
  if (isFabricError(e)) return e;
  if (isServiceError(e)) {
    const code = errorCodeOf[e.code as GrpcStatus] ?? ErrorCode.INTERNAL;
    const details = e.details !== '' ? e.details : e.message;
    return new FabricError(code, details, { cause: e });
  }
  return new FabricError(ErrorCode.INTERNAL, e instanceof Error ? e.message : String(e), { cause: e });
}
