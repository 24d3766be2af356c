// A plain TCP forwarder, 127.0.0.1:<any port> -> <host>:<port>, in a process of its own so that a
// test can freeze it with SIGSTOP: connections are still accepted by the kernel and nothing moves
// either way, which is how a frozen server or a partition looks to the client (no RST, no FIN).
// SIGUSR1 instead blackholes the connections open at that moment and forwards new ones: a path
// that died under its connections (a firewall or NAT that lost their state, a moved address);
// when the client then closes its side, the server's side is closed too. SIGUSR2 does the same
// but the server's side stays open until this process ends: the server never hears of it, as
// when a NAT between them forgot the flow (its session lives on until its TCP gives up).
// Prints its port on stdout. Usage: node tcp-forwarder.mjs <host> <port>
import net from 'node:net'

const [host, port] = process.argv.slice(2)
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
  const upstream = net.connect(Number(port), host)
  client.pipe(upstream)
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
})
server.listen(0, '127.0.0.1', () => process.stdout.write(`${server.address().port}\n`))
// Ends with its parent (the test): a pipe on stdin closes when the parent is gone.
process.stdin.on('end', () => process.exit(0))
process.stdin.resume()
