/**
 * The fabric's Grafana dashboards, as code (@grafana/grafana-foundation-sdk, pinned: the
 * SDK is pre-1.0). Pure: builds the dashboard objects and their JSON text; `generate.ts`
 * writes them to deploy/grafana/dashboards/ and helm/gpio-fabric/dashboards/, and
 * test/observability/ checks the committed files against `renderDashboards()`.
 *
 * Every query uses only series from docs/metrics.md (plus Prometheus' own `up`), the
 * `$__rate_interval` Grafana variable for rate windows, and the `$datasource` variable.
 * Scrape jobs are recognised by name: agents' jobs contain "agent", the line-state
 * service's jobs contain "linestate" (see docs/observability.md).
 */
import * as common from '@grafana/grafana-foundation-sdk/common';
import * as dashboard from '@grafana/grafana-foundation-sdk/dashboard';
import * as heatmap from '@grafana/grafana-foundation-sdk/heatmap';
import * as prometheus from '@grafana/grafana-foundation-sdk/prometheus';
import * as stat from '@grafana/grafana-foundation-sdk/stat';
import * as timeseries from '@grafana/grafana-foundation-sdk/timeseries';

/** Label matcher of the agents' scrape jobs (`up{...}`). */
export const AGENT_JOB_MATCHER = 'job=~".*agent.*"';
/** Label matcher of the line-state service's scrape jobs. */
export const LINESTATE_JOB_MATCHER = 'job=~".*linestate.*"';

/** Dashboard uids (stable: links and provisioning refer to them). */
export const DashboardUid = {
  overview: 'gpiofabric-overview',
  chip: 'gpiofabric-chip',
} as const;

/** The Prometheus data source every panel and query uses: the `$datasource` variable. */
const DS: common.DataSourceRef = { type: 'prometheus', uid: '${datasource}' };
const RATE = '$__rate_interval';

interface Query {
  readonly expr: string;
  readonly legend?: string;
}

type Unit = 'reqps' | 'ops' | 's' | 'percentunit' | 'short' | 'none';

interface PanelSpec {
  readonly kind: 'timeseries' | 'stat' | 'heatmap';
  readonly title: string;
  readonly description: string;
  readonly unit: Unit;
  readonly queries: readonly Query[];
  /** Grid width (of 24). */
  readonly w?: number;
  readonly h?: number;
  /** Stat thresholds: [value, color] above which the stat turns that color (base green). */
  readonly thresholds?: readonly (readonly [number, string])[];
  readonly stack?: boolean;
}

/** `{a, b}` from matchers, or '' when there are none. */
function sel(...matchers: (string | undefined)[]): string {
  const m = matchers.filter((x): x is string => x !== undefined && x !== '');
  return m.length === 0 ? '' : `{${m.join(', ')}}`;
}

function quantiles(metric: string, matcher: string | undefined, by: readonly string[], qs: readonly number[], legendPrefix = ''): Query[] {
  const byLabels = ['le', ...by].join(', ');
  return qs.map((q) => ({
    expr: `histogram_quantile(${q}, sum by (${byLabels}) (rate(${metric}_bucket${sel(matcher)}[${RATE}])))`,
    legend: `${legendPrefix}${by.map((l) => `{{${l}}} `).join('')}p${Math.round(q * 100)}`,
  }));
}

function heatmapQuery(metric: string, matcher: string | undefined): Query {
  return { expr: `sum by (le) (increase(${metric}_bucket${sel(matcher)}[${RATE}]))`, legend: '{{le}}' };
}

/**
 * The device agents' panels. `chip` is a label matcher (e.g. `chip="$chip"`) or undefined
 * for the whole fabric; `perChip` adds the chip to the grouping where that helps.
 */
function agentPanels(chip: string | undefined): { requests: PanelSpec[]; interrupts: PanelSpec[]; health: PanelSpec[] } {
  const perChip = chip === undefined;
  const byChip = perChip ? ['chip'] : [];
  const requests: PanelSpec[] = [
    {
      kind: 'timeseries',
      title: 'Guest requests by type and outcome',
      description: 'requestq messages per second, by virtio-gpio request type and outcome (ok, err, timeout, dropped).',
      unit: 'reqps',
      stack: true,
      queries: [{ expr: `sum by (type, outcome) (rate(gpiofabric_agent_requests_total${sel(chip)}[${RATE}]))`, legend: '{{type}} {{outcome}}' }],
    },
    {
      kind: 'timeseries',
      title: 'Guest request error ratio',
      description: 'Share of guest requests answered with anything but ok (err, timeout, dropped).',
      unit: 'percentunit',
      queries: [
        {
          expr: `sum${perChip ? ' by (chip)' : ''} (rate(gpiofabric_agent_requests_total${sel(chip, 'outcome!="ok"')}[${RATE}])) / sum${perChip ? ' by (chip)' : ''} (rate(gpiofabric_agent_requests_total${sel(chip)}[${RATE}]))`,
          legend: perChip ? '{{chip}}' : 'error ratio',
        },
      ],
    },
    {
      kind: 'timeseries',
      title: 'Guest request latency',
      description: 'Request popped from the requestq → response on the used ring: p50, p90, p99 over all request types.',
      unit: 's',
      queries: quantiles('gpiofabric_agent_request_duration_seconds', chip, [], [0.5, 0.9, 0.99]),
    },
    {
      kind: 'timeseries',
      title: 'Guest request latency p99 by type',
      description: 'p99 of the request latency per virtio-gpio request type.',
      unit: 's',
      queries: quantiles('gpiofabric_agent_request_duration_seconds', chip, ['type'], [0.99]),
    },
    {
      kind: 'heatmap',
      title: 'Guest request latency distribution',
      description: 'Histogram buckets of the guest request latency over time.',
      unit: 's',
      queries: [heatmapQuery('gpiofabric_agent_request_duration_seconds', chip)],
    },
    {
      kind: 'timeseries',
      title: 'Backend call latency by op',
      description: 'One line-backend call (remote agents: the round trip of the operation to the line-state service on the chip\'s OpStream, batched with the operations of the same event-loop turn), p50 and p99 per operation.',
      unit: 's',
      queries: quantiles('gpiofabric_agent_backend_duration_seconds', chip, ['op'], [0.5, 0.99]),
    },
  ];
  const interrupts: PanelSpec[] = [
    {
      kind: 'timeseries',
      title: 'Interrupts delivered / latched / invalid',
      description: 'eventq completions per second: delivered (VALID, a guest interrupt), latched (edge while masked, delivered on unmask), invalid (buffer returned INVALID, e.g. irq type set to NONE).',
      unit: 'ops',
      queries: [{ expr: `sum by (outcome) (rate(gpiofabric_agent_interrupts_total${sel(chip)}[${RATE}]))`, legend: '{{outcome}}' }],
    },
    {
      kind: 'timeseries',
      title: 'Cross-VM interrupt propagation latency',
      description: 'Level change in the fabric (event timestamp) → VALID completion on the eventq of the receiving agent: p50, p90, p99. SLO: p99 under 10 ms.',
      unit: 's',
      queries: quantiles('gpiofabric_agent_irq_propagation_seconds', chip, [], [0.5, 0.9, 0.99]),
    },
    {
      kind: 'heatmap',
      title: 'Cross-VM interrupt propagation distribution',
      description: 'Histogram buckets of the propagation latency over time.',
      unit: 's',
      queries: [heatmapQuery('gpiofabric_agent_irq_propagation_seconds', chip)],
    },
    {
      kind: 'timeseries',
      title: 'Event stream lag',
      description: 'Event timestamp → event received by the agent (p50, p99)' + (perChip ? ', and → written to a stream by the line-state service (p99).' : '.'),
      unit: 's',
      queries: [
        ...quantiles('gpiofabric_agent_event_lag_seconds', chip, [], [0.5, 0.99], 'agent '),
        ...(perChip ? quantiles('gpiofabric_linestate_stream_lag_seconds', undefined, [], [0.99], 'service ') : []),
      ],
    },
  ];
  const health: PanelSpec[] = [
    {
      kind: 'stat',
      title: perChip ? 'VMs connected' : 'VM connected',
      description: perChip ? 'Agents whose QEMU front-end is connected (gpiofabric_agent_frontend_connected).' : '1 while QEMU is connected to this chip\'s agent.',
      unit: 'none',
      w: perChip ? 6 : 4,
      h: perChip ? 5 : 8,
      queries: [{ expr: `sum(gpiofabric_agent_frontend_connected${sel(chip)})`, legend: 'connected' }],
    },
    ...(perChip
      ? [
          {
            kind: 'stat',
            title: 'Agents up',
            description: 'Agent scrape targets answering (Prometheus `up` of jobs whose name contains "agent") / all agent targets.',
            unit: 'none',
            w: 6,
            h: 5,
            queries: [
              { expr: `sum(up{${AGENT_JOB_MATCHER}})`, legend: 'up' },
              { expr: `count(up{${AGENT_JOB_MATCHER}})`, legend: 'targets' },
            ],
          } satisfies PanelSpec,
        ]
      : []),
    {
      kind: 'timeseries',
      title: 'Agent reconnects',
      description: 'Registration retries (register), resumed event streams (stream) and reopened operation streams (ops: OpStream broke, its in-flight operations sent once more) per second.',
      unit: 'ops',
      w: perChip ? 12 : 10,
      queries: [{ expr: `sum by (${[...byChip, 'what'].join(', ')}) (rate(gpiofabric_agent_reconnects_total${sel(chip)}[${RATE}]))`, legend: perChip ? '{{chip}} {{what}}' : '{{what}}' }],
    },
    {
      kind: 'timeseries',
      title: 'Agent errors by cause',
      description: 'device_broken (hostile guest input marked the device broken), backend (backend call failed), deadline (request answered ERR at the deadline), protocol (bad vhost-user input).',
      unit: 'ops',
      w: perChip ? 12 : 10,
      queries: [{ expr: `sum by (${[...byChip, 'cause'].join(', ')}) (rate(gpiofabric_agent_errors_total${sel(chip)}[${RATE}]))`, legend: perChip ? '{{chip}} {{cause}}' : '{{cause}}' }],
    },
  ];
  return { requests, interrupts, health };
}

function serviceRows(): { fabric: PanelSpec[]; rpc: PanelSpec[] } {
  const fabric: PanelSpec[] = [
    {
      kind: 'stat',
      title: 'Line-state replicas up',
      description: 'Line-state scrape targets answering (Prometheus `up` of jobs whose name contains "linestate").',
      unit: 'none',
      w: 4,
      h: 5,
      queries: [{ expr: `sum(up{${LINESTATE_JOB_MATCHER}})`, legend: 'up' }],
    },
    {
      kind: 'stat',
      title: 'Chips online / offline',
      description: 'Registered chips with a live lease (online) and without (offline), sampled from the store at scrape (max over replicas: they share the store).',
      unit: 'none',
      w: 4,
      h: 5,
      queries: [{ expr: 'max by (state) (gpiofabric_linestate_chips)', legend: '{{state}}' }],
    },
    {
      kind: 'stat',
      title: 'Nets',
      description: 'Wires between lines, sampled from the store at scrape.',
      unit: 'none',
      w: 4,
      h: 5,
      queries: [{ expr: 'max(gpiofabric_linestate_nets)', legend: 'nets' }],
    },
    {
      kind: 'timeseries',
      title: 'Contention and lease takeovers',
      description: 'Nets entering contention (disagreeing drivers) per second, and registrations that took over an expired lease per second.',
      unit: 'ops',
      queries: [
        { expr: `max(rate(gpiofabric_linestate_contention_total[${RATE}]))`, legend: 'contention' },
        { expr: `sum(rate(gpiofabric_linestate_lease_takeovers_total[${RATE}]))`, legend: 'lease takeovers' },
      ],
    },
  ];
  const rpc: PanelSpec[] = [
    {
      kind: 'timeseries',
      title: 'Service RPCs by method and code',
      description: 'gRPC calls per second handled by the line-state service, by method and status code. The streams (WatchEvents, OpStream) count once, when they end; the line operations agents send on OpStream are in "Line operations".',
      unit: 'reqps',
      stack: true,
      queries: [{ expr: `sum by (method, code) (rate(gpiofabric_linestate_rpcs_total[${RATE}]))`, legend: '{{method}} {{code}}' }],
    },
    {
      kind: 'timeseries',
      title: 'Service RPC latency p99 by method',
      description: 'Handler time of unary RPCs, p99 per method (p50 over all methods). The streams (WatchEvents, OpStream) have none: see the store latency of lineOps for the agents\' operation batches.',
      unit: 's',
      queries: [
        ...quantiles('gpiofabric_linestate_rpc_duration_seconds', undefined, ['method'], [0.99]),
        ...quantiles('gpiofabric_linestate_rpc_duration_seconds', undefined, [], [0.5], 'all '),
      ],
    },
    {
      kind: 'timeseries',
      title: 'Store latency by op',
      description: 'One store operation (Redis: one script round trip), p50 and p99 per operation and store. lineOps is one OpStream batch of line operations (the agents\' path), lineOp one unary LineOp.',
      unit: 's',
      queries: quantiles('gpiofabric_linestate_store_duration_seconds', undefined, ['store', 'op'], [0.5, 0.99]),
    },
    {
      kind: 'timeseries',
      title: 'Event streams and events sent',
      description: 'Open WatchEvents streams by kind (agent, watcher), events written to streams per second, and echoes per second left out of agents\' streams (an agent\'s own output changes on lines with no interrupt armed, which it knows from its operations\' results).',
      unit: 'short',
      queries: [
        { expr: 'sum by (kind) (gpiofabric_linestate_event_streams)', legend: 'streams {{kind}}' },
        { expr: `sum(rate(gpiofabric_linestate_events_sent_total[${RATE}]))`, legend: 'events/s' },
        { expr: `sum(rate(gpiofabric_linestate_echoes_omitted_total[${RATE}]))`, legend: 'echoes omitted/s' },
      ],
    },
    {
      kind: 'timeseries',
      title: 'Service errors by cause',
      description: 'Failed calls and failed OpStream line operations by cause (gRPC status name): INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION are callers\' mistakes; UNAVAILABLE and INTERNAL point at the store (Redis); CANCELLED counts streams whose client went away.',
      unit: 'ops',
      queries: [{ expr: `sum by (cause) (rate(gpiofabric_linestate_errors_total[${RATE}]))`, legend: '{{cause}}' }],
    },
    // Last, so the ids of the panels above stay as they were before it (links to ?viewPanel=N).
    {
      kind: 'timeseries',
      title: 'Line operations by path and code',
      description: 'Line operations (the guests\' virtio-gpio requests forwarded by agents) per second: all of them, those answered on OpStream streams (the agents\' path; gpiofabric_linestate_stream_ops_total) and unary LineOp calls (other gRPC clients, and agents against a service without OpStream), by status code.',
      unit: 'ops',
      queries: [
        {
          expr: `sum(rate(gpiofabric_linestate_rpcs_total{method="LineOp"}[${RATE}])) + sum(rate(gpiofabric_linestate_stream_ops_total[${RATE}]))`,
          legend: 'all',
        },
        { expr: `sum by (code) (rate(gpiofabric_linestate_stream_ops_total[${RATE}]))`, legend: 'OpStream {{code}}' },
        { expr: `sum by (code) (rate(gpiofabric_linestate_rpcs_total{method="LineOp"}[${RATE}]))`, legend: 'LineOp {{code}}' },
      ],
    },
  ];
  return { fabric, rpc };
}

function target(q: Query, refId: string): prometheus.DataqueryBuilder {
  const b = new prometheus.DataqueryBuilder().datasource(DS).refId(refId).expr(q.expr).range().editorMode(prometheus.QueryEditorMode.Code);
  if (q.legend !== undefined) b.legendFormat(q.legend);
  return b;
}

function thresholds(steps: readonly (readonly [number, string])[]): dashboard.ThresholdsConfigBuilder {
  return new dashboard.ThresholdsConfigBuilder()
    .mode(dashboard.ThresholdsMode.Absolute)
    .steps([{ value: null, color: 'green' }, ...steps.map(([value, color]) => ({ value, color }))]);
}

/** Builds one panel; `id` is its dashboard-unique id. */
function panel(p: PanelSpec, id: number): timeseries.PanelBuilder | stat.PanelBuilder | heatmap.PanelBuilder {
  const refIds = 'ABCDEFGHIJ';
  const targets = p.queries.map((q, i) => target(q, refIds[i] ?? `Q${i}`));
  const grid = { x: 0, y: 0, w: p.w ?? 12, h: p.h ?? 8 };
  switch (p.kind) {
    case 'timeseries': {
      const b = new timeseries.PanelBuilder()
        .id(id).title(p.title).description(p.description).datasource(DS).targets(targets).gridPos(grid).unit(p.unit)
        .min(0).fillOpacity(p.stack === true ? 30 : 10).lineWidth(1).showPoints(common.VisibilityMode.Never)
        .legend(new common.VizLegendOptionsBuilder().showLegend(true).displayMode(common.LegendDisplayMode.List).placement(common.LegendPlacement.Bottom))
        .tooltip(new common.VizTooltipOptionsBuilder().mode(common.TooltipDisplayMode.Multi).sort(common.SortOrder.Descending));
      if (p.stack === true) b.stacking(new common.StackingConfigBuilder().mode(common.StackingMode.Normal));
      return b;
    }
    case 'stat':
      return new stat.PanelBuilder()
        .id(id).title(p.title).description(p.description).datasource(DS).targets(targets).gridPos(grid).unit(p.unit)
        .graphMode(common.BigValueGraphMode.Area).colorMode(common.BigValueColorMode.Value).textMode(common.BigValueTextMode.ValueAndName)
        .reduceOptions(new common.ReduceDataOptionsBuilder().calcs(['lastNotNull']).values(false))
        .thresholds(thresholds(p.thresholds ?? []));
    case 'heatmap':
      return new heatmap.PanelBuilder()
        .id(id).title(p.title).description(p.description).datasource(DS)
        .targets(targets.map((t) => t.format(prometheus.PromQueryFormat.Heatmap)))
        .gridPos(grid).calculate(false)
        .yAxis(new heatmap.YAxisConfigBuilder().unit(p.unit))
        .color(new heatmap.HeatmapColorOptionsBuilder().mode(heatmap.HeatmapColorMode.Scheme).scheme('Oranges').steps(64));
  }
}

interface RowSpec {
  readonly title: string;
  readonly panels: readonly PanelSpec[];
}

function assemble(title: string, uid: string, description: string, rows: readonly RowSpec[], variables: dashboard.VariableModel[]): dashboard.Dashboard {
  const b = new dashboard.DashboardBuilder(title)
    .uid(uid)
    .description(description)
    .tags(['gpio-fabric'])
    .editable()
    .tooltip(dashboard.DashboardCursorSync.Crosshair)
    .time({ from: 'now-1h', to: 'now' })
    .refresh('30s')
    .timezone('browser');
  for (const v of variables) b.withVariable({ build: () => v });
  b.annotation(
    new dashboard.AnnotationQueryBuilder()
      .name('Annotations & Alerts').builtIn(1).type('dashboard').enable(true).hide(true)
      .datasource({ type: 'grafana', uid: '-- Grafana --' }).iconColor('rgba(0, 211, 255, 1)'),
  );
  b.link(new dashboard.DashboardLinkBuilder('GPIO fabric').type(dashboard.DashboardLinkType.Dashboards).tags(['gpio-fabric']).asDropdown(false).includeVars(false).keepTime(true));
  let id = 1;
  for (const row of rows) {
    b.withRow(new dashboard.RowBuilder(row.title).id(id++));
    for (const p of row.panels) b.withPanel(panel(p, id++));
  }
  return b.build();
}

function datasourceVariable(): dashboard.VariableModel {
  return new dashboard.DatasourceVariableBuilder('datasource').label('Data source').type('prometheus').build();
}

function chipVariable(): dashboard.VariableModel {
  const query = 'label_values(gpiofabric_agent_requests_total, chip)';
  return new dashboard.QueryVariableBuilder('chip')
    .label('Chip')
    .description('The chip (VM) whose agent the panels show.')
    .datasource(DS)
    .query(query) // the plain-string form: every Grafana version reads (and migrates) it
    .definition(query)
    .refresh(dashboard.VariableRefresh.OnTimeRangeChanged)
    .sort(dashboard.VariableSort.AlphabeticalAsc)
    .build();
}

/** "GPIO fabric / Overview": the whole fabric, agents and line-state service. */
export function overviewDashboard(): dashboard.Dashboard {
  const a = agentPanels(undefined);
  const s = serviceRows();
  return assemble(
    'GPIO fabric / Overview',
    DashboardUid.overview,
    'Every device agent and line-state replica of the fabric: guest requests, interrupts and their cross-VM propagation, agents, chips, nets, service RPCs and the store. Metrics: docs/metrics.md.',
    [
      { title: 'Fabric', panels: [...a.health.filter((p) => p.kind === 'stat'), ...s.fabric.filter((p) => p.kind === 'stat')] },
      { title: 'Guest requests', panels: a.requests },
      { title: 'Interrupts', panels: a.interrupts },
      { title: 'Agents', panels: a.health.filter((p) => p.kind !== 'stat') },
      { title: 'Line-state service', panels: [...s.fabric.filter((p) => p.kind !== 'stat'), ...s.rpc] },
    ],
    [datasourceVariable()],
  );
}

/** "GPIO fabric / Chip": one chip's agent (template variable `chip`). */
export function chipDashboard(): dashboard.Dashboard {
  const a = agentPanels('chip="$chip"');
  return assemble(
    'GPIO fabric / Chip',
    DashboardUid.chip,
    'One chip (VM) and its device agent: guest requests, interrupts, propagation latency, backend calls, reconnects and errors. Metrics: docs/metrics.md.',
    [
      { title: 'Agent', panels: a.health },
      { title: 'Guest requests', panels: a.requests },
      { title: 'Interrupts', panels: a.interrupts },
    ],
    [datasourceVariable(), chipVariable()],
  );
}

/** File name (in the dashboards folders) → dashboard. */
export function buildDashboards(): Record<'overview.json' | 'chip.json', dashboard.Dashboard> {
  return { 'overview.json': overviewDashboard(), 'chip.json': chipDashboard() };
}

/** File name → the exact JSON text committed (2-space indent, trailing newline). */
export function renderDashboards(): Map<string, string> {
  return new Map(Object.entries(buildDashboards()).map(([name, d]) => [name, `${JSON.stringify(d, null, 2)}\n`]));
}

/** Where the generated files live, relative to the repository root. */
export const DASHBOARD_DIRS = ['deploy/grafana/dashboards', 'helm/gpio-fabric/dashboards'] as const;
