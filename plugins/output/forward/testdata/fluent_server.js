// A real forward receiver for the forward output's tests: npm
// @fluent-org/logger's FluentServer (it acks every chunk that carries a
// chunk id and can require the shared-key handshake).
//
//   node fluent_server.js [--shared-key KEY] [--user NAME:PASSWORD]
//
// Listens on 127.0.0.1 on a free port and prints {"port": N} as the first
// line on stdout, then one line per received event:
// {"tag": ..., "time": seconds, "record": {...}}. Exits when stdin closes
// (the test process went away) or on SIGTERM.
"use strict";
const { FluentServer, EventTime } = require("@fluent-org/logger");

const args = process.argv.slice(2);
let sharedKey = "";
let user = "";
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--shared-key") sharedKey = args[++i];
  else if (args[i] === "--user") user = args[++i];
  else {
    process.stderr.write("unknown argument " + args[i] + "\n");
    process.exit(2);
  }
}

const options = { listenOptions: { host: "127.0.0.1", port: 0 } };
if (sharedKey) {
  const userDict = {};
  if (user) {
    const at = user.indexOf(":");
    userDict[user.slice(0, at)] = user.slice(at + 1);
  }
  options.security = {
    serverHostname: "node-fluent-server",
    sharedKey: sharedKey,
    authorize: user !== "",
    userDict: userDict,
  };
}

const server = new FluentServer(options);
server.on("entry", (tag, time, record) => {
  const seconds = time instanceof EventTime ? time.epoch : time;
  process.stdout.write(JSON.stringify({ tag: tag, time: seconds, record: record }) + "\n");
});

let closing = false;
const stop = () => {
  if (closing) return;
  closing = true;
  server.close().then(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
};
process.on("SIGTERM", stop);
process.stdin.on("end", stop);
process.stdin.resume();

server.listen().then(() => {
  process.stdout.write(JSON.stringify({ port: server.port }) + "\n");
});
