import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  FeatureBit,
  GpioProtocolError,
  IrqType,
  RequestType,
  Size,
  Status,
  EventStatus,
  VIRTIO_ID_GPIO,
  checkRequest,
  decodeConfig,
  decodeNamesBlock,
  encodeConfig,
  encodeEventRequest,
  encodeEventResponse,
  encodeNamesBlock,
  encodeNamesResponse,
  encodeRequest,
  encodeResponse,
  featureMask,
  parseEventRequest,
  parseRequest,
  requestTypeName,
} from './virtio-gpio-protocol.ts';

test('constants match virtio 1.2 §5.18', () => {
  assert.equal(VIRTIO_ID_GPIO, 41);
  assert.equal(featureMask(FeatureBit.GPIO_F_IRQ), 1n);
  assert.equal(featureMask(FeatureBit.VERSION_1), 0x1_0000_0000n);
  assert.equal(featureMask(FeatureBit.RING_INDIRECT_DESC), 0x1000_0000n);
  assert.equal(featureMask(FeatureBit.RING_EVENT_IDX), 0x2000_0000n);
  assert.deepEqual(
    [RequestType.GET_LINE_NAMES, RequestType.GET_DIRECTION, RequestType.SET_DIRECTION, RequestType.GET_VALUE, RequestType.SET_VALUE, RequestType.SET_IRQ_TYPE],
    [1, 2, 3, 4, 5, 6],
  );
  assert.deepEqual([Status.OK, Status.ERR], [0, 1]);
  assert.deepEqual([EventStatus.INVALID, EventStatus.VALID], [0, 1]);
  assert.deepEqual(
    [IrqType.NONE, IrqType.EDGE_RISING, IrqType.EDGE_FALLING, IrqType.EDGE_BOTH, IrqType.LEVEL_HIGH, IrqType.LEVEL_LOW],
    [0, 1, 2, 3, 4, 8],
  );
  assert.deepEqual(Size, { REQUEST: 8, RESPONSE: 2, EVENT_REQUEST: 2, EVENT_RESPONSE: 1, CONFIG: 8 });
  assert.equal(requestTypeName(6), 'SET_IRQ_TYPE');
  assert.equal(requestTypeName(0), 'UNKNOWN');
  assert.equal(requestTypeName(7), 'UNKNOWN');
});

test('config space: ngpio le16, zero padding, gpio_names_size le32', () => {
  assert.deepEqual([...encodeConfig({ ngpio: 0x1234, gpioNamesSize: 0x0a0b0c0d })], [0x34, 0x12, 0, 0, 0x0d, 0x0c, 0x0b, 0x0a]);
  assert.deepEqual([...encodeConfig({ ngpio: 8, gpioNamesSize: 0 })], [8, 0, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual(decodeConfig(encodeConfig({ ngpio: 65535, gpioNamesSize: 17 })), { ngpio: 65535, gpioNamesSize: 17 });
  assert.equal(decodeConfig(new Uint8Array(7)), null);
  assert.throws(() => encodeConfig({ ngpio: 0, gpioNamesSize: 0 }), GpioProtocolError);
  assert.throws(() => encodeConfig({ ngpio: 65536, gpioNamesSize: 0 }), GpioProtocolError);
});

test('names block: no names at all gives an empty block (gpio_names_size 0)', () => {
  assert.equal(encodeNamesBlock(4, []).length, 0);
  assert.equal(encodeNamesBlock(3, ['', '', '']).length, 0);
});

test('names block: some names; an unnamed line is a lone NUL', () => {
  const b = encodeNamesBlock(4, ['led0', '', 'btn', '']);
  assert.deepEqual([...b], [...Buffer.from('led0\0\0btn\0\0', 'latin1')]);
  assert.deepEqual(decodeNamesBlock(b), ['led0', '', 'btn', '']);
});

test('names block: all lines named', () => {
  const b = encodeNamesBlock(2, ['a', 'bc']);
  assert.deepEqual([...b], [0x61, 0, 0x62, 0x63, 0]);
  assert.deepEqual(decodeNamesBlock(b), ['a', 'bc']);
});

test('names are validated: count, uniqueness, 7-bit ASCII without NUL', () => {
  assert.throws(() => encodeNamesBlock(3, ['a', 'b']), GpioProtocolError);
  assert.throws(() => encodeNamesBlock(2, ['x', 'x']), GpioProtocolError);
  assert.throws(() => encodeNamesBlock(1, ['é']), GpioProtocolError);
  assert.throws(() => encodeNamesBlock(1, ['a\0b']), GpioProtocolError);
  assert.doesNotThrow(() => encodeNamesBlock(3, ['', '', 'x']));
  assert.equal(decodeNamesBlock(Uint8Array.of(0x61)), null);
});

test('request parsing is little-endian and needs exactly 8 bytes', () => {
  const bytes = Uint8Array.of(5, 0, 0x02, 0x01, 1, 0, 0, 0);
  assert.deepEqual(parseRequest(bytes), { type: 5, gpio: 0x0102, value: 1 });
  assert.deepEqual(parseRequest(encodeRequest({ type: 6, gpio: 65535, value: 0xffffffff })), { type: 6, gpio: 65535, value: 0xffffffff });
  assert.equal(parseRequest(new Uint8Array(7)), null);
  assert.equal(parseRequest(new Uint8Array(9)), null);
  // A request taken from the middle of a larger buffer decodes from its own offset.
  const big = new Uint8Array(20);
  big.set(bytes, 5);
  assert.deepEqual(parseRequest(big.subarray(5, 13)), { type: 5, gpio: 0x0102, value: 1 });
});

test('checkRequest: bad input is named, good input passes', () => {
  const n = 8;
  assert.equal(checkRequest({ type: 2, gpio: 7, value: 0 }, n), null);
  assert.equal(checkRequest({ type: 4, gpio: 0, value: 99 }, n), null, 'GET_* ignore value');
  assert.equal(checkRequest({ type: 1, gpio: 3, value: 9 }, n), null, 'GET_LINE_NAMES tolerates gpio != 0');
  assert.match(checkRequest({ type: 0, gpio: 0, value: 0 }, n) ?? '', /unknown request type/);
  assert.match(checkRequest({ type: 7, gpio: 0, value: 0 }, n) ?? '', /unknown request type/);
  assert.match(checkRequest({ type: 2, gpio: 8, value: 0 }, n) ?? '', /gpio 8 >= ngpio 8/);
  assert.match(checkRequest({ type: 3, gpio: 0, value: 3 }, n) ?? '', /direction/);
  assert.equal(checkRequest({ type: 3, gpio: 0, value: 2 }, n), null);
  assert.match(checkRequest({ type: 5, gpio: 0, value: 2 }, n) ?? '', /value/);
  assert.match(checkRequest({ type: 6, gpio: 0, value: 5 }, n) ?? '', /irq type/);
  for (const t of [0, 1, 2, 3, 4, 8]) assert.equal(checkRequest({ type: 6, gpio: 0, value: t }, n), null);
});

test('responses: 2-byte status/value, names 1+N, eventq 1 byte', () => {
  assert.deepEqual([...encodeResponse(Status.OK, 1)], [0, 1]);
  assert.deepEqual([...encodeResponse(Status.ERR)], [1, 0]);
  assert.deepEqual([...encodeNamesResponse(Status.OK, Uint8Array.of(0x61, 0))], [0, 0x61, 0]);
  assert.deepEqual([...encodeNamesResponse(Status.OK, new Uint8Array(0))], [0]);
  assert.deepEqual([...encodeEventResponse(EventStatus.VALID)], [1]);
  assert.equal(parseEventRequest(encodeEventRequest(0x1234)), 0x1234);
  assert.equal(parseEventRequest(new Uint8Array(3)), null);
  assert.equal(parseEventRequest(new Uint8Array(1)), null);
});
