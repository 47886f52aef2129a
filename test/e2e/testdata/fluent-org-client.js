// Sends COUNT events with @fluent-org/logger, acks required, in one event
// mode, optionally with the shared-key handshake, then exits 0.
// usage: node fluent-org-client.js PORT MODE COUNT TAG [SHARED_KEY]
const { FluentClient, EventTime } = require("@fluent-org/logger");
const [port, mode, count, tag, sharedKey] = process.argv.slice(2);
const opts = {
  socket: { host: "127.0.0.1", port: Number(port), timeout: 10000 },
  eventMode: mode,
  ack: { ackTimeout: 10000 },
  flushInterval: 5,
};
if (sharedKey) {
  opts.security = { clientHostname: "node-client", sharedKey };
}
const logger = new FluentClient(tag, opts);
(async () => {
  const sends = [];
  for (let i = 0; i < Number(count); i++) {
    const t = i % 2 === 0 ? EventTime.now() : new Date();
    sends.push(logger.emit("", { i, mode, msg: "héllo from node" }, t));
  }
  await Promise.all(sends);
  await logger.disconnect();
  console.log(`sent ${count}`);
})().catch((err) => {
  console.error("error:", err);
  process.exit(1);
});
