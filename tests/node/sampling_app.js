// The AWS X-Ray SDK for Node.js (aws-xray-sdk-core) with centralized
// sampling against tracelake: a stand-in for a web app behind the SDK's
// middleware. Each request is decided by the SDK's own middleware code
// (`AWSXRay.middleware.resolveSampling`, which asks the default sampler
// that polls GetSamplingRules and SamplingTargets); a sampled request's
// segment is sent over UDP.
//
// usage: AWS_XRAY_DAEMON_ADDRESS="tcp:HOST:PORT udp:HOST:PORT" node sampling_app.js
//
// Commands on stdin, one JSON object a line; one JSON line out for each:
//   {"cmd": "decide", "path": "/health", "count": 5}
//     -> {"path", "decisions": [rule name, or false when not sampled], "trace_ids": [...]}
//   {"cmd": "rules"} -> {"rules": [{"name", "priority", "rate"}], "last_updated"}
// At start, once the first rule poll has answered (or after 10 s), the
// same line as "rules" with "event": "started".
//
// The SDK polls rules every 5 minutes (the first poll at once) and targets
// every 10 s; the interval is a constant in target_poller.js, taken by the
// setInterval call in TargetPoller.start. The test shortens only the target
// poll, by starting that poller with setInterval wrapped, so a rule change
// can reach the SDK only through SamplingTargets.
'use strict';

const readline = require('readline');
const AWSXRay = require('aws-xray-sdk-core');

const TARGET_POLL_MS = Number(process.env.TRACELAKE_TARGET_POLL_MS || 1000);

// The SDK logs to the console; stdout carries this app's JSON lines.
AWSXRay.setLogger({
  error: (...args) => console.error('[xray error]', ...args),
  warn: (...args) => console.error('[xray warn]', ...args),
  info: () => {},
  debug: () => {},
});
AWSXRay.middleware.setDefaultName('shop');

const sampler = AWSXRay.middleware.sampler;
sampler.rulePoller.start();
const realSetInterval = global.setInterval;
global.setInterval = (callback, _delay, ...args) => realSetInterval(callback, TARGET_POLL_MS, ...args);
try {
  sampler.targetPoller.start();
} finally {
  global.setInterval = realSetInterval;
}
sampler.started = true;

function rules() {
  return {
    rules: sampler.ruleCache.getRules().map((rule) => ({
      name: rule.getName(),
      priority: rule.getPriority(),
      rate: rule.getRate(),
    })),
    last_updated: sampler.ruleCache.getLastUpdated(),
  };
}

// One request as the SDK's middlewares handle it.
function request(path) {
  const segment = new AWSXRay.Segment('shop');
  const response = {
    req: {
      headers: { host: 'shop.example.com' },
      method: 'GET',
      url: path,
      connection: { remoteAddress: '127.0.0.1' },
    },
  };
  AWSXRay.middleware.resolveSampling({}, segment, response);
  const ruleName = segment.aws && segment.aws.xray && segment.aws.xray.rule_name;
  const decision = segment.notTraced ? false : (ruleName || true);
  segment.addIncomingRequestData(new AWSXRay.middleware.IncomingRequestData(response.req));
  segment.close();
  return { decision, trace_id: segment.trace_id };
}

function print(line) {
  process.stdout.write(JSON.stringify(line) + '\n');
}

function handle(command) {
  if (command.cmd === 'decide') {
    const decisions = [];
    const traceIds = [];
    for (let index = 0; index < command.count; index += 1) {
      const { decision, trace_id: traceId } = request(command.path);
      decisions.push(decision);
      traceIds.push(traceId);
    }
    print({ path: command.path, decisions, trace_ids: traceIds });
  } else if (command.cmd === 'rules') {
    print(rules());
  } else {
    print({ error: `unknown command ${JSON.stringify(command.cmd)}` });
  }
}

function serve() {
  const input = readline.createInterface({ input: process.stdin });
  input.on('line', (line) => {
    if (line.trim() === '') return;
    let command;
    try {
      command = JSON.parse(line);
    } catch (error) {
      print({ error: `not JSON: ${error.message}` });
      return;
    }
    handle(command);
  });
  input.on('close', () => process.exit(0));
}

// Wait for the first rule poll's answer, then take commands.
const startDeadline = Date.now() + 10000;
function waitForRules() {
  if (sampler.ruleCache.getLastUpdated() || Date.now() > startDeadline) {
    print({ event: 'started', ...rules() });
    serve();
    return;
  }
  setTimeout(waitForRules, 50);
}
waitForRules();
