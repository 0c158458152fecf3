// A minimal ccTalk host on the npm packages `serialport` and `@serialport/parser-cctalk`
// (a third-party packet parser): it opens a serial port (vendhw's simulator on a pty), sends
// requests with its own simple checksum, lets CCTalkParser cut the replies, drops the line
// echo (packets not addressed to the host) and prints one JSON object with what it read.
// Usage: node cctalk_node_host.js PORT NODE_MODULES_DIR
'use strict'
const path = require('path')
const modules = process.argv[3]
const { SerialPort } = require(path.join(modules, 'serialport'))
const { CCTalkParser } = require(path.join(modules, '@serialport/parser-cctalk'))

const HOST = 1
const COIN = 2
const port = new SerialPort({ path: process.argv[2], baudRate: 9600, autoOpen: false })
const parser = port.pipe(new CCTalkParser(50))
const waiting = []
parser.on('data', (frame) => {
  if (frame[0] !== HOST) return // our own request echoed by the single-wire line
  const sum = frame.reduce((a, b) => (a + b) & 0xff, 0)
  const next = waiting.shift()
  if (next) next({ frame, checksumOk: sum === 0 })
})

function packet (dest, header, data = []) {
  const body = [dest, data.length, HOST, header, ...data]
  const sum = body.reduce((a, b) => a + b, 0)
  return Buffer.from([...body, (256 - (sum & 0xff)) & 0xff])
}

function ask (header, data = []) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no reply to header ${header}`)), 1000)
    waiting.push((reply) => { clearTimeout(timer); resolve(reply) })
    port.write(packet(COIN, header, data))
  })
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function main () {
  await new Promise((resolve, reject) => port.open((err) => err ? reject(err) : resolve()))
  const out = { checksums: [], coinIds: {} }
  const note = (r) => { out.checksums.push(r.checksumOk); return r.frame }
  out.poll = note(await ask(254)).slice(3, 4)[0] // header of the reply: 0 = ACK
  out.category = note(await ask(245)).slice(4, -1).toString('ascii')
  for (let channel = 1; channel <= 8; channel++) {
    out.coinIds[channel] = note(await ask(184, [channel])).slice(4, -1).toString('ascii')
  }
  out.inhibits = note(await ask(231, [0xff, 0xff]))[3]
  out.master = note(await ask(228, [1]))[3]
  out.credits = []
  let last = null
  for (let i = 0; i < 60 && out.credits.length < 2; i++) {
    const data = note(await ask(229)).slice(4, -1)
    const counter = data[0]
    if (last !== null && counter !== last) {
      const fresh = (counter - last + 255) % 255 // 1..255 wraps to 1
      const events = []
      for (let k = 0; k < fresh && k < 5; k++) events.push([data[1 + 2 * k], data[2 + 2 * k]])
      out.credits.push(...events.reverse()) // the buffer lists the newest event first
    }
    last = counter
    await pause(100)
  }
  console.log(JSON.stringify(out))
  port.close()
}

main().catch((err) => { console.error(String(err)); process.exit(1) })
