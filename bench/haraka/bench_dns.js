// bench_dns: a local plugin of bench/envelope.sh. It sends every DNS
// lookup of this Haraka to the bench's DNS server (config/bench_dns.ini:
// server=127.0.0.1:PORT) and lets the envelope plugins check the loopback
// client as they would a remote one. It must be the first plugin listed.
// With nodelay=true it also turns Nagle's algorithm off on every socket
// (HARAKA_NODELAY=1; not Haraka's default).
const dns = require('node:dns')
const net = require('node:net')

const pinned = Symbol('bench_dns')

// arpa: the in-addr.arpa / ip6.arpa name of an address.
function arpa(ip) {
  if (net.isIPv4(ip)) return `${ip.split('.').reverse().join('.')}.in-addr.arpa`
  const [h, t] = ip.split('::')
  const head = h ? h.split(':') : []
  const tail = t ? t.split(':') : []
  const groups = [...head, ...Array(8 - head.length - tail.length).fill('0'), ...tail]
  return `${[...groups.map((g) => g.padStart(4, '0')).join('')].reverse().join('.')}.ip6.arpa`
}

// pin makes every Resolver of a class ask only `servers`. A new Resolver
// reads /etc/resolv.conf, not dns.setServers(), and the plugins make their
// own (fcrdns, dns-list, haraka-net-utils), so each instance is set on
// its first lookup.
function pin(proto, servers) {
  // c-ares answers reverse() from /etc/hosts first, where 127.0.0.1 is
  // localhost: ask the DNS, as for any remote client.
  proto.reverse = function (ip, ...cb) {
    return this.resolvePtr(arpa(ip), ...cb)
  }
  for (const m of Object.getOwnPropertyNames(proto)) {
    if (!/^(resolve|reverse)/.test(m) || typeof proto[m] !== 'function') continue
    const lookup = proto[m]
    proto[m] = function (...args) {
      if (!this[pinned]) {
        this.setServers(servers)
        this[pinned] = true
      }
      return lookup.apply(this, args)
    }
  }
}

exports.register = function () {
  const cfg = this.config.get('bench_dns.ini', { booleans: ['-main.nodelay'] }).main
  const servers = [cfg.server]
  pin(dns.Resolver.prototype, servers)
  pin(dns.promises.Resolver.prototype, servers)
  // the module-level functions are bound to the default resolvers
  dns.setServers(servers)
  dns.promises.setServers(servers)
  dns.reverse = (ip, cb) => dns.resolvePtr(arpa(ip), cb)
  dns.promises.reverse = (ip) => dns.promises.resolvePtr(arpa(ip))
  if (cfg.nodelay) {
    const connect = net.Socket.prototype.connect
    net.Socket.prototype.connect = function (...args) {
      this.setNoDelay(true)
      return connect.apply(this, args)
    }
    this.register_hook('connect_init', 'no_delay')
  }
  this.register_hook('connect_init', 'remote_is_public')
  this.loginfo(`DNS servers: ${servers.join(', ')}${cfg.nodelay ? ', Nagle off' : ''}`)
}

// no_delay: the server side of the client's connection, without Nagle.
exports.no_delay = function (next, connection) {
  connection.client.setNoDelay?.(true)
  next()
}

// Every envelope plugin skips private and loopback clients; the bench's
// client is 127.0.0.1, standing for a remote MTA, so it is checked.
exports.remote_is_public = function (next, connection) {
  connection.remote.is_private = false
  connection.remote.is_local = false
  next()
}
