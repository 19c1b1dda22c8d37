/** The topology parser (pure) and the FabricError <-> gRPC status mapping. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { status as GrpcStatus, Metadata, type ServiceError } from '@grpc/grpc-js';
import { ErrorCode, FabricError } from '../../services/common/src/errors.ts';
import { DriveMode, DriveValue, Pull } from '../../services/common/src/line-model.ts';
import { errorCodeOf, fromServiceError, grpcStatusOf, toStatusObject } from '../../services/linestate/src/grpc/status.ts';
import { parseTopology, TopologyError } from '../../services/linestate/src/topology.ts';

const EXAMPLE = `apiVersion: gpiofabric/v1
chips:
  - id: vm-a
    lines: 8
    names: [led0, btn0, reset, "", "", "", "", ""]
    bias: { btn0: up }
  - id: vm-b
    lines: 4
nets:
  - name: reset-bus
    members: [vm-a:reset, vm-b:2]
    pull: up
    drive: open-drain      # or push-pull (default)
  - name: remote
    members: [vm-a:3, vm-c:led1]
drives:
  - line: vm-a:btn0
    value: 0               # 0, 1 or release
  - net: remote
    value: release
`;

function problems(doc: string): readonly string[] {
  try {
    parseTopology(doc);
  } catch (e) {
    assert.ok(e instanceof TopologyError);
    assert.equal(e.code, ErrorCode.INVALID_ARGUMENT);
    return e.problems;
  }
  assert.fail('the document was accepted');
}

describe('parseTopology', () => {
  it('reads the documented example', () => {
    const t = parseTopology(EXAMPLE);
    assert.deepEqual(t.chips, [
      { id: 'vm-a', ngpio: 8, names: ['led0', 'btn0', 'reset', '', '', '', '', ''], bias: [{ offset: 1, pull: Pull.UP }] },
      { id: 'vm-b', ngpio: 4, names: [], bias: [] },
    ]);
    assert.deepEqual(t.nets, [
      { name: 'reset-bus', members: [{ chip: 'vm-a', line: { kind: 'offset', offset: 2 } }, { chip: 'vm-b', line: { kind: 'offset', offset: 2 } }], pull: Pull.UP, driveMode: DriveMode.OPEN_DRAIN },
      { name: 'remote', members: [{ chip: 'vm-a', line: { kind: 'offset', offset: 3 } }, { chip: 'vm-c', line: { kind: 'name', name: 'led1' } }], pull: Pull.NONE, driveMode: DriveMode.PUSH_PULL },
    ]);
    assert.deepEqual(t.drives, [
      { target: { kind: 'line', line: { chip: 'vm-a', line: { kind: 'offset', offset: 1 } } }, value: DriveValue.LOW },
      { target: { kind: 'net', net: 'remote' }, value: DriveValue.RELEASE },
    ]);
  });

  it('reads the same document as JSON', () => {
    const json = JSON.stringify({
      apiVersion: 'gpiofabric/v1',
      chips: [{ id: 'vm-a', lines: 2, names: ['a', 'b'] }],
      nets: [{ name: 'n', members: ['vm-a:a', 'vm-b:0'], pull: 'down' }],
      drives: [{ line: 'vm-a:1', value: 1 }],
    });
    const t = parseTopology(json);
    assert.equal(t.nets[0]?.pull, Pull.DOWN);
    assert.equal(t.drives[0]?.value, DriveValue.HIGH);
  });

  const bad: [string, string, RegExp][] = [
    ['syntax error', 'apiVersion: gpiofabric/v1\nchips: [ {id: a\n', /^syntax: /],
    ['not a mapping', '- 1\n- 2\n', /must be a mapping/],
    ['missing apiVersion', 'chips: []\n', /^apiVersion: missing/],
    ['wrong apiVersion', 'apiVersion: v2\n', /^apiVersion: "v2" is not supported/],
    ['unknown top-level key', 'apiVersion: gpiofabric/v1\nwires: []\n', /^wires: unknown key/],
    ['duplicate key', 'apiVersion: gpiofabric/v1\nchips: []\nchips: []\n', /syntax: Map keys must be unique/],
    ['unknown chip key', 'apiVersion: gpiofabric/v1\nchips:\n  - {id: a, lines: 2, colour: red}\n', /^chips\[0\]\.colour: unknown key/],
    ['lines of the wrong type', 'apiVersion: gpiofabric/v1\nchips:\n  - {id: a, lines: "8"}\n', /^chips\[0\]\.lines: "8" is not a whole number/],
    ['lines out of range', 'apiVersion: gpiofabric/v1\nchips:\n  - {id: a, lines: 0}\n', /^chips\[0\]\.lines: 0 is not a whole number from 1 to 1024/],
    ['bad chip id', 'apiVersion: gpiofabric/v1\nchips:\n  - {id: "a b", lines: 2}\n', /^chips\[0\]\.id: chip id "a b" may only contain/],
    ['duplicate chip', 'apiVersion: gpiofabric/v1\nchips:\n  - {id: a, lines: 2}\n  - {id: a, lines: 2}\n', /^chips\[1\]\.id: chip "a" is declared twice/],
    ['names count', 'apiVersion: gpiofabric/v1\nchips:\n  - {id: a, lines: 2, names: [x]}\n', /^chips\[0\]\.names: has 1 entries but the chip has 2 lines/],
    ['duplicate line name', 'apiVersion: gpiofabric/v1\nchips:\n  - {id: a, lines: 2, names: [x, x]}\n', /^chips\[0\]\.names\[1\]: line name "x" is already used by line 0/],
    ['all-digit line name', 'apiVersion: gpiofabric/v1\nchips:\n  - {id: a, lines: 2, names: ["7", x]}\n', /^chips\[0\]\.names\[0\]: .*all digits/],
    ['bad bias', 'apiVersion: gpiofabric/v1\nchips:\n  - {id: a, lines: 2, bias: {0: sideways}}\n', /^chips\[0\]\.bias\.0: "sideways" is not a bias/],
    ['bias of a missing line', 'apiVersion: gpiofabric/v1\nchips:\n  - {id: a, lines: 2, bias: {5: up}}\n', /^chips\[0\]\.bias\.5: offset 5 is out of range/],
    ['net with one member', 'apiVersion: gpiofabric/v1\nnets:\n  - {name: n, members: [a:0]}\n', /^nets\[0\]\.members: a net needs at least two members/],
    ['duplicate net', 'apiVersion: gpiofabric/v1\nnets:\n  - {name: n, members: [a:0, b:0]}\n  - {name: n, members: [a:1, b:1]}\n', /^nets\[1\]\.name: net "n" is declared twice/],
    ['a line in two nets', 'apiVersion: gpiofabric/v1\nnets:\n  - {name: n, members: [a:0, b:0]}\n  - {name: m, members: [a:1, b:0]}\n', /^nets\[1\]\.members\[1\]: "b:0": the line is already wired at nets\[0\]\.members\[1\]/],
    ['a line in two nets, once by name', 'apiVersion: gpiofabric/v1\nchips:\n  - {id: a, lines: 2, names: [p, q]}\nnets:\n  - {name: n, members: [a:p, b:0]}\n  - {name: m, members: [a:0, b:1]}\n', /^nets\[1\]\.members\[0\]: "a:0": the line is already wired/],
    ['offset beyond a declared chip', 'apiVersion: gpiofabric/v1\nchips:\n  - {id: vm-c, lines: 4}\nnets:\n  - {name: n, members: [b:0, vm-c:9]}\n', /^nets\[0\]\.members\[1\]: "vm-c:9": offset 9 is out of range \(the chip has lines 0\.\.3\)/],
    ['unknown name on a declared chip', 'apiVersion: gpiofabric/v1\nchips:\n  - {id: a, lines: 2}\nnets:\n  - {name: n, members: [a:led, b:0]}\n', /^nets\[0\]\.members\[0\]: "a:led": the chip has no line named "led"/],
    ['member not CHIP:LINE', 'apiVersion: gpiofabric/v1\nnets:\n  - {name: n, members: [a, b:0]}\n', /^nets\[0\]\.members\[0\]: "a" is not CHIP:LINE/],
    ['member of the wrong type', 'apiVersion: gpiofabric/v1\nnets:\n  - {name: n, members: [3, b:0]}\n', /^nets\[0\]\.members\[0\]: must be a CHIP:LINE string/],
    ['bad pull', 'apiVersion: gpiofabric/v1\nnets:\n  - {name: n, members: [a:0, b:0], pull: strong}\n', /^nets\[0\]\.pull: "strong" is not one of up, down or none/],
    ['bad drive mode', 'apiVersion: gpiofabric/v1\nnets:\n  - {name: n, members: [a:0, b:0], drive: tri-state}\n', /^nets\[0\]\.drive: "tri-state" is not one of push-pull or open-drain/],
    ['drive value', 'apiVersion: gpiofabric/v1\ndrives:\n  - {line: a:0, value: 2}\n', /^drives\[0\]\.value: 2 is not a drive value/],
    ['drive with line and net', 'apiVersion: gpiofabric/v1\ndrives:\n  - {line: a:0, net: n, value: 1}\n', /^drives\[0\]: give exactly one of line/],
    ['drive of an undeclared net', 'apiVersion: gpiofabric/v1\ndrives:\n  - {net: n, value: 1}\n', /^drives\[0\]\.net: net "n" is not declared/],
    ['a line driven twice', 'apiVersion: gpiofabric/v1\ndrives:\n  - {line: a:0, value: 1}\n  - {line: a:0, value: 0}\n', /^drives\[1\]: line a:0 is already driven at drives\[0\]/],
  ];
  for (const [what, doc, re] of bad) {
    it(`rejects: ${what}`, () => {
      const ps = problems(doc);
      assert.ok(ps.some((p) => re.test(p)), `${re} not in ${JSON.stringify(ps)}`);
    });
  }

  it('reports every problem at once', () => {
    const ps = problems('apiVersion: gpiofabric/v1\nchips:\n  - {id: a, lines: -1}\nnets:\n  - {name: n, members: [a:0]}\n');
    assert.equal(ps.length, 2);
  });

  it('refuses a document over 4 MiB', () => {
    assert.match(problems(`apiVersion: gpiofabric/v1\n#${'x'.repeat(4 * 1024 * 1024)}\n`)[0] ?? '', /larger than/);
  });
});

describe('gRPC status mapping', () => {
  it('every fabric code maps to a status and back to itself', () => {
    for (const code of Object.values(ErrorCode)) {
      assert.equal(errorCodeOf[grpcStatusOf[code]], code);
    }
  });

  it('every gRPC status maps to a fabric code', () => {
    for (const v of Object.values(GrpcStatus)) {
      if (typeof v === 'number') assert.ok(Object.values(ErrorCode).includes(errorCodeOf[v]), `status ${v}`);
    }
  });

  it('a FabricError becomes its status; anything else INTERNAL without detail', () => {
    assert.deepEqual(toStatusObject(new FabricError(ErrorCode.NOT_FOUND, 'chip x')), { code: GrpcStatus.NOT_FOUND, details: 'chip x', unexpected: false });
    const s = toStatusObject(new TypeError('secret internals'));
    assert.equal(s.code, GrpcStatus.INTERNAL);
    assert.doesNotMatch(s.details, /secret/);
  });

  it('a ServiceError becomes a FabricError with the details and the cause', () => {
    const se: ServiceError = Object.assign(new Error('5 NOT_FOUND: chip x'), { code: GrpcStatus.NOT_FOUND, details: 'chip x', metadata: new Metadata() });
    const fe = fromServiceError(se);
    assert.equal(fe.code, ErrorCode.NOT_FOUND);
    assert.equal(fe.message, 'chip x');
    assert.equal(fe.cause, se);
  });
});
