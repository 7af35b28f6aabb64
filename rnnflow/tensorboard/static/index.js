// The "Gradient Flow" tab of rnnflow's TensorBoard plugin (an ES module TensorBoard loads into
// an iframe whose base URL is data/plugin/gradient_flow/). No library: the page has no network
// beyond TensorBoard, so the charts are drawn by hand (SVG for lines, a canvas for the heatmap).
//
// What the page draws is also published as plain data in `window.gradientFlow` (lines with
// their values, the chosen step, the heatmap), for tests and for anyone scripting the page.

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2',
                 '#7f7f7f', '#bcbd22', '#17becf'];
const ZERO_COLOUR = '#e0245e';
const DASHES = {hidden: '', cell: '7 4'};  // other series: dotted
const LAYER_WIDTH = [2.0, 1.4, 1.0, 0.8];
const SVG = 'http://www.w3.org/2000/svg';

const state = {
  runs: [],          // from ./runs
  selected: new Set(),
  filter: '',
  layers: new Set(),
  series: new Set(['hidden', 'cell']),
  showFit: true,
  showTheory: true,
  steps: [],         // union of probe steps of the selected runs
  stepIndex: -1,     // -1: latest
  heatmap: {run: null, layer: null, series: 'hidden'},
};
const page = {ready: false, message: null, step: null, steps: [], lines: [], fits: [], theory: [],
              zeros: [], heatmap: null, runs: []};
window.gradientFlow = page;

function colourOf(run) {
  const index = state.runs.findIndex((r) => r.run === run);
  if (index < PALETTE.length) return PALETTE[index];
  return `hsl(${(index * 137.508) % 360}, 65%, 45%)`;  // golden-angle hues beyond ten runs
}

// A line's label: what differs between the runs (their swept config), or a single run's directory.
function labelOf(run) {
  const entry = state.runs.find((r) => r.run === run);
  if (!entry) return run;
  const config = configText(entry.config);
  return state.runs.length > 1 && config ? config : entry.dir;
}

function configText(config) {
  return Object.entries(config || {}).map(([k, v]) => `${k}=${v}`).join(', ');
}

async function fetchJSON(url) {
  const response = await fetch(url);
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new Error((body && body.error) || `${url}: HTTP ${response.status}`);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'class') node.className = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

function showMessage(text) {
  page.message = text;
  const box = document.getElementById('gf-message');
  box.textContent = text || '';
  box.hidden = !text;
}

export async function render() {
  document.head.append(el('link', {rel: 'stylesheet', href: './static/style.css'}));
  document.body.append(el('div', {id: 'gf-app'},
    el('aside', {id: 'gf-sidebar'},
      el('h3', {}, 'Runs'),
      el('input', {id: 'gf-filter', type: 'search', placeholder: 'filter runs (regex)',
                   oninput: (e) => { state.filter = e.target.value; drawRunList(); }}),
      el('div', {class: 'gf-buttons'},
        el('button', {id: 'gf-all', onclick: () => selectVisible(true)}, 'select shown'),
        el('button', {id: 'gf-none', onclick: () => selectVisible(false)}, 'clear shown')),
      el('div', {id: 'gf-run-count'}),
      el('ul', {id: 'gf-run-list'})),
    el('main', {id: 'gf-main'},
      el('div', {id: 'gf-message', role: 'status', hidden: ''}),
      el('section', {id: 'gf-profile-section', hidden: ''},
        el('h2', {}, 'Gradient norm over time steps'),
        el('div', {class: 'gf-controls', id: 'gf-profile-controls'}),
        el('div', {class: 'gf-slider'},
          el('label', {for: 'gf-step'}, 'training step '),
          el('input', {id: 'gf-step', type: 'range', min: '0', max: '0', value: '0', step: '1',
                       oninput: onSlider}),
          el('span', {id: 'gf-step-label'})),
        el('div', {id: 'gf-profile-chart'}),
        el('div', {id: 'gf-legend'})),
      el('section', {id: 'gf-heatmap-section', hidden: ''},
        el('h2', {}, 'Over training: log10 of the norm, training step × time step'),
        el('div', {class: 'gf-controls', id: 'gf-heatmap-controls'}),
        el('div', {id: 'gf-heatmap-box'})))));
  await loadRuns();
}

async function loadRuns() {
  let body;
  try {
    body = await fetchJSON('./runs');
  } catch (error) {
    showMessage(`Could not read the runs: ${error.message}`);
    page.ready = true;
    return;
  }
  state.runs = body.runs || [];
  page.runs = state.runs.map((r) => ({run: r.run, dir: r.dir, config: r.config}));
  if (!state.runs.length) {
    showMessage(body.message || 'No gradient-flow profiles found.');
    page.ready = true;
    return;
  }
  showMessage(body.problems && body.problems.length ? body.problems.join('\n') : null);
  state.runs.forEach((r) => state.selected.add(r.run));
  const layers = [...new Set(state.runs.flatMap((r) => r.layers))];
  layers.forEach((layer) => state.layers.add(layer));
  state.heatmap.run = state.runs[0].run;
  state.heatmap.layer = state.runs[0].layers[0];
  document.getElementById('gf-profile-section').hidden = false;
  document.getElementById('gf-heatmap-section').hidden = false;
  drawRunList();
  drawProfileControls();
  updateSteps();
  await Promise.all([refreshProfiles(), refreshHeatmap()]);
}

function visibleRuns() {
  let pattern = null;
  try { pattern = state.filter ? new RegExp(state.filter, 'i') : null; } catch (e) { pattern = null; }
  return state.runs.filter((r) => !pattern || pattern.test(`${r.dir} ${configText(r.config)}`));
}

function selectVisible(on) {
  for (const r of visibleRuns()) on ? state.selected.add(r.run) : state.selected.delete(r.run);
  drawRunList();
  updateSteps();
  refreshProfiles();
}

function drawRunList() {
  const list = document.getElementById('gf-run-list');
  list.textContent = '';
  const shown = visibleRuns();
  for (const r of shown) {
    const box = el('input', {type: 'checkbox', 'data-run': r.run,
                             onchange: (e) => {
                               e.target.checked ? state.selected.add(r.run) : state.selected.delete(r.run);
                               updateSteps();
                               refreshProfiles();
                             }});
    box.checked = state.selected.has(r.run);
    const swatch = el('span', {class: 'gf-swatch'});
    swatch.style.background = colourOf(r.run);
    list.append(el('li', {title: r.run},
      el('label', {}, box, swatch, el('span', {class: 'gf-run-name'}, r.dir),
         el('span', {class: 'gf-run-config'}, configText(r.config)))));
  }
  document.getElementById('gf-run-count').textContent =
      `${state.selected.size} of ${state.runs.length} runs selected` +
      (shown.length < state.runs.length ? `, ${shown.length} shown` : '');
}

function drawProfileControls() {
  const box = document.getElementById('gf-profile-controls');
  box.textContent = '';
  const layers = [...new Set(state.runs.flatMap((r) => r.layers))];
  const series = [...new Set(state.runs.flatMap((r) => Object.values(r.series).flat()))];
  const toggle = (group, name, checked, on) => {
    const input = el('input', {type: 'checkbox', 'data-group': group, 'data-name': name,
                               onchange: (e) => { on(e.target.checked); refreshProfiles(); }});
    input.checked = checked;
    return el('label', {class: 'gf-toggle'}, input, name);
  };
  box.append(el('span', {class: 'gf-group'}, 'layers: ',
    ...layers.map((l) => toggle('layer', l, state.layers.has(l),
                                (on) => on ? state.layers.add(l) : state.layers.delete(l)))));
  box.append(el('span', {class: 'gf-group'}, 'series: ',
    ...series.map((s) => toggle('series', s, state.series.has(s),
                                (on) => on ? state.series.add(s) : state.series.delete(s)))));
  box.append(el('span', {class: 'gf-group'},
    toggle('lines', 'fitted α', state.showFit, (on) => { state.showFit = on; }),
    toggle('lines', 'theory ρ', state.showTheory, (on) => { state.showTheory = on; })));
}

function updateSteps() {
  const steps = new Set();
  for (const r of state.runs) if (state.selected.has(r.run)) r.steps.forEach((s) => steps.add(s));
  const previous = state.stepIndex < 0 ? null : state.steps[state.stepIndex];
  state.steps = [...steps].sort((a, b) => a - b);
  const slider = document.getElementById('gf-step');
  slider.max = String(Math.max(0, state.steps.length - 1));
  const index = previous === null ? -1 : state.steps.indexOf(previous);
  state.stepIndex = index;
  slider.value = String(index < 0 ? state.steps.length - 1 : index);
  slider.disabled = state.steps.length < 2;
  page.steps = state.steps;
  updateStepLabel();
}

function chosenStep() {
  if (!state.steps.length) return null;
  return state.steps[state.stepIndex < 0 ? state.steps.length - 1 : state.stepIndex];
}

function updateStepLabel() {
  const step = chosenStep();
  const latest = state.stepIndex < 0 || state.stepIndex === state.steps.length - 1;
  document.getElementById('gf-step-label').textContent =
      step === null ? '' : `${step}${latest ? ' (latest)' : ''} · probe ${
        (state.stepIndex < 0 ? state.steps.length - 1 : state.stepIndex) + 1} of ${state.steps.length}`;
}

let sliderTimer = null;
function onSlider(event) {
  const index = Number(event.target.value);
  state.stepIndex = index === state.steps.length - 1 ? -1 : index;
  updateStepLabel();
  clearTimeout(sliderTimer);
  sliderTimer = setTimeout(refreshProfiles, 60);
}

let profileRequest = 0;
async function refreshProfiles() {
  const request = ++profileRequest;
  const runs = state.runs.filter((r) => state.selected.has(r.run)).map((r) => r.run);
  const step = chosenStep();
  page.ready = false;
  if (!runs.length) {
    drawProfiles({runs: []}, step);
    page.ready = true;
    return;
  }
  const query = runs.map((r) => `run=${encodeURIComponent(r)}`).join('&') +
                (step === null || state.stepIndex < 0 ? '' : `&step=${step}`);
  let body;
  try {
    body = await fetchJSON(`./profiles?${query}`);
  } catch (error) {
    showMessage(`Could not read the profiles: ${error.message}`);
    page.ready = true;
    return;
  }
  if (request !== profileRequest) return;  // a newer request (slider moved on) will draw
  drawProfiles(body, step);
  page.ready = true;
}

function log10(v) { return Math.log10(v); }

function niceDecades(low, high) {
  const span = Math.max(1, high - low);
  const every = [1, 2, 5, 10, 20, 50].find((k) => span / k <= 10) || 100;
  const ticks = [];
  for (let k = Math.ceil(low / every) * every; k <= high; k += every) ticks.push(k);
  return ticks;
}

function drawProfiles(body, step) {
  const lines = [];
  for (const run of body.runs) {
    for (const layer of run.layers) {
      if (!state.layers.has(layer.layer)) continue;
      for (const series of layer.series) {
        if (!state.series.has(series.name)) continue;
        lines.push({run: run.run, layer: layer.layer, step: layer.step, ...series});
      }
    }
  }
  page.step = step;
  page.lines = lines.map((l) => ({run: l.run, layer: l.layer, series: l.name, step: l.step, values: l.values}));
  page.fits = lines.filter((l) => l.fit).map((l) => ({run: l.run, layer: l.layer, series: l.name, ...l.fit}));
  page.theory = lines.filter((l) => l.theory).map((l) => ({run: l.run, layer: l.layer, ...l.theory}));
  page.zeros = lines.filter((l) => l.zeros.length).map((l) => ({run: l.run, layer: l.layer, series: l.name,
                                                                  t: l.zeros}));

  const box = document.getElementById('gf-profile-chart');
  box.textContent = '';
  const width = Math.max(520, Math.min(1100, box.clientWidth || 900));
  const height = 380;
  const margin = {left: 64, right: 16, top: 10, bottom: 58};
  const plotH = height - margin.top - margin.bottom - 22;  // + a strip for exact zeros
  let tMax = 1, low = Infinity, high = -Infinity;
  for (const l of lines) {
    tMax = Math.max(tMax, l.values.length - 1);
    for (const v of l.values) if (v !== null && v > 0) { low = Math.min(low, log10(v)); high = Math.max(high, log10(v)); }
  }
  const chart = svg('svg', {width, height, class: 'gf-chart', 'data-lines': String(lines.length)});
  box.append(chart);
  if (!lines.length || !Number.isFinite(low)) {
    const text = svg('text', {x: width / 2, y: height / 2, 'text-anchor': 'middle', class: 'gf-empty'});
    text.textContent = lines.length ? 'every value at this step is exactly 0' : 'no run, layer or series selected';
    chart.append(text);
    if (!lines.length) { drawLegend([]); return; }
  }
  if (!Number.isFinite(low)) { low = -1; high = 0; }
  low = Math.floor(low); high = Math.ceil(high); if (high === low) high = low + 1;
  const x = (t) => margin.left + (t / tMax) * (width - margin.left - margin.right);
  const y = (lv) => margin.top + (1 - (lv - low) / (high - low)) * plotH;
  const zeroY = margin.top + plotH + 14;
  const defs = svg('defs');
  const clip = svg('clipPath', {id: 'gf-clip'});
  clip.append(svg('rect', {x: margin.left, y: margin.top, width: width - margin.left - margin.right, height: plotH}));
  defs.append(clip);
  chart.append(defs);
  // Axes: decades on y, time steps on x.
  for (const k of niceDecades(low, high)) {
    chart.append(svg('line', {x1: margin.left, x2: width - margin.right, y1: y(k), y2: y(k), class: 'gf-grid'}));
    const label = svg('text', {x: margin.left - 6, y: y(k) + 4, 'text-anchor': 'end', class: 'gf-tick'});
    label.textContent = `1e${k}`;
    chart.append(label);
  }
  const every = Math.max(1, Math.ceil(tMax / 6 / (tMax > 60 ? 10 : 1)) * (tMax > 60 ? 10 : 1));
  for (let t = 0; t <= tMax; t += every) {
    const label = svg('text', {x: x(t), y: zeroY + 20, 'text-anchor': 'middle', class: 'gf-tick'});
    label.textContent = String(t);
    chart.append(label);
  }
  chart.append(svg('line', {x1: margin.left, x2: margin.left, y1: margin.top, y2: margin.top + plotH, class: 'gf-axis'}));
  chart.append(svg('line', {x1: margin.left, x2: width - margin.right, y1: margin.top + plotH,
                            y2: margin.top + plotH, class: 'gf-axis'}));
  const zeroLabel = svg('text', {x: margin.left - 6, y: zeroY + 4, 'text-anchor': 'end', class: 'gf-tick gf-zero-label'});
  zeroLabel.textContent = '= 0';
  chart.append(zeroLabel);
  const xLabel = svg('text', {x: (margin.left + width - margin.right) / 2, y: height - 4, 'text-anchor': 'middle',
                              class: 'gf-axis-label'});
  xLabel.textContent = 'time step t';
  chart.append(xLabel);
  const yLabel = svg('text', {x: 14, y: margin.top + plotH / 2, 'text-anchor': 'middle', class: 'gf-axis-label',
                              transform: `rotate(-90 14 ${margin.top + plotH / 2})`});
  yLabel.textContent = 'norm (log scale)';
  chart.append(yLabel);

  const layerIndex = [...state.layers];
  // One run: a colour per layer (its h and c share it); several runs: a colour per run.
  const oneRun = new Set(lines.map((l) => l.run)).size === 1;
  page.colourBy = oneRun ? 'layer' : 'run';
  for (const l of lines) {
    const colour = lineColour(l, oneRun);
    const widthOf = LAYER_WIDTH[Math.min(layerIndex.indexOf(l.layer), LAYER_WIDTH.length - 1)] || 1;
    const dash = l.name in DASHES ? DASHES[l.name] : '2 3';
    let d = '', pen = false;
    l.values.forEach((v, t) => {
      if (v !== null && v > 0) { d += `${pen ? 'L' : 'M'}${x(t).toFixed(1)},${y(log10(v)).toFixed(1)}`; pen = true; }
      else pen = false;
    });
    const path = svg('path', {d, class: 'gf-line', stroke: colour, 'stroke-width': widthOf, 'stroke-dasharray': dash,
                              'data-run': l.run, 'data-layer': l.layer, 'data-series': l.name,
                              'data-step': String(l.step), 'clip-path': 'url(#gf-clip)'});
    const title = svg('title');
    title.textContent = `${labelOf(l.run)} · ${l.layer} · ${l.label} · step ${l.step}`;
    path.append(title);
    chart.append(path);
    for (const t of l.zeros) {
      const mark = svg('path', {d: `M${x(t) - 3},${zeroY - 3}l6,6m0,-6l-6,6`, class: 'gf-zero', stroke: ZERO_COLOUR,
                                'data-run': l.run, 'data-layer': l.layer, 'data-series': l.name, 'data-t': String(t)});
      chart.append(mark);
    }
    if (state.showFit && l.fit) {
      const f = l.fit, at = (t) => log10(f.end) + (f.length - 1 - t) * log10(f.alpha);
      chart.append(svg('path', {d: `M${x(f.t0)},${y(at(f.t0))}L${x(f.t1)},${y(at(f.t1))}`, class: 'gf-fit',
                                stroke: colour, 'data-run': l.run, 'data-layer': l.layer, 'data-series': l.name,
                                'clip-path': 'url(#gf-clip)'}));
    }
    if (state.showTheory && l.theory) {
      const r = l.theory, at = (t) => log10(r.end) + (r.length - 1 - t) * log10(r.rho);
      chart.append(svg('path', {d: `M${x(0)},${y(at(0))}L${x(r.length - 1)},${y(at(r.length - 1))}`,
                                class: 'gf-theory', stroke: colour, 'data-run': l.run, 'data-layer': l.layer,
                                'clip-path': 'url(#gf-clip)'}));
    }
  }
  drawLegend(lines);
}

function lineColour(line, oneRun) {
  if (!oneRun) return colourOf(line.run);
  const layers = [...new Set(state.runs.flatMap((r) => r.layers))];
  return PALETTE[layers.indexOf(line.layer) % PALETTE.length];
}

function drawLegend(lines) {
  const box = document.getElementById('gf-legend');
  box.textContent = '';
  const key = el('div', {class: 'gf-key'},
    'solid: ‖∂L/∂h_t‖ · dashed: ‖∂L/∂c_t‖ · dotted: other series · thin dotted: fitted α over the steps it was ' +
    'fitted on · dash-dot: ρ(W_hh)^(T−1−t) from the last step · ', el('span', {class: 'gf-zero-key'}, '×'),
    ' on the "= 0" strip: steps whose value is exactly 0');
  box.append(key);
  const shown = lines.slice(0, 40);
  const oneRun = new Set(lines.map((l) => l.run)).size === 1;
  const table = el('table', {class: 'gf-legend-table'});
  for (const l of shown) {
    const swatch = el('span', {class: 'gf-swatch'});
    swatch.style.background = lineColour(l, oneRun);
    const fit = l.fit ? `α = ${l.fit.alpha.toPrecision(4)} (t ${l.fit.t0}–${l.fit.t1})` : '';
    const theory = l.theory ? `ρ = ${l.theory.rho.toPrecision(4)}` : '';
    const zeros = l.zeros.length ? `${l.zeros.length} steps = 0` : '';
    table.append(el('tr', {},
      el('td', {}, swatch, labelOf(l.run)), el('td', {}, l.layer), el('td', {}, l.label),
      el('td', {}, `step ${l.step}`), el('td', {}, fit), el('td', {}, theory), el('td', {class: 'gf-zero-key'}, zeros)));
  }
  box.append(table);
  if (lines.length > shown.length) {
    box.append(el('div', {class: 'gf-key'}, `… and ${lines.length - shown.length} more lines (hover a line for its run)`));
  }
}

// Heatmap -------------------------------------------------------------------------------------

const VIRIDIS = [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142], [31, 158, 137],
                 [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]];
function viridis(u) {
  const s = Math.min(1, Math.max(0, u)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(s)), f = s - i;
  return VIRIDIS[i].map((c, k) => Math.round(c + f * (VIRIDIS[i + 1][k] - c)));
}

function drawHeatmapControls() {
  const box = document.getElementById('gf-heatmap-controls');
  box.textContent = '';
  const run = state.runs.find((r) => r.run === state.heatmap.run) || state.runs[0];
  const select = (id, options, value, on, label = (o) => o) => {
    const node = el('select', {id, onchange: (e) => { on(e.target.value); refreshHeatmap(); }});
    for (const option of options) {
      const item = el('option', {value: option}, label(option));
      if (option === value) item.selected = true;
      node.append(item);
    }
    return node;
  };
  box.append(el('label', {}, 'run ', select('gf-heatmap-run', state.runs.map((r) => r.run), run.run, (v) => {
    state.heatmap.run = v;
    const chosen = state.runs.find((r) => r.run === v);
    if (!chosen.layers.includes(state.heatmap.layer)) state.heatmap.layer = chosen.layers[0];
  }, (v) => { const r = state.runs.find((e) => e.run === v); return `${r.dir}  ${configText(r.config)}`; })));
  box.append(el('label', {}, ' layer ', select('gf-heatmap-layer', run.layers, state.heatmap.layer,
                                              (v) => { state.heatmap.layer = v; })));
  const names = run.series[state.heatmap.layer] || ['hidden'];
  if (!names.includes(state.heatmap.series)) state.heatmap.series = names[0];
  box.append(el('label', {}, ' series ', select('gf-heatmap-series', names, state.heatmap.series,
                                               (v) => { state.heatmap.series = v; })));
}

async function refreshHeatmap() {
  drawHeatmapControls();
  const {run, layer, series} = state.heatmap;
  let body;
  try {
    body = await fetchJSON(`./heatmap?run=${encodeURIComponent(run)}&layer=${encodeURIComponent(layer)}` +
                           `&series=${encodeURIComponent(series)}`);
  } catch (error) {
    showMessage(`Could not read the heatmap: ${error.message}`);
    return;
  }
  drawHeatmap(body);
}

function drawHeatmap(body) {
  const box = document.getElementById('gf-heatmap-box');
  box.textContent = '';
  const rows = body.values, P = rows.length, T = body.length;
  const logs = [];
  for (const row of rows) for (const v of row) if (v !== null && v > 0) logs.push(Math.log10(v));
  logs.sort((a, b) => a - b);
  const lo = logs.length ? logs[Math.floor(0.02 * (logs.length - 1))] : -1;
  const hi = logs.length ? logs[logs.length - 1] : 0;
  const span = hi - lo || 1;
  page.heatmap = {run: body.run, layer: body.layer, series: body.series, steps: body.steps, length: T,
                  low: lo, high: hi, values: rows};
  if (!P || !T) {
    box.append(el('div', {class: 'gf-key'}, 'no records of this series'));
    return;
  }
  const image = new ImageData(T, P);
  let zeros = 0;
  rows.forEach((row, p) => {
    row.forEach((v, t) => {
      const offset = ((P - 1 - p) * T + t) * 4;  // latest training step on top
      let rgb = [255, 255, 255];
      if (v === 0) { rgb = [224, 36, 94]; zeros++; }
      else if (v !== null && v > 0) rgb = viridis((Math.log10(v) - lo) / span);
      image.data.set([...rgb, 255], offset);
    });
  });
  const source = el('canvas', {width: T, height: P});
  source.getContext('2d').putImageData(image, 0, 0);
  const width = 820, height = Math.min(420, Math.max(160, P * 3));
  const margin = {left: 70, bottom: 40, top: 6};
  const canvas = el('canvas', {id: 'gf-heatmap', width: width + margin.left, height: height + margin.bottom + margin.top});
  const ctx = canvas.getContext('2d');
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(source, margin.left, margin.top, width, height);
  ctx.fillStyle = '#333';
  ctx.font = '11px sans-serif';
  ctx.textAlign = 'right';
  const yTicks = Math.min(6, P);
  for (let i = 0; i < yTicks; i++) {
    const p = Math.round((i / Math.max(1, yTicks - 1)) * (P - 1));
    ctx.fillText(String(body.steps[p]), margin.left - 4, margin.top + height - ((p + 0.5) / P) * height + 4);
  }
  ctx.textAlign = 'center';
  for (let i = 0; i <= 6; i++) {
    const t = Math.round((i / 6) * (T - 1));
    ctx.fillText(String(t), margin.left + ((t + 0.5) / T) * width, margin.top + height + 14);
  }
  ctx.fillText('time step t', margin.left + width / 2, margin.top + height + 32);
  ctx.save();
  ctx.translate(12, margin.top + height / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.fillText('training step', 0, 0);
  ctx.restore();
  // The colour bar: log10 of the value, with the colour of exact zeros below it.
  const bar = el('canvas', {id: 'gf-colourbar', width: 90, height: height + margin.top + margin.bottom});
  const bctx = bar.getContext('2d');
  for (let i = 0; i < height; i++) {
    const [r, g, b] = viridis(1 - i / (height - 1));
    bctx.fillStyle = `rgb(${r},${g},${b})`;
    bctx.fillRect(4, margin.top + i, 18, 1);
  }
  bctx.fillStyle = '#333';
  bctx.font = '11px sans-serif';
  for (let i = 0; i <= 4; i++) {
    const value = hi - (i / 4) * span;
    bctx.fillText(`1e${value.toFixed(1)}`, 26, margin.top + (i / 4) * (height - 1) + 4);
  }
  bctx.fillStyle = ZERO_COLOUR;
  bctx.fillRect(4, margin.top + height + 10, 18, 10);
  bctx.fillStyle = '#333';
  bctx.fillText('= 0', 26, margin.top + height + 19);
  const caption = el('div', {class: 'gf-key'},
    `${labelOf(body.run)} · ${body.layer} · ${body.series}: ${P} probes × ${T} time steps; colour: log10 of the ` +
    `value (2nd percentile to maximum)` + (zeros ? `; ${zeros} cells exactly 0` : ''));
  box.append(el('div', {class: 'gf-heatmap-row'}, canvas, bar), caption);
}
