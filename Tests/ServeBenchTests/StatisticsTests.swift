import Testing

@testable import ServeBench

@Suite struct StatisticsTests {
    @Test func percentilesInterpolateBetweenClosestRanksAsNumpy() {
        let v: [Double] = [1, 2, 3, 4]
        // numpy.percentile([1, 2, 3, 4], [0, 50, 90, 99, 100]) = [1, 2.5, 3.7, 3.97, 4]
        #expect(Statistics.percentile(sorted: v, 0) == 1)
        #expect(Statistics.percentile(sorted: v, 50) == 2.5)
        #expect(abs(Statistics.percentile(sorted: v, 90)! - 3.7) < 1e-12)
        #expect(abs(Statistics.percentile(sorted: v, 99)! - 3.97) < 1e-12)
        #expect(Statistics.percentile(sorted: v, 100) == 4)
    }

    @Test func edgeCases() {
        #expect(Statistics.percentile(sorted: [], 50) == nil)
        #expect(Statistics.mean([]) == nil)
        #expect(Statistics.standardDeviation([]) == nil)
        #expect(Statistics.percentile(sorted: [7], 0) == 7)
        #expect(Statistics.percentile(sorted: [7], 99) == 7)
        #expect(Statistics.percentile(sorted: [7], 100) == 7)
        // Exact ranks need no interpolation: 101 values 0…100 give p = value.
        let hundred = (0...100).map(Double.init)
        for p in [0.0, 1, 50, 90, 99, 100] { #expect(Statistics.percentile(sorted: hundred, p) == p) }
        // Ties stay ties.
        #expect(Statistics.percentile(sorted: [5, 5, 5], 90) == 5)
        #expect(Statistics.standardDeviation([2, 4, 4, 4, 5, 5, 7, 9]) == 2)
    }

    @Test func summarySortsAndConvertsToMilliseconds() {
        let s = LatencySummary(seconds: [0.004, 0.001, 0.003, 0.002])!
        #expect(s.count == 4)
        #expect(s.min == 1 && s.max == 4)
        #expect(abs(s.mean - 2.5) < 1e-9)
        #expect(abs(s.median - 2.5) < 1e-9)
        #expect(abs(s.p90 - 3.7) < 1e-9)
        #expect(abs(s.p99 - 3.97) < 1e-9)
        #expect(LatencySummary(seconds: []) == nil)
    }
}
