//! Benchmarks of the engine core: encoding, network throughput by batch size, search
//! with the uniform evaluator, and self-play. Each returns JSON objects (one per
//! measurement) that the `trainer bench` command prints as a table and as JSON lines.
