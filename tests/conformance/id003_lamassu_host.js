// Drives an ID-003 acceptor with lamassu-machine's own Id003Rs232 class (lib/id003/
// id003rs232.js): its send() builds the frames, its parser cuts and checks the replies and
// its _denominations reads the CURRENCY ASSIGN table. Prints one JSON object.
// Usage: NODE_PATH=<modules with serialport, async, lodash> node id003_lamassu_host.js PORT LIB_ID003_DIR
'use strict'
const path = require('path')
const Id003Rs232 = require(path.join(process.argv[3], 'id003rs232.js'))

const rs = Id003Rs232.factory({ device: process.argv[2], fiatCode: 'USD' })
const seen = []
const out = { messages: seen, badFrames: 0, rejectedCurrency: false }
let waiting = null
rs.on('message', (command, data) => {
  seen.push(command)
  if (command === 'escrow') out.escrow = data
  if (waiting) { const w = waiting; waiting = null; w(command) }
})
rs.on('badFrame', () => { out.badFrames++ })
rs.on('reject', () => { out.rejectedCurrency = true })
rs.on('error', (err) => { console.error(String(err)); process.exit(1) })

function ask (command) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { waiting = null; reject(new Error('no reply to ' + command)) }, 1000)
    waiting = (reply) => { clearTimeout(timer); resolve(reply) }
    rs.send(command)
  })
}
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function until (wanted) {
  for (let i = 0; i < 100; i++) {
    const reply = await ask('status')
    if (wanted.includes(reply)) return reply
    await pause(50)
  }
  throw new Error('never saw ' + wanted.join('/') + '; last ' + seen.slice(-5).join(','))
}

async function main () {
  await new Promise((resolve) => rs.open(resolve))
  out.first = await ask('status')
  out.reset = await ask('reset')
  await until(['disable'])
  out.denominationsReply = await ask('denominations')
  out.denominations = rs.denominations
  out.enable = await ask('enableAll')
  out.unInhibit = await ask('unInhibit')
  await until(['escrow'])
  out.stack = await ask('stack')
  await until(['vendValid'])
  rs.send('ack')
  out.after = await until(['stacked', 'enable'])
  console.log(JSON.stringify(out))
  rs.close(() => process.exit(0))
}

main().catch((err) => { console.error(String(err)); process.exit(1) })
