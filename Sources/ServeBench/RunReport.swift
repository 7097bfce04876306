import Foundation

/// The figures of one run at one request rate, named as `sglang.bench_serving` names them.
public struct RunReport: Sendable {
    public struct Failure: Sendable, Equatable {
        public var index: Int
        public var adapter: String?
        public var httpStatus: Int?
        public var error: String
    }

    public var backend: String
    public var requestRate: Double
    public var arrival: String
    public var cv: Double?
    public var maxConcurrency: Int?
    public var numPrompts: Int
    public var datasetName: String
    public var inputLengths: LengthRange
    public var outputLengths: LengthRange
    public var numAdapters: Int
    public var loraRequestDistribution: String?
    public var loraDistributionAlpha: Double?
    public var seed: UInt64
    public var tag: String?

    public var duration: Double
    /// Successful requests (SGLang's `completed`).
    public var completed: Int
    public var failed: Int
    public var totalInputTokens: Int
    public var totalOutputTokens: Int
    public var requestThroughput: Double
    public var inputThroughput: Double
    public var outputThroughput: Double
    public var totalThroughput: Double
    /// Sum of request latencies over the duration: the mean number of requests in flight.
    public var concurrency: Double
    public var ttft: LatencySummary?
    public var tpot: LatencySummary?
    public var itl: LatencySummary?
    public var e2eLatency: LatencySummary?
    public var slo: SLO?
    /// Share of all requests (failures included) that met the SLO; nil without one.
    public var sloAttainment: Double?
    public var failures: [Failure]
    /// Requests sent to each adapter (`base` for none).
    public var requestsPerAdapter: [String: Int]
    /// Per-request records, kept with `--output-details`.
    public var results: [RequestResult]?
    /// The run without adapters at the same rate, from `--baseline`.
    public var baseline: Baseline?

    public init(config: BenchmarkConfig, arrival: ArrivalProcess, results: [RequestResult], duration: Double) {
        backend = config.backend.rawValue
        requestRate = arrival.rate
        self.arrival = arrival.description
        if case .gamma(_, let cv) = arrival { self.cv = cv }
        maxConcurrency = config.maxConcurrency
        numPrompts = results.count
        datasetName = config.datasetName
        inputLengths = config.inputLengths
        outputLengths = config.outputLengths
        numAdapters = config.adapters.count
        loraRequestDistribution = config.adapters.isEmpty ? nil : config.distribution.name
        loraDistributionAlpha = config.adapters.isEmpty ? nil : config.distribution.alpha
        seed = config.seed
        tag = config.tag
        self.duration = duration

        let ok = results.filter(\.success)
        completed = ok.count
        failed = results.count - ok.count
        totalInputTokens = ok.reduce(0) { $0 + $1.inputTokens }
        totalOutputTokens = ok.reduce(0) { $0 + $1.outputTokens }
        let d = max(duration, 1e-9)
        requestThroughput = Double(completed) / d
        inputThroughput = Double(totalInputTokens) / d
        outputThroughput = Double(totalOutputTokens) / d
        totalThroughput = Double(totalInputTokens + totalOutputTokens) / d
        concurrency = ok.reduce(0) { $0 + $1.latency } / d
        ttft = LatencySummary(seconds: ok.compactMap(\.ttft))
        tpot = LatencySummary(seconds: ok.compactMap(\.tpot))
        itl = LatencySummary(seconds: ok.flatMap(\.itl))
        e2eLatency = LatencySummary(seconds: ok.map(\.latency))
        slo = config.slo
        if let slo = config.slo, !results.isEmpty {
            sloAttainment = Double(results.filter { slo.isMet(by: $0) }.count) / Double(results.count)
        }
        failures = results.filter { !$0.success }.map {
            Failure(index: $0.index, adapter: $0.adapter, httpStatus: $0.httpStatus, error: $0.error ?? "unknown error")
        }
        requestsPerAdapter = results.reduce(into: [:]) { $0[$1.adapter ?? "base", default: 0] += 1 }
        self.results = config.outputDetails ? results : nil
        baseline = Baseline.matching(config.baselines, rate: arrival.rate)
    }

    static func rateText(_ rate: Double) -> String {
        rate.isInfinite ? "inf" : (rate == rate.rounded() ? String(Int(rate)) : String(rate))
    }

    /// The JSON object of `--output-file` (one line) and of each run in `--output-json`; keys as
    /// SGLang's, plus p90s, SLO attainment, failures and the adapter mix. Missing figures are null.
    public var json: [String: Any] {
        func orNull(_ v: Any?) -> Any { v ?? NSNull() }
        var o: [String: Any] = [
            "backend": backend,
            "dataset_name": datasetName,
            "request_rate": requestRate.isInfinite ? "inf" as Any : requestRate,
            "arrival": arrival,
            "cv": orNull(cv),
            "max_concurrency": orNull(maxConcurrency),
            "num_prompts": numPrompts,
            "random_input_len": inputLengths.upper,
            "random_output_len": outputLengths.upper,
            "input_len_range": [inputLengths.lower, inputLengths.upper],
            "output_len_range": [outputLengths.lower, outputLengths.upper],
            "num_adapters": numAdapters,
            "lora_request_distribution": orNull(loraRequestDistribution),
            "lora_distribution_alpha": orNull(loraDistributionAlpha),
            "seed": seed,
            "tag": orNull(tag),
            "duration": duration,
            "completed": completed,
            "failed": failed,
            "total_input_tokens": totalInputTokens,
            "total_output_tokens": totalOutputTokens,
            "request_throughput": requestThroughput,
            "input_throughput": inputThroughput,
            "output_throughput": outputThroughput,
            "total_throughput": totalThroughput,
            "concurrency": concurrency,
            "slo_ttft_ms": orNull(slo?.ttftMs),
            "slo_tpot_ms": orNull(slo?.tpotMs),
            "slo_attainment_target": orNull(slo?.attainmentTarget),
            "slo_attainment": orNull(sloAttainment),
            "requests_per_adapter": requestsPerAdapter,
            "errors": failures.map { ["index": $0.index, "adapter": orNull($0.adapter), "http_status": orNull($0.httpStatus), "error": $0.error] as [String: Any] },
        ]
        for (name, s) in [("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2e_latency", e2eLatency)] {
            o["mean_\(name)_ms"] = orNull(s?.mean)
            o["median_\(name)_ms"] = orNull(s?.median)
            o["std_\(name)_ms"] = orNull(s?.std)
            o["p90_\(name)_ms"] = orNull(s?.p90)
            o["p95_\(name)_ms"] = orNull(s?.p95)
            o["p99_\(name)_ms"] = orNull(s?.p99)
            o["min_\(name)_ms"] = orNull(s?.min)
            o["max_\(name)_ms"] = orNull(s?.max)
        }
        o.merge(baselineJSON) { _, new in new }
        if let results {
            o["input_lens"] = results.map(\.inputTokens)
            o["output_lens"] = results.map(\.outputTokens)
            o["ttfts"] = results.map { orNull($0.ttft) }
            o["itls"] = results.map(\.itl)
            o["e2e_latencies"] = results.map(\.latency)
            o["sent_at"] = results.map(\.sentAt)
            o["adapters"] = results.map { orNull($0.adapter) }
            o["request_errors"] = results.map { orNull($0.error) }
        }
        return o
    }
}

extension BenchmarkOutcome {
    /// The document of `--output-json`: every run, and the sweep's verdict.
    public var json: [String: Any] {
        func rate(_ r: Double?) -> Any { r.map { $0.isInfinite ? "inf" as Any : $0 } ?? NSNull() }
        return [
            "runs": runs.map(\.json),
            "slo_ttft_ms": slo?.ttftMs ?? NSNull(),
            "slo_tpot_ms": slo?.tpotMs ?? NSNull(),
            "slo_attainment_target": slo?.attainmentTarget ?? NSNull(),
            "max_rate_meeting_slo": rate(maxPassingRate),
            "stopped_at_rate": rate(stoppedAtRate),
        ]
    }

    public static func encode(_ object: Any, pretty: Bool) throws -> Data {
        var options: JSONSerialization.WritingOptions = [.sortedKeys, .withoutEscapingSlashes]
        if pretty { options.insert(.prettyPrinted) }
        return try JSONSerialization.data(withJSONObject: object, options: options)
    }
}
