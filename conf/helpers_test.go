package conf_test

import (
	"reflect"
	"sort"
)

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

func reflectField(cfg any, name string) string {
	return reflect.ValueOf(cfg).Elem().FieldByName(name).String()
}
