# Sends COUNT events with Debian's python3-fluent-logger.
# usage: python3 python-client.py PORT COUNT TAG nanosecond|float|int
import sys, time
from fluent import sender

port, count, tag, timeform = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = sender.FluentSender(tag, host="127.0.0.1", port=port, nanosecond_precision=(timeform == "nanosecond"))
for i in range(count):
    t = time.time()
    if timeform == "int":
        t = int(t)
    if not s.emit_with_time("", t + 0.25 if timeform == "float" else t, {"i": i, "form": timeform}):
        print("error:", s.last_error, file=sys.stderr)
        sys.exit(1)
s.close()
print("sent", count)
