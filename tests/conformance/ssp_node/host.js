// Drive an SSP device on a serial port (a pty) with the third-party Node eSSP host
// `encrypted-smiley-secure-protocol` (npm, pinned in tests/conformance/ssp_node/package.json).
//
// Usage: node host.js PORT POLLS [SECONDS]
// Prints one JSON line per exchange: {"command", "status", "info", "count"} and a last line
// {"done": true, ...}. Exit 0 when the session ran to the end, 1 otherwise.
//
// The one patch: the library draws its Diffie-Hellman numbers with
// crypto.createDiffieHellman(16), which OpenSSL 3 refuses (primes under 512 bits). We hand it
// 16-bit primes ourselves; the key exchange it then performs is unchanged.
'use strict';

const crypto = require('crypto');

const PRIMES_16_BIT = [65521, 65519, 65497, 65479, 65449, 65447, 65437, 65423, 65419, 65413,
  65407, 65393, 65381, 65371, 65357, 65353, 65327, 65323, 65309, 65293, 65287, 65269];
crypto.createDiffieHellman = () => ({
  getPrime() {
    const prime = PRIMES_16_BIT[crypto.randomInt(PRIMES_16_BIT.length)];
    const out = Buffer.alloc(2);
    out.writeUInt16BE(prime);
    return out;
  },
});

const SSP = require('encrypted-smiley-secure-protocol');

const [port, pollsArg, limitArg] = process.argv.slice(2);
// The library resends a command forever when no reply comes (a discarded packet): stop.
setTimeout(() => {
  console.log(JSON.stringify({ done: false, error: 'watchdog: the session did not finish' }));
  process.exit(1);
}, Number(limitArg || 30) * 1000).unref();
const polls = Number(pollsArg || 30);
const ssp = new SSP({ id: 0, debug: false, timeout: 2000, fixedKey: '0123456701234567' });

function report(command, result) {
  const line = {
    command,
    status: result.status,
    success: result.success,
    info: result.info,
    count: ssp.count,
    encrypted: ssp.aesEncryption !== null,
  };
  console.log(JSON.stringify(line, (key, value) => (typeof value === 'bigint' ? value.toString() : value)));
  return result;
}

async function run() {
  await ssp.open(port, { baudRate: 9600 });
  report('SYNC', await ssp.command('SYNC'));
  report('HOST_PROTOCOL_VERSION', await ssp.command('HOST_PROTOCOL_VERSION', { version: 6 }));
  await ssp.initEncryption();
  console.log(JSON.stringify({ command: 'KEY_EXCHANGE', status: 'OK', success: ssp.keys.key !== null,
    count: ssp.count, generator: ssp.keys.generatorKey.toString(), modulus: ssp.keys.modulusKey.toString() }));
  report('GET_SERIAL_NUMBER', await ssp.command('GET_SERIAL_NUMBER'));
  report('SETUP_REQUEST', await ssp.command('SETUP_REQUEST'));
  report('SET_CHANNEL_INHIBITS', await ssp.command('SET_CHANNEL_INHIBITS', { channels: [1, 1, 1, 1] }));
  report('ENABLE', await ssp.exec('ENABLE'));
  let credits = 0;
  for (let i = 0; i < polls && credits === 0; i += 1) {
    const result = report('POLL', await ssp.exec('POLL'));
    for (const event of [].concat(result.info || [])) {
      if (event.name === 'CREDIT_NOTE') credits += 1;
    }
  }
  // Second note with POLL WITH ACK: the credit must repeat until EVENT ACK, then stop.
  let acked = 0;
  let repeats = 0;
  for (let i = 0; i < polls && acked === 0; i += 1) {
    const result = report('POLL_WITH_ACK', await ssp.exec('POLL_WITH_ACK'));
    if ([].concat(result.info || []).some((event) => event.name === 'CREDIT_NOTE')) {
      const again = report('POLL_WITH_ACK', await ssp.exec('POLL_WITH_ACK'));
      repeats = [].concat(again.info || []).filter((event) => event.name === 'CREDIT_NOTE').length;
      report('EVENT_ACK', await ssp.exec('EVENT_ACK'));
      acked = 1;
    }
  }
  const after = report('POLL_WITH_ACK', await ssp.exec('POLL_WITH_ACK'));
  const afterAck = [].concat(after.info || []).filter((event) => event.name === 'CREDIT_NOTE').length;
  report('DISABLE', await ssp.exec('DISABLE'));
  console.log(JSON.stringify({ done: true, credits, acked, repeats, afterAck, count: ssp.count }));
  ssp.close();
}

run().then(() => process.exit(0)).catch((error) => {
  console.log(JSON.stringify({ done: false, error: String(error && error.stack || error) }));
  process.exit(1);
});
