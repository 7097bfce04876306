import Foundation

/// Exact order statistics over all samples (no histograms, no sketches).
public enum Statistics {
    /// The `p`-th percentile (0…100) of already sorted values, interpolated linearly between the
    /// closest ranks as numpy's default `percentile` does (rank `p/100 · (n − 1)`); nil when empty.
    public static func percentile(sorted values: [Double], _ p: Double) -> Double? {
        precondition((0...100).contains(p), "percentile \(p) is outside 0…100")
        guard let first = values.first else { return nil }
        if values.count == 1 { return first }
        let rank = p / 100 * Double(values.count - 1)
        let lower = Int(rank.rounded(.down))
        let upper = min(lower + 1, values.count - 1)
        let fraction = rank - Double(lower)
        return fraction == 0 ? values[lower] : values[lower] + (values[upper] - values[lower]) * fraction
    }

    public static func mean(_ values: [Double]) -> Double? {
        values.isEmpty ? nil : values.reduce(0, +) / Double(values.count)
    }

    /// Population standard deviation (numpy's `std`, ddof 0).
    public static func standardDeviation(_ values: [Double]) -> Double? {
        guard let m = mean(values) else { return nil }
        return (values.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(values.count)).squareRoot()
    }
}

/// Mean, spread and percentiles of one latency, in milliseconds.
public struct LatencySummary: Sendable, Equatable, Codable {
    public var count: Int
    public var mean: Double
    public var std: Double
    public var min: Double
    public var median: Double
    public var p90: Double
    public var p95: Double
    public var p99: Double
    public var max: Double

    /// Summarises samples given in seconds; nil when there are none.
    public init?(seconds: [Double]) {
        let ms = seconds.map { $0 * 1000 }.sorted()
        guard let first = ms.first, let last = ms.last else { return nil }
        count = ms.count
        mean = Statistics.mean(ms)!
        std = Statistics.standardDeviation(ms)!
        min = first
        median = Statistics.percentile(sorted: ms, 50)!
        p90 = Statistics.percentile(sorted: ms, 90)!
        p95 = Statistics.percentile(sorted: ms, 95)!
        p99 = Statistics.percentile(sorted: ms, 99)!
        max = last
    }
}
