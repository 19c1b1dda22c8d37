/**
 * The standard gRPC health service (grpc.health.v1.Health), hand-defined so no extra
 * package is needed: HealthCheckRequest { string service = 1; } and
 * HealthCheckResponse { ServingStatus status = 1; }. Kubernetes' grpc probes and
 * grpc_health_probe speak it.
 */
import { BinaryReader, BinaryWriter } from '@bufbuild/protobuf/wire';
import { makeGenericClientConstructor, status as GrpcStatus, type ServiceDefinition, type UntypedServiceImplementation, type ServerUnaryCall, type sendUnaryData, type ServerWritableStream } from '@grpc/grpc-js';

export const ServingStatus = { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } as const;
export type ServingStatus = (typeof ServingStatus)[keyof typeof ServingStatus];

export interface HealthCheckRequest { service: string }
export interface HealthCheckResponse { status: ServingStatus }

function decodeRequest(buf: Buffer): HealthCheckRequest {
  const r = new BinaryReader(buf);
  let service = '';
  while (r.pos < r.len) {
    const tag = r.uint32();
    if (tag === 10) service = r.string();
    else r.skip(tag & 7);
  }
  return { service };
}
const encodeRequest = (m: HealthCheckRequest): Buffer => Buffer.from(new BinaryWriter().uint32(10).string(m.service).finish());
const encodeResponse = (m: HealthCheckResponse): Buffer => Buffer.from(new BinaryWriter().uint32(8).int32(m.status).finish());
function decodeResponse(buf: Buffer): HealthCheckResponse {
  const r = new BinaryReader(buf);
  let status = 0;
  while (r.pos < r.len) {
    const tag = r.uint32();
    if (tag === 8) status = r.int32();
    else r.skip(tag & 7);
  }
  return { status: status as ServingStatus };
}

const method = { requestSerialize: encodeRequest, requestDeserialize: decodeRequest, responseSerialize: encodeResponse, responseDeserialize: decodeResponse } as const;

/** Service definition of grpc.health.v1.Health. */
export const HealthService = {
  check: { path: '/grpc.health.v1.Health/Check', requestStream: false, responseStream: false, ...method },
  watch: { path: '/grpc.health.v1.Health/Watch', requestStream: false, responseStream: true, ...method },
} satisfies ServiceDefinition;

/** A generic client constructor (tests, probes). */
export const HealthClient = makeGenericClientConstructor(HealthService, 'grpc.health.v1.Health');

/**
 * Implementation answering SERVING for "" and each of `services`, NOT_FOUND for others
 * (as the health protocol asks). Watch sends the status once and holds the stream open.
 */
export function healthImplementation(services: readonly string[], onWatch: (call: ServerWritableStream<HealthCheckRequest, HealthCheckResponse>) => void): UntypedServiceImplementation {
  const known = new Set(['', ...services]);
  return {
    check: (call: ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>, cb: sendUnaryData<HealthCheckResponse>) => {
      if (!known.has(call.request.service)) cb({ code: GrpcStatus.NOT_FOUND, details: `unknown service "${call.request.service}"` });
      else cb(null, { status: ServingStatus.SERVING });
    },
    watch: (call: ServerWritableStream<HealthCheckRequest, HealthCheckResponse>) => {
      call.write({ status: known.has(call.request.service) ? ServingStatus.SERVING : ServingStatus.SERVICE_UNKNOWN });
      onWatch(call);
    },
  };
}
