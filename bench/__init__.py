"""The benchmark harness behind ``scripts/bench`` (issue #7). Not part of the gateway package and never imported by
it: a load generator with its own minimal WebSocket peers, micro-benchmarks of the media path's pure functions,
the resampler study, the optional pipecat comparison, and the report. See docs/architecture/performance.md."""
