// A plain TCP forwarder, 127.0.0.1:<any port> -> <host>:<port>, in a process of its own so that a
// test can freeze it with SIGSTOP: connections are still accepted by the kernel and nothing moves
// either way, which is how a frozen server or a partition looks to the client (no RST, no FIN).
// SIGUSR1 instead blackholes the connections open at that moment and forwards new ones: a path
// that died under its connections (a firewall or NAT that lost their state, a moved address);
// when the client then closes its side, the server's side is closed too. SIGUSR2 does the same
// but the server's side stays open until this process ends: the server never hears of it, as
// when a NAT between them forgot the flow (its session lives on until its TCP gives up).
// With --stall-at-first-channel (AMQP 0-9-1 only), each connection is forwarded until the client
// sends its first frame on a channel other than 0, that is once the connection is open; from
// then on nothing moves either way, as when a broker stops answering right after a client
// connected. The forwarder prints `stalled` on stdout each time.
// With --stall-at-connect, each connection is accepted and nothing more: no server behind it
// (a broker that accepts TCP and never answers); it prints `stalled` too.
// With --delay-connect-ms N, each connection waits N ms before it is forwarded (a slow network
// or a loaded server: the client's connect, and so its first answer, comes N ms late).
// Prints its port on stdout. Usage: node tcp-forwarder.mjs <host> <port> [--stall-at-first-channel | --stall-at-connect | --delay-connect-ms N]
import net from 'node:net'

const [host, port] = process.argv.slice(2)
const stallAtFirstChannel = process.argv.includes('--stall-at-first-channel')
const stallAtConnect = process.argv.includes('--stall-at-connect')
const delayArg = process.argv.indexOf('--delay-connect-ms')
const delayConnectMs = delayArg === -1 ? 0 : Number(process.argv[delayArg + 1])
const open = new Set()
const severed = new Set()
const blackhole = (keepServerSide) => {
  for (const s of open) {
    s.unpipe()
    s.pause()
    if (keepServerSide) severed.add(s)
  }
  open.clear()
}
process.on('SIGUSR1', () => blackhole(false))
process.on('SIGUSR2', () => blackhole(true))
const server = net.createServer((client) => {
  if (delayConnectMs > 0) {
    client.pause()
    client.on('error', () => {})
    setTimeout(() => forward(client), delayConnectMs)
  } else forward(client)
})
const forward = (client) => {
  if (stallAtConnect) {
    client.on('error', () => {})
    process.stdout.write('stalled\n')
    return
  }
  // Without Nagle on both legs, as the clients behind it set: a forwarder that delays small
  // writes (40 ms delayed ACKs) made confirm-paced traffic through it ~30 messages/s.
  client.setNoDelay(true)
  const upstream = net.connect({ port: Number(port), host, noDelay: true })
  if (stallAtFirstChannel) forwardUntilFirstChannel(client, upstream)
  else client.pipe(upstream)
  upstream.pipe(client)
  open.add(client)
  open.add(upstream)
  const end = () => {
    open.delete(client)
    open.delete(upstream)
    client.destroy()
    if (!severed.has(upstream)) upstream.destroy()
  }
  for (const s of [client, upstream]) {
    s.on('error', end)
    s.on('close', end)
  }
}
// AMQP 0-9-1 from the client: an 8-byte protocol header, then frames of type (1 byte), channel
// (2), payload size (4), payload, frame end (1).
function forwardUntilFirstChannel(client, upstream) {
  let seen = Buffer.alloc(0)
  let forwarded = 0
  let next = 8
  let stallAt
  client.on('data', (chunk) => {
    if (stallAt !== undefined) return
    seen = Buffer.concat([seen, chunk])
    while (stallAt === undefined && seen.length >= next + 7) {
      if (seen.readUInt16BE(next + 1) !== 0) stallAt = next
      else next += 7 + seen.readUInt32BE(next + 3) + 1
    }
    const upTo = stallAt ?? seen.length
    if (upTo > forwarded) upstream.write(seen.subarray(forwarded, upTo))
    forwarded = upTo
    if (stallAt !== undefined) {
      upstream.unpipe(client)
      upstream.pause()
      process.stdout.write('stalled\n')
    }
  })
}

server.listen(0, '127.0.0.1', () => process.stdout.write(`${server.address().port}\n`))
// Ends with its parent (the test): a pipe on stdin closes when the parent is gone.
process.stdin.on('end', () => process.exit(0))
process.stdin.resume()
