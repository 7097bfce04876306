import Engine
import Foundation
import Metrics
import Prometheus

/// The server's Prometheus metrics, under SGLang's names with an `adapter` label ("" for the base
/// model), plus vLLM's `vllm:lora_requests_info` gauge that LoRA-aware routers read.
///
/// Counters and histograms go through swift-metrics with a Prometheus factory bound to this
/// server's own registry, so several servers (tests) in one process never share series.
public final class ServerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory
    private let loraInfo = NIOLockedGauge()
    private let steps = StepCounters()
    let modelName: String

    static let latencyBuckets: [Duration] = [
        .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
        .milliseconds(500), .seconds(1), .seconds(2), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
        .seconds(120), .seconds(300),
    ]

    public init(modelName: String, registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        self.modelName = modelName
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets = [
            "sglang:e2e_request_latency_seconds": Self.latencyBuckets,
            "sglang:time_to_first_token_seconds": Self.latencyBuckets,
        ]
        self.factory = factory
    }

    private func dims(_ adapter: String?) -> [(String, String)] {
        [("model_name", modelName), ("adapter", adapter ?? "")]
    }

    /// Records a finished request: its count by finish type, tokens, end-to-end latency and TTFT.
    func recordFinished(adapter: String?, finish: FinishInfo, e2e: Duration, timeToFirstToken: Duration?) {
        let d = dims(adapter)
        Counter(label: "sglang:num_requests_total", dimensions: d + [("finish_reason", finish.reason.type)], factory: factory)
            .increment()
        Counter(label: "sglang:prompt_tokens_total", dimensions: d, factory: factory).increment(by: finish.promptTokens)
        Counter(label: "sglang:generation_tokens_total", dimensions: d, factory: factory).increment(by: finish.completionTokens)
        Counter(label: "sglang:cached_tokens_total", dimensions: d, factory: factory).increment(by: finish.cachedTokens)
        Metrics.Timer(label: "sglang:e2e_request_latency_seconds", dimensions: d, factory: factory).recordNanoseconds(e2e.nanoseconds)
        if let timeToFirstToken {
            Metrics.Timer(label: "sglang:time_to_first_token_seconds", dimensions: d, factory: factory)
                .recordNanoseconds(timeToFirstToken.nanoseconds)
        }
    }

    /// Counts a request refused before it reached the engine (bad input, unknown adapter).
    func recordRejected(route: String) {
        Counter(label: "loom:rejected_requests_total", dimensions: [("model_name", modelName), ("route", route)], factory: factory)
            .increment()
    }

    /// Refreshes the gauges that mirror the engine's state, then renders the text exposition.
    func render(stats: EngineStats, maxLoras: Int) -> String {
        let d = [("model_name", modelName)]
        Gauge(label: "sglang:num_running_reqs", dimensions: d, factory: factory).record(stats.running)
        Gauge(label: "sglang:num_queue_reqs", dimensions: d, factory: factory).record(stats.waiting)
        let usage = stats.totalBlocks > 0 ? Double(stats.totalBlocks - stats.freeBlocks) / Double(stats.totalBlocks) : 0
        Gauge(label: "sglang:token_usage", dimensions: d, factory: factory).record(usage)
        for (adapter, n) in stats.inFlightByAdapter {
            Gauge(label: "loom:adapter_in_flight_requests", dimensions: d + [("adapter", adapter)], factory: factory).record(n)
        }
        let running = stats.runningByAdapter.filter { !$0.key.isEmpty && $0.value > 0 }.keys.sorted().joined(separator: ",")
        let waiting = stats.waitingByAdapter.filter { !$0.key.isEmpty && $0.value > 0 }.keys.sorted().joined(separator: ",")
        steps.advance(to: stats.stepTotals, dimensions: d, factory: factory)
        loraInfo.set(
            registry: registry,
            labels: [("running_lora_adapters", running), ("max_lora", String(maxLoras)), ("waiting_lora_adapters", waiting)],
            value: Date().timeIntervalSince1970)
        return registry.emitToString()
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (s, atto) = components
        return s * 1_000_000_000 + atto / 1_000_000_000
    }
}

/// The engine's step totals as counters: `loom:steps_total` (steps that computed something),
/// `loom:step_tokens_total`, `loom:step_prefill_tokens_total`, `loom:step_sequences_total` and
/// `loom:step_adapters_total` (distinct adapters per step, summed; the base model not counted),
/// `loom:graph_steps_total` (steps replayed from a CUDA graph) and `loom:step_seconds_total` with a
/// `phase` label (schedule, prepare, launch, wait, output: where the engine thread's time went).
/// Each reading adds what the engine's totals gained since the last one.
private final class StepCounters: @unchecked Sendable {
    private let lock = NSLock()
    private var last = StepTotals()

    func advance(to totals: StepTotals, dimensions: [(String, String)], factory: PrometheusMetricsFactory) {
        lock.withLock {
            let gains: [(String, Int)] = [
                ("loom:steps_total", totals.steps - last.steps), ("loom:step_tokens_total", totals.tokens - last.tokens),
                ("loom:step_prefill_tokens_total", totals.prefillTokens - last.prefillTokens),
                ("loom:step_sequences_total", totals.sequences - last.sequences), ("loom:step_adapters_total", totals.adapters - last.adapters),
                ("loom:graph_steps_total", totals.graphSteps - last.graphSteps),
            ]
            for (label, gain) in gains {
                // Created at the first reading even at zero, so the series exist from the start.
                Counter(label: label, dimensions: dimensions, factory: factory).increment(by: max(0, gain))
            }
            for (phase, previous) in zip(totals.seconds.phases, last.seconds.phases) {
                FloatingPointCounter(label: "loom:step_seconds_total", dimensions: dimensions + [("phase", phase.name)], factory: factory)
                    .increment(by: max(0, phase.seconds - previous.seconds))
            }
            last = totals
        }
    }
}

/// `vllm:lora_requests_info`: one series whose labels name the running and waiting adapters and
/// whose value is the time of the reading, as vLLM exports it. The previous series is removed
/// when the labels change, so the family never grows.
private final class NIOLockedGauge: @unchecked Sendable {
    private let lock = NSLock()
    private var current: (labels: [String], gauge: Prometheus.Gauge)?

    func set(registry: PrometheusCollectorRegistry, labels: [(String, String)], value: Double) {
        lock.withLock {
            let key = labels.map { "\($0.0)=\($0.1)" }
            if let current, current.labels == key {
                current.gauge.set(value)
                return
            }
            if let current { registry.unregisterGauge(current.gauge) }
            let gauge = registry.makeGauge(
                descriptor: MetricNameDescriptor(metricName: "vllm:lora_requests_info", unitName: "", helpText: "Running stats on lora requests."),
                labels: labels)
            gauge.set(value)
            current = (key, gauge)
        }
    }
}
