/**
 * Typed errors of the fabric. Every error carries a code that maps one-to-one onto a
 * gRPC status (see services/linestate/src/grpc/status.ts) and keeps its `cause`.
 */
export const ErrorCode = {
  INVALID_ARGUMENT: 'INVALID_ARGUMENT',
  NOT_FOUND: 'NOT_FOUND',
  ALREADY_EXISTS: 'ALREADY_EXISTS',
  FAILED_PRECONDITION: 'FAILED_PRECONDITION',
  OUT_OF_RANGE: 'OUT_OF_RANGE',
  PERMISSION_DENIED: 'PERMISSION_DENIED',
  UNAVAILABLE: 'UNAVAILABLE',
  DEADLINE_EXCEEDED: 'DEADLINE_EXCEEDED',
  INTERNAL: 'INTERNAL',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class FabricError extends Error {
  override readonly name: string = 'FabricError';
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

export const invalidArgument = (msg: string, cause?: unknown): FabricError =>
  new FabricError(ErrorCode.INVALID_ARGUMENT, msg, cause === undefined ? undefined : { cause });
export const notFound = (msg: string): FabricError => new FabricError(ErrorCode.NOT_FOUND, msg);
export const alreadyExists = (msg: string): FabricError => new FabricError(ErrorCode.ALREADY_EXISTS, msg);
export const failedPrecondition = (msg: string): FabricError => new FabricError(ErrorCode.FAILED_PRECONDITION, msg);
export const outOfRange = (msg: string): FabricError => new FabricError(ErrorCode.OUT_OF_RANGE, msg);
export const unavailable = (msg: string, cause?: unknown): FabricError =>
  new FabricError(ErrorCode.UNAVAILABLE, msg, cause === undefined ? undefined : { cause });

export function isFabricError(e: unknown): e is FabricError {
  return e instanceof FabricError;
}

/**
 * A configuration the user gave that cannot be used (a flag value, a file named by a
 * flag). The CLI reports it like a usage error: the message and exit code 2.
 */
export class ConfigError extends Error {
  override readonly name: string = 'ConfigError';
}
