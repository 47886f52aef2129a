// Package aggregator is the central broker role: it accepts the agents'
// chunks over the forward protocol, makes them durable, routes them by tag
// to sinks and publishes them to Kafka topics.
//
// Today the role is the generic service (package service) run with the
// aggregator's defaults (conf.Defaults(conf.RoleAggregator)); chunk-id
// dedup lives in the forward input. The routes to sinks and topics and the
// Kafka consumer-group mode land here.
package aggregator
