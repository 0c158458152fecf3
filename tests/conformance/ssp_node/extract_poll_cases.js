// Regenerates tests/conformance/ssp_node_poll_cases.json from the Node library's own tests.
// Usage: node extract_poll_cases.js SRC_DIR > ../ssp_node_poll_cases.cases.json
// SRC_DIR: `src/` of kybarg/encrypted-smiley-secure-protocol at the commit named in the
// fixture. Runs `utils.parseData.test.js` with a stand-in for jest that records, for each POLL
// test, the bytes given to the library's parseData and the result the test expects.
'use strict';

const path = require('path');

const src = path.resolve(process.argv[2]);
const utils = require(path.join(src, 'utils.js'));
const original = utils.parseData;
const cases = [];
const suites = [];
let current = null;
utils.parseData = (...args) => { current.args = args; return original(...args); };
global.describe = (name, fn) => { suites.push(name); fn(); suites.pop(); };
global.test = (name, fn) => { current = { name: [...suites, name].join(' / ') }; fn(); };
global.expect = () => ({
  toEqual(expected) { cases.push({ ...current, expected }); },
});
require(path.join(src, 'utils.parseData.test.js'));
const polls = cases.filter((c) => c.args && ['POLL', 'POLL_WITH_ACK'].includes(c.args[1]));
console.log(JSON.stringify(polls.map((c) => ({
  test: c.name,
  data: Buffer.from(c.args[0]).toString('hex'),
  protocol_version: c.args[2],
  unit_type: c.args[3],
  expected: c.expected.info.map(({ description, ...event }) => event),
})), null, 1));
