// Package aggregator is the central broker role: it accepts the agents'
// chunks over the forward protocol, makes them durable, routes them by tag
// to sinks and publishes them to Kafka topics.
//
// The package is where the role is assembled: Role carries its name and
// the defaults of a machine that serves many agents. The lifecycle both
// roles share is package service; chunk-id dedup lives in the forward
// input. The routes to sinks and topics and the Kafka consumer-group mode
// land here.
package aggregator
