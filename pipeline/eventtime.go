package pipeline

import (
	"encoding/binary"
	"reflect"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/logship/logship/internal/mpack"
)

func init() {
	// Registered by value so that EventTime values (not only pointers)
	// encode as ext 0 inside maps and slices, and so that an ext 0 decoded
	// into an interface yields an mpack.EventTime.
	msgpack.RegisterExtEncoder(mpack.EventTimeExtType, mpack.EventTime{}, func(_ *msgpack.Encoder, v reflect.Value) ([]byte, error) {
		t := v.Interface().(mpack.EventTime)
		return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(make([]byte, 0, 8), t.Sec), t.Nsec), nil
	})
	msgpack.RegisterExtDecoder(mpack.EventTimeExtType, mpack.EventTime{}, func(d *msgpack.Decoder, v reflect.Value, n int) error {
		b := make([]byte, n)
		if err := d.ReadFull(b); err != nil {
			return err
		}
		t, err := mpack.ParseEventTimeExt(b)
		if err != nil {
			return err
		}
		v.Set(reflect.ValueOf(t))
		return nil
	})
}
