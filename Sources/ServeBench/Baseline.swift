import Foundation

/// A run to compare against (`--baseline FILE`): the same workload without adapters, read from an
/// `--output-json` document or an `--output-file` of JSON lines.
public struct Baseline: Sendable, Equatable {
    public var requestRate: Double
    public var requestThroughput: Double
    public var outputThroughput: Double
    public var meanTTFTMs: Double?
    public var medianTTFTMs: Double?
    public var p99TTFTMs: Double?

    /// Every run in the file.
    public static func load(path: String) throws -> [Baseline] {
        guard let data = FileManager.default.contents(atPath: path) else { throw BenchError.invalidOption("--baseline: cannot read \(path)") }
        var objects: [[String: Any]] = []
        if let document = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            objects = (document["runs"] as? [[String: Any]]) ?? [document]
        } else {
            for line in String(decoding: data, as: UTF8.self).split(separator: "\n") where !line.trimmingCharacters(in: .whitespaces).isEmpty {
                if let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] { objects.append(o) }
            }
        }
        let runs = objects.compactMap(Baseline.init(json:))
        guard !runs.isEmpty else { throw BenchError.invalidOption("--baseline: \(path) holds no run with request_throughput") }
        return runs
    }

    init?(json o: [String: Any]) {
        guard let throughput = (o["request_throughput"] as? NSNumber)?.doubleValue else { return nil }
        if let r = o["request_rate"] as? NSNumber { requestRate = r.doubleValue } else { requestRate = .infinity }
        requestThroughput = throughput
        outputThroughput = (o["output_throughput"] as? NSNumber)?.doubleValue ?? 0
        meanTTFTMs = (o["mean_ttft_ms"] as? NSNumber)?.doubleValue
        medianTTFTMs = (o["median_ttft_ms"] as? NSNumber)?.doubleValue
        p99TTFTMs = (o["p99_ttft_ms"] as? NSNumber)?.doubleValue
    }

    /// The run at `rate`, else the last one (the latest line of a JSON-lines file).
    public static func matching(_ runs: [Baseline], rate: Double) -> Baseline? {
        runs.last { $0.requestRate == rate } ?? runs.last
    }
}

extension RunReport {
    /// This run's throughput as a share of the baseline's (1 = no loss).
    public var throughputVsBaseline: Double? {
        guard let b = baseline, b.requestThroughput > 0 else { return nil }
        return requestThroughput / b.requestThroughput
    }

    public var outputThroughputVsBaseline: Double? {
        guard let b = baseline, b.outputThroughput > 0 else { return nil }
        return outputThroughput / b.outputThroughput
    }

    /// Mean TTFT over the baseline's (1 = no added latency).
    public var meanTTFTVsBaseline: Double? {
        guard let b = baseline?.meanTTFTMs, b > 0, let m = ttft?.mean else { return nil }
        return m / b
    }

    var baselineJSON: [String: Any] {
        guard let b = baseline else { return [:] }
        return [
            "baseline_request_throughput": b.requestThroughput,
            "baseline_output_throughput": b.outputThroughput,
            "baseline_mean_ttft_ms": b.meanTTFTMs ?? NSNull(),
            "baseline_median_ttft_ms": b.medianTTFTMs ?? NSNull(),
            "baseline_p99_ttft_ms": b.p99TTFTMs ?? NSNull(),
            "request_throughput_vs_baseline": throughputVsBaseline ?? NSNull(),
            "output_throughput_vs_baseline": outputThroughputVsBaseline ?? NSNull(),
            "mean_ttft_vs_baseline": meanTTFTVsBaseline ?? NSNull(),
        ]
    }
}
