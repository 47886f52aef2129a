package tail

import (
	"math"

	"github.com/logship/logship/internal/jsonmp"
	"github.com/logship/logship/internal/mpack"
)

// The JSON transcoder lives in internal/jsonmp (the kafka input uses it
// too); these are its names in this package.

const maxJSONDepth = jsonmp.MaxDepth

func appendJSONRecord(dst, line, extra []byte, extraN int) ([]byte, bool) {
	return jsonmp.AppendRecord(dst, line, extra, extraN)
}

func appendUnescaped(dst, raw []byte) ([]byte, bool) { return jsonmp.AppendUnescaped(dst, raw) }

func tooDeep(b []byte) bool { return jsonmp.TooDeep(b) }

func skipWS(b []byte, i int) int { return jsonmp.SkipWS(b, i) }

func scanString(b []byte, i int) (end int, esc, ok bool) { return jsonmp.ScanString(b, i) }

func skipValue(b []byte, i, depth int) (int, bool) { return jsonmp.SkipValue(b, i, depth) }

// dockerLine is one line of Docker's json-file log driver:
// {"log":"text\n","stream":"stdout","time":"2024-01-02T03:04:05.123456789Z"}.
type dockerLine struct {
	log, stream, time []byte // raw string bodies, still escaped
	logEsc            bool
}

func parseDocker(line []byte) (d dockerLine, ok bool) {
	i := skipWS(line, 0)
	if i >= len(line) || line[i] != '{' {
		return d, false
	}
	i = skipWS(line, i+1)
	seenLog := false
	if i < len(line) && line[i] == '}' {
		return d, false
	}
	for {
		if i >= len(line) || line[i] != '"' {
			return d, false
		}
		kend, _, ok := scanString(line, i)
		if !ok {
			return d, false
		}
		key := line[i+1 : kend-1]
		i = skipWS(line, kend)
		if i >= len(line) || line[i] != ':' {
			return d, false
		}
		i = skipWS(line, i+1)
		if i < len(line) && line[i] == '"' && (string(key) == "log" || string(key) == "stream" || string(key) == "time") {
			end, esc, ok := scanString(line, i)
			if !ok {
				return d, false
			}
			body := line[i+1 : end-1]
			switch string(key) {
			case "log":
				d.log, d.logEsc, seenLog = body, esc, true
			case "stream":
				d.stream = body
			case "time":
				d.time = body
			}
			i = end
		} else {
			end, ok := skipValue(line, i, 1)
			if !ok {
				return d, false
			}
			i = end
		}
		i = skipWS(line, i)
		if i >= len(line) {
			return d, false
		}
		switch line[i] {
		case ',':
			i = skipWS(line, i+1)
		case '}':
			return d, seenLog && skipWS(line, i+1) == len(line)
		default:
			return d, false
		}
	}
}

// parseRFC3339 reads 2006-01-02T15:04:05[.999999999](Z|±07:00) without
// allocating.
func parseRFC3339(b []byte) (mpack.EventTime, bool) {
	num := func(s []byte) (int, bool) {
		v := 0
		for _, c := range s {
			if c < '0' || c > '9' {
				return 0, false
			}
			v = v*10 + int(c-'0')
		}
		return v, true
	}
	if len(b) < 20 || b[4] != '-' || b[7] != '-' || (b[10] != 'T' && b[10] != 't' && b[10] != ' ') || b[13] != ':' || b[16] != ':' {
		return mpack.EventTime{}, false
	}
	year, ok1 := num(b[0:4])
	mon, ok2 := num(b[5:7])
	day, ok3 := num(b[8:10])
	hh, ok4 := num(b[11:13])
	mm, ok5 := num(b[14:16])
	ss, ok6 := num(b[17:19])
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 || mon < 1 || mon > 12 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60 {
		return mpack.EventTime{}, false
	}
	i := 19
	nsec := 0
	if i < len(b) && b[i] == '.' {
		i++
		digits := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			if digits < 9 {
				nsec = nsec*10 + int(b[i]-'0')
				digits++
			}
			i++
		}
		if digits == 0 {
			return mpack.EventTime{}, false
		}
		for ; digits < 9; digits++ {
			nsec *= 10
		}
	}
	offset := 0
	switch {
	case i < len(b) && (b[i] == 'Z' || b[i] == 'z') && i+1 == len(b):
	case i < len(b) && (b[i] == '+' || b[i] == '-') && (len(b)-i == 6 && b[i+3] == ':' || len(b)-i == 5):
		oh, ok1 := num(b[i+1 : i+3])
		om, ok2 := num(b[len(b)-2:])
		if !ok1 || !ok2 {
			return mpack.EventTime{}, false
		}
		offset = oh*3600 + om*60
		if b[i] == '-' {
			offset = -offset
		}
	default:
		return mpack.EventTime{}, false
	}
	// Days from civil (H. Hinnant's algorithm).
	y := year
	if mon <= 2 {
		y--
	}
	era := y / 400
	yoe := y - era*400
	mp := (mon + 9) % 12
	doy := (153*mp+2)/5 + day - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	days := era*146097 + doe - 719468
	secs := int64(days)*86400 + int64(hh*3600+mm*60+ss) - int64(offset)
	if secs < 0 || secs > math.MaxUint32 {
		return mpack.EventTime{}, false
	}
	return mpack.EventTime{Sec: uint32(secs), Nsec: uint32(nsec)}, true
}
