// Sends COUNT events with npm fluent-logger, requireAckResponse on, then
// exits 0. usage: node fluent-logger-client.js PORT MODE COUNT TAG
const { createFluentSender } = require("fluent-logger");
const [port, mode, count, tag] = process.argv.slice(2);
const sender = createFluentSender(tag, {
  host: "127.0.0.1",
  port: Number(port),
  timeout: 10.0,
  requireAckResponse: true,
  ackResponseTimeout: 10000,
  eventMode: mode,
  flushInterval: 5,
});
let acked = 0;
const n = Number(count);
sender.on("error", (err) => {
  console.error("error:", err);
  process.exit(1);
});
for (let i = 0; i < n; i++) {
  sender.emit("", { i, mode }, (err) => {
    if (err) {
      console.error("emit error:", err);
      process.exit(1);
    }
    acked++;
    if (acked === n) {
      sender.end(null, null, () => {
        console.log(`sent ${n}`);
        process.exit(0);
      });
    }
  });
}
