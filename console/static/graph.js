// The workflow as a graph, drawn as inline SVG from the state machine
// definitions (purchase.asl.json and review.asl.json, the ones the workflows
// run, combined into the one graph a purchase goes through), with the path
// a purchase took and its current state, like the Step Functions console.
//
// Layout: a simple layered layout. Edges that close a loop (found by a
// depth-first walk from StartAt) are set aside; every other state sits one
// layer below the lowest of its predecessors (longest path from StartAt).
// Edges longer than one layer run through invisible waypoints, the states
// of each layer are ordered by the mean position of their neighbours (a few
// sweeps), and the loop edges are drawn in lanes on the right.

const SVG = "http://www.w3.org/2000/svg";
const START = "__start__";
const NODE_W = 172;
const NODE_H = 34;
const WAYPOINT_W = 14;
const GAP_X = 22;
const GAP_Y = 40;
const PAD = 16;
const LANE = 11;

// ---------------------------------------------------------------- the definition

const START_EXECUTION = "arn:aws:states:::states:startExecution";

/**
 * The purchase and review machines as one definition, as a purchase goes
 * through them: the purchase machine's hand-over (the Task that starts the
 * review, and the end of the run it leads to) becomes the review machine's
 * states, and the review's start of the purchase's next run a transition
 * back to the purchase machine's start.
 */
export function combine(purchase, review) {
  const starts = (definition) =>
    Object.keys(definition.States).filter((name) => definition.States[name].Resource === START_EXECUTION);
  // The start and the Succeed states it ends in (started, or started already).
  const handOver = (definition) => {
    const names = starts(definition);
    for (const name of [...names]) {
      const state = definition.States[name];
      for (const to of [state.Next, ...(state.Catch || []).map((c) => c.Next)]) {
        if (definition.States[to] && definition.States[to].Type === "Succeed") names.push(to);
      }
    }
    return new Set(names);
  };
  const retarget = (state, gone, target) => {
    const to = (name) => (gone.has(name) ? target : name);
    const copy = { ...state };
    if (copy.Next) copy.Next = to(copy.Next);
    if (copy.Default) copy.Default = to(copy.Default);
    if (copy.Catch) copy.Catch = copy.Catch.map((c) => ({ ...c, Next: to(c.Next) }));
    if (copy.Choices) copy.Choices = copy.Choices.map((c) => ({ ...c, Next: to(c.Next) }));
    return copy;
  };
  const toReview = handOver(purchase);
  // The review's own start of the next run stays: it is drawn going back.
  const reviewEnds = new Set([...handOver(review)].filter((name) => !starts(review).includes(name)));
  const States = {};
  for (const [name, state] of Object.entries(purchase.States)) {
    if (!toReview.has(name)) States[name] = retarget(state, toReview, review.StartAt);
  }
  for (const [name, state] of Object.entries(review.States)) {
    if (!reviewEnds.has(name)) States[name] = retarget(state, reviewEnds, purchase.StartAt);
  }
  return { ...purchase, States };
}

/** Every transition: `{from, to, kind, label}`, one per (from, to). */
export function transitions(definition) {
  const byPair = new Map();
  const add = (from, to, kind, label) => {
    if (!to || !(to in definition.States)) return;
    const key = `${from}->${to}`;
    const known = byPair.get(key);
    if (known) {
      if (label && !known.labels.includes(label)) known.labels.push(label);
      return;
    }
    byPair.set(key, { from, to, kind, labels: label ? [label] : [], key });
  };
  add(START, definition.StartAt, "start", "start");
  for (const [name, state] of Object.entries(definition.States)) {
    if (state.Next) add(name, state.Next, "next", "");
    for (const c of state.Catch || []) add(name, c.Next, "catch", (c.ErrorEquals || []).join(", "));
    for (const c of state.Choices || []) add(name, c.Next, "choice", choiceLabel(c));
    if (state.Default) add(name, state.Default, "default", "otherwise");
  }
  return [...byPair.values()].map((t) => ({ ...t, label: t.labels.join(" | ") }));
}

function choiceLabel(choice) {
  if (choice.Variable && "StringEquals" in choice) return `${choice.Variable} = ${choice.StringEquals}`;
  if (Array.isArray(choice.Or)) return choice.Or.map(choiceLabel).join(" or ");
  if (Array.isArray(choice.And)) return choice.And.map(choiceLabel).join(" and ");
  return "choice";
}

function successors(edges) {
  const next = new Map();
  for (const e of edges) {
    if (!next.has(e.from)) next.set(e.from, []);
    next.get(e.from).push(e.to);
  }
  return next;
}

// ---------------------------------------------------------------- layout

/** Positions for every state: `{nodes: Map(name → {x, y, w, h, layer}), edges, width, height}`. */
export function layout(definition) {
  const edges = transitions(definition);
  const next = successors(edges);
  const names = [START, ...Object.keys(definition.States)];

  // Loop-closing edges: those reaching a state still on the walk's stack.
  const back = new Set();
  const seen = new Set();
  const onStack = new Set();
  const order = [];
  const walk = (start) => {
    const stack = [[start, 0]];
    seen.add(start);
    onStack.add(start);
    order.push(start);
    while (stack.length) {
      const top = stack[stack.length - 1];
      const [name, index] = top;
      const outs = next.get(name) || [];
      if (index >= outs.length) {
        stack.pop();
        onStack.delete(name);
        continue;
      }
      top[1] += 1;
      const to = outs[index];
      if (onStack.has(to)) back.add(`${name}->${to}`);
      else if (!seen.has(to)) {
        seen.add(to);
        onStack.add(to);
        order.push(to);
        stack.push([to, 0]);
      }
    }
  };
  walk(START);
  for (const name of names) if (!seen.has(name)) walk(name); // unreachable states still show

  // Longest path over the forward edges, in topological order.
  const forward = edges.filter((e) => !back.has(e.key));
  const indegree = new Map(names.map((n) => [n, 0]));
  for (const e of forward) indegree.set(e.to, indegree.get(e.to) + 1);
  const layer = new Map(names.map((n) => [n, 0]));
  const ready = names.filter((n) => indegree.get(n) === 0);
  const forwardNext = successors(forward);
  while (ready.length) {
    const name = ready.shift();
    for (const to of forwardNext.get(name) || []) {
      layer.set(to, Math.max(layer.get(to), layer.get(name) + 1));
      indegree.set(to, indegree.get(to) - 1);
      if (indegree.get(to) === 0) ready.push(to);
    }
  }

  // Waypoints for edges longer than one layer.
  const items = new Map(names.map((n) => [n, { id: n, layer: layer.get(n), w: n === START ? NODE_H : NODE_W, real: true }]));
  const chains = new Map();
  const links = []; // adjacent-layer pieces, for ordering
  for (const e of forward) {
    let from = e.from;
    const chain = [];
    for (let l = layer.get(e.from) + 1; l < layer.get(e.to); l += 1) {
      const id = `${e.key}#${l}`;
      items.set(id, { id, layer: l, w: WAYPOINT_W, real: false });
      links.push([from, id]);
      chain.push(id);
      from = id;
    }
    links.push([from, e.to]);
    chains.set(e.key, chain);
  }

  // Order each layer: first as the walk met them, then by neighbours' mean position.
  const depth = Math.max(...[...items.values()].map((i) => i.layer)) + 1;
  const layers = Array.from({ length: depth }, () => []);
  const rank = new Map(order.map((n, i) => [n, i]));
  for (const item of items.values()) layers[item.layer].push(item.id);
  for (const row of layers) row.sort((a, b) => (rank.get(a) ?? 1e9) - (rank.get(b) ?? 1e9) || a.localeCompare(b));
  const up = new Map();
  const down = new Map();
  for (const [a, b] of links) {
    if (!down.has(a)) down.set(a, []);
    if (!up.has(b)) up.set(b, []);
    down.get(a).push(b);
    up.get(b).push(a);
  }
  const position = new Map();
  const index = () => layers.forEach((row) => row.forEach((id, i) => position.set(id, i)));
  index();
  const sweep = (rows, neighbours) => {
    for (const row of rows) {
      const mean = new Map(
        row.map((id, i) => {
          const ns = neighbours.get(id) || [];
          return [id, ns.length ? ns.reduce((s, n) => s + position.get(n), 0) / ns.length : i];
        }),
      );
      row.sort((a, b) => mean.get(a) - mean.get(b));
      row.forEach((id, i) => position.set(id, i));
    }
  };
  for (let i = 0; i < 4; i += 1) {
    sweep(layers.slice(1), up);
    sweep(layers.slice(0, -1).reverse(), down);
  }
  sweep(layers.slice(1), up);

  // Coordinates: each layer packed and centred.
  const widthOf = (row) => row.reduce((s, id) => s + items.get(id).w, 0) + GAP_X * Math.max(0, row.length - 1);
  const inner = Math.max(...layers.map(widthOf));
  const lanes = [...back].length;
  const nodes = new Map();
  layers.forEach((row, l) => {
    let x = PAD + (inner - widthOf(row)) / 2;
    for (const id of row) {
      const item = items.get(id);
      const h = item.real ? NODE_H : 0;
      nodes.set(id, { x, y: PAD + l * (NODE_H + GAP_Y) + (item.real ? 0 : NODE_H / 2), w: item.w, h, layer: l, real: item.real });
      x += item.w + GAP_X;
    }
  });
  const width = PAD * 2 + inner + (lanes ? lanes * LANE + LANE : 0);
  // Loop edges run in the gaps between layers, the last one's too.
  const height = PAD * 2 + depth * NODE_H + (depth - 1) * GAP_Y + (lanes ? GAP_Y / 2 : 0);
  return { nodes, edges, back, chains, width, height, right: PAD + inner };
}

// ---------------------------------------------------------------- the purchase's path

const DONE = new Set(["SUCCEEDED", "APPROVED", "PASSED", "REVOKED", "RESUMED", "COMPLETED", "CANCELLED", "REJECTED"]);
const FAILED = new Set(["FAILED", "DECLINED", "OUT_OF_STOCK", "REFUND_FAILED"]);
const UNDOING = ["RevokeProducts", "RefundPayment", "ReleaseStock", "FinalizePurchase"];
const RESUME_AT = { PENDING: "EvaluateRules", RESERVED: "CapturePayment", PAID: "ProvisionProducts" };
const TERMINAL = { COMPLETED: "PurchaseCompleted", CANCELLED: "PurchaseCancelled", REJECTED: "PurchaseCancelled", FAILED: "PurchaseFailed" };
const WHY = {
  REJECTED: "Rejected",
  CANCELLED: "Stopped",
  OUT_OF_STOCK: "OutOfStock",
  PAYMENT_DECLINED: "PaymentDeclined",
  PROVISIONING_FAILED: "ProvisioningFailed",
};

/** The shortest way from `from` to `to`, preferring the states in `prefer`. */
function shortestPath(next, from, to, prefer, avoid) {
  if (from === to) return [from];
  const score = (s) => (prefer.has(s) ? 0 : avoid.has(s) ? 2 : 1);
  const previous = new Map([[from, null]]);
  const queue = [from];
  while (queue.length) {
    const name = queue.shift();
    const outs = [...(next.get(name) || [])].sort((a, b) => score(a) - score(b));
    for (const out of outs) {
      if (previous.has(out)) continue;
      previous.set(out, name);
      if (out === to) {
        const path = [to];
        for (let at = name; at !== null; at = previous.get(at)) path.unshift(at);
        return path;
      }
      queue.push(out);
    }
  }
  return null;
}

/**
 * The path a purchase took through the definition, from its timeline (whose
 * steps are state names, besides the API's own steps such as Create or
 * Review): `{outcomes: Map(state → class), passed: Set, edges: Set(keys),
 * current, sequence: [state…]}`. States the timeline does not name (Pass and
 * Choice states, steps with nothing to record) are filled in along the
 * shortest way between the named ones.
 */
export function trace(definition, purchase) {
  const states = definition.States;
  const next = successors(transitions(definition));
  const timeline = Array.isArray(purchase.timeline) ? purchase.timeline : [];
  const visitedNames = new Set(timeline.map((e) => e.step).filter((s) => s in states));
  const why = WHY[purchase.status] || WHY[purchase.failureReason] || (purchase.status === "FAILED" ? "StepFailed" : "");
  const prefer = new Set([why, ...visitedNames].filter(Boolean));
  const avoid = new Set(Object.keys(states).filter((s) => /Stuck$/.test(s) || s === "NeedsAttention" || s === "ResumeUndoing"));
  for (const s of visitedNames) avoid.delete(s);

  const outcomes = new Map();
  const passed = new Set();
  const edges = new Set();
  const sequence = [];
  let last = START;
  const connect = (to) => {
    const path = shortestPath(next, last, to, prefer, avoid);
    if (!path) {
      sequence.push(to);
      last = to;
      return;
    }
    for (let i = 0; i + 1 < path.length; i += 1) edges.add(`${path[i]}->${path[i + 1]}`);
    for (const name of path.slice(1, -1)) {
      if (!outcomes.has(name)) passed.add(name);
      sequence.push(name);
    }
    if (path.length > 1) sequence.push(to);
    last = to;
  };

  const startFailed = timeline.some((e) => e.step === "StartWorkflow");
  const steps = [];
  // The undoing step that failed before NeedsAttention is not always in the
  // timeline: it is attention.failedStep or, once redriven, the step the
  // timeline resumes with. Put it in, so the path runs through it.
  const visits = startFailed ? [] : timeline.filter((e) => e.step in states);
  const attention = purchase.attention && purchase.attention.failedStep;
  visits.forEach((entry, i) => {
    if (entry.step === "NeedsAttention") {
      const resumed = visits.slice(i + 1).find((e) => UNDOING.includes(e.step));
      const failed = attention || (resumed && resumed.step);
      const previous = steps.length ? steps[steps.length - 1].step : null;
      if (failed in states && previous !== failed) steps.push({ step: failed, outcome: "FAILED" });
    }
    steps.push(entry);
  });
  if (purchase.status === "NEEDS_ATTENTION" && attention in states && !visits.some((e) => e.step === "NeedsAttention")) {
    steps.push({ step: attention, outcome: "FAILED" });
  }
  let lastOutcome = null;
  for (const entry of steps) {
    if (entry.step !== last) {
      // A wait that was followed by another step is over.
      if (outcomes.get(last) === "waiting") outcomes.set(last, "done");
      connect(entry.step);
    }
    passed.delete(entry.step);
    outcomes.set(entry.step, outcomeClass(entry.step, entry.outcome));
    lastOutcome = entry.outcome;
  }

  const current = startFailed ? null : currentState(definition, purchase, last === START ? null : last, lastOutcome);
  if (current && current !== last) {
    if (outcomes.get(last) === "waiting") outcomes.set(last, "done");
    connect(current);
    passed.delete(current);
  }
  if (current && !outcomes.has(current) && states[current] && ["Succeed", "Fail"].includes(states[current].Type)) {
    outcomes.set(current, states[current].Type === "Fail" ? "failed" : "done");
  }
  return { outcomes, passed, edges, current, sequence };
}

function outcomeClass(step, outcome) {
  if (outcome === "WAITING") return "waiting";
  if (step === "FinalizePurchase") return "done"; // its outcome is the purchase's final status
  if (FAILED.has(outcome)) return "failed";
  if (DONE.has(outcome)) return "done";
  return "done";
}

/** Where the purchase's workflow stands now (a state name), or null. */
export function currentState(definition, purchase, lastState, lastOutcome) {
  const states = definition.States;
  const exists = (name) => (name && name in states ? name : null);
  const status = purchase.status;
  if (purchase.finalizedAt) return exists(TERMINAL[status]);
  if (status === "NEEDS_ATTENTION") return exists("NeedsAttention");
  if (!lastState) return exists(definition.StartAt);
  if (status === "ON_HOLD" && lastState === "AwaitReview") return lastState;
  if (["REJECTED", "CANCELLED", "FAILED"].includes(status)) {
    const at = UNDOING.indexOf(lastState);
    if (at < 0) return exists(UNDOING[0]);
    return exists(states[lastState].Next) && UNDOING.includes(states[lastState].Next) ? states[lastState].Next : lastState;
  }
  if (lastState === "AwaitReview") return exists(RESUME_AT[status]) || lastState;
  if (lastOutcome === "RETRYING") return lastState;
  return exists(states[lastState] && states[lastState].Next) || lastState;
}

// ---------------------------------------------------------------- drawing

function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  for (const child of children) node.append(child);
  return node;
}

function curve(points) {
  // A smooth vertical curve through the points.
  let d = `M ${points[0][0]} ${points[0][1]}`;
  for (let i = 1; i < points.length; i += 1) {
    const [x0, y0] = points[i - 1];
    const [x1, y1] = points[i];
    const mid = (y0 + y1) / 2;
    d += ` C ${x0} ${mid}, ${x1} ${mid}, ${x1} ${y1}`;
  }
  return d;
}

/**
 * Draws `definition` into `container` (replacing what was there), with the
 * purchase's path highlighted when `purchase` is given. Returns the trace.
 */
export function draw(container, definition, purchase) {
  const plan = layout(definition);
  const path = purchase ? trace(definition, purchase) : { outcomes: new Map(), passed: new Set(), edges: new Set(), current: null, sequence: [] };
  const { nodes } = plan;

  const title = svg("title", { id: "graph-svg-title" });
  title.textContent = "Workflow graph of the purchase state machine";
  const desc = svg("desc", { id: "graph-svg-desc" });
  desc.textContent = path.sequence.length
    ? `Path taken: ${path.sequence.join(" → ")}. Current state: ${path.current || "none"}.`
    : "The purchase state machine.";
  const root = svg("svg", {
    xmlns: SVG,
    width: plan.width,
    height: plan.height,
    viewBox: `0 0 ${plan.width} ${plan.height}`,
    role: "img",
    "aria-labelledby": "graph-svg-title graph-svg-desc",
    class: "workflow",
  });
  root.append(title, desc);
  const defs = svg("defs");
  for (const [id, cls] of [["arrow", "arrow"], ["arrow-path", "arrow on-path"]]) {
    defs.append(
      svg("marker", { id, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 8, markerHeight: 8, markerUnits: "userSpaceOnUse", orient: "auto" },
        svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: cls })),
    );
  }
  root.append(defs);

  const edgeLayer = svg("g", { class: "edges" });
  const pathLayer = svg("g", { class: "edges path" });
  // Loop edges get a lane each on the right, the shortest innermost. They
  // leave below their state and come in from above, running along the gaps
  // between layers, so they never cross a state.
  const span = (key) => {
    const e = plan.edges.find((t) => t.key === key);
    return nodes.get(e.from).layer - nodes.get(e.to).layer;
  };
  const lanes = new Map([...plan.back].sort((a, b) => span(a) - span(b)).map((key, i) => [key, i + 1]));
  for (const e of plan.edges) {
    const a = nodes.get(e.from);
    const b = nodes.get(e.to);
    if (!a || !b) continue;
    let d;
    if (plan.back.has(e.key)) {
      const lane = lanes.get(e.key);
      const x = plan.right + lane * LANE;
      const shift = (lane % 4) * 4;
      const out = a.x + a.w * 0.82;
      const below = a.y + a.h + 8 + shift;
      const into = b.x + b.w * 0.82;
      const above = b.y - 8 - shift;
      d = `M ${out} ${a.y + a.h} L ${out} ${below} L ${x} ${below} L ${x} ${above} L ${into} ${above} L ${into} ${b.y}`;
    } else {
      const points = [[a.x + a.w / 2, a.y + a.h]];
      for (const id of plan.chains.get(e.key) || []) {
        const w = nodes.get(id);
        points.push([w.x + w.w / 2, w.y]);
      }
      points.push([b.x + b.w / 2, b.y]);
      d = curve(points);
    }
    const onPath = path.edges.has(e.key);
    const line = svg("path", {
      d,
      class: `edge ${e.kind}${onPath ? " on-path" : ""}`,
      "marker-end": onPath ? "url(#arrow-path)" : "url(#arrow)",
      "data-edge": e.key,
    });
    const tip = svg("title");
    tip.textContent = `${e.from === START ? "Start" : e.from} → ${e.to}${e.label && e.kind !== "start" ? ` (${e.label})` : ""}`;
    line.append(tip);
    (onPath ? pathLayer : edgeLayer).append(line);
  }
  root.append(edgeLayer, pathLayer);

  const nodeLayer = svg("g", { class: "nodes" });
  for (const [name, n] of nodes) {
    if (!n.real) continue;
    if (name === START) {
      const started = path.edges.size > 0;
      nodeLayer.append(
        svg("g", { class: `node start${started ? " on-path" : ""}`, "data-state": "Start", transform: `translate(${n.x},${n.y})` },
          svg("circle", { cx: n.w / 2, cy: n.h / 2, r: n.h / 2 - 4 }),
          text(n.w / 2, n.h / 2 + 4, "Start", "start-label")),
      );
      continue;
    }
    const state = definition.States[name];
    const outcome = path.outcomes.get(name);
    const classes = ["node", (state.Type || "").toLowerCase()];
    if (outcome) classes.push(outcome, "on-path");
    else if (path.passed.has(name)) classes.push("passed", "on-path");
    if (path.current === name) classes.push("current");
    const rounded = state.Type === "Succeed" || state.Type === "Fail" ? NODE_H / 2 : state.Type === "Choice" ? 2 : 7;
    const group = svg("g", {
      class: classes.join(" "),
      "data-state": name,
      transform: `translate(${n.x},${n.y})`,
      ...(path.current === name ? { "aria-current": "step" } : {}),
    });
    const tip = svg("title");
    const status = path.current === name ? "current state" : outcome ? `ran (${outcome})` : path.passed.has(name) ? "passed through" : "not run";
    tip.textContent = `${name} · ${state.Type} · ${status}${state.Comment ? ` — ${state.Comment}` : ""}`;
    group.append(tip, svg("rect", { width: n.w, height: n.h, rx: rounded, ry: rounded }));
    group.append(text(n.w / 2, n.h / 2 + 4, name, "label"));
    if (path.current === name) group.append(svg("circle", { class: "now", cx: 11, cy: n.h / 2, r: 4 }));
    nodeLayer.append(group);
  }
  root.append(nodeLayer);

  container.replaceChildren(root);
  return path;
}

function text(x, y, content, cls) {
  const node = svg("text", { x, y, "text-anchor": "middle", class: cls });
  node.textContent = content;
  return node;
}
