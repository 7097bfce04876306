import Foundation
import Testing

@testable import ServeBench

@Suite struct ArrivalTests {
    func intervals(_ a: ArrivalProcess, _ n: Int, seed: UInt64 = 7) -> [Double] {
        var rng = SeededGenerator(seed: seed)
        return (0..<n).map { _ in a.interval(rng: &rng) }
    }

    func cv(_ x: [Double]) -> Double { Statistics.standardDeviation(x)! / Statistics.mean(x)! }

    @Test func poissonHasTheRequestedMeanRateAndCVOne() {
        let x = intervals(.poisson(rate: 8), 50_000)
        let rate = 1 / Statistics.mean(x)!
        #expect(abs(rate - 8) / 8 < 0.02, "rate \(rate)")
        #expect(abs(cv(x) - 1) < 0.03, "cv \(cv(x))")
    }

    @Test(arguments: [0.5, 1.0, 2.0, 4.0])
    func gammaHasTheRequestedRateAndCV(target: Double) {
        let x = intervals(.gamma(rate: 5, cv: target), 100_000)
        let rate = 1 / Statistics.mean(x)!
        #expect(abs(rate - 5) / 5 < 0.05, "rate \(rate) at cv \(target)")
        #expect(abs(cv(x) - target) / target < 0.06, "cv \(cv(x)) for \(target)")
        #expect(x.allSatisfy { $0 >= 0 && $0.isFinite })
    }

    @Test func offsetsStartAtZeroAndAccumulate() {
        var rng = SeededGenerator(seed: 1)
        #expect(ArrivalProcess.fixed(rate: 4).offsets(count: 4, rng: &rng) == [0, 0.25, 0.5, 0.75])
        #expect(ArrivalProcess.burst.offsets(count: 3, rng: &rng) == [0, 0, 0])
        var a = SeededGenerator(seed: 3), b = SeededGenerator(seed: 3)
        #expect(ArrivalProcess.poisson(rate: 2).offsets(count: 50, rng: &a) == ArrivalProcess.poisson(rate: 2).offsets(count: 50, rng: &b))
    }

    @Test func parsesKinds() throws {
        #expect(try ArrivalProcess(kind: "gamma", rate: .infinity, cv: 3) == .burst)
        #expect(try ArrivalProcess(kind: "gamma", rate: 2, cv: 3) == .gamma(rate: 2, cv: 3))
        #expect(throws: BenchError.self) { try ArrivalProcess(kind: "uniform", rate: 2, cv: 1) }
        #expect(throws: BenchError.self) { try ArrivalProcess(kind: "poisson", rate: 0, cv: 1) }
    }
}

@Suite struct AdapterDistributionTests {
    func counts(_ d: AdapterDistribution, n: Int, draws: Int) -> [Int] {
        var rng = SeededGenerator(seed: 11)
        var c = [Int](repeating: 0, count: n)
        for i in d.assign(count: draws, among: n, rng: &rng) { c[i] += 1 }
        return c
    }

    @Test func zipfFrequenciesFollowRankOrderAndTheLaw() {
        let c = counts(.zipf(alpha: 1.2), n: 6, draws: 60_000)
        #expect(zip(c, c.dropFirst()).allSatisfy { $0 > $1 }, "\(c)")
        // p(1)/p(2) = 2^1.2
        let ratio = Double(c[0]) / Double(c[1])
        #expect(abs(ratio - pow(2, 1.2)) < 0.08, "ratio \(ratio)")
    }

    @Test func skewedIsSGLangsGeometricWeights() {
        let c = counts(.skewed(alpha: 2), n: 5, draws: 40_000)
        #expect(zip(c, c.dropFirst()).allSatisfy { $0 > $1 }, "\(c)")
        #expect(abs(Double(c[0]) / Double(c[1]) - 2) < 0.1)
    }

    @Test func sLoRAPowerLawIsUniformAtOneAndSkewedBelow() {
        let flat = counts(.power(alpha: 1), n: 4, draws: 40_000)
        #expect(flat.allSatisfy { abs(Double($0) - 10_000) < 500 }, "\(flat)")
        let skewed = counts(.power(alpha: 0.3), n: 8, draws: 40_000)
        #expect(zip(skewed, skewed.dropFirst()).allSatisfy { $0 > $1 }, "\(skewed)")
        // P(index 0) = P(U^(1/α) < 1/n) = (1/n)^α
        #expect(abs(Double(skewed[0]) / 40_000 - pow(1.0 / 8, 0.3)) < 0.01)
    }

    @Test func distinctCoversEveryAdapterInTurn() {
        var rng = SeededGenerator(seed: 1)
        let picks = AdapterDistribution.distinct.assign(count: 10, among: 4, rng: &rng)
        #expect(picks == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
        #expect(Set(AdapterDistribution.distinct.assign(count: 1000, among: 1000, rng: &rng)).count == 1000)
    }

    @Test func uniformIsRoughlyFlat() {
        let c = counts(.uniform, n: 5, draws: 50_000)
        #expect(c.allSatisfy { abs(Double($0) - 10_000) < 500 }, "\(c)")
    }
}

@Suite struct WorkloadTests {
    @Test func lengthRanges() throws {
        #expect(LengthRange.sglang(length: 512, rangeRatio: 0.5) == LengthRange(256, 512))
        #expect(LengthRange.sglang(length: 512, rangeRatio: 0) == LengthRange(1, 512))
        #expect(LengthRange.sglang(length: 512, rangeRatio: 1) == LengthRange(512, 512))
        #expect(try LengthRange.parse("8,512", option: "x") == LengthRange(8, 511))
        #expect(try LengthRange.parse("64", option: "x") == LengthRange(64, 64))
        #expect(throws: BenchError.self) { try LengthRange.parse("9,9", option: "x") }
        #expect(throws: BenchError.self) { try LengthRange.parse("0", option: "x") }
        var rng = SeededGenerator(seed: 2)
        let r = LengthRange(8, 511)
        let draws = (0..<20_000).map { _ in r.sample(&rng) }
        #expect(draws.min() == 8 && draws.max() == 511)
    }

    @Test func workloadIsDeterministicAndHonoursLengthsAndAdapters() throws {
        var c = BenchmarkConfig()
        c.numPrompts = 200
        c.inputLengths = LengthRange(8, 31)
        c.outputLengths = LengthRange(4, 4)
        c.adapters = try Workload.adapterNames(count: 10, pattern: "a-{i}")
        c.distribution = .distinct
        let a = Workload.make(config: c, source: .ids(vocabSize: 100, excluded: [0, 1, 2]))
        let b = Workload.make(config: c, source: .ids(vocabSize: 100, excluded: [0, 1, 2]))
        #expect(a == b)
        for r in a {
            guard case .ids(let ids) = r.prompt else { Issue.record("expected ids"); continue }
            #expect(ids.count == r.inputLength && (8...31).contains(ids.count))
            #expect(ids.allSatisfy { (3..<100).contains($0) })
            #expect(r.outputLength == 4)
        }
        #expect(Set(a.compactMap(\.adapter)).count == 10)
        #expect(a[13].adapter == "a-3")
        let words = Workload.make(config: c, source: .words)
        if case .text(let t) = words[0].prompt { #expect(t.split(separator: " ").count == words[0].inputLength) }
        #expect(throws: BenchError.self) { try Workload.adapterNames(count: 2, pattern: "adapter") }
    }

    @Test func optionsParseSGLangFlagNames() throws {
        let o = try BenchServeOptions.parse([
            "--backend", "sglang-oai-chat", "--port", "31000", "--num-prompts", "20", "--request-rate-sweep", "1,2,inf",
            "--random-input-len", "100", "--random-output-len", "50", "--random-range-ratio", "0.5",
            "--num-adapters", "3", "--lora-request-distribution", "zipf", "--lora-zipf-alpha", "0.8",
            "--arrival", "gamma", "--cv", "2", "--slo-ttft-ms", "200", "--max-concurrency", "4",
        ])
        let c = try o.makeConfig()
        #expect(c.backend == .openaiChat)
        #expect(c.baseURL == "http://127.0.0.1:31000")
        #expect(c.requestRates == [1, 2, .infinity])
        #expect(c.inputLengths == LengthRange(50, 100) && c.outputLengths == LengthRange(25, 50))
        #expect(c.adapters == ["adapter-0", "adapter-1", "adapter-2"])
        #expect(c.distribution == .zipf(alpha: 0.8))
        #expect(try c.arrival(rate: 1) == .gamma(rate: 1, cv: 2))
        #expect(c.slo == SLO(ttftMs: 200, tpotMs: nil, attainmentTarget: 0.9))
        #expect(c.maxConcurrency == 4)

        let lora = try BenchServeOptions.parse(["--lora-name", "pirate", "dragon", "--input-len-range", "8,512", "--request-rate", "3"]).makeConfig()
        #expect(lora.adapters == ["pirate", "dragon"] && lora.inputLengths == LengthRange(8, 511) && lora.requestRates == [3])
        #expect(throws: (any Error).self) { try BenchServeOptions.parse(["--lora-name", "a", "--num-adapters", "2"]) }
        #expect(throws: (any Error).self) { try BenchServeOptions.parse(["--backend", "trt"]) }
        #expect(throws: (any Error).self) { try BenchServeOptions.parse(["--request-rate", "-1"]) }
    }
}
